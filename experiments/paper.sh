#!/usr/bin/env bash
# The paper-scale ablation table: every row of conf/ablation/ on ImageNet-1k with the paper's recipe, then the
# table and plots. Needs GPUs; pass the data root and a launcher, e.g. on SLURM:
#   bash experiments/paper.sh data.root=/data/imagenet hydra/launcher=submitit_slurm \
#        hydra.launcher.gpus_per_node=8 hydra.launcher.tasks_per_node=8 hydra.launcher.timeout_min=4320
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SWEEP=${SWEEP:-multirun/paper}
"$PY" run.py -m +experiment=paper '+ablation=glob(*)' seed=0 hydra.sweep.dir="$SWEEP" "$@"
"$PY" -m analysis "$SWEEP" --out "$SWEEP/report"
