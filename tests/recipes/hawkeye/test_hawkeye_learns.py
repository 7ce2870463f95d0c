"""The responder learns to answer from a planner's CoT, under more than one CPU kernel set.

The embedded default's responder once sat on a knife edge: 98.5% on one CPU, 71.7% on another with the same seed
(docs/recipes/hawkeye.md). A reduced run of the shipped recipe (a base model bootstrapped on the easiest problems,
the responder started from its first layers, the stage's own data and SFT settings) must learn under the native
kernels and under AVX2's, each in a fresh interpreter. A responder that has not learned to read the CoT's result
lands far below the bar: the untrained model scores 0%, one from scratch on this budget about a third."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from builders import under_kernel_set

from longshort.data.problems import ProblemSource, load_problems
from longshort.data.verify import VerifyConfig, shared_verifier
from longshort.eval.runner import run_team
from longshort.recipes.hawkeye.config import ResponderConfig
from longshort.recipes.hawkeye.data import responder_examples
from longshort.toy.bootstrap import BootstrapConfig, BootstrapEvalConfig, run_bootstrap
from longshort.toy.task import TaskConfig
from longshort.toy.tiny import TokenizerConfig, truncated_model_dir
from longshort.training.sft import run_sft

BOOT_STEPS, RESPONDER_STEPS, BATCH = 1000, 400, 16


def _reduced_run(root: str) -> dict:
    """A reduced bootstrap and responder stage; the base model's and the team's accuracy on 100 held-out problems."""
    from longshort.data.protocol import PLANNER_RESPONDER_RULES
    from longshort.engines.registry import make_engine

    run = Path(root)
    boot = BootstrapConfig(
        task=TaskConfig(seed=0, n_train=BOOT_STEPS * BATCH, n_eval=100, min_steps=1, max_steps=2, max_value=20,
                        max_operand=6, error_rate=0.0, redundancy=0.0),
        tokenizer=TokenizerConfig(n_texts=2000),
        sft=replace(BootstrapConfig().sft, micro_batch_size=BATCH, lr=1e-3, min_lr=1e-4, progress=False, log_every=100),
        eval=BootstrapEvalConfig(max_new_tokens=128),
    )
    base = run_bootstrap(boot, run / "bootstrap")
    rc = ResponderConfig(base_layers=2)  # the shipped recipe's responder (ray_configs/hawkeye-tiny.yaml)
    init, _ = truncated_model_dir(base.model_dir, rc.base_layers, run / "responder" / "init_model")
    problems, _ = load_problems(ProblemSource(path=str(base.train_path)))
    sft = replace(rc.sft, progress=False, log_every=100)
    result = run_sft(sft, responder_examples(problems, RESPONDER_STEPS * BATCH, rc.seed), init, run / "responder" / "sft")
    held_out, _ = load_problems(ProblemSource(path=str(base.eval_path)))
    engines = {"planner": make_engine("hf", model=str(base.model_dir), seed=0),
               "responder": make_engine("hf", model=str(result.model_dir), seed=0)}
    answers = run_team({r: e.generate for r, e in engines.items()}, PLANNER_RESPONDER_RULES,
                       engines["planner"].tokenizer, [p.problem for p in held_out], max_turn_tokens=160)
    verdicts = shared_verifier(VerifyConfig(workers=1)).judge_many([a.answer_text or "" for a in answers],
                                                                   [p.gold for p in held_out])
    return {"base": base.metrics["accuracy"], "team": sum(v.correct for v in verdicts) / len(verdicts),
            "steps": result.steps}


@pytest.mark.parametrize("kernels", ["native", "avx2"])
def test_the_responder_learns_to_answer_from_the_base_models_cot(tmp_path, kernels):
    capability, m = under_kernel_set(kernels, _reduced_run, str(tmp_path))
    assert kernels == "native" or capability == "AVX2", capability
    assert m["steps"] == RESPONDER_STEPS
    assert m["base"] >= 0.6, m  # the bootstrap's own learning bar (tests/toy/test_bootstrap.py)
    assert m["team"] >= m["base"] - 0.05, m  # the responder reads the base model's answer off its CoT
