#!/usr/bin/env bash
# Submit a longshort command to a Ray cluster with `ray job submit`, shipping this checkout as the job's working dir.
#
#   launch/submit.sh [--address URL] [--env NAME]... [--pip FILE] [--no-wait] -- longshort <command> CONFIG [key=value ...]
#
#   --address URL   the cluster's dashboard (default: $RAY_ADDRESS, else http://127.0.0.1:8265)
#   --env NAME      forward this environment variable to the job (e.g. --env WANDB_API_KEY); nothing secret is sent
#                   unless named here
#   --pip FILE      a requirements file the cluster installs into the job's env (when the image lacks longshort's deps)
#   --no-wait       return after submission (follow with `ray job logs --follow ID`)
#   --entrypoint-num-gpus N, --entrypoint-num-cpus N, --entrypoint-memory BYTES, --entrypoint-resources JSON
#                   what the node that runs the command must have (ray job submit's own options). The command is
#                   the driver: every training rank and engine is a Ray actor placed by its own resources, so it
#                   needs no GPU (SoftCoT's eval and stages with `engines.workers: 0` compute in it, though)
#   any other option of `ray job submit` (e.g. --metadata-json '{"team": "x"}') goes to it unchanged; write it as
#   --option=value when its value could start with a dash
# Files ignored by .gitignore (venvs, runs/, wandb/) are not uploaded. Set `output_dir` in the config to shared storage
# on a multi-node cluster (the working dir lives on the head node only).
set -euo pipefail
cd "$(dirname "$0")/.."
ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
ENV_NAMES=(WANDB_MODE WANDB_PROJECT WANDB_ENTITY HF_HOME HF_HUB_OFFLINE TORCH_EXTENSIONS_DIR)
PIP=""
EXTRA=()
SUBMIT=()  # options for `ray job submit` itself
while [ $# -gt 0 ]; do
  case "$1" in
    --address) ADDRESS="$2"; shift 2 ;;
    --env) ENV_NAMES+=("$2"); shift 2 ;;
    --pip) PIP="$2"; shift 2 ;;
    --no-wait) EXTRA+=(--no-wait); shift ;;
    --) shift; break ;;
    -h|--help) sed -n "2,/^set -euo/p" "$0" | sed "$ d"; exit 0 ;;
    --*=*) SUBMIT+=("$1"); shift ;;
    --*) if [ $# -gt 1 ] && [[ "$2" != -* ]]; then SUBMIT+=("$1" "$2"); shift 2; else SUBMIT+=("$1"); shift; fi ;;
    *) echo "submit.sh: $1 before --: give options first, then -- and the command (see --help)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "submit.sh: give the command after --, e.g. -- longshort run ray_configs/tiny.yaml" >&2; exit 2; }
# `longshort ...` runs from the shipped checkout, whatever is installed on the cluster.
if [ "$1" = "longshort" ]; then shift; set -- python -m longshort.cli "$@"; fi
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
RUNTIME_ENV=$("$PYTHON" - "$PIP" "${ENV_NAMES[@]}" <<'PY'
import json, os, sys
pip, names = sys.argv[1], sys.argv[2:]
env = {n: os.environ[n] for n in names if n in os.environ}
env.setdefault("RAY_DEDUP_LOGS", "0")
spec = {"env_vars": env, "excludes": ["runs/", "wandb/", ".venv*", ".torch_extensions/", "*.pyc"]}
if pip:
    spec["pip"] = {"packages": [l.strip() for l in open(pip) if l.strip() and not l.startswith("#")]}
print(json.dumps(spec))
PY
)
RAY="${RAY:-$( [ -x .venv/bin/ray ] && echo .venv/bin/ray || echo ray)}"
ID="longshort-$(date +%Y%m%d-%H%M%S)-$$"
# Right after `ray start` the job agent may not be up yet ("No available agent"): retry the submission for a while.
for attempt in $(seq 1 30); do
  if err=$("$RAY" job submit --address "$ADDRESS" --submission-id "$ID" --working-dir . \
      --runtime-env-json "$RUNTIME_ENV" ${SUBMIT[@]+"${SUBMIT[@]}"} --no-wait -- "$@" 2>&1); then break; fi
  if [[ "$err" != *"No available agent"* && "$err" != *"try again later"* ]] || [ "$attempt" = 30 ]; then
    echo "$err" >&2; exit 1
  fi
  sleep 4
done
echo "[submit] submitted $ID to $ADDRESS"
[ ${#EXTRA[@]} -gt 0 ] && { echo "[submit] follow with: $RAY job logs --address $ADDRESS --follow $ID"; exit 0; }
"$RAY" job logs --address "$ADDRESS" --follow "$ID" || true
status=$("$RAY" job status --address "$ADDRESS" "$ID" 2>&1 | tail -n 3)
echo "$status"
[[ "${status,,}" == *succeeded* ]]
