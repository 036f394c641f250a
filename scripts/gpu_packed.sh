#!/usr/bin/env bash
# The mini ablation table (conf/ablation/, +experiment=mini) with its seeds packed: each row trains K seeds in one
# process as one vmapped model (trainer.pack_seeds=K, metaformer/engine/packed.py), on a GPU by default; prints the
# wall time of the training and of each part. BatchNorm cannot be packed (its running statistics), so the norm_bn
# row runs its K seeds one after another, unpacked. Then the table and plots, as experiments/mini.sh makes them.
#
#   scripts/gpu_packed.sh                           # 4 seeds (0-3) of every row on cuda
#   K=5 SWEEP=multirun/mini_packed scripts/gpu_packed.sh
#   scripts/gpu_packed.sh --device cpu trainer.epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=1
#
# Extra arguments after the options are Hydra overrides for every job; N_JOBS (default 1) jobs run at a time.
# Fashion-MNIST comes from /usr/share/datasets/fashion-mnist (make data), or data.root=PATH as an override.
# Rows with attention warn that vmap has no batching rule for the CPU's fused attention (it loops over the seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
K=${K:-4}
SEED=${SEED:-0}
SWEEP=${SWEEP:-multirun/mini_packed}
DEVICE=cuda
if [[ "${1:-}" == "--device" ]]; then
  DEVICE=$2
  shift 2
fi
LAST=$((SEED + K - 1))
SEEDS=$(seq -s, "$SEED" "$LAST")
ROWS=$(cd conf/ablation && ls *.yaml | sed 's/\.yaml$//' | grep -vx norm_bn | paste -sd, -)
COMMON=(+experiment=mini hydra.launcher.n_jobs="${N_JOBS:-1}" trainer.device="$DEVICE" "$@")

start=$(date +%s.%N)
"$PY" run.py -m "${COMMON[@]}" seed="$SEED" trainer.pack_seeds="$K" "+ablation=$ROWS" \
  hydra.sweep.dir="$SWEEP/packed"
packed=$(date +%s.%N)
"$PY" run.py -m "${COMMON[@]}" seed="$SEEDS" +ablation=norm_bn hydra.sweep.dir="$SWEEP/norm_bn"
end=$(date +%s.%N)

"$PY" -m analysis "$SWEEP" --out "$SWEEP/report"
awk -v a="$start" -v b="$packed" -v c="$end" -v k="$K" -v d="$DEVICE" -v rows="$ROWS" 'BEGIN {
  n = split(rows, r, ",")
  printf "gpu_packed: %d rows x %d seeds packed on %s: %.1f s; norm_bn x %d seeds unpacked: %.1f s; training wall time %.1f s\n",
    n, k, d, b - a, k, c - b, c - a
}'
