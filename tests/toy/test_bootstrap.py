"""A small end-to-end bootstrap (real tokenizer, real DeepSpeed SFT, real generation and answer checks)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from builders import REDUCED_STEPS, reduced_bootstrap, under_kernel_set
from transformers import AutoModelForCausalLM, AutoTokenizer

from longshort.core import checks
from longshort.core.errors import LongshortError
from longshort.toy.bootstrap import (
    BootstrapCheckConfig,
    BootstrapConfig,
    BootstrapEvalConfig,
    check_base_model,
    is_well_formed,
    run_bootstrap,
)
from longshort.toy.task import TaskConfig, problem_key, read_jsonl
from longshort.toy.tiny import TinyModelConfig, TokenizerConfig
from longshort.tracking.tracker import Tracker, TrackingConfig, read_metrics
from longshort.training.sft import SFTConfig


def _small() -> BootstrapConfig:
    return BootstrapConfig(
        task=TaskConfig(seed=1, n_train=48, n_eval=6, max_steps=2),
        tokenizer=TokenizerConfig(vocab_size=360),
        model=TinyModelConfig(layers=1, heads=2, kv_heads=1, intermediate=64),
        sft=SFTConfig(lr=3e-3, min_lr=3e-4, micro_batch_size=8, max_steps=4, max_len=512, progress=False),
        eval=BootstrapEvalConfig(batch_size=4, max_new_tokens=24, samples_logged=2),
    )


def test_small_bootstrap_produces_every_output(tmp_path, caplog):
    run = tmp_path / "bootstrap"
    with Tracker(TrackingConfig(backends=["jsonl"]), run) as tracker:
        res = run_bootstrap(_small(), run, tracker)
    assert len(read_jsonl(run / "data" / "train.jsonl")) == 48 and len(read_jsonl(res.eval_path)) == 6
    dev = read_jsonl(run / "data" / "dev.jsonl")
    taken = {problem_key(r) for r in read_jsonl(run / "data" / "train.jsonl") + read_jsonl(res.eval_path)}
    assert len(dev) == 500 and not {problem_key(r) for r in dev} & taken
    assert (run / "tokenizer" / "tokenizer.json").exists()
    assert (run / "base_model" / "model.safetensors").exists() and res.model_dir == run / "base_model"
    model = AutoModelForCausalLM.from_pretrained(res.model_dir)
    assert model.config.head_dim >= 64 and AutoTokenizer.from_pretrained(res.model_dir).chat_template
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["n"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
    assert 0 < metrics["mean_tokens"] <= 24 and metrics["teacher_mean_tokens"] > 60
    assert metrics["sft_steps"] == 4 and res.sft.steps == 4 and metrics["n_params"] == res.n_params
    rows = read_jsonl(run / "eval_samples.jsonl")
    assert len(rows) == 6 and all(r["tokens"] <= 24 for r in rows)
    logged = read_metrics(run / "metrics.jsonl")
    assert any("bootstrap/sft/loss" in m for m in logged) and any("bootstrap/eval/accuracy" in m for m in logged)
    assert (run / "tables" / "bootstrap" / "eval_samples.jsonl").exists()
    assert json.loads((run / "summary.json").read_text())["bootstrap/n"] == 6
    # its outcome check: 4 SFT steps learn nothing, which the check says loudly and records in the stage's folder
    logger = logging.getLogger("longshort")  # it does not propagate to pytest's root handler
    logger.addHandler(caplog.handler)
    try:
        found = check_base_model(replace(_small(), check=BootstrapCheckConfig(n=5)), tmp_path)
    finally:
        logger.removeHandler(caplog.handler)
    assert [(c.stage, c.n, c.setting, c.passed) for c in found] == [("bootstrap", 5, "bootstrap.check.min_accuracy",
                                                                     False)]
    assert checks.stage_checks(tmp_path, "bootstrap") == found and found[0].details["mean_tokens"] <= 24
    (warned,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "longshort"]
    assert "CHECK FAILED: stage 'bootstrap'" in warned and "bootstrap.check.min_accuracy" in warned


def test_well_formed():
    assert is_well_formed("<think>\nStep 1: 2 + 2 = 4.\n</think>\n\nThe final number is \\boxed{4}.", True)
    assert not is_well_formed("<think>\nStep 1: 2 + 2 = 4.\n</think>\n\nThe final number is \\boxed{4}.", False)
    assert not is_well_formed("Step 1: 2 + 2 = 4.\n</think>\n\n\\boxed{4}", True)
    assert not is_well_formed("<think>\nStep 1 \\boxed{4}\n</think>\n\nThe final number is 4.", True)


def test_bad_config_is_a_user_error(tmp_path):
    cfg = _small()
    cfg.task.min_steps = 5
    with pytest.raises(LongshortError, match="task.min_steps"):
        run_bootstrap(cfg, tmp_path / "run")


LEARN_BAR = 0.6


@pytest.mark.parametrize("kernels", ["native", "avx2"])
def test_a_reduced_bootstrap_learns_the_easiest_problems(tmp_path, kernels, request):
    """A learning check, not a timed one: the bootstrap's model, optimizer, schedule and data pipeline, at a
    learning rate of 1e-3, on the easiest problems (1-2 operations, numbers up to 20, no planted errors, no redundant
    thoughts) must learn the format and most of the arithmetic in a couple of minutes, under the CPU's own kernels
    and under AVX2's (a default that learns under one kernel set only fails here). Measured on a 2-core AMD EPYC:
    93% / 92% / 95% for seeds 0 / 1 / 2 (1000 steps of 16, about 2.5 minutes); 1000 steps of 8 gave 50%, and 1500
    steps of 8 at 2e-3 35%. A broken loss mask, learning rate, schedule, tokenizer or generation path lands far below
    the bar (the untrained model scores 0%)."""
    if kernels == "native":  # the session's run, which Hawkeye's responder test also starts from
        run = request.getfixturevalue("reduced_base")
    else:
        capability, run = under_kernel_set(kernels, reduced_bootstrap, str(tmp_path))
        assert capability == "AVX2", capability
    m = run["metrics"]
    assert run["steps"] == REDUCED_STEPS and m["n"] == 100
    assert m["well_formed"] >= 0.95, m
    assert m["accuracy"] >= LEARN_BAR, (kernels, m)
