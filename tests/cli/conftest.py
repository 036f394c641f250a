"""The `run_cli` fixture (see cli_helpers.py)."""

from cli_helpers import run_cli  # noqa: F401
