"""One stage registry: `longshort run` and `longshort <stage>` call the same Stage.run with the same config, so a
section can no longer reach a stage by one path and not the other (as `verify` once missed `longshort bootstrap`:
every Long⊗Short stage, bootstrap included, is now reached only through its Stage.run). A registered recipe is
selected by `recipe:` / `--recipe` with its own sections, stages and subcommands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from longshort import cli
from longshort.core.errors import LongshortError
from longshort.core.stage import Recipe, RoleSpec, Stage
from longshort.pipeline.run_config import load_run_config
from longshort.recipes import RECIPES

CALLS: list[dict] = []


@dataclass
class ProbeConfig:
    greeting: str = "hello"


def _probe(cfg, run_dir: Path, tracker, resume: bool) -> None:
    CALLS.append({"greeting": cfg.probe.greeting, "workers": cfg.verify.workers, "run_dir": str(run_dir),
                  "resume": resume})
    (run_dir / "probe").mkdir(exist_ok=True)
    (run_dir / "probe" / "out.json").write_text(json.dumps(CALLS[-1]))


PROBE = Recipe(name="probe", help="a one-stage recipe for tests", roles={"solo": RoleSpec(trainable=False)},
               sections={"probe": ProbeConfig},
               stages=(Stage("probe-stage", "writes what it was called with", ("probe",), ("probe/out.json",), _probe,
                             report=lambda cfg, d: f"probe wrote {d / 'probe' / 'out.json'}", resumable=True),))


@pytest.fixture
def probe_recipe():
    RECIPES.register("probe", PROBE)
    CALLS.clear()
    yield
    RECIPES.unregister("probe")


def test_run_and_stage_command_call_the_same_stage_with_the_same_config(probe_recipe, tmp_path, capsys):
    common = [f"output_dir={tmp_path}", "tracking.mode=disabled", "verify.workers=3", "probe.greeting=hi"]
    assert cli.main(["probe-stage", "--recipe", "probe", *common]) == 0
    assert "probe wrote" in capsys.readouterr().out
    assert cli.main(["run", "--recipe", "probe", "name=other", *common]) == 0
    assert [(c["greeting"], c["workers"]) for c in CALLS] == [("hi", 3), ("hi", 3)]
    assert Path(CALLS[0]["run_dir"]).name == "tiny" and Path(CALLS[1]["run_dir"]).name == "other"
    assert cli.main(["probe-stage", "recipe=probe", *common, "--resume"]) == 0  # the config key selects it too
    assert CALLS[-1]["resume"] is True


def test_a_stage_finished_by_its_own_command_is_skipped_by_run(probe_recipe, tmp_path, capsys):
    """`longshort <stage>` records the stage as `run` does, so a later `run` keeps its outputs (it used to find
    files without a completion record and clear them as an unfinished attempt's)."""
    common = ["--recipe", "probe", f"output_dir={tmp_path}", "name=r", "tracking.mode=disabled"]
    assert cli.main(["probe-stage", *common]) == 0
    run = tmp_path / "r"
    done = json.loads((run / "probe-stage" / ".complete.json").read_text())
    assert json.loads((run / "pipeline.json").read_text())["stages"]["probe-stage"]["action"] == "ran"
    assert cli.main(["run", *common]) == 0
    assert len(CALLS) == 1 and json.loads((run / "probe-stage" / ".complete.json").read_text()) == done
    assert "probe-stage  skipped" in capsys.readouterr().out
    assert cli.main(["probe-stage", *common]) == 0  # asked by name, a finished stage runs again
    assert len(CALLS) == 2 and CALLS[-1]["resume"] is False
    assert cli.main(["run", *common, "probe.greeting=hey"]) == 0  # a changed config reruns it under run too
    assert [c["greeting"] for c in CALLS] == ["hello", "hello", "hey"]


def test_a_recipe_brings_its_own_sections_and_stages(probe_recipe, capsys):
    cfg = load_run_config(None, ["recipe=probe"])
    assert cfg.probe.greeting == "hello" and not hasattr(cfg, "rl") and cfg.pipeline.stages == ["probe-stage"]
    with pytest.raises(LongshortError, match="unknown key 'rl'"):
        load_run_config(None, ["recipe=probe", "rl.steps=3"])
    with pytest.raises(LongshortError, match="'recipe' is 'nope'; accepted: hawkeye, longshort, probe"):
        load_run_config(None, ["recipe=nope"])
    with pytest.raises(LongshortError, match=r"command line \(pipeline.stages=\[probe-stage\]\): key 'pipeline.stages' "
                       r"is \['probe-stage'\], out of order, repeated or unknown; accepted: a subsequence of the "
                       "longshort recipe's stages"):
        load_run_config(None, ["pipeline.stages=[probe-stage]"])  # a longshort run has no such stage
    assert cli.main(["probe-stage", "tracking.mode=disabled"]) == 2
    assert "'probe-stage' is not a stage of the longshort recipe" in capsys.readouterr().err

