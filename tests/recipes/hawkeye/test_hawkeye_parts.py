"""Hawkeye's parts without Ray: the paper's length penalty, the config's role checks, the responder's and the
planner's training examples, the eval system kind."""

from __future__ import annotations

import random

import pytest
from builders import build_tokenizer, task_records

from longshort.core.config import build
from longshort.core.errors import LongshortError
from longshort.data.problems import Problem
from longshort.data.protocol import PLANNER_RESPONDER_RULES, render
from longshort.eval.runner import SystemSpec
from longshort.recipes.hawkeye.config import HawkeyeRLConfig
from longshort.recipes.hawkeye.data import (
    PLANNER_STYLES,
    VARIANTS,
    essential_thoughts,
    planner_cot,
    responder_cot,
    responder_examples,
    warmup_examples,
)
from longshort.rl.episodes import Episode, Turn
from longshort.rl.rewards import RewardContext, length, target_penalty


def _problems(n: int = 30) -> list[Problem]:
    return [Problem(r["id"], r["problem"], r["answer"], solution=r["solution"], long_cot=r["long_cot"],
                    meta={"thoughts": r["thoughts"], **r["meta"]}) for r in task_records(n, error_rate=0.3)]


def test_target_penalty_is_the_papers_quadratic():
    # ratio 0.3 of a 34-word reference -> target 10.2 words; 20 words -> -0.01 * 9.8^2
    assert target_penalty(20, 34, 0.3, 0.01) == pytest.approx(-0.01 * 9.8**2)
    assert target_penalty(10, 34, 0.3, 0.01) == 0.0  # up to the target: no penalty
    assert target_penalty(0, 34, 0.3, 0.01) == 0.0


@pytest.mark.parametrize("unit", ["tokens", "words"])
def test_length_target_counts_the_planners_own_turn_against_the_reference(unit):
    tok = build_tokenizer()
    plan = tok.encode("compute 2 + 3 and check it again and again", add_special_tokens=False)
    ids = [0] * 4 + plan + [1, 2]
    e = Episode("p", "q", "5", 0, 0, ids, 4, [Turn("planner", 4, 4 + len(plan), None, "handoff"),
                                               Turn("responder", 4 + len(plan), len(ids), None, "finish")],
                status="finished", references={"solution": "compute 2 + 3"})
    ctx = RewardContext([e], None, tok, ("planner", "responder"))
    got = length([e], ctx, kind="target", ratio=1.0, coef=0.5, unit=unit, reference="solution")
    n, ref = (10, 4) if unit == "words" else (len(plan), len(tok.encode("compute 2 + 3", add_special_tokens=False)))
    assert got["planner"] == [pytest.approx(-0.5 * (n - ref) ** 2)] and got["planner"][0] < 0
    with pytest.raises(LongshortError, match="has no 'long_cot' text"):
        length([e], ctx, kind="target", reference="long_cot")


def test_rl_config_refuses_a_reward_on_the_frozen_responder_alone_and_unknown_roles():
    cfg = build(HawkeyeRLConfig, {}, "rl")
    assert cfg.trainable_roles == ("planner",) and cfg.training_roles(1) == ("planner",)
    with pytest.raises(LongshortError, match=r"rl.rewards\[1\] \(length\) applies only to frozen role\(s\) "
                                             r"\['responder'\]: it trains nothing"):
        build(HawkeyeRLConfig, {"rewards": [{"name": "correctness"}, {"name": "length", "roles": ["responder"]}]}, "rl")
    with pytest.raises(LongshortError, match=r"\['long'\] are not roles of this recipe; accepted: planner, responder"):
        build(HawkeyeRLConfig, {"rewards": [{"name": "correctness", "roles": ["long"]}]}, "rl")


def test_responder_examples_cover_every_completeness_and_train_only_the_answer():
    problems, tok = _problems(), build_tokenizer()
    rng = random.Random(0)
    p = next(p for p in problems if essential_thoughts(p) and p.meta["steps"] >= 3)
    cots = {v: responder_cot(p, v, rng) for v in VARIANTS}
    assert cots["long"] == p.long_cot and cots["none"] == "Answer directly."
    assert cots["essential"].count("Step ") == p.meta["steps"] and "Hmm" not in cots["essential"]
    assert 1 <= cots["essential_prefix"].count("Step ") < p.meta["steps"]
    assert cots["concise"].count("\n") == p.meta["steps"] - 1 and "boxed" not in cots["concise"]
    examples = responder_examples(problems, 60, seed=0)
    assert len(examples) == 60 and {e.train_roles for e in examples} == {("short",)}
    r = render(examples[0].messages, tok)
    trained = [i for i, m in enumerate(r.loss_mask({"short"})) if m]
    assert tok.decode([r.ids[i] for i in trained]) == f"The final number is \\boxed{{{problems[0].answer}}}.<|endoftext|>"


def test_warmup_cots_mix_the_styles_and_skip_planted_errors():
    problems = _problems()
    examples = warmup_examples(problems, 1000, seed=0, styles=("essential",))
    with_error = [p.id for p in problems if p.meta["error_step"] is not None]
    assert with_error and not {e.id for e in examples} & set(with_error)
    first = next(p for p in problems if p.id == examples[0].id)
    assert examples[0].messages[1].content == "\n\n".join(essential_thoughts(first))
    assert [m.role for m in examples[0].messages] == ["user", "assistant", "short"]  # the planner hands over
    p = Problem("x", "q", "16", solution="4 × 2 = 8\n8 + 8 = 16\nThe final number is \\boxed{16}.",
                meta={"thoughts": [{"text": "Step 1: double it, so 4 × 2 = 8.", "tag": "essential"},
                                   {"text": "Hmm, is 4 × 2 = 8 right? Yes, it is.", "tag": "redundant"},
                                   {"text": "Step 2: add 8, so 8 + 8 = 16.", "tag": "essential"}]})
    assert [planner_cot(p, s) for s in PLANNER_STYLES] == [
        "Step 1: double it, so 4 × 2 = 8.\n\nStep 2: add 8, so 8 + 8 = 16.",
        "double it, so 4 × 2 = 8.\nadd 8, so 8 + 8 = 16.", "double it: 4 × 2 = 8\nadd 8: 8 + 8 = 16",
        "4 × 2 = 8\n8 + 8 = 16"]
    mixed = {e.messages[1].content.partition(" ")[0] for e in warmup_examples(problems, 1000, 0, PLANNER_STYLES)}
    assert "Step" in mixed and len(mixed) > 3  # every style appears


def test_eval_system_kind_hawkeye_names_its_models():
    spec = build(SystemSpec, {"name": "hk", "kind": "hawkeye", "planner": "warmup/model", "responder": "responder/model"},
                 "eval.systems[0]")
    assert spec.roles == PLANNER_RESPONDER_RULES.order and spec.model_paths == {"planner": "warmup/model",
                                                                                "responder": "responder/model"}
    with pytest.raises(LongshortError, match="a hawkeye system needs planner, responder"):
        build(SystemSpec, {"name": "hk", "kind": "hawkeye", "planner": "warmup/model"}, "eval.systems[0]")
