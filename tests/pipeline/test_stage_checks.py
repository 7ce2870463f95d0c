"""`longshort run` and the stages' outcome checks (core/checks.py), on a three-stage recipe of real stages that
record, read and report: a failed check is warned about and carried into pipeline.json and the results table, or,
under `pipeline.on_failed_check: stop`, stops the pipeline before the next stage (also when the stage is skipped)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from longshort import cli
from longshort.core import checks
from longshort.core.stage import Recipe, RoleSpec, Stage
from longshort.recipes import RECIPES


@dataclass
class LearnConfig:
    accuracy: float = 0.5  # what the `learn` stage measures on its dev problems
    min_accuracy: float = 0.9


def _learn(cfg, run_dir: Path, tracker, resume: bool) -> None:
    (run_dir / "learn" / "model.txt").write_text("weights")
    checks.record(run_dir, [checks.Check("learn", "accuracy on dev", cfg.learn.accuracy, cfg.learn.min_accuracy,
                                         "learn.min_accuracy", n=4)])


def _later(cfg, run_dir: Path, tracker, resume: bool) -> None:
    (run_dir / "later" / "built.txt").write_text("on top of learn")


def _eval(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.eval.report import write_results

    write_results({"settings": {"k": 1, "temperature": 0.0}, "benchmarks": {"dev": {"n": 4}},
                   "systems": {"learned": {"kind": "single"}},
                   "results": {"learned": {"dev": {"accuracy": 0.5, "mean_tokens": 12.0}}}}, run_dir / "eval")


CHECKED = Recipe(name="checked", help="learn, build on it, report", roles={"solo": RoleSpec(trainable=False)},
                 sections={"learn": LearnConfig},
                 stages=(Stage("learn", "learns", ("learn",), ("learn/model.txt",), _learn),
                         Stage("later", "builds on learn", (), ("later/built.txt",), _later),
                         Stage("eval", "the table", (), ("eval/results.json",), _eval)))


@pytest.fixture
def run(tmp_path):
    RECIPES.register("checked", CHECKED)
    yield lambda *overrides: cli.main(["run", "--recipe", "checked", f"output_dir={tmp_path}", "name=r",
                                       "tracking.mode=disabled", *overrides])
    RECIPES.unregister("checked")


def test_a_failed_check_warns_and_pipeline_json_and_the_table_carry_it(run, tmp_path):
    assert run() == 0
    d = tmp_path / "r"
    assert (d / "later" / "built.txt").exists()  # warn: the pipeline goes on
    (rec,) = json.loads((d / "pipeline.json").read_text())["stages"]["learn"]["checks"]
    assert (rec["value"], rec["threshold"], rec["setting"], rec["n"], rec["passed"]) == (0.5, 0.9,
                                                                                        "learn.min_accuracy", 4, False)
    assert json.loads((d / "pipeline.json").read_text())["stages"]["later"]["checks"] == []
    assert json.loads((d / "eval" / "results.json").read_text())["checks"] == [rec]
    table = (d / "eval" / "table.md").read_text()
    assert "## Stage checks" in table
    assert "| learn | accuracy on dev | 0.5 | >= 0.9 | `learn.min_accuracy` | 4 | **FAILED** |" in table
    assert "FAILED checks: learn learned less than later stages need" in table
    assert "CHECK FAILED: stage 'learn'" in (d / "log.txt").read_text()


def test_stop_ends_the_pipeline_before_the_next_stage_until_the_check_passes(run, tmp_path, capsys):
    d = tmp_path / "r"
    assert run("pipeline.on_failed_check=stop") == 2
    err = capsys.readouterr().err
    for said in ("CHECK FAILED: stage 'learn'", "accuracy on dev: 0.5 on 4 dev problems", "at least 0.9",
                 "learn.min_accuracy", "pipeline.on_failed_check is stop"):
        assert said in err, said
    assert (d / "learn" / ".complete.json").exists() and not (d / "later").exists()
    assert run("pipeline.on_failed_check=stop") == 2  # the finished stage is skipped; its failed check still stops
    assert not (d / "later").exists()
    assert run("pipeline.on_failed_check=stop", "learn.accuracy=0.95") == 0  # learned now: the stage reran, passed
    assert (d / "later" / "built.txt").exists()
    assert [c.passed for c in checks.read(d)] == [True]
    assert "| learn | accuracy on dev | 0.95 | >= 0.9 | `learn.min_accuracy` | 4 | passed |" in (
        d / "eval" / "table.md").read_text()
