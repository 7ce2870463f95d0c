#!/usr/bin/env bash
# Install (reusing .venv) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true TORCH_EXTENSIONS_DIR="$PWD/.torch_extensions" RAY_AUTH_MODE=disabled
exec .venv/bin/python -m pytest -q "$@"
