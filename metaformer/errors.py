"""One way to turn our errors into one line on stderr and an exit status: 2 for bad input, 1 for the environment.

Every command line entry point (run.py, `python -m analysis`, `python -m metaformer.bench*`) reports through
`fail`, and `exit_status` says which status an exception means, so a user sees `prog: error: what was wrong and
what would be right`, never a traceback, for a mistake or a missing file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn


class ConfigError(ValueError):
    """A run config that cannot train; the message is one line. `exit_code` 2: a bad value, 1: the environment."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(one_line(message))
        self.exit_code = exit_code


def one_line(error: BaseException | str) -> str:
    """The message of `error` on one line (its single string argument, whitespace runs folded)."""
    if isinstance(error, BaseException):
        args = error.args
        text = args[0] if len(args) == 1 and isinstance(args[0], str) else str(error)
        text = text or type(error).__name__
    else:
        text = error
    return " ".join(text.split())


def exit_status(error: BaseException) -> int:
    """2 for bad input (a ConfigError's own code, a ValueError or KeyError), 1 for the environment (OSError...)."""
    if isinstance(error, ConfigError):
        return error.exit_code
    return 1 if isinstance(error, OSError) else 2


def report(message: str, prog: str | None = None) -> None:
    """Print `prog: error: message` on stderr (one line), as argparse does; prog defaults to the command."""
    print(f"{prog or Path(sys.argv[0]).name}: error: {one_line(message)}", file=sys.stderr, flush=True)


def fail(error: BaseException | str, exit_code: int | None = None, prog: str | None = None) -> NoReturn:
    """Report `error` in one line and exit, with `exit_code` or the status `exit_status` gives it."""
    code = (
        exit_code if exit_code is not None else exit_status(error) if isinstance(error, BaseException) else 2
    )
    report(one_line(error), prog)
    raise SystemExit(code)
