"""The training engine: from a composed Hydra config to a run folder (results.json, metrics.csv, checkpoints).

`train(cfg)` is the one entry point; run.py calls it under Hydra, and a notebook can call it with a config from
Hydra's compose API and `output_dir=PATH`. The modules, in the order a run meets them: `config` (validation),
`distributed` (process groups, devices, threads), `data` (datasets and loaders), `parts` (the model, optimizer,
scheduler, loss, EMA and loggers a config describes), `loop` (one epoch, evaluation), `state` (the resumable
state: what last.pt holds), `checkpoint` (writing and reading checkpoint files), `loggers` (CSV, console, wandb),
`results` (results.json), `preemption` (signals, SLURM requeue), `schema` (the typed config groups) and
`trainer`, which wires them together.
"""

from metaformer.engine.config import ConfigError, validate
from metaformer.engine.results import read_results
from metaformer.engine.trainer import train

__all__ = ["ConfigError", "read_results", "train", "validate"]
