#!/usr/bin/env bash
# The mini ablation table: every row of conf/ablation/ x 2 seeds on Fashion-MNIST with the CPU preset
# (about an hour on 2 CPU cores), then the table and plots. Extra arguments are Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SWEEP=${SWEEP:-multirun/mini}
"$PY" run.py -m +experiment=mini '+ablation=glob(*)' seed=0,1 hydra.sweep.dir="$SWEEP" "$@"
"$PY" -m analysis "$SWEEP" --out "$SWEEP/report"
