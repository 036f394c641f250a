"""Hydra sweepers over run.py's task: the adaptive study (`hydra/sweeper=adaptive`, adaptive.py) and the search
for a per-stage hybrid with Optuna (`hydra/sweeper=search`, search.py). What they share (launching batches of
named run folders through any launcher, reading results.json back, continuing a stopped sweep) is base.py.

`hydra_plugins` is a namespace package (no __init__.py of its own), as Hydra's plugin discovery requires: Hydra
imports every module under it and finds these Sweeper classes, which conf/hydra/sweeper/*.yaml name.
"""
