#!/usr/bin/env bash
# The three checks a tracker change is judged on (docs/model-card.md, "How a change is chosen"), at the
# shipped CPU config unless --config says otherwise:
#   1. DAVIS-2016 val-dev (480p input, the shipped working size 360);
#   2. the 6 training sequences that configs/train-cpu-coco.yaml leaves out (240p input: the tracker runs
#      at 240, it never scales up); unseen only by weights trained without them (a control run);
#   3. the synthetic set of tools/bench_eval.py (3 objects + 2 look-alike distractors, 240x432).
# With --only seen: the other 24 training sequences (240p). The bundled weights were trained on them, so they
# judge inference settings (the prior, memory, readout options), never weights.
# Usage: bash tools/eval_checks.sh WEIGHTS OUT_DIR [--config TRACKER_YAML] [--only valdev|leftout|synth|seen]
# Writes OUT_DIR/{valdev,leftout,synth,seen}/metrics.json and per-sequence.csv; prints J&F per check.
set -euo pipefail
cd "$(dirname "$0")/.."
weights=${1:?usage: tools/eval_checks.sh WEIGHTS OUT_DIR [--config FILE] [--only CHECK]}
out=${2:?usage: tools/eval_checks.sh WEIGHTS OUT_DIR [--config FILE] [--only CHECK]}
shift 2
config=configs/cpu.yaml
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python}
edge_vos=("$py" -m edge_vos.cli)
davis=../shared/data/davis2016
left_out=$("$py" -c "import yaml; print(','.join(yaml.safe_load(open('configs/train-cpu-coco.yaml'))['data']['exclude_sequences']))")
synth=runs/eval-data/synthetic
if [ ! -d "$synth" ]; then
  "$py" -c "import sys; sys.path.insert(0, '.'); from tools.bench_eval import SYNTHETIC; \
from edge_vos.data.synthetic import write_synthetic_davis; write_synthetic_davis('$synth', **SYNTHETIC)"
fi
run() {  # NAME ARGS...
  local name=$1; shift
  if [ -n "$only" ] && [ "$only" != "$name" ]; then return; fi
  "${edge_vos[@]}" eval "$@" --weights "$weights" --config "$config" --out "$out/$name" --no-progress >/dev/null
  "$py" -c "import json; m = json.load(open('$out/$name/metrics.json')); print('$name', round(m['J&F'], 2))"
}
run valdev --data "$davis" --split val-dev --res 480p
run leftout --data "$davis" --split train --res 240p --sequences "$left_out"
run synth --data "$synth" --split val --res 240p
if [ "$only" = seen ]; then
  seen=$(grep -v -x -F -f <(tr ',' '\n' <<< "$left_out") "$davis/ImageSets/2016/train.txt" | paste -sd, -)
  run seen --data "$davis" --split train --res 240p --sequences "$seen"
fi
