"""Outcome checks: what a stage records, how it says a failure, and that their settings rerun no finished stage."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from longshort.core import checks
from longshort.core.checks import Check, check_field
from longshort.core.config import to_dict


def test_a_check_passes_by_its_direction():
    low = Check("sft", "accuracy", 0.55, 0.6, "sft.check.min_accuracy", n=200)
    assert not low.passed and Check("sft", "accuracy", 0.6, 0.6, "sft.check.min_accuracy").passed
    assert Check("train", "NLL", 1.2, 1.3, "softcot.train.check.max_nll_ratio", direction="max").passed
    assert not Check("train", "NLL", 1.4, 1.3, "softcot.train.check.max_nll_ratio", direction="max").passed
    assert low.line() == "sft: accuracy 0.55 >= 0.6 (sft.check.min_accuracy; 200 dev problems): FAILED"


def test_record_writes_each_stage_folder_logs_and_read_gathers_in_order(tmp_path, logged):
    ok = Check("bootstrap", "greedy accuracy of the base model", 0.98, 0.7, "bootstrap.check.min_accuracy", n=200)
    bad = Check("responder", "accuracy of the responder", 0.705, 0.9, "hawkeye.responder.check.min_accuracy", n=200,
                fix="train it on more examples", details={"base_cot_cut": 0.01})
    checks.record(tmp_path, [ok])
    os.utime(tmp_path / "bootstrap" / "checks.json", ns=(1, 1))  # recorded first: read keeps the stages' order
    checks.record(tmp_path, [bad])
    assert json.loads((tmp_path / "responder" / "checks.json").read_text())[0]["passed"] is False
    assert checks.stage_checks(tmp_path, "responder") == [bad] and checks.stage_checks(tmp_path, "warmup") == []
    assert checks.read(tmp_path) == [ok, bad]
    infos = [r.getMessage() for r in logged.records if r.levelname == "INFO"]
    assert infos == [f"check {ok.line()}"]
    (warning,) = [r.getMessage() for r in logged.records if r.levelname == "WARNING"]
    for said in ("CHECK FAILED: stage 'responder'", "0.705 on 200 dev problems", "at least 0.9",
                 "hawkeye.responder.check.min_accuracy", "base_cot_cut: 0.01", "later stages build on a model",
                 "fix: train it on more examples", "pipeline.on_failed_check: stop"):
        assert said in warning, said
    assert checks.failure_text([bad]) == warning


def test_a_check_setting_is_left_out_of_the_stage_fingerprint():
    @dataclass
    class Inner:
        min_accuracy: float = 0.9

    @dataclass
    class Section:
        steps: int = 10
        check: Inner = check_field(Inner)

    assert to_dict(Section(), results_only=True) == {"steps": 10}
    assert to_dict(Section())["check"] == {"min_accuracy": 0.9}


def test_skip_says_why_on_one_line(logged):
    checks.skip("assistant", "no dev problems: x does not exist")
    assert [r.getMessage() for r in logged.records] == ["check assistant: skipped: no dev problems: x does not exist"]


def test_a_recorded_check_reads_back_whole():
    c = Check("warmup", "share", 0.9, 0.95, "hawkeye.warmup.check.min_handover", n=8,
              details={"planner_mean_tokens": 61.5})
    assert Check.from_json({**c.to_json(), "a_later_key": 1}) == c
