#!/usr/bin/env bash
# The main job on the embedded default: install, then the whole pipeline (bootstrap → chunk → score → coldstart → sft →
# rl → eval → export) on ray_configs/tiny.yaml, ending with the results table. Re-running skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export WANDB_MODE="${WANDB_MODE:-offline}" TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.torch_extensions}"
exec .venv/bin/longshort run ray_configs/tiny.yaml "$@"
