"""Checks on a composed run config, made before any data is loaded or any folder is written.

The types and keys are the schema's (metaformer/engine/schema.py); `validate` checks the values by building what
the config describes: the model with `create_model` on the `meta` device (no memory, no weights), so its rules
(stage lists, registered names, mixer options) are the model's own, the data set's options through its registry
(`check_data`), plus what only a run has (epochs, a precision, a resume path, a writable folder). Each problem is
a `ConfigError` with one line saying what was wrong and what would be right; run.py prints it and exits non-zero
(metaformer/errors.py). Some checks must happen before Hydra itself acts, so they live here too: `check_argv`
catches an unknown config-group option (model=, data=, ...) and a launcher plugin that is not installed, which
Hydra would report in several lines; `PreflightCallback` makes sure the output folder can be written before Hydra
creates it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from metaformer.errors import ConfigError, composition_message, fail, one_line, report
from metaformer.fast import PRECISION_CHOICES

__all__ = ["ConfigError", "RunSpec", "check_argv", "fail", "report", "validate"]

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Parameters a mixer receives from the model, not from mixer_options.
MIXER_BUILT_IN = ("self", "dim", "resolution")
# create_model keywords that the data set decides unless model.* says otherwise (as the trainer builds it).
DATA_SIZED = ("num_classes", "in_chans", "img_size")

# Launcher plugins a user may ask for, and the package that provides each.
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


def _choices(names: list[str]) -> str:
    return ", ".join(names)


@dataclass(frozen=True)
class RunSpec:
    """What validation resolved: the per-stage mixers and the keywords for create_model."""

    mixers: list[str]
    model_kwargs: dict[str, Any]


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Keywords for `create_model`: the top-level mixer/norm/act/mixer_options and every `model` key that is set
    (an unset one, `???`, keeps the preset's value); a `model.depths` list also sets the number of stages."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    extra = {k: v for k, v in model.items() if k != "name" and not OmegaConf.is_missing(cfg.model, k)}
    options = cfg.get("mixer_options")
    options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    assert isinstance(options, dict)
    used = {name: dict(opts) for name, opts in options.items() if opts}
    if isinstance(extra.get("depths"), list) and "num_stages" not in extra:
        extra["num_stages"] = len(extra["depths"])  # model.depths=[1,1,1]: three stages
    mixer, norm, act = (v if isinstance(v, str) else list(v) for v in (cfg.mixer, cfg.norm, cfg.act))
    return {"mixer": mixer, "norm": norm, "act": act, "mixer_options": used, **extra}


def build_on_meta(cfg: DictConfig, kwargs: dict[str, Any]) -> Any:
    """Build the configured model on the `meta` device (no memory), sized by the data set as the trainer sizes it;
    raise ConfigError with the model's own one-line complaint."""
    import torch

    from metaformer import create_model

    sized = {k: cfg.data.get(k) for k in DATA_SIZED if not OmegaConf.is_missing(cfg.data, k)}
    sized = {k: v for k, v in sized.items() if isinstance(v, int) and not isinstance(v, bool)}
    try:
        with torch.device("meta"):
            return create_model(cfg.model.name, **{**sized, **kwargs})  # model.* keys win
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(one_line(e)) from e


def validate(cfg: DictConfig, run_dir: Path | None = None) -> RunSpec:
    """Check `cfg` and return what it resolves to; raise `ConfigError` (one line) on the first problem."""
    from metaformer.engine.data import check_data

    check_schema(cfg)
    kwargs = model_kwargs(cfg)
    for name, options in kwargs["mixer_options"].items():
        check_mixer_options(name, list(options))
    model = build_on_meta(cfg, kwargs)
    _check_set(cfg)
    _check_trainer(cfg.trainer)
    _check_batch_norm(model, cfg.trainer.batch_size)
    _check_optimizer(cfg.optim)
    _check_resume(cfg.get("resume"))
    if cfg.logger.get("name") == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger=wandb needs wandb: pip install wandb", exit_code=1)
    try:
        check_data(cfg.data)
    except OSError as e:  # missing, truncated or corrupt files
        raise ConfigError(one_line(e), exit_code=1) from e
    except ValueError as e:
        raise ConfigError(one_line(e)) from e
    if run_dir is not None:
        check_writable(run_dir)
    return RunSpec(mixers=list(model.stage_mixers), model_kwargs=kwargs)


def _check_batch_norm(model: Any, batch_size: int) -> None:
    """Raise ConfigError where a BatchNorm would see one value per channel in training (batch x grid pixels),
    which torch refuses only at the first step."""
    from torch.nn.modules.batchnorm import _BatchNorm

    for i, (stage, (h, w)) in enumerate(zip(model.stages, model.stage_resolutions, strict=True), start=1):
        if batch_size * h * w < 2 and any(isinstance(m, _BatchNorm) for m in stage.modules()):
            raise ConfigError(
                f"norm=bn normalises over the batch, and trainer.batch_size={batch_size} at stage {i}'s {h}x{w} "
                f"grid gives it one value per channel; use trainer.batch_size=2 or more, or another norm (norm=gn)"
            )


def _check_set(cfg: DictConfig) -> None:
    """Raise ConfigError for a value left unset (`???`), but in `model` (unset: the preset's) and `data` (its data
    set says what it needs, with a better message)."""
    for group in ("trainer", "optim", "sched", "logger", "aug"):
        node = cfg.get(group)
        for key in node or ():
            if OmegaConf.is_missing(node, key):
                name = f"{group}.{key}"
                hint = (
                    " (a data set's recipe, conf/recipe/<data>.yaml, sets it)"
                    if name == "trainer.epochs"
                    else ""
                )
                raise ConfigError(f"{name} is not set{hint}; set {name}=VALUE")


def mixer_options_of(name: str) -> list[str] | None:
    """The options registered mixer `name` takes (its keyword parameters), or None if it takes any (**kwargs)
    or is not registered."""
    from mixers import MIXERS

    if name not in MIXERS:
        return None
    builder = MIXERS.get(name)
    try:
        params = inspect.signature(builder.__init__ if inspect.isclass(builder) else builder).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [
        n
        for n, p in params.items()
        if n not in MIXER_BUILT_IN and p.kind is not inspect.Parameter.VAR_POSITIONAL
    ]


def check_mixer_options(name: str, options: list[str]) -> None:
    """Raise ConfigError if registered mixer `name` does not take one of `options`."""
    accepted = mixer_options_of(name)
    if accepted is None:
        return
    for option in options:
        if option not in accepted:
            takes = f"its options: {_choices(accepted)}" if accepted else "it takes no options"
            raise ConfigError(
                f"mixer '{name}' has no option '{option}' (mixer_options.{name}.{option}); {takes}"
            )


def _check_trainer(t: DictConfig) -> None:
    def positive_int(key: str) -> None:  # the type is the schema's (metaformer/engine/schema.py)
        value = t.get(key)
        if value <= 0:
            raise ConfigError(f"trainer.{key} must be a positive integer, got {value!r}")

    for key in ("epochs", "batch_size", "accumulation", "eval_interval", "log_interval"):
        positive_int(key)
    if t.get("eval_batch_size") is not None:
        positive_int("eval_batch_size")
    if t.precision not in PRECISION_CHOICES:
        raise ConfigError(
            f"unknown trainer.precision {t.precision!r}; choose from: {_choices(list(PRECISION_CHOICES))}"
        )
    if t.precision == "fp16" and t.device == "cpu":
        raise ConfigError("trainer.precision=fp16 needs a CUDA device; use trainer.precision=bf16 on the CPU")
    if t.device not in ("auto", "cpu") and not str(t.device).startswith("cuda"):
        raise ConfigError(f"unknown trainer.device {t.device!r}; choose from: auto, cpu, cuda")
    if str(t.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={t.device} but no CUDA device is visible; use trainer.device=auto"
            )
    for key in ("limit_train_batches", "limit_val_batches"):
        value = t.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise ConfigError(f"trainer.{key} must be a number of batches, a fraction in (0, 1], or null")
        if isinstance(value, float) and value > 1:
            raise ConfigError(f"trainer.{key}={value}: a float is a fraction of the epoch, in (0, 1]")
    if t.get("grad_clip") is not None and t.grad_clip <= 0:
        raise ConfigError(f"trainer.grad_clip must be positive or null, got {t.grad_clip}")


def _check_optimizer(optim: DictConfig) -> None:
    from timm.optim import list_optimizers

    # timm accepts a `lookahead_` prefix on any optimizer name.
    name = str(optim.get("opt")).lower().removeprefix("lookahead_")
    if name not in list_optimizers():
        raise ConfigError(
            f"unknown optim.opt {optim.get('opt')!r}; see timm.optim.list_optimizers(), e.g. adamw, sgd, lamb"
        )


def _check_resume(resume: Any) -> None:
    if resume is None or isinstance(resume, bool):
        return
    path = Path(str(resume)).expanduser()
    if not path.exists():
        raise ConfigError(
            f"resume={resume}: no such file or folder (give a run folder, a checkpoint, or true)", 1
        )
    if path.is_dir() and not (path / "last.pt").is_file():
        raise ConfigError(f"resume={resume}: the folder has no last.pt to resume from", exit_code=1)


def check_writable(run_dir: str | Path) -> None:
    """Create `run_dir` if needed and prove a file can be written there; raise ConfigError if not."""
    path = Path(run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"cannot write the output folder {path}: {reason}", exit_code=1) from e


class PreflightCallback(Callback):
    """Checks, before Hydra creates it, that the run (or sweep) folder can be written; exits with one line if not."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check hydra.run.dir."""
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check hydra.sweep.dir."""
        self._check(config, "sweep")

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        try:
            check_writable(str(OmegaConf.select(config, f"hydra.{mode}.dir")))
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


def check_argv(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Exit with one line when argv names something Hydra would refuse in several: a launcher plugin that is not
    installed, an option of a config group (model=, data=, ...) that has no file in conf/, a value of the wrong
    type or a key the schema does not have (in a `-m` sweep, each swept value)."""
    check_launcher(argv)
    try:
        check_modes(argv)
        check_overrides(argv, conf_dir)
        check_composes(argv, conf_dir)
    except ConfigError as e:
        fail(str(e), e.exit_code)


def check_modes(argv: list[str]) -> None:
    """Raise ConfigError when argv asks for more than one of Hydra's modes (-m, --cfg, --info, --run,
    --shell-completion), which Hydra refuses with a traceback. Flags Hydra cannot parse are left to Hydra."""
    from hydra._internal.utils import get_args_parser

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


def check_composes(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose the config as run.py will, and raise ConfigError with Hydra's/OmegaConf's complaint in one line
    (a value of the wrong type, a key that is not there: both name the key). Sweeps and Hydra's own flags
    (-m, --cfg, ...) are left to Hydra."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return
    args = [a for a in argv if a not in ("-m", "--multirun")]
    if len(args) == len(argv):
        _compose(args, conf_dir)
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # Hydra's parser: a malformed override
        raise ConfigError(composition_message(e)) from e
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    _compose(fixed, conf_dir)
    for o in parsed:  # each value of a plain `key=a,b,c` sweep, with the fixed overrides (not glob, range...)
        if o.value_type == ValueType.SIMPLE_CHOICE_SWEEP:
            prefix = o.input_line.partition(o.key_or_group)[0]  # +, ++ or ~
            for value in o.sweep_string_iterator():
                _compose([*fixed, f"{prefix}{o.key_or_group}={value}"], conf_dir)


def _compose(argv: list[str], conf_dir: Path) -> None:
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=argv)
    except Exception as e:  # hydra.errors.ConfigCompositionException, omegaconf's errors
        raise ConfigError(composition_message(e)) from e
    check_schema(cfg)


def known_keys(group: str) -> list[str] | None:
    """The keys node `group` may have (None: open by design, see metaformer/engine/schema.py): its dataclass's
    fields, and for `sched` every create_scheduler_v2 keyword; `""` is the top level."""
    from metaformer.engine.schema import SCHEMAS, RunConfig, SchedConfig

    if group == "":
        return [f.name for f in fields(RunConfig)]
    if group == "data":
        return None  # a data set reads its own keys, and checks them (check_data)
    known = [f.name for f in fields(SCHEMAS[group])]
    if SCHEMAS[group] is SchedConfig:
        from timm.scheduler import create_scheduler_v2

        given = ("optimizer", "num_epochs", "updates_per_epoch")
        known += [k for k in inspect.signature(create_scheduler_v2).parameters if k not in (*known, *given)]
    return known


def check_schema(cfg: DictConfig) -> None:
    """Raise ConfigError for a key that the schema (metaformer/engine/schema.py) does not have: `+key=value` can
    add one to any node, and the code would never read it."""
    from metaformer.engine.schema import SCHEMAS

    for group in ("", *SCHEMAS):
        node = cfg.get(group) if group else cfg
        known = known_keys(group)
        if not isinstance(node, DictConfig) or known is None:
            continue
        for key in node:
            if key not in known and not (group == "" and key == "hydra"):
                where = f"{group}.{key}" if group else key
                takes = f"{group} takes" if group else "the top level takes"
                raise ConfigError(f"unknown key {where}; {takes}: {_choices(known)}")


def normalize_argv(argv: list[str]) -> list[str]:
    """`mixer_options.NAME.OPTION=VALUE` as `++...`: the options are the mixers' (their signatures hold the
    defaults), so the config starts with none and setting one adds it."""
    return [f"++{a}" if a.startswith("mixer_options.") and "=" in a else a for a in argv]


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
                    raise ConfigError(f"unknown {plain} '{option}'; choose from: {_choices(names)}")
