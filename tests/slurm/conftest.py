"""The `slurm` fixture: a local one-node SLURM for this folder's tests (see slurm_helpers.py)."""

from slurm_helpers import slurm  # noqa: F401
