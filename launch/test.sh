#!/usr/bin/env bash
# Install (reusing .venv) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true TORCH_EXTENSIONS_DIR="$PWD/.torch_extensions" RAY_AUTH_MODE=disabled
# Imports point down the layers (pyproject's [tool.importlinter]); fails fast, before the slow suite.
.venv/bin/lint-imports --no-cache
# Two workers (pytest-xdist; LONGSHORT_TEST_WORKERS=0 runs in this process): one test file per unit of work
# (tests/conftest.py), so a file's fixtures run once. Alone, the suite keeps 2 cores only ~60% busy (Ray start-ups,
# subprocesses, checkpoint writes): the second worker fills the rest.
exec .venv/bin/python -m pytest -q -n "${LONGSHORT_TEST_WORKERS:-2}" --durations=25 "$@"
