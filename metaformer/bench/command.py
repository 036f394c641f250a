"""The command-line parser every bench module starts from: its docstring's summary as the description and its
example commands, as written, after the flags."""

from __future__ import annotations

import argparse


def bench_parser(prog: str, description: str, examples: str) -> argparse.ArgumentParser:
    """An argparse parser for `prog` whose help ends with `examples` (indentation and line breaks kept)."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
