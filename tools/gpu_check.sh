#!/usr/bin/env bash
# One prepared check for a CUDA machine: every CUDA test, then the readout and tracker benchmarks in fp16,
# all written to docs/gpu.md (commit it). Needs a CUDA build of torch and ../shared/data/davis2016.
#   bash tools/gpu_check.sh            # full run
#   QUICK=1 bash tools/gpu_check.sh    # smoke run of the benchmarks (the tests run in full)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=docs/gpu.md
LOG=$(mktemp -d)
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: CUDA is not available to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)); nothing run" >&2
  exit 2
fi
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
torch_info=$("$PY" -c "import torch; print(torch.__version__, 'CUDA', torch.version.cuda)")
status=0
# 1. every test marked gpu (skips are listed with their reasons by -rs)
"$PY" -m pytest -m gpu -rs -q tests >"$LOG/tests.txt" 2>&1 || status=1
# 2. readouts (fp16) and the tracker with each readout (precision fp16): tables into $OUT's readout-gpu section
bench_args=(--device cuda --no-write)
[ -n "${QUICK:-}" ] && bench_args+=(--quick)
"$PY" -m tools.bench_readout "${bench_args[@]}" >"$LOG/bench.txt" 2>"$LOG/bench.err" || status=1
# 3. several cameras: the key encoder's throughput at batch 1/2/4/8 (what batching the ready streams' frames
#    would gain) and the service with 1 and 4 streams in one process (configs/desktop-gpu.yaml)
streams_seconds=30
[ -n "${QUICK:-}" ] && streams_seconds=9
"$PY" tools/bench_streams.py --config configs/desktop-gpu.yaml --streams 4 --no-separate --seconds "$streams_seconds" \
  --key-encoder-batches 1 2 4 8 --no-doc --markdown "$LOG/streams.md" --out "$LOG/streams" \
  >"$LOG/streams.txt" 2>&1 || status=1
{
  echo "# GPU checks"
  echo
  echo "Written by \`tools/gpu_check.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'): ${gpu:-unknown GPU}; torch ${torch_info}."
  echo "Exit status of the checks: ${status} (0: every CUDA test passed and the benchmarks ran)."
  echo
  echo "## CUDA tests (\`pytest -m gpu -rs\`)"
  echo
  echo '```'
  tail -n 40 "$LOG/tests.txt"
  echo '```'
  echo
  if [ -s "$LOG/bench.txt" ]; then
    cat "$LOG/bench.txt"
  else
    echo "## Readout benchmark failed"
    echo
    echo '```'
    tail -n 40 "$LOG/bench.err"
    echo '```'
  fi
  echo
  if [ -s "$LOG/streams.md" ]; then
    cat "$LOG/streams.md"
  else
    echo "## Several cameras: benchmark failed"
    echo
    echo '```'
    tail -n 40 "$LOG/streams.txt"
    echo '```'
  fi
} >"$OUT"
echo "gpu_check: wrote $OUT (status $status)"
exit $status
