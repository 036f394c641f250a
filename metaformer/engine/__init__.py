"""The training engine: from a composed Hydra config to a run folder (results.json, metrics.csv, checkpoints).

`train(cfg)` is the one entry point; run.py calls it under Hydra, and a notebook can call it with a config from
Hydra's compose API and `output_dir=PATH`. The modules, in the order a run meets them: `command_line` (run.py's
checks before Hydra composes), `schema` (the typed config groups), `validation` (a composed config checked by
building it on the meta device), `distributed` (process groups, devices, threads), `data` (datasets and
loaders), `parts` (the model, optimizer, scheduler, loss, EMA and loggers a config describes), `loop` (one epoch,
evaluation), `state` (the resumable state: what last.pt holds), `checkpoint` (checkpoint files), `loggers` (CSV,
console, wandb), `results` (the run folder's results.json and .hydra/), `preemption` (signals, when to stop,
SLURM requeue) and `trainer`, which wires them together.
"""

from metaformer.engine.results import read_results
from metaformer.engine.trainer import train
from metaformer.engine.validation import validate
from metaformer.errors import ConfigError

__all__ = ["ConfigError", "read_results", "train", "validate"]
