"""`longshort run` of the SoftCoT recipe end to end at smoke sizes (bootstrap, assistant, train, eval, export), then
`longshort solve` on its export; a config change reruns exactly the stages it affects."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from builders import ROOT

from longshort.cli import main
from longshort.pipeline.run_config import load_run_config
from longshort.pipeline.runner import plan
from longshort.recipes.softcot.recipe import RECIPE

SMOKE = str(ROOT / "ray_configs" / "softcot-smoke.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("softcot-pipeline")
    overrides = [f"output_dir={out}", "tracking.mode=disabled"]
    assert main(["run", SMOKE, *overrides]) == 0
    return {"dir": out / "softcot-smoke", "overrides": overrides}


def test_every_stage_ran_and_the_table_has_the_systems_and_controls_over_seeds(run):
    d = run["dir"]
    cfg = load_run_config(SMOKE, run["overrides"])
    assert dict(plan(cfg, d)) == {s: "done" for s in RECIPE.stage_names}
    results = json.loads((d / "eval" / "results.json").read_text())
    assert list(results["results"]) == ["llm", "softcot-untrained", "softcot-other-problem", "softcot"]
    assert results["settings"]["k"] == 2 and results["settings"]["seeds"] == [41, 42]
    assert {s: v["thoughts"] for s, v in results["systems"].items()} == {
        "llm": 0, "softcot-untrained": 4, "softcot-other-problem": 4, "softcot": 4}
    assert results["systems"]["softcot-other-problem"]["assistant_reads"] == "another problem"
    m = results["results"]["softcot"]["tiny"]
    assert m["n"] == 6 and len(m["accuracy_runs"]) == 2 and m["mean_tokens"] > 0
    samples = (d / "eval" / "samples-softcot.jsonl").read_text().splitlines()
    assert len(samples) == 12  # 6 problems x 2 seeds, each sample kept
    table = (d / "eval" / "table.md").read_text()
    assert "| softcot-untrained |" in table and "| softcot-other-problem |" in table
    page = (d / "report.html").read_text()  # eval/page.py: the same systems, every stage's time
    assert all(f"<td>{s}</td>" in page for s in results["results"])
    assert all(f"<td>{s}</td><td>finished</td>" in page for s in RECIPE.stage_names)
    # the trained composite's dir holds the projection, the spec and the LLM's tokenizer: no model weights
    assert sorted(p.name for p in (d / "softcot" / "model").glob("*.safetensors")) == ["projection.safetensors"]


def test_export_ships_the_projection_with_both_models_and_solve_runs_it(run):
    d = run["dir"]
    manifest = json.loads((d / "export" / "manifest.json").read_text())
    assert manifest["format"] == "longshort-softcot" and manifest["thoughts"] == 4
    assert manifest["models"]["llm"]["included"] and (d / "export" / "llm" / "config.json").exists()
    assert json.loads((d / "export" / "softcot.json").read_text())["assistant"] == "assistant"  # relative: portable
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["solve", str(d / "export"), "Take the number 5. First add 3. What is the result?", "--json",
                     "--max-turn-tokens", "16"]) == 0
    rec = json.loads(out.getvalue())
    assert rec["thoughts"] == 4 and 1 <= rec["tokens"] <= 16 and rec["status"] in ("finished", "cut")


def test_an_eval_change_keeps_the_projection_and_a_prompt_change_retrains_it(run):
    eval_only = load_run_config(SMOKE, [*run["overrides"], "eval.seeds=[1]"])
    assert dict(plan(eval_only, run["dir"])) == {"bootstrap": "done", "assistant": "done", "train": "done",
                                                 "eval": "changed", "export": "changed"}
    prompt = load_run_config(SMOKE, [*run["overrides"], "softcot.thoughts_train=2"])
    assert dict(plan(prompt, run["dir"]))["train"] == "changed"
    assert dict(plan(prompt, run["dir"]))["assistant"] == "done"
