"""The RL loop on tiny models through real Ray actors (DeepSpeed ranks with colocated HF engines and references):
a two-step run, a killed actor mid-step (clean stop, named actor), and a resume that reproduces the metrics."""

from __future__ import annotations

import shutil
import time

import pytest
import ray
import torch
from builders import build_run_dir

from longshort.core.config import build
from longshort.recipes.longshort.recipe import PairTopology
from longshort.rl.loop import RLConfig, RLInterrupted, run_rl
from longshort.tracking.tracker import RESERVED_KEYS, Tracker, TrackingConfig, read_metrics

torch.set_num_threads(1)
CFG = {"steps": 2, "prompts_per_step": 2, "group_size": 4, "mini_batches": 2, "logprobs": "recompute",
       "kl_coef": 0.05, "kl_estimator": "k3", "optim": {"lr": 2e-4}, "save_every": 1, "eval_before": False,
       "samples_every": 1, "samples_logged": 2, "progress": False,
       "episode": {"max_turns": 4, "max_turn_tokens_long": 20, "max_turn_tokens_short": 28, "max_episode_tokens": 80}}
TOPO = PairTopology(call_timeout_s=300)
VOLATILE = ("time/", "throughput/")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_run_dir(tmp_path_factory.mktemp("rl-template"), steps=40)


def _copy(template, dest):
    for sub in ("sft", "bootstrap"):
        shutil.copytree(template / sub, dest / sub)
    return dest


def _run(run_dir, resume=False, hook=None):
    with Tracker(TrackingConfig(backends=["jsonl"], mode="disabled"), run_dir) as tracker:
        return run_rl(build(RLConfig, CFG, "rl"), run_dir, TOPO, tracker, resume=resume, hook=hook)


def _steps(run_dir) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for rec in read_metrics(run_dir / "metrics.jsonl"):
        if any(k.startswith("episode/") for k in rec):
            out[rec["step"]] = {k: v for k, v in rec.items() if k not in RESERVED_KEYS and not k.startswith(VOLATILE)}
    return out


@pytest.fixture(scope="module")
def uninterrupted(ray_local, template, tmp_path_factory):
    run_dir = _copy(template, tmp_path_factory.mktemp("rl-a"))
    synced = {}

    def hook(event, step, pol):
        if event == "after_train" and step == 2:
            for role in ("long", "short"):  # the engines serve exactly the trained weights, tagged with the version
                (engine_sd,) = pol[role].engine_state_dicts()
                trained = pol[role].gathered_state_dict()
                synced[role] = (pol[role].engine_versions(), all(torch.equal(engine_sd[k], v) for k, v in trained.items()))

    result = _run(run_dir, hook=hook)
    return run_dir, result, synced


def test_two_step_run_updates_both_policies(uninterrupted, template):
    from safetensors.torch import load_file

    run_dir, result, synced = uninterrupted
    assert result.steps == 2 and result.resumed_from == 0
    assert synced == {"long": ([2], True), "short": ([2], True)}
    steps = _steps(run_dir)
    assert sorted(steps) == [1, 2]
    m = steps[2]
    for role in ("long", "short"):
        for key in ("reward", "reward/correctness", "reward/format", "reward/length", "reward/collaboration", "tokens",
                    "turns", "kl", "entropy", "clip_frac", "grad_norm", "loss", "advantage_abs"):
            assert f"{role}/{key}" in m, f"{role}/{key}"
        assert m[f"{role}/update_skipped"] == 0.0 and m[f"{role}/optimizer_steps"] == 2
        assert m[f"{role}/entropy"] > 0 and m[f"{role}/kl"] >= 0
    raw = next(r for r in read_metrics(run_dir / "metrics.jsonl") if r["step"] == 2 and "episode/count" in r)
    assert {"time/generate_long", "time/generate_short", "time/train_long", "time/train_short", "time/sync_long",
            "time/sync_short", "throughput/generated_tokens_per_s", "throughput/train_tokens_per_s"} <= set(raw)
    assert 0 <= m["episode/accuracy"] <= 1 and m["episode/count"] == 8
    assert (run_dir / "tables" / "rl" / "samples.jsonl").exists()
    ckpts = sorted(p.name for p in (run_dir / "rl" / "checkpoints").iterdir())
    assert ckpts == ["step-000001", "step-000002"]
    assert {p.name for p in (run_dir / "rl" / "checkpoints" / "step-000002").iterdir()} >= {"long", "short",
                                                                                             "controller.json"}
    assert result.eval is not None and (run_dir / "rl" / "eval.json").exists()
    start = load_file(template / "sft" / "long" / "model" / "model.safetensors")
    for role in ("long", "short"):  # both policies moved away from the SFT'd start
        after = load_file(result.models[role] / "model.safetensors")
        assert any(not torch.equal(after[k], start[k]) for k in start)


def test_killed_actor_stops_cleanly_and_resume_matches_the_uninterrupted_run(uninterrupted, template, tmp_path):
    from safetensors.torch import load_file

    run_a, result_a, _ = uninterrupted
    run_dir = _copy(template, tmp_path)

    def kill_short_rank(event, step, pol):
        if event == "after_generate" and step == 2:
            ray.kill(pol["short"].ranks[0].handle, no_restart=True)

    total_cpu = ray.cluster_resources()["CPU"]
    t0 = time.monotonic()
    with pytest.raises(RLInterrupted) as info:
        _run(run_dir, hook=kill_short_rank)
    assert time.monotonic() - t0 < 240
    err = info.value
    assert err.failure.role == "short" and err.failure.actor == "short/rank0" and err.failure.kind == "died"
    assert err.checkpoint == run_dir / "rl" / "checkpoints" / "step-000001" and err.step == 2
    assert "rl stopped at step 2: short actor short/rank0 died" in str(err)
    assert f"it can resume from {run_dir / 'rl' / 'checkpoints' / 'step-000001'}" in str(err)
    deadline = time.monotonic() + 30  # every actor of both roles is gone: their resources are free again
    while ray.available_resources().get("CPU", 0) < total_cpu and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == total_cpu
    assert not (run_dir / "rl" / "checkpoints" / "step-000002").exists()

    with pytest.raises(Exception, match="already holds checkpoints"):
        _run(run_dir)
    result = _run(run_dir, resume=True)
    assert result.resumed_from == 1 and result.steps == 2
    assert _steps(run_dir)[2] == _steps(run_a)[2]  # exactly the uninterrupted run's step-2 metrics
    attempts = {r["step"]: r["attempt"] for r in read_metrics(run_dir / "metrics.jsonl") if "episode/count" in r}
    assert attempts[2] == attempts[1] + 1  # the resumed command's rows say they are the next attempt
    for role in ("long", "short"):
        a = load_file(result_a.models[role] / "model.safetensors")
        b = load_file(result.models[role] / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(uninterrupted, tmp_path, caplog):
    import logging

    from safetensors.torch import load_file

    run_a, result_a, _ = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(run_a, run_dir)
    newest = run_dir / "rl" / "checkpoints" / "step-000002"
    weights = next((newest / "short").rglob("*model_states.pt"))
    weights.write_bytes(weights.read_bytes()[:64])  # truncated, e.g. by a full disk
    with caplog.at_level(logging.WARNING, logger="longshort"):
        result = _run(run_dir, resume=True)
    assert "rl: skipping damaged checkpoint(s) step-000002: " in caplog.text and "changed size" in caplog.text
    assert result.resumed_from == 1 and result.steps == 2
    # only the newest checkpoint keeps the optimizer state (docs/checkpoints.md): step 1's weights, data order and
    # RNG are exact, so step 2's episodes and rewards are the uninterrupted run's; its updates restart Adam
    for role in ("long", "short"):
        assert f"step-000001/{role}: resuming with fresh optimizer moments" in caplog.text
    rollout = [k for k in _steps(run_a)[2] if k.startswith("episode/") or "/reward" in k]
    assert len(rollout) > 10 and {k: _steps(run_dir)[2][k] for k in rollout} == {k: _steps(run_a)[2][k] for k in rollout}
    for role in ("long", "short"):
        a = load_file(result_a.models[role] / "model.safetensors")
        b = load_file(result.models[role] / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.isfinite(b[k]).all() for k in b)



@pytest.mark.parametrize("metric", ["correctness", "reward"])
def test_dynamic_sampling_trains_only_on_groups_that_disagree(ray_local, template, tmp_path, metric):
    """The template pair never answers right, so on correctness no group disagrees: nothing is trained (the update
    is skipped, the weights stay); on the total reward (length terms differ) two of the six groups are."""
    from safetensors.torch import load_file

    cfg = {**CFG, "steps": 1, "mini_batches": 1, "kl_coef": 0.0, "save_every": 0, "eval_at_end": False,
           "filter_groups": {"enable": True, "oversample": 3, "metric": metric}}
    run_dir = _copy(template, tmp_path)
    with Tracker(TrackingConfig(backends=["jsonl"], mode="disabled"), run_dir) as tracker:
        result = run_rl(build(RLConfig, cfg, "rl"), run_dir, TOPO, tracker)
    m = _steps(run_dir)[1]
    assert m["episode/count"] == 3 * 2 * 4 and m["filter/groups_rolled_out"] == 6  # every rollout is reported
    assert m["episode/accuracy"] == 0.0
    trained = {"correctness": 0.0, "reward": 2.0}[metric]
    assert m["filter/groups_trained"] == trained and m["filter/groups_mixed"] >= trained
    start = load_file(template / "sft" / "long" / "model" / "model.safetensors")
    for role in ("long", "short"):
        after = load_file(result.models[role] / "model.safetensors")
        moved = any(not torch.equal(after[k], start[k]) for k in start)
        assert m[f"{role}/update_skipped"] == (0.0 if trained else 1.0) and moved == bool(trained)


def test_rl_with_a_lora_long_role_trains_the_adapter_and_syncs_the_merged_weights(ray_local, template, tmp_path):
    """`rl.lora.long` (peft): the long role trains an adapter (its KL reference is its own model with the adapter off),
    the short role stays full fine-tuning; engines get the merged weights, the export is merged + adapter/, and the
    checkpoint holds the adapter, not the model."""
    from safetensors.torch import load_file

    from longshort.training.lora import protocol_token_ids

    run_dir = _copy(template, tmp_path / "lora")
    lora_ids = protocol_token_ids(template / "sft" / "long" / "model")
    synced = {}

    def hook(event, step, pol):
        if event == "after_train":
            (engine_sd,) = pol["long"].engine_state_dicts()
            synced[step] = all(torch.equal(engine_sd[k], v) for k, v in pol["long"].gathered_state_dict().items())

    cfg = {**CFG, "lora": {"long": {"rank": 4, "alpha": 8}}, "optim": {"lr": 2e-3}}
    with Tracker(TrackingConfig(backends=["jsonl"], mode="disabled"), run_dir) as tracker:
        result = run_rl(build(RLConfig, cfg, "rl"), run_dir, TOPO, tracker, hook=hook)
    assert result.steps == 2 and synced == {1: True, 2: True}
    m = _steps(run_dir)[2]
    assert m["long/optimizer_steps"] == 2 and m["long/kl"] >= 0 and m["long/grad_norm"] > 0
    start = load_file(template / "sft" / "long" / "model" / "model.safetensors")
    after = load_file(result.models["long"] / "model.safetensors")
    assert set(after) == set(start)
    moved = {k for k in start if not torch.equal(after[k], start[k])}
    assert moved and all(k.endswith("_proj.weight") or k == "model.embed_tokens.weight" for k in moved)
    rows = (after["model.embed_tokens.weight"] != start["model.embed_tokens.weight"]).any(-1).nonzero().flatten()
    assert set(rows.tolist()) <= set(lora_ids)  # the embedding moved only at the protocol's tokens
    assert (result.models["long"] / "adapter" / "adapter_model.safetensors").is_file()
    assert not (result.models["short"] / "adapter").exists()
    ckpt = run_dir / "rl" / "checkpoints" / "step-000002"
    size = {r: sum(f.stat().st_size for f in (ckpt / r).rglob("*") if f.is_file()) for r in ("long", "short")}
    assert size["long"] * 5 < size["short"]
