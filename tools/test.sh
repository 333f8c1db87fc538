#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the checks CI runs: lint, type-check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check edge_vos tools tests
# Type-check the backends (the TensorRT one against the TensorRT 10 API stubs: catches API misuse without a GPU).
.venv/bin/python stubs/install_tensorrt_stubs.py
.venv/bin/mypy --follow-imports=silent edge_vos/backends
.venv/bin/python -m pytest -q "$@"
