"""Hawkeye's outcome checks on real tiny models: an untrained responder and planner fail their checks, which name the
stage, the number, the threshold and its setting; where the dev problems come from (an older bootstrap's task)."""

from __future__ import annotations

import json

import pytest
from builders import task_records, tiny_model_dir

from longshort.core import checks
from longshort.pipeline.run_config import load_run_config
from longshort.recipes.hawkeye.checks import check_responder, check_warmup
from longshort.toy.stage import dev_problems
from longshort.toy.task import TaskConfig, dev_split, generate, read_jsonl, write_jsonl

SMALL = ["recipe=hawkeye", "hawkeye.responder.check.n=6", "hawkeye.responder.check.max_turn_tokens=12",
         "hawkeye.warmup.check.n=6", "hawkeye.warmup.check.max_turn_tokens=12"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run dir with the dev split, an untrained base model and an untrained responder (one task tokenizer)."""
    root = tmp_path_factory.mktemp("hawkeye-checks")
    write_jsonl(task_records(12, seed=5), root / "bootstrap" / "data" / "dev.jsonl")
    tiny_model_dir(root / "bootstrap" / "base_model")
    tiny_model_dir(root / "responder" / "model")
    return root


def test_an_untrained_responder_fails_its_check_and_says_so(run, verifier, logged):
    cfg = load_run_config(None, SMALL)
    (found,) = check_responder(cfg, run, run / "bootstrap" / "base_model", run / "responder" / "model", verifier)
    assert (found.stage, found.value, found.threshold, found.setting, found.n, found.passed) == (
        "responder", 0.0, 0.9, "hawkeye.responder.check.min_accuracy", 6, False)
    assert found.details["base_cot_right"] == 0.0 and found.details["right_after_a_right_cot"] == 0.0
    assert 0.0 <= found.details["base_cot_cut"] <= 1.0
    assert checks.stage_checks(run, "responder") == [found]
    (warning,) = [r.getMessage() for r in logged.records if r.levelname == "WARNING"]
    assert "CHECK FAILED: stage 'responder'" in warning and "0 on 6 dev problems" in warning
    assert "at least 0.9 (setting hawkeye.responder.check.min_accuracy)" in warning


def test_an_untrained_planner_fails_the_warmup_checks(run, verifier):
    cfg = load_run_config(None, SMALL + ["hawkeye.warmup.check.min_handover=0.5"])
    accuracy, handover = check_warmup(cfg, run, run / "bootstrap" / "base_model", run / "responder" / "model",
                                      verifier)
    assert (accuracy.setting, accuracy.value, accuracy.passed) == ("hawkeye.warmup.check.min_accuracy", 0.0, False)
    assert (handover.setting, handover.threshold, handover.n) == ("hawkeye.warmup.check.min_handover", 0.5, 6)
    assert handover.what == "share of the planner's turns that hand over within 12 tokens"
    assert 0.0 <= handover.value <= 1.0 and handover.passed == (handover.value >= 0.5)
    assert 0 < accuracy.details["planner_mean_tokens"] <= 12  # a random planner rambles to its 12-token limit
    recorded = json.loads((run / "warmup" / "checks.json").read_text())
    assert [c["setting"] for c in recorded] == ["hawkeye.warmup.check.min_accuracy", "hawkeye.warmup.check.min_handover"]


def test_dev_problems_come_from_the_run_or_an_older_bootstraps_task_or_are_skipped(tmp_path, logged):
    cfg = load_run_config(None, ["recipe=hawkeye"])
    src = cfg.hawkeye.responder.check.dev
    assert dev_problems(tmp_path, src, 5, "responder", "hawkeye.responder.check.dev") is None  # no bootstrap at all
    # a bootstrap made before dev splits: its task's settings draw the same dev problems a new bootstrap writes
    task = TaskConfig(seed=2, n_train=60, n_eval=10)
    train, held_out = generate(task)
    write_jsonl(train, tmp_path / "bootstrap" / "data" / "train.jsonl")
    saved = {k: v for k, v in vars(task).items() if k != "n_dev"}  # its task.json predates the key
    (tmp_path / "bootstrap" / "data" / "task.json").write_text(json.dumps(saved))
    problems = dev_problems(tmp_path, src, 5, "responder", "hawkeye.responder.check.dev")
    assert read_jsonl(tmp_path / "bootstrap" / "data" / "dev.jsonl") == dev_split(task, train, held_out)
    assert [p.id for p in problems] == [f"dev-00000{i}" for i in range(5)]
    # a stage that trained on data of its own is not checked on the embedded task's problems
    assert dev_problems(tmp_path, src, 5, "responder", "hawkeye.responder.check.dev", "gsm8k.jsonl") is None
    said = [r.getMessage() for r in logged.records if r.getMessage().startswith("check responder: skipped")]
    assert len(said) == 2 and "set hawkeye.responder.check.dev.path" in said[1] and "gsm8k.jsonl" in said[1]
