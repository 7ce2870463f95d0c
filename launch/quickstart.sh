#!/usr/bin/env bash
# The main job on the embedded default: install, then run the furthest pipeline stage that exists today.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export WANDB_MODE="${WANDB_MODE:-offline}" TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.torch_extensions}"
exec .venv/bin/longshort bootstrap ray_configs/tiny.yaml "$@"
