"""`python run.py --help`: what a user can choose, computed when the help is printed, not typed in.

conf/hydra/help/metaformer.yaml is Hydra's help template (selected by `hydra/help=metaformer`); its live parts
are `${metaformer_help:SECTION}` interpolations, which Hydra resolves when it reads the template (after composing
the config with the command line's overrides, so a chosen option shows as chosen). This module registers that
resolver on import; run.py imports it (through metaformer.engine), so the template resolves in any process that
runs run.py. The sections:

- `groups`: the config groups of conf/ that the config chooses an option from (model=, data=, ...), their
  options (the YAML files) and the chosen one; `added`: the groups added with `+` (+experiment=, +ablation=).
  Hydra's own `$APP_CONFIG_GROUPS` would also list the schema entries of the ConfigStore (`schema`,
  `schema_synthetic`, ...), which are not choices.
- `parts`: the registered mixers, norms and activations (`mixers.list_mixers()`, `metaformer.list_norms()`,
  `metaformer.list_acts()`), with the values given.
- `keys`: the top-level keys and their values; `group_keys`: the keys of each group's node.

Hydra passes the resolved template through `string.Template`, so every `$` in a section is written `$$`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["RESOLVER", "config_groups", "help_section", "register"]

RESOLVER = "metaformer_help"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
WIDTH = 110
# What a group's choice does, where its name does not say it.
GROUP_NOTES = {
    "recipe": "follows data=: the data set's augmentation, epochs, batch and warmup",
    "aug": "default: the recipe's",
    "experiment": "a study's settings",
    "ablation": "one row of the ablation table",
}
# The top-level keys, in a few words (their types and defaults: RunConfig in metaformer/engine/schema.py).
KEY_NOTES = {
    "mixer": "one token mixer for every stage, or one per stage: mixer=[pool,pool,attn,attn]",
    "norm": "one norm, or one per stage",
    "act": "the channel MLP's activation, or one per stage",
    "mixer_options": "a mixer's keywords: mixer_options.pool.pool_size=5",
    "seed": "the random seed",
    "resume": "true: continue from last.pt in the run folder; false: start over; or a run folder / checkpoint",
    "output_dir": "the run folder (Hydra's; hydra.run.dir=PATH sets it)",
    "ablation": "set by +ablation=NAME",
}
NULL_MEANS = {"mixer": "the model preset's", "norm": "the model preset's", "act": "the model preset's"}


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group folder of `conf_dir` (not Hydra's own, `hydra/`) and its options, sorted."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(conf_dir.iterdir())
        if d.is_dir() and d.name != "hydra" and any(d.glob("*.yaml"))
    }


def _rows(rows: list[tuple[str, list[str], str]]) -> str:
    """One line (wrapped) per row: its head in a column as wide as the widest head, then its items,
    comma-separated, then its note in parentheses."""
    column = min(max((len(head) for head, _, _ in rows), default=0) + 2, 32)
    lines = []
    for head, items, note in rows:
        text = ", ".join(items) + (f"  ({note})" if note and items else note)
        lines.append(
            textwrap.fill(
                text,
                width=WIDTH,
                initial_indent=head.ljust(column - 2) + "  ",
                subsequent_indent=" " * column,
                break_on_hyphens=False,
                break_long_words=False,
            )
            if text
            else head
        )
    return "\n".join(lines)


def _value(node: DictConfig, key: str) -> str:
    """A key's value as given on the command line (`[pool,pool,attn,attn]`), interpolations unresolved."""
    value = OmegaConf.to_container(node, resolve=False).get(key)  # type: ignore[union-attr]
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_plain(v)}" for k, v in value.items()) + "}"
    return _plain(value)


def _plain(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return _value(OmegaConf.create({"v": value}), "v")
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _choices(root: DictConfig) -> tuple[dict[str, Any], set[str]]:
    """The option chosen in each group, and the groups that the command line added with `+`."""
    choices = OmegaConf.select(root, "hydra.runtime.choices", default=None)
    task = OmegaConf.select(root, "hydra.overrides.task", default=None) or []
    added = {str(o).partition("=")[0].lstrip("+") for o in task if str(o).startswith("+")}
    return (dict(choices) if isinstance(choices, DictConfig) else {}), added


def _groups(root: DictConfig, conf_dir: Path, added: bool) -> str:
    chosen, plus = _choices(root)
    rows = []
    for group, options in config_groups(conf_dir).items():
        if (group not in chosen or group in plus) != added:
            continue
        choice = chosen.get(group)
        head = f"{'+' if added else ''}{group}={choice if choice is not None else 'NAME'}"
        others = [o for o in options if o != choice]
        if others and choice is not None:
            others[0] = f"or: {others[0]}"
        rows.append((head, others, GROUP_NOTES.get(group, "")))
    return _rows(rows)


def _parts(root: DictConfig) -> str:
    import metaformer
    from mixers import list_mixers

    rows = []
    for key, names in (
        ("mixer", list_mixers()),
        ("norm", metaformer.list_norms()),
        ("act", metaformer.list_acts()),
    ):
        value = _value(root, key) if key in root else "null"
        given = f"now: {value}" + (f", {NULL_MEANS[key]}" if value == "null" and key in NULL_MEANS else "")
        rows.append((f"{key}:", names, given))
    return _rows(rows)


def _is_group(root: DictConfig, key: str) -> bool:
    """A config group's node (model, data, ...): a mapping, set (`ablation: null` is a value)."""
    node = root._get_node(key)
    return isinstance(node, DictConfig) and not node._is_none() and key not in ("hydra", "mixer_options")


def _keys(root: DictConfig) -> str:
    rows = []
    for key in map(str, root):
        if key != "hydra" and not _is_group(root, key):
            rows.append((f"{key}={_value(root, key)}", [], KEY_NOTES.get(key, "")))
    return _rows(rows)


def _group_keys(root: DictConfig) -> str:
    rows = [(f"{key}.", [str(k) for k in root[key]], "") for key in map(str, root) if _is_group(root, key)]
    return _rows(rows)


def help_section(section: str, root: DictConfig, conf_dir: Path = CONF_DIR) -> str:
    """One live section of the help text (see the module's docstring) for the composed config `root`."""
    sections = {
        "groups": lambda: _groups(root, conf_dir, added=False),
        "added": lambda: _groups(root, conf_dir, added=True),
        "parts": lambda: _parts(root),
        "keys": lambda: _keys(root),
        "group_keys": lambda: _group_keys(root),
    }
    if section not in sections:
        raise ValueError(f"unknown help section {section!r}; choose from: {', '.join(sections)}")
    return sections[section]()


def _resolve(section: str, _root_: DictConfig) -> str:
    # Hydra runs the resolved template through string.Template: a `$` of ours must not start a placeholder.
    return help_section(section, _root_).replace("$", "$$")


def register() -> None:
    """Register the `${metaformer_help:SECTION}` resolver (again: a no-op)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve)


register()
