"""`python -m metaformer.bench* --help` describes every flag: what it does, its default where it has one, and its
choices where it has them (as `python -m analysis --help` does)."""

import argparse

import pytest

from metaformer import list_acts, list_norms
from metaformer.bench import __main__ as bench
from metaformer.bench import depthwise, loop, scaling
from mixers import list_mixers

PARSERS = {
    "python -m metaformer.bench": bench.build_parser,
    "python -m metaformer.bench.scaling": scaling.build_parser,
    "python -m metaformer.bench.loop": loop.build_parser,
    "python -m metaformer.bench.depthwise": depthwise.build_parser,
}


def described(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.Action, str]]:
    """Each argument's name and its help as printed (%(default)s and %(choices)s filled in)."""
    formatter = parser._get_formatter()
    return {
        (a.option_strings or [a.dest])[-1]: (a, formatter._expand_help(a) if a.help else "")
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)
    }


@pytest.mark.parametrize("prog", list(PARSERS))
def test_every_flag_has_help_with_its_default(prog):
    parser = PARSERS[prog]()
    assert parser.prog == prog
    for name, (action, text) in described(parser).items():
        assert text.strip(), f"{prog} {name} has no help"
        if isinstance(action, argparse._StoreTrueAction):
            continue  # off unless given
        assert "default" in text, f"{prog} {name}: no default in {text!r}"
        if action.default not in (None, False):
            shown = action.default if not isinstance(action.default, list) else action.default[0]
            assert str(shown) in text, f"{prog} {name}: default {action.default!r} not in {text!r}"
        for choice in action.choices or ():
            assert str(choice) in text or str(choice) in parser.format_usage(), (prog, name, choice)
    assert "examples:" in parser.format_help()


def test_the_flags_the_issue_names_are_described():
    flags = described(bench.build_parser())
    for name in (
        "--norm",
        "--act",
        "--batch-size",
        "--warmup",
        "--rounds",
        "--device",
        "--threads",
        "--seed",
    ):
        assert "default" in flags[name][1], name
    assert "default: 16" in flags["--batch-size"][1] and "default: 5" in flags["--rounds"][1]
    # the registries' names are in the help (a wrong one is refused by the model, in one line)
    assert all(n in flags["--norm"][1] for n in list_norms())
    assert all(n in flags["--act"][1] for n in list_acts())
    assert all(n in flags["--mixer"][1] for n in list_mixers())
