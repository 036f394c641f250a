"""Checks on a composed run config, made before any data is loaded or any folder is written.

`validate` looks at what a typo or a wrong guess produces (an unknown mixer/norm/act, a mixer list of the wrong
length, an option a mixer does not take, a non-positive epoch count or batch size, a missing or truncated data
file, a resume path that is not there) and raises `ConfigError` with one line saying what was wrong and what
would be right. run.py prints that line and exits non-zero, instead of a traceback. Some checks must happen
before Hydra itself acts, so they live here too: `check_argv` catches an unknown config-group option (model=,
data=, ...), a mixer option the config does not have and a launcher plugin that is not installed, which Hydra
would report in several lines; `PreflightCallback` makes sure the output folder can be written before Hydra
creates it.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from metaformer.fast import PRECISION_CHOICES

# Keys of the `model` node that are ours, not create_model keywords.
MODEL_META_KEYS = ("name",)
# create_model keywords that take one value or one per stage (`depths` sets the number of stages).
PER_STAGE_MODEL_KEYS = (
    "dims", "mlp_ratios", "layer_scale_init", "res_scale_init", "pos_embed", "residual", "channel_mlp",
)  # fmt: skip
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Parameters a mixer receives from the model, not from mixer_options.
MIXER_BUILT_IN = ("self", "dim", "resolution")

# Launcher plugins a user may ask for, and the package that provides each.
LAUNCHER_PLUGINS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


class ConfigError(ValueError):
    """A run config that cannot train; the message is one line. `exit_code` 2: a bad value, 1: the environment."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def report(message: str) -> None:
    """Print `prog: error: message` on stderr, as argparse does."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr, flush=True)


def fail(message: str, exit_code: int = 2) -> NoReturn:
    """Report `message` and exit with `exit_code`."""
    report(message)
    raise SystemExit(exit_code)


def _choices(names: list[str]) -> str:
    return ", ".join(names)


def stage_mixers(mixer: Any, num_stages: int) -> list[str]:
    """The per-stage list of mixer names: one name for every stage, or a list checked for its length."""
    return stage_names("mixer", mixer, num_stages, "pool", "[pool,pool,attn,attn]")


def stage_names(key: str, value: Any, num_stages: int, one: str, four: str) -> list[str]:
    """The per-stage list of names for `key` (mixer, norm, act): one name for every stage, or a list of the
    right length; `one` and `four` (for four stages) are examples for the error message."""
    if isinstance(value, str):
        return [value] * num_stages
    if isinstance(value, (list, tuple, ListConfig)):
        names = [str(m) for m in value]
        example = f" ({key}={four})" if num_stages == 4 else ""
        _check_length(key, names, num_stages, f"give one {key} for all stages ({key}={one}) or exactly "
                      f"{num_stages}{example}")  # fmt: skip
        return names
    raise ConfigError(f"{key} must be a name or a list of {num_stages} names, got {value!r}")


def _check_length(key: str, values: list, num_stages: int, hint: str) -> None:
    if len(values) != num_stages:
        raise ConfigError(
            f"{key}={_fmt_list([str(v) for v in values])} has {len(values)} entries but the model has "
            f"{num_stages} stages; {hint}"
        )


def _fmt_list(names: list[str]) -> str:
    return "[" + ",".join(names) + "]"


def _check_name(kind: str, name: Any, registered: list[str]) -> None:
    # `pkg.module:Class` names code that need not be registered; the model factory imports it.
    if not isinstance(name, str) or (name not in registered and ":" not in name):
        raise ConfigError(f"unknown {kind} {name!r}; choose from: {_choices(registered)}")


@dataclass(frozen=True)
class RunSpec:
    """What validation resolved: the per-stage mixers and the keywords for create_model."""

    mixers: list[str]
    model_kwargs: dict[str, Any]


def num_stages(cfg: DictConfig) -> int:
    """The number of stages the configured model will have (4, or the length of a `model.depths` override)."""
    depths = cfg.model.get("depths")
    return len(depths) if depths is not None else 4


def model_kwargs(cfg: DictConfig, mixers: list[str]) -> dict[str, Any]:
    """Keywords for `create_model`: the top-level mixer/norm/act/mixer_options and every extra `model` key."""
    extra = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(extra, dict)
    for key in MODEL_META_KEYS:
        extra.pop(key, None)
    options = cfg.get("mixer_options")
    options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    assert isinstance(options, dict)
    used = {name: dict(opts) for name, opts in options.items() if name in mixers and opts}
    mixer = mixers[0] if len(set(mixers)) == 1 and isinstance(cfg.mixer, str) else list(mixers)
    norm, act = (v if isinstance(v, str) else list(v) for v in (cfg.norm, cfg.act))
    return {"mixer": mixer, "norm": norm, "act": act, "mixer_options": used, **extra}


def validate(cfg: DictConfig, run_dir: Path | None = None) -> RunSpec:
    """Check `cfg` and return what it resolves to; raise `ConfigError` (one line) on the first problem."""
    from metaformer import list_acts, list_models, list_norms
    from metaformer.engine.data import check_data
    from mixers import list_mixers

    _check_name("model", cfg.model.get("name"), list_models())
    stages = num_stages(cfg)
    mixers = stage_mixers(cfg.mixer, stages)
    for name in mixers:
        _check_name("mixer", name, list_mixers())
    for name in stage_names("norm", cfg.norm, stages, "gn", "[gn,gn,ln,ln]"):
        _check_name("norm", name, list_norms())
    for name in stage_names("act", cfg.act, stages, "gelu", "[gelu,gelu,relu,relu]"):
        _check_name("act", name, list_acts())
    for key in PER_STAGE_MODEL_KEYS:
        value = cfg.model.get(key)
        if isinstance(value, ListConfig):
            _check_length(
                f"model.{key}", list(value), stages, f"give one value for all stages or exactly {stages}"
            )
    check_schema(cfg)
    _check_trainer(cfg.trainer)
    _check_optimizer(cfg.optim)
    _check_resume(cfg.get("resume"))
    if cfg.logger.get("name") == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger=wandb needs wandb: pip install wandb", exit_code=1)
    kwargs = model_kwargs(cfg, mixers)
    for name, options in kwargs["mixer_options"].items():
        check_mixer_options(name, list(options))
    try:
        check_data(cfg.data)
    except OSError as e:  # missing, truncated or corrupt files
        raise ConfigError(_one_line(e), exit_code=1) from e
    except ValueError as e:
        raise ConfigError(_one_line(e)) from e
    if run_dir is not None:
        check_writable(run_dir)
    return RunSpec(mixers=mixers, model_kwargs=kwargs)


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


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    return " ".join(text.split())


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
    installed, an option of a config group (model=, data=, ...) that has no file in conf/, or an option under
    mixer_options that the config does not have."""
    check_launcher(argv)
    try:
        check_overrides(argv, conf_dir)
        check_composes(argv, conf_dir)
    except ConfigError as e:
        fail(str(e), e.exit_code)


def check_composes(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose the config as run.py will, and raise ConfigError with Hydra's/OmegaConf's complaint in one line
    (a value of the wrong type, a key that is not there: both name the key). Sweeps and Hydra's own flags
    (-m, --cfg, ...) are left to Hydra."""
    from hydra import compose, initialize_config_dir

    if any(a.startswith("-") for a in argv):
        return
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=argv)
    except Exception as e:  # hydra.errors.ConfigCompositionException, omegaconf's errors
        text = "\n".join(str(x) for x in (e, e.__cause__) if x is not None)  # Hydra's words, then OmegaConf's
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        lines = [
            line for line in lines if not line.startswith(("object_type=", "reference_type=", "Set the env"))
        ]
        raise ConfigError("; ".join(lines) or type(e).__name__) from e
    check_schema(cfg)


def check_schema(cfg: DictConfig) -> None:
    """Raise ConfigError for a key that a typed group (metaformer/engine/schema.py) does not have: `+key=value`
    can add one to any node, and the code would never read it."""
    from metaformer.engine.schema import SCHEMAS

    for group, schema in SCHEMAS.items():
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        known = [f.name for f in fields(schema)]
        for key in node:
            if key not in known:
                raise ConfigError(f"unknown key {group}.{key}; {group} takes: {_choices(known)}")


def check_overrides(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise ConfigError for a `group=option` or `mixer_options.M.OPT=...` override Hydra cannot apply."""
    if any(a.startswith(("hydra.searchpath", "--config-dir", "-cd", "--config-path", "-cp")) for a in argv):
        return  # configs from elsewhere: let Hydra judge
    groups = {d.name for d in conf_dir.iterdir() if d.is_dir()}
    defaults = OmegaConf.load(conf_dir / "config.yaml").get("mixer_options") or {}
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
                    names = sorted(p.stem for p in (conf_dir / plain).glob("*.yaml"))
                    raise ConfigError(f"unknown {plain} '{option}'; choose from: {_choices(names)}")
        match = re.fullmatch(r"mixer_options\.([^.]+)\.([^.]+)", key)  # no '+': Hydra needs the key to exist
        if match and match.group(2) not in (defaults.get(match.group(1)) or {}):
            _missing_mixer_option(match.group(1), match.group(2), value)


def _missing_mixer_option(name: str, option: str, value: str) -> None:
    from mixers import list_mixers

    if name not in list_mixers():
        raise ConfigError(
            f"unknown mixer '{name}' in mixer_options.{name}.{option}; registered: {_choices(list_mixers())} "
            f"(a mixer of your own takes +mixer_options.{name}.{option}={value})"
        )
    check_mixer_options(name, [option])
    raise ConfigError(
        f"mixer_options.{name}.{option} is not in the config; add it with +mixer_options.{name}.{option}={value}"
    )
