#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the checks CI runs: lint, type-check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
# A real headless Chromium for the web view's browser tests (apt, when absent and possible).
bash tools/install_browser.sh
.venv/bin/ruff check edge_vos tools tests
# Type-check the backends and the web view (the TensorRT backend against the TensorRT 10 API stubs: catches API misuse without a GPU).
.venv/bin/python stubs/install_tensorrt_stubs.py
.venv/bin/mypy --follow-imports=silent edge_vos/backends edge_vos/view
.venv/bin/python -m pytest -q "$@"
