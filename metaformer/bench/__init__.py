"""Benchmarks (not tests): throughput against timm (`python -m metaformer.bench`), the cost of each token mixer as
the token count grows (`python -m metaformer.bench.scaling`), and the training loop against a bare step loop
(`python -m metaformer.bench.loop`). Figures and commands are recorded in experiments/BENCHMARKS.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

# What a wrong argument raises: an unknown model, mixer or norm, a bad size, a missing file, a bad override.
USER_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    FileNotFoundError,
    RuntimeError,
    HydraException,
    OmegaConfBaseException,
)


def run_cli(main: Callable[[Sequence[str] | None], int], prog: str, argv: Sequence[str] | None = None) -> int:
    """Run a benchmark's `main`, turning a wrong argument's exception into one line on stderr and exit status 2."""
    try:
        return main(argv)
    except USER_ERRORS as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # str(KeyError) adds quotes
        lines = str(text).strip().splitlines() or [type(e).__name__]
        print(f"{prog}: error: {lines[0]}", file=sys.stderr)
        return 2
