#!/usr/bin/env bash
# Install (reusing .venv) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true TORCH_EXTENSIONS_DIR="$PWD/.torch_extensions" RAY_AUTH_MODE=disabled
# Imports point down the layers (pyproject's [tool.importlinter]); fails fast, before the slow suite.
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest -q --durations=25 "$@"
