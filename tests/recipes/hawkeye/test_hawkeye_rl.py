"""Hawkeye on the shared RL loop, through real Ray actors: the planner (DeepSpeed rank + colocated HF engine) is
trained on its own turns only; the responder (a frozen engine-only role) answers inside every episode and is never
changed; the length penalty shortens the planner's CoT."""

from __future__ import annotations

import json
import random

import pytest
import torch
from builders import ScriptedEngine, build_model_dir, build_tokenizer, problems, teach

from longshort.core.config import build
from longshort.data.protocol import PLANNER_RESPONDER_RULES, ROLE_TOKENS, Message
from longshort.recipes.hawkeye.config import HawkeyeRLConfig
from longshort.recipes.hawkeye.recipe import HawkeyeTopology
from longshort.rl.episodes import EpisodeConfig, PromptItem, rollout
from longshort.rl.experience import role_sequences
from longshort.rl.loop import run_rl
from longshort.tracking.tracker import Tracker, TrackingConfig, read_metrics

torch.set_num_threads(1)
FILLER = " and check it again"


def _cot(thought: str, k: int) -> str:
    return thought + FILLER * k


@pytest.fixture(scope="module")
def hawkeye_run(ray_local, tmp_path_factory):
    """8 RL steps of a planner taught to pad its CoT with 0-4 fillers, against a responder taught to answer."""
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("hawkeye")
    items, rng = problems(40, seed=3), random.Random(0)
    planner = build_model_dir(root / "planner", seed=1)
    teach(planner, [([Message("user", q), Message("assistant", _cot(t, rng.randint(0, 4))), Message("short", a)],
                     {"assistant"}) for q, _, t, a in items], steps=60, seed=1)
    responder = build_model_dir(root / "responder", seed=2)
    teach(responder, [([Message("user", q), Message("assistant", _cot(t, rng.randint(0, 4))), Message("short", a)],
                       {"short"}) for q, _, t, a in items], steps=80, seed=2)
    data = root / "bootstrap" / "data"
    data.mkdir(parents=True)
    for name, part in (("train", items[:32]), ("eval", items[32:]), ("dev", items[32:])):  # RL's eval reads dev
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}-{i}", "problem": q, "answer": ans,
                                                                "solution": t}) + "\n"
                                                    for i, (q, ans, t, _) in enumerate(part)))
    cfg = build(HawkeyeRLConfig, {
        "steps": 8, "prompts_per_step": 4, "group_size": 4, "optim": {"lr": 2e-3}, "kl_coef": 0.0,
        "save_every": 4, "eval_every": 4, "samples_every": 4, "progress": False,
        "planner_model": str(planner), "responder_model": str(responder),
        "episode": {"temperature": 1.0, "max_episode_tokens": 96, "max_turn_tokens": {"planner": 48, "responder": 24}},
        "rewards": [{"name": "correctness"},
                    {"name": "length", "roles": ["planner"],
                     "kwargs": {"kind": "target", "ratio": 1.0, "coef": 0.05, "reference": "solution"}}]}, "rl")
    frozen = load_file(responder / "model.safetensors")
    checks = []

    def hook(event, step, pol):
        if event == "after_train":
            (engine_sd,) = pol["responder"].engine_state_dicts()
            checks.append(all(torch.equal(engine_sd[k], v) for k, v in frozen.items()))

    with Tracker(TrackingConfig(backends=["jsonl"], mode="disabled"), root) as tracker:
        result = run_rl(cfg, root, HawkeyeTopology(call_timeout_s=300), tracker, hook=hook)
    return root, result, checks, responder


def test_only_the_planner_trains_and_the_responder_stays_bitwise_unchanged(hawkeye_run):
    from safetensors.torch import load_file

    root, result, checks, responder = hawkeye_run
    assert result.steps == 8 and checks == [True] * 8  # the responder's engine weights after every update
    assert set(result.models) == {"planner"} and not (root / "rl" / "responder").exists()
    ckpt = root / "rl" / "checkpoints" / "step-000008"
    assert {p.name for p in ckpt.iterdir()} >= {"planner", "controller.json"} and not (ckpt / "responder").exists()
    steps = {r["step"]: r for r in read_metrics(root / "metrics.jsonl") if "episode/count" in r}
    m = steps[8]
    assert m["planner/optimizer_steps"] == 1 and m["planner/update_skipped"] == 0.0
    assert not any(k.startswith("responder/") and k.split("/")[1] in ("loss", "optimizer_steps", "grad_norm")
                   for k in m)
    assert m["responder/tokens"] > 0 and "time/generate_responder" in m
    start = load_file(root / "planner" / "model.safetensors")
    after = load_file(result.models["planner"] / "model.safetensors")
    assert any(not torch.equal(after[k], start[k]) for k in start)  # the planner moved


def test_the_length_penalty_shortens_the_planner_cot(hawkeye_run):
    root, result, _, _ = hawkeye_run
    history = json.loads((root / "rl" / "eval.json").read_text())["history"]
    first, last = history[0], history[-1]
    assert [h["step"] for h in history] == [0, 4, 8]
    assert {"tokens_planner", "tokens_responder"} <= set(first)
    # greedy, held-out: 0-4 fillers of 4 tokens each on a ~5-token thought; the penalty removes them
    assert last["tokens_planner"] <= 0.7 * first["tokens_planner"], (first, last)


def test_a_hawkeye_episode_trains_only_planner_spans():
    """Through the one dialogue driver: the planner writes under <|assistant|>, the responder under <|short|>; the
    planner's loss mask is exactly its own turn (its END_TURN included), never the responder's."""
    tok = build_tokenizer()
    end_turn, eos = tok.convert_tokens_to_ids(["<|end_turn|>", "<|endoftext|>"])
    plan = tok.encode("compute 2 + 3", add_special_tokens=False) + [end_turn]
    answer = tok.encode("so 5", add_special_tokens=False) + [eos]
    gens = {"planner": ScriptedEngine(lambda r: plan).generate, "responder": ScriptedEngine(lambda r: answer).generate}
    episodes, _ = rollout([PromptItem("p", "Begin with 2. Add 3.", "5")], gens, tok,
                          EpisodeConfig(max_turns=2, max_turn_tokens={"planner": 16, "responder": 8}), group_size=2,
                          rules=PLANNER_RESPONDER_RULES)
    e = episodes[0]
    assert e.finished and [t.role for t in e.turns] == ["planner", "responder"]
    p, r = e.turns
    assert e.ids[p.start - 1] == tok.convert_tokens_to_ids(ROLE_TOKENS["assistant"])
    assert e.ids[r.start - 1] == tok.convert_tokens_to_ids(ROLE_TOKENS["short"])
    (seq, _) = role_sequences(episodes, "planner", [1.0, -1.0])
    assert [i for i, m in enumerate(seq.mask) if m] == list(range(p.start, p.end))
