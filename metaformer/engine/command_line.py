"""Checks on run.py's command line, made before Hydra acts, where Hydra would answer in several lines.

`check_argv` catches two of Hydra's modes at once (-m with --cfg, ...), a launcher plugin that is not installed,
a config-group option (model=, data=, ...) with no file in conf/, and a value of the wrong type or a key the schema
does not have (composing the config once, and once per swept value of a `-m` sweep). `PreflightCallback` makes
sure the output folder can be written before Hydra creates it. Each problem ends the command with one line and a
non-zero exit (metaformer/errors.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# `python run.py --help` prints conf/hydra/help/metaformer.yaml, whose live lists need the `metaformer_help`
# resolver that importing this module registers.
from metaformer.engine import help as _help  # noqa: F401
from metaformer.engine.validation import check_schema, check_writable, known_keys
from metaformer.errors import ConfigError, check_split_lists, composition_message, fail

__all__ = ["CONF_DIR", "PreflightCallback", "check_argv", "normalize_argv"]

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# Launcher plugins a user may ask for, and the package that provides each.
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


def normalize_argv(argv: list[str]) -> list[str]:
    """`mixer_options.NAME.OPTION=VALUE` as `++...`: the options are the mixers' (their signatures hold the
    defaults), so the config starts with none and setting one adds it."""
    return [f"++{a}" if a.startswith("mixer_options.") and "=" in a else a for a in argv]


def check_argv(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Exit with one line when argv names something Hydra would refuse in several: a launcher plugin that is not
    installed, an option of a config group (model=, data=, ...) that has no file in conf/, a value of the wrong
    type or a key the schema does not have (in a `-m` sweep, each swept value), a list the shell split at its
    spaces."""
    split = check_split_lists(argv)
    if split:
        fail(split, 2)
    check_launcher(argv)
    try:
        check_modes(argv)
        check_overrides(argv, conf_dir)
        check_composes(argv, conf_dir)
    except ConfigError as e:
        fail(str(e), e.exit_code)


def check_launcher(argv: list[str]) -> None:
    """Exit with the pip command when argv selects a launcher plugin that is not installed."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+~") in ("hydra/launcher", "override hydra/launcher") and value in LAUNCHER_PLUGINS:
            module, package = LAUNCHER_PLUGINS[value]
            if importlib.util.find_spec(module) is None:
                fail(f"hydra/launcher={value} needs the {package} plugin: pip install {package}", exit_code=1)


def check_modes(argv: list[str]) -> None:
    """Raise ConfigError when argv asks for more than one of Hydra's modes (-m, --cfg, --info, --run,
    --shell-completion), which Hydra refuses with a traceback. Flags Hydra cannot parse are left to Hydra."""
    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:  # argparse's own message (e.g. --cfg without a value) comes from Hydra in a moment
        return
    modes = {
        "--run": args.run,
        "--multirun": args.multirun,
        "--cfg": args.cfg is not None,
        "--info": args.info is not None,
        "--shell-completion": args.shell_completion,
    }
    chosen = [flag for flag, on in modes.items() if on]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} cannot be combined: give one of them")


def check_overrides(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise ConfigError for a `group=option` override that names no file in conf/."""
    if any(a.startswith(("hydra.searchpath", "--config-dir", "-cd", "--config-path", "-cp")) for a in argv):
        return  # configs from elsewhere: let Hydra judge
    groups = {d.name for d in conf_dir.iterdir() if d.is_dir()}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        plain = key.lstrip("+")
        if key.startswith("~") or "(" in value or "$" in value:  # deletions, sweep functions, interpolations
            continue
        if plain in groups:
            for option in (v.strip().strip("'\"") for v in value.split(",")):
                if option and option != "null" and not (conf_dir / plain / f"{option}.yaml").is_file():
                    names = sorted(p.stem for p in (conf_dir / plain).glob("*.yaml") if p.stem != "schema")
                    raise ConfigError(f"unknown {plain} '{option}'; choose from: {', '.join(names)}")


def check_composes(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose the config as run.py will, and raise ConfigError with Hydra's/OmegaConf's complaint in one line
    (a value of the wrong type, a key that is not there: both name the key). Sweeps and Hydra's own flags
    (-m, --cfg, ...) are left to Hydra."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return
    args = [a for a in argv if a not in ("-m", "--multirun")]
    if len(args) == len(argv):
        compose_checked(args, conf_dir)
        return
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # Hydra's parser: a malformed override
        raise ConfigError(composition_message(e)) from e
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    compose_checked(fixed, conf_dir)
    for o in parsed:  # each value of a plain `key=a,b,c` sweep, with the fixed overrides (not glob, range...)
        if o.value_type == ValueType.SIMPLE_CHOICE_SWEEP:
            prefix = o.input_line.partition(o.key_or_group)[0]  # +, ++ or ~
            for value in o.sweep_string_iterator():
                compose_checked([*fixed, f"{prefix}{o.key_or_group}={value}"], conf_dir)


def compose_checked(overrides: list[str], conf_dir: Path = CONF_DIR) -> DictConfig:
    """The run config for `overrides`, composed by Hydra's compose API and checked against the schema; a problem
    is a ConfigError in one line."""
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    except Exception as e:  # hydra.errors.ConfigCompositionException, omegaconf's errors
        raise ConfigError(composition_message(e, known_keys=known_keys, groups=_help.config_groups())) from e
    check_schema(cfg)
    return cfg


class PreflightCallback(Callback):
    """Checks, before Hydra creates it, that the run (or sweep) folder can be written, without making it (a sweeper
    may still refuse its options); exits with one line if not."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check hydra.run.dir."""
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check hydra.sweep.dir."""
        self._check(config, "sweep")

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        try:
            check_writable(str(OmegaConf.select(config, f"hydra.{mode}.dir")), create=False)
        except ConfigError as e:
            fail(str(e), e.exit_code)
