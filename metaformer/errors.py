"""One way to turn our errors into one line on stderr and an exit status: 2 for bad input, 1 for the environment.

Every command line entry point (run.py, `python -m analysis`, `python -m metaformer.bench*`) reports through
`fail`, and `exit_status` says which status an exception means, so a user sees `prog: error: what was wrong and
what would be right`, never a traceback, for a mistake or a missing file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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


def composition_message(error: BaseException) -> str:
    """Hydra's complaint about a config it could not compose, then OmegaConf's (which names the key), on one
    line, without OmegaConf's type dumps and Hydra's HYDRA_FULL_ERROR hint."""
    text = "\n".join(str(x) for x in (error, error.__cause__) if x is not None)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    skip = ("object_type=", "reference_type=", "Set the env")
    return "; ".join(line for line in lines if not line.startswith(skip)) or type(error).__name__


def exit_status(error: BaseException) -> int:
    """2 for bad input (a ConfigError's own code, a ValueError or KeyError), 1 for the environment (OSError...)."""
    if isinstance(error, ConfigError):
        return error.exit_code
    return 1 if isinstance(error, OSError) else 2


def report(message: BaseException | str, prog: str | None = None) -> None:
    """Print `prog: error: message` on stderr (one line), as argparse does; prog defaults to the command's file
    name, and `prog=""` prints `error: message`."""
    prog = Path(sys.argv[0]).name if prog is None else prog
    print(f"{prog}: error: " if prog else "error: ", one_line(message), sep="", file=sys.stderr, flush=True)


def fail(error: BaseException | str, exit_code: int | None = None, prog: str | None = None) -> NoReturn:
    """Report `error` in one line and exit, with `exit_code` or the status `exit_status` gives it."""
    code = (
        exit_code if exit_code is not None else exit_status(error) if isinstance(error, BaseException) else 2
    )
    report(error, prog)
    raise SystemExit(code)


def run_main(main: Callable[[], int | None], prog: str) -> int:
    """Run a command line's `main`; our errors (bad input: ValueError, KeyError; the environment: OSError) end in
    one line and their exit status instead of a traceback, and so does a Hydra config that does not compose.
    `sys.exit(run_main(main, "python -m pkg"))`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return main() or 0
    except (ValueError, KeyError, OSError) as e:
        fail(e, prog=prog)
    except (HydraException, OmegaConfBaseException) as e:
        fail(composition_message(e), 2, prog=prog)
