"""One way to turn our errors into one line on stderr and an exit status: 2 for bad input, 1 for the environment.

Every command line entry point (run.py, `python -m analysis`, `python -m metaformer.bench*`) reports through
`fail`, and `exit_status` says which status an exception means, so a user sees `prog: error: what was wrong and
what would be right`, never a traceback, for a mistake or a missing file.

Typos get the answer that fixes them, not the one that leads to the next error: `check_split_lists` spots a list
the shell split at its spaces (`mixer=[pool, pool]`, which Hydra calls "no viable alternative at input"), and
`closest_key` / `unknown_key_message` name the key a misspelt one was meant to be (`trainer.epoch`, `epochs`,
`models`), where Hydra would advise adding it with `+`; `composition_message` does so for Hydra's own "Could not
override" error.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn


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


def composition_message(
    error: BaseException,
    known_keys: Callable[[str], Iterable[str] | None] | None = None,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """Hydra's complaint about a config it could not compose, then OmegaConf's (which names the key), on one
    line, without OmegaConf's type dumps and Hydra's HYDRA_FULL_ERROR hint.

    Hydra's "Could not override 'trainer.epoch'. To append to your config use +trainer.epoch=3" becomes
    `unknown_key_message`'s line when the key is a misspelling of one the config has ("did you mean
    trainer.epochs=3?"), or when `known_keys(node)` (the keys a node takes, None for a node open to any key; ""
    is the top level) says the node does not take it. Hydra's advice to add it with `+` stays where it is right:
    a key the node takes but the config does not set yet, a node open to any key, or, without `known_keys`, no
    key close to it. `groups` (config group -> options) lists a group's options when the key meant a group.
    """
    rewritten = _could_not_override(error, known_keys, groups)
    if rewritten is not None:
        return rewritten
    text = "\n".join(str(x) for x in (error, error.__cause__) if x is not None)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    skip = ("object_type=", "reference_type=", "Set the env")
    return "; ".join(line for line in lines if not line.startswith(skip)) or type(error).__name__


_COULD_NOT_OVERRIDE = re.compile(
    r"Could not override '([^']+)'\.\s+To append to your config use \+\1=(.*)", re.S
)


def _could_not_override(
    error: BaseException,
    known_keys: Callable[[str], Iterable[str] | None] | None,
    groups: Mapping[str, Iterable[str]] | None,
) -> str | None:
    """`composition_message` for Hydra's "Could not override KEY" (a key the config does not have), or None."""
    match = _COULD_NOT_OVERRIDE.match(str(error).strip())
    root = _config_root(error.__cause__)
    if match is None or root is None:
        return None
    key, value = match.group(1), match.group(2).strip()
    node = key.rpartition(".")[0]
    if key.startswith("hydra."):  # Hydra's own settings: the keys its node has
        from omegaconf import DictConfig, OmegaConf

        hydra_node = OmegaConf.select(root, node) if node else None
        if not isinstance(hydra_node, DictConfig):
            return None
        return unknown_key_message(key, {node: [str(k) for k in hydra_node]}, value=value)
    nodes = _node_keys(root)
    if known_keys is not None:
        nodes = {name: _ask(known_keys, name, keys) for name, keys in nodes.items()}
        takes = nodes.get(node, [])
        if node in nodes and (takes is None or key.rpartition(".")[2] in takes):
            return f"{key} is not in the config yet: add it with +{key}={value}"  # Hydra's advice, right here
    elif closest_key(key, _flat(nodes)) is None:
        return None  # perhaps a key of an open node: Hydra's advice (add it with +) may be right
    return unknown_key_message(key, nodes, groups, value=value)


def _ask(known_keys: Callable[[str], Iterable[str] | None], node: str, keys: list[str]) -> list[str] | None:
    """`known_keys(node)`, or the keys the config has where it does not know the node."""
    try:
        answer = known_keys(node)
    except (KeyError, ValueError):
        return keys
    return None if answer is None else list(answer)


def _config_root(cause: BaseException | None) -> Any:
    """The config an OmegaConf error happened in (its key's node's root), or None."""
    from omegaconf import DictConfig

    parent = getattr(cause, "parent_node", None)
    return parent._get_root() if isinstance(parent, DictConfig) else None


def _node_keys(root: Any) -> dict[str, list[str]]:
    """The keys of the top level ("") and of each mapping under it (the config groups), but Hydra's own."""
    from omegaconf import DictConfig

    nodes = {"": [str(k) for k in root if k != "hydra"]}
    for key in nodes[""]:
        child = root._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            nodes[key] = [str(k) for k in child]
    return nodes


def _flat(nodes: Mapping[str, Iterable[str] | None]) -> list[str]:
    return [f"{node}.{k}" if node else k for node, keys in nodes.items() for k in keys or ()]


def closest_key(key: str, known: Iterable[str]) -> str | None:
    """The known dotted key that `key` most likely misspells, or None (`key` itself when it is known).

    First among the keys of the same node (`trainer.epoch` -> `trainer.epochs`, `models` -> `model`), then by
    the last dotted part in any node, where one key has it: the same (`epochs` -> `trainer.epochs`,
    `optim.epochs` -> `trainer.epochs`), then a close one (`epoch` -> `trainer.epochs`)."""
    known = list(dict.fromkeys(known))
    if key in known:
        return key
    node, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == node}
    close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.7)
    if close:
        return siblings[close[0]]
    by_leaf: dict[str, list[str]] = {}
    for k in known:
        by_leaf.setdefault(k.rpartition(".")[2], []).append(k)
    for candidates in ([leaf], difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)):
        if candidates and len(by_leaf.get(candidates[0], [])) == 1:
            return by_leaf[candidates[0]][0]
    return None


def _takes(node: str, keys: Iterable[str]) -> str:
    return f"{node + ' takes' if node else 'the top level takes'}: {', '.join(keys)}"


def unknown_key_message(
    key: str,
    known_keys: Mapping[str, Iterable[str] | None],
    groups: Mapping[str, Iterable[str]] | None = None,
    value: str | None = None,
) -> str:
    """One line for a key the config does not have: `unknown key trainer.epoch; did you mean trainer.epochs?
    (trainer takes: epochs, batch_size, ...)`, or without a close key `unknown key trainer.bogus; trainer takes:
    epochs, ...`.

    `known_keys`: each node's keys ("" the top level, "trainer", ...; None for a node open to any key);
    `groups`: each config group's options, listed when the key meant a group (`models=...` -> `model`);
    `value`: the value given, repeated in the suggestion (`did you mean trainer.epochs=3?`)."""
    nodes = {name: list(keys) if keys is not None else None for name, keys in known_keys.items()}
    node = key.rpartition(".")[0]
    given = f"={value}" if value is not None else ""
    if node in nodes and nodes[node] is None:
        return f"unknown key {key}; {node} takes any key: add it with +{key}{given}"
    guess = closest_key(key, _flat(nodes))
    if guess is None:
        if node not in nodes:
            return f"unknown key {key}; the config has no {node}, and {_takes('', nodes.get('') or [])}"
        return f"unknown key {key}; {_takes(node, nodes[node] or [])}"
    options = list((groups or {}).get(guess, ()))
    if options:
        why = f" ({guess} is a config group: {', '.join(options)})"
    elif guess in nodes:
        why = ""  # a node: its keys would not help one who meant to choose its option
    else:
        parent = guess.rpartition(".")[0]
        why = f" ({_takes(parent, nodes.get(parent) or [])})"
    return f"unknown key {key}; did you mean {guess}{given}?{why}"


# Hydra's command-line flags that take a value in the next argument.
_FLAGS_WITH_VALUES = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                      "--config-dir", "-cd", "--info", "--experimental-rerun"}  # fmt: skip
_OPEN, _CLOSE = "[{", "]}"


def _closers(text: str) -> str:
    """The brackets `text` leaves open, closed in order (`[a,{b` -> `}]`), outside quotes; "" when none are."""
    stack: list[str] = []
    quote = ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _OPEN:
            stack.append(_CLOSE[_OPEN.index(char)])
        elif char in _CLOSE and stack:
            stack.pop()
    return "".join(reversed(stack))


def check_split_lists(argv: Sequence[str]) -> str | None:
    """The one-line answer for a value the shell split at its spaces, or None when there is none.

    `python run.py mixer=[pool, pool, attn, attn]` reaches us as `mixer=[pool,` `pool,` `attn,` `attn]`, which
    Hydra refuses with "no viable alternative at input '[pool,'". Spotted: an override followed by the rest of
    its value (while a bracket is open, after a trailing comma, or before a leading comma or closing bracket:
    also `seed=0, 1, 2`), an override that leaves a bracket open, and a piece of a value on its own (`attn]`).
    The answer shows the value quoted, and without the spaces."""
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _FLAGS_WITH_VALUES:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        if "=" not in arg:
            if arg[:1] in ",]}" or arg[-1:] in ",]}":
                return (
                    f"`{arg}` looks like a piece of a list split by spaces: quote the whole value "
                    "('key=[a, b]') or drop the spaces (key=[a,b])"
                )
            i += 1
            continue
        parts = [arg]
        for nxt in argv[i + 1 :]:
            if "=" in nxt or nxt.startswith("-"):
                break
            if not (_closers(" ".join(parts)) or parts[-1].endswith(",") or nxt[:1] in ",]}"):
                break
            parts.append(nxt)
        closers = _closers(" ".join(parts))
        if len(parts) > 1:
            quoted, joined = " ".join(parts) + closers, "".join(parts) + closers
            what = "a value" if arg.partition("=")[2][:1] == "{" else "a list"
            return f"`{arg}` looks like {what} split by spaces: quote it ('{quoted}') or drop the spaces ({joined})"
        if closers:
            return f"`{arg}` leaves a bracket open: close it ({arg}{closers}), and quote a value with spaces"
        i += 1
    return None


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
