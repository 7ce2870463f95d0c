"""The responder learns to answer from a planner's CoT, under more than one CPU kernel set.

The embedded default's responder once sat on a knife edge: 98.5% on one CPU, 71.7% on another with the same seed
(docs/recipes/hawkeye.md). A reduced run of the shipped recipe (a base model bootstrapped on the easiest problems,
the responder started from its first layers, the stage's own data and SFT settings) must learn under the native
kernels and under AVX2's, each in a fresh interpreter (the base model, bootstrapped once under the native kernels, is
the session's `reduced_base`, whose learning under both is tests/toy/test_bootstrap.py's). A responder that has not learned to read the CoT's result
lands far below the bar: the untrained model scores 0%, one from scratch on this budget about a third."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from builders import under_kernel_set

from longshort.cluster.sft_job import run_sft
from longshort.data.problems import ProblemSource, load_problems
from longshort.data.verify import VerifyConfig, shared_verifier
from longshort.eval.runner import run_team
from longshort.recipes.hawkeye.config import ResponderConfig
from longshort.recipes.hawkeye.data import responder_examples
from longshort.toy.tiny import truncated_model_dir

RESPONDER_STEPS, BATCH = 400, 16


def _responder_stage(base: dict, root: str) -> dict:
    """The responder stage on the base model; the team's accuracy on its 100 held-out problems."""
    from longshort.data.protocol import PLANNER_RESPONDER_RULES
    from longshort.engines.registry import make_engine

    run = Path(root)
    rc = ResponderConfig(base_layers=2)  # the shipped recipe's responder (ray_configs/hawkeye-tiny.yaml)
    init, _ = truncated_model_dir(Path(base["model"]), rc.base_layers, run / "responder" / "init_model")
    problems, _ = load_problems(ProblemSource(path=base["train"]))
    sft = replace(rc.sft, progress=False, log_every=100)
    result = run_sft(sft, responder_examples(problems, RESPONDER_STEPS * BATCH, rc.seed), init, run / "responder" / "sft")
    held_out, _ = load_problems(ProblemSource(path=base["eval"]))
    engines = {"planner": make_engine("hf", model=base["model"], seed=0),
               "responder": make_engine("hf", model=str(result.model_dir), seed=0)}
    answers = run_team({r: e.generate for r, e in engines.items()}, PLANNER_RESPONDER_RULES,
                       engines["planner"].tokenizer, [p.problem for p in held_out], max_turn_tokens=160)
    verdicts = shared_verifier(VerifyConfig(workers=1)).judge_many([a.answer_text or "" for a in answers],
                                                                   [p.gold for p in held_out])
    return {"team": sum(v.correct for v in verdicts) / len(verdicts), "steps": result.steps}


@pytest.mark.parametrize("kernels", ["native", "avx2"])
def test_the_responder_learns_to_answer_from_the_base_models_cot(reduced_base, tmp_path, kernels):
    base = {**reduced_base, "accuracy": reduced_base["metrics"]["accuracy"]}
    capability, m = under_kernel_set(kernels, _responder_stage, base, str(tmp_path))
    assert kernels == "native" or capability == "AVX2", capability
    assert m["steps"] == RESPONDER_STEPS
    assert base["accuracy"] >= 0.6, base  # the bootstrap's own learning bar (tests/toy/test_bootstrap.py)
    assert m["team"] >= base["accuracy"] - 0.05, (m, base)  # the responder reads the base model's answer off its CoT
