#!/usr/bin/env bash
# Sets up .venv (idempotent) and runs the checks CI runs: lint, type-check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check edge_vos tools tests
.venv/bin/python -m pytest -q "$@"
