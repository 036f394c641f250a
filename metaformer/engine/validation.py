"""Checks on a composed run config, made before any data is loaded or any folder is written.

The types and keys are the schema's (`schema.py`; `check_schema` refuses a key the code would not read);
`validate` checks the values by building what the config describes: the model with `create_model` on the `meta`
device (no memory, no weights), so its rules (stage lists, registered names, mixer options) are the model's own,
the data set's options through its registry (`check_data`), plus what only a run has (epochs, a precision, a
resume path, a writable folder). Each problem is a `ConfigError` with one line saying what was wrong and what
would be right; run.py prints it and exits non-zero (metaformer/errors.py). `build_model` is the one place a run's
model is built, here on the meta device and in `parts.py` for training, with one sizing rule.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from timm.optim import list_optimizers
from timm.scheduler import create_scheduler_v2
from torch.nn.modules.batchnorm import _BatchNorm

from metaformer.engine.data import check_data
from metaformer.engine.packing import check_packable
from metaformer.engine.schema import SCHEMAS, RunConfig, SchedConfig
from metaformer.errors import ConfigError, one_line, unknown_key_message
from metaformer.fast import PRECISION_CHOICES
from metaformer.model import MetaFormer
from metaformer.presets import create_model
from mixers import MIXERS

__all__ = ["ConfigError", "RunSpec", "build_model", "check_schema", "validate"]

log = logging.getLogger(__name__)

# Parameters a mixer receives from the model, not from mixer_options.
MIXER_BUILT_IN = ("self", "dim", "resolution")
# create_model keywords that the data set decides unless model.* says otherwise.
DATA_SIZED = ("num_classes", "in_chans", "img_size")
# Block keys of the top level (null: the preset's own), as create_model keywords.
BLOCK_KEYS = ("mixer", "norm", "act")


def _choices(names: list[str]) -> str:
    return ", ".join(names)


@dataclass(frozen=True)
class RunSpec:
    """What validation resolved: the keywords for create_model and the block they build, stage by stage."""

    model_kwargs: dict[str, Any]
    mixers: list[str]
    norms: list[str]
    acts: list[str]
    resolutions: list[tuple[int, int]]


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Keywords for `create_model`: every `model` key that is set (an unset one, `???`, keeps the preset's value),
    the top-level mixer/norm/act that are set (null: the preset's) and mixer_options; a `model.depths` list also
    sets the number of stages."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    extra = {k: v for k, v in model.items() if k != "name" and not OmegaConf.is_missing(cfg.model, k)}
    options = cfg.get("mixer_options")
    options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    assert isinstance(options, dict)
    if isinstance(extra.get("depths"), list) and "num_stages" not in extra:
        extra["num_stages"] = len(extra["depths"])  # model.depths=[1,1,1]: three stages
    block = {k: v if isinstance(v, str) else list(v) for k in BLOCK_KEYS if (v := cfg.get(k)) is not None}
    return {**block, "mixer_options": {name: dict(o) for name, o in options.items() if o}, **extra}


def data_sizes(data: Mapping[str, Any] | Any) -> dict[str, int]:
    """What sizes the model from the data: num_classes, in_chans and img_size, where known (a data config may
    leave num_classes to the class folders; a built data set knows all three)."""
    get = data.get if isinstance(data, Mapping | DictConfig) else lambda k: getattr(data, k, None)
    sizes = {}
    for key in DATA_SIZED:
        if isinstance(data, DictConfig) and OmegaConf.is_missing(data, key):
            continue
        value = get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            sizes[key] = value
    return sizes


def build_model(name: str, kwargs: dict[str, Any], sizes: dict[str, int]) -> MetaFormer:
    """`create_model(name)` sized by the data (model.* keys win over the data's sizes); ConfigError with the
    model's own one-line complaint."""
    try:
        return create_model(name, **{**sizes, **kwargs})
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(one_line(e)) from e


def validate(cfg: DictConfig, run_dir: Path | None = None) -> RunSpec:
    """Check `cfg` and return what it resolves to; raise `ConfigError` (one line) on the first problem."""
    check_schema(cfg)
    kwargs = model_kwargs(cfg)
    for name, options in kwargs["mixer_options"].items():
        check_mixer_options(name, list(options))
    with torch.device("meta"):
        model = build_model(cfg.model.name, kwargs, data_sizes(cfg.data))
    _check_set(cfg)
    _check_trainer(cfg.trainer)
    _check_batch_norm(model, cfg.trainer.batch_size)
    check_packable(cfg, model)  # trainer.pack_seeds > 1: what a vmapped pack of seeds cannot train
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
    return RunSpec(
        model_kwargs=kwargs,
        mixers=list(model.stage_mixers),
        norms=list(model.stage_norms),
        acts=list(model.stage_acts),
        resolutions=[tuple(r) for r in model.stage_resolutions],
    )


def degenerate_mixing(cfg: DictConfig, spec: RunSpec) -> str | None:
    """A warning when a token mixer the user chose (the top-level `mixer`) lands on a 1x1 grid, where it has one
    token to mix (attention over one token is a linear layer; pooling is zero); None otherwise. A preset's own
    mixers are its design and go unremarked."""
    if cfg.get("mixer") is None:
        return None
    flat = [
        i + 1 for i, (m, r) in enumerate(zip(spec.mixers, spec.resolutions, strict=True)) if m != "identity"
    ]
    flat = [i for i in flat if tuple(spec.resolutions[i - 1]) == (1, 1)]
    if not flat:
        return None
    stages = ", ".join(f"stage {i} ({spec.mixers[i - 1]})" for i in flat)
    grids = "/".join(str(h) for h, _ in spec.resolutions)
    return (
        f"{stages} runs on a 1x1 grid (grids {grids} px for this model and image size): one token, nothing to "
        f"mix; model=poolformer_cpu has grids twice as large"
    )


def _check_batch_norm(model: MetaFormer, batch_size: int) -> None:
    """Raise ConfigError where a BatchNorm would see one value per channel in training (batch x grid pixels),
    which torch refuses only at the first step."""
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
    def positive_int(key: str) -> None:  # the type is the schema's
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
    if str(t.device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={t.device} but no CUDA device is visible; use trainer.device=auto")
    for key in ("limit_train_batches", "limit_val_batches"):
        value = t.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ConfigError(f"trainer.{key} must be a number of batches, a fraction in (0, 1], or null")
        if isinstance(value, float) and value > 1:
            raise ConfigError(f"trainer.{key}={value}: a float is a fraction of the epoch, in (0, 1]")
    if t.get("grad_clip") is not None and t.grad_clip <= 0:
        raise ConfigError(f"trainer.grad_clip must be positive or null, got {t.grad_clip}")


def _check_optimizer(optim: DictConfig) -> None:
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


def check_writable(run_dir: str | Path, create: bool = True) -> None:
    """Create `run_dir` if needed and prove a file can be written there; raise ConfigError if not. With
    `create=False` a missing `run_dir` is not made: a probe folder in its nearest existing parent proves it could
    be, and nothing is left behind (a command refused later leaves no empty folder)."""
    path = Path(run_dir)
    try:
        if create or path.exists():
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        else:
            parent = next(p for p in path.absolute().parents if p.exists())
            probe = parent / f".write-test-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"cannot write the output folder {path}: {reason}", exit_code=1) from e


def known_keys(group: str) -> list[str] | None:
    """The keys node `group` may have (None: open by design, see schema.py): its dataclass's fields, and for
    `sched` every create_scheduler_v2 keyword; `""` is the top level."""
    if group == "":
        return [f.name for f in fields(RunConfig)]
    if group == "data":
        return None  # a data set reads its own keys, and checks them (check_data)
    known = [f.name for f in fields(SCHEMAS[group])]
    if SCHEMAS[group] is SchedConfig:
        given = ("optimizer", "num_epochs", "updates_per_epoch")
        known += [k for k in inspect.signature(create_scheduler_v2).parameters if k not in (*known, *given)]
    return known


def check_schema(cfg: DictConfig) -> None:
    """Raise ConfigError for a key that the schema does not have: `+key=value` can add one to any node, and the
    code would never read it."""
    for group in ("", *SCHEMAS):
        node = cfg.get(group) if group else cfg
        known = known_keys(group)
        if not isinstance(node, DictConfig) or known is None:
            continue
        for key in node:
            if key not in known and not (group == "" and key == "hydra"):
                where = f"{group}.{key}" if group else key
                raise ConfigError(unknown_key_message(where, {g: known_keys(g) for g in ("", *SCHEMAS)}))
