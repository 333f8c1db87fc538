#!/usr/bin/env bash
# Trains the tracker's recipe (configs/train-gpu.yaml: configs/train-cpu-coco.yaml's data with larger
# batches and crops, bf16 mixed precision) on one CUDA device in at most 8 minutes, and writes the weights
# (OUT/final.safetensors, snapshots OUT/step<N>.safetensors) and the log (OUT/train.log, OUT/log.csv)
# under OUT. Needs only this repository (its .venv, or a python with its dependencies and a CUDA torch)
# and ../shared/data (davis2016, static). Without CUDA it stops at once and says so.
#   bash tools/train_gpu.sh OUT [--set KEY=VALUE ...]      # extra overrides go to `edge-vos train`
#   bash tools/train_gpu.sh runs/gpu-clean --set model.init_weights= --set model.init=auto   # from ImageNet
# Then score it: bash tools/eval_checks.sh OUT/final.safetensors runs/eval/gpu (docs/model-card.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash tools/train_gpu.sh OUT [--set KEY=VALUE ...]}
shift
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "train_gpu: CUDA is not available to $py ($("$py" -c 'import torch; print("torch", torch.__version__, "CUDA build:", torch.version.cuda)' 2>/dev/null || echo 'torch not importable')); nothing trained. This script needs a CUDA device; on a CPU use configs/train-cpu-coco.yaml (docs/training.md)." >&2
  exit 2
fi
for need in ../shared/data/davis2016 ../shared/data/static; do
  [ -d "$need" ] || { echo "train_gpu: $need not found (the training data; see docs/training.md)" >&2; exit 2; }
done
mkdir -p "$out"
{
  echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC') tools/train_gpu.sh $out $*"
  echo "# $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  echo "# $("$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"
  echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$out/train.log"
start=$(date +%s)
# The config's time_limit_s (7 min) ends training and exports; the outer timeout is the 8-minute bound.
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} timeout 480 "$py" -m edge_vos.cli train \
  --config configs/train-gpu.yaml --out "$out" --no-progress "$@" >>"$out/train.log" 2>&1 || {
  status=$?
  echo "train_gpu: training failed (exit $status); the end of $out/train.log:" >&2
  tail -n 20 "$out/train.log" >&2
  exit "$status"
}
echo "train_gpu: $(( $(date +%s) - start )) s; weights $out/final.safetensors; log $out/train.log, $out/log.csv"
tail -n 3 "$out/log.csv"
