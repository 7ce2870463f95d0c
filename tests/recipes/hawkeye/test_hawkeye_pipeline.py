"""`longshort run` of the Hawkeye recipe end to end at smoke sizes (every real stage: bootstrap, responder, warmup,
rl, eval, export), then `longshort solve` on its export; a config change reruns exactly the stages it affects."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import ray
from builders import ROOT

from longshort.cli import main
from longshort.pipeline.run_config import load_run_config
from longshort.pipeline.runner import plan
from longshort.recipes.hawkeye.recipe import RECIPE

SMOKE = str(ROOT / "ray_configs" / "hawkeye-smoke.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hawkeye-pipeline")
    overrides = [f"output_dir={out}", "tracking.mode=disabled"]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["run", SMOKE, *overrides]) == 0
        yield {"dir": out / "hawkeye-smoke", "overrides": overrides}
    finally:
        ray.shutdown()


def test_every_stage_ran_and_eval_shows_each_roles_tokens(run):
    d = run["dir"]
    cfg = load_run_config(SMOKE, run["overrides"])
    assert dict(plan(cfg, d)) == {s: "done" for s in RECIPE.stage_names}
    results = json.loads((d / "eval" / "results.json").read_text())
    assert results["systems"]["hawkeye-rl"] == {"kind": "hawkeye", "models": {"planner": "rl/planner/model",
                                                                             "responder": "responder/model"}}
    assert "longshort-rl-pair" in results["skipped"]  # the Long⊗Short run is not there: skipped, and said why
    m = results["results"]["hawkeye-rl"]["tiny"]
    assert m["tokens_planner"] + m["tokens_responder"] == pytest.approx(m["mean_tokens"])
    assert "tokens_planner" not in results["results"]["base"]["tiny"]
    table = (d / "eval" / "table.md").read_text()
    assert f"planner {m['tokens_planner']:.0f} / responder {m['tokens_responder']:.0f}" in table
    assert not (d / "rl" / "responder").exists()  # frozen: never exported from RL


def test_the_report_page_shows_the_planner_and_responder_turns(run, chromium, tmp_path):
    """The run's ``report.html`` (eval/page.py) with Hawkeye's roles: its dialogues coloured by planner and
    responder, and no long role's "kept" marks."""
    from builders import render_page

    seen = render_page(chromium, run["dir"] / "report.html", tmp_path)
    assert seen["errors"] == [] and seen["console"] == [] and seen["page_width"] <= seen["viewport"]
    results = json.loads((run["dir"] / "eval" / "results.json").read_text())
    assert seen["results_rows"] == len(results["results"]) and len(seen["svgs"]) == 1
    # at smoke size the planner is cut before it hands over, so the responder may never speak
    assert "planner" in seen["roles"] and set(seen["roles"]) <= {"planner", "responder"} and seen["kept"] == []


def test_export_holds_both_models_and_solve_runs_them(run):
    d = run["dir"]
    manifest = json.loads((d / "export" / "manifest.json").read_text())
    assert manifest["format"] == "longshort-hawkeye" and manifest["planner_stage"] == "rl"
    assert manifest["protocol"]["headers"] == {"planner": "<|assistant|>", "responder": "<|short|>"}
    for role in ("planner", "responder"):
        assert (d / "export" / role / "config.json").exists() and manifest["models"][role]["sha256"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["solve", str(d / "export"), "Take the number 5. First add 3. What is the result?", "--json",
                     "--max-turn-tokens", "24"]) == 0
    rec = json.loads(out.getvalue())
    assert [t["role"] for t in rec["turns"]][:1] == ["planner"] and rec["status"] in ("finished", "cut")


def test_a_warmup_change_keeps_the_responder_and_reruns_from_the_warmup(run):
    cfg = load_run_config(SMOKE, [*run["overrides"], "hawkeye.warmup.examples=16"])
    assert dict(plan(cfg, run["dir"])) == {"bootstrap": "done", "responder": "done", "warmup": "changed",
                                           "rl": "changed", "eval": "changed", "export": "changed"}


def test_forgiveness_counts_what_the_responder_alone_gets_wrong(run, verifier):
    """The paper's quirk, off by default: with ``hawkeye.forgive_responder_failures`` the rl stage swaps
    ``correctness`` for a variant that counts the problems the responder alone gets wrong as answered."""
    from longshort.recipes.hawkeye.forgive import forgiven_correctness
    from longshort.recipes.hawkeye.stages import _forgiving
    from longshort.rl.episodes import Episode
    from longshort.rl.rewards import RewardContext

    d = run["dir"]
    cfg = load_run_config(SMOKE, [*run["overrides"], "hawkeye.forgive_responder_failures=true"])
    terms = _forgiving(cfg.rl, d, verifier)
    assert [t.name for t in terms] == ["longshort.recipes.hawkeye.forgive:forgiven_correctness", "length"]
    wrong = json.loads((d / "rl" / "responder_alone_wrong.json").read_text())
    ids = [json.loads(line)["id"] for line in (d / "bootstrap" / "data" / "train.jsonl").read_text().splitlines()]
    assert wrong and set(wrong) <= set(ids)  # a 4-step responder answers few problems without a CoT
    right = next((i for i in ids if i not in wrong), None)
    episodes = [Episode(i, "q", "1", 0, 0, [0], 1) for i in (wrong[0], right) if i is not None]
    got = forgiven_correctness(episodes, RewardContext(episodes, verifier), terms[0].kwargs["wrong_ids_file"])
    assert got == [1.0, 0.0][: len(episodes)]  # unfinished both: forgiven only where the responder alone fails


def test_compare_groups_seeds_marks_oracle_data_and_refuses_other_problems(run, tmp_path, capsys):
    """`longshort compare` over this run and a copy standing in for a second seed: one row per system with the runs'
    mean ± sd, Hawkeye's tag-taught planner marked as oracle data, the plot written; a copy whose problems differ is
    refused, naming the benchmark."""
    import shutil
    import statistics

    a, b = run["dir"], tmp_path / "seed-1" / "hawkeye-smoke"
    for part in ("eval", "bootstrap/data"):
        shutil.copytree(a / part, b / part)
    shutil.copy(a / "config.yaml", b / "config.yaml")
    results = json.loads((b / "eval" / "results.json").read_text())
    acc_a = results["results"]["hawkeye-rl"]["tiny"]["accuracy"]
    results["results"]["hawkeye-rl"]["tiny"]["accuracy"] = acc_b = max(0.0, acc_a - 0.25)
    (b / "eval" / "results.json").write_text(json.dumps(results))

    out = tmp_path / "cmp"
    assert main(["compare", str(a), f"{b}:base,hawkeye-rl", f"{b}:hawkeye-warmup=warmup-b", "--out", str(out)]) == 0
    groups = {g["system"]: g for g in json.loads((out / "compare.json").read_text())["groups"]}
    assert [len(groups[s]["runs"]) for s in ("base", "hawkeye-rl", "hawkeye-warmup", "warmup-b")] == [2, 2, 1, 1]
    rl = groups["hawkeye-rl"]
    assert rl["accuracy"] == pytest.approx((acc_a + acc_b) / 2)
    assert rl["spread"] == pytest.approx(statistics.stdev([acc_a, acc_b]))
    assert "planner warm-up on the teacher's tags" in rl["oracle"] and groups["base"]["oracle"] == ""
    assert set(rl["tokens_by_role"]) == {"planner", "responder"}
    assert (out / "compare.png").stat().st_size > 10_000
    assert "| hawkeye-rl | hawkeye | planner warm-up on the teacher's tags" in (out / "compare.md").read_text()

    problems = b / "bootstrap" / "data" / "eval.jsonl"
    lines = problems.read_text().splitlines()
    problems.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # the same problems, another order
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "benchmark 'tiny': the runs did not evaluate the same problems" in err and str(problems) in err
