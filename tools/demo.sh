#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the edge-vos service on the bundled default source (a
# procedurally rendered scene with its own first-frame mask) and the bundled default weights, publishing
# masks on tcp://127.0.0.1:5555 and taking commands on tcp://127.0.0.1:5556. Stop with Ctrl-C.
#
#   bash tools/demo.sh                          # configs/cpu.yaml
#   bash tools/demo.sh --source video.mp4 --prompt-mask first.png   # any file, folder, camera or URL
#   bash tools/demo.sh --weights random         # untrained network: checks the pipeline, masks are noise
#
# Watch it in a browser:             http://127.0.0.1:8080/  (the live view; VIEW=none to turn it off,
#                                   VIEW=0.0.0.0:8080 to reach it from other machines, with a token)
# or from another terminal:         .venv/bin/edge-vos subscribe
# (or save the masks:               .venv/bin/edge-vos subscribe --save runs/demo-masks --count 50)
# Add, remove objects while it runs: .venv/bin/python tools/demo_control.py add-box 3 40 30 120 110
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/edge-vos ]; then
  bash tools/setup.sh
fi
VIEW=${VIEW:-127.0.0.1:8080}
view_args=()
echo "edge-vos: masks on tcp://127.0.0.1:5555, commands on tcp://127.0.0.1:5556"
if [ "$VIEW" != none ]; then
  view_args=(--view "$VIEW")
  echo "watch and steer it in a browser: http://$VIEW/"
fi
echo "watch from another terminal:  .venv/bin/edge-vos subscribe"
echo "send commands:                .venv/bin/python tools/demo_control.py stats   (add-box, remove, ...)"
exec .venv/bin/edge-vos run --config configs/cpu.yaml "${view_args[@]}" "$@"
