"""`longshort eval`: systems x benchmarks with real tiny models, the real verifier, and the written report files.

The run directory holds a random tiny base model (answering alone) and a pair model taught for a few steps to say
"go" as the long role and "so \\boxed{7}" as the short one, so greedy pair dialogues finish with a known answer.
Accuracies are checked against numbers computed by hand from the answers the models actually wrote.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import statistics
from pathlib import Path

import pytest
from builders import BENCHMARKS, _teach_format, task_records, tiny_model_dir

from longshort.cli import main
from longshort.core.config import build
from longshort.core.errors import LongshortError
from longshort.data.verify import shared_verifier
from longshort.eval.report import CSV_COLUMNS
from longshort.eval.runner import EvalConfig, run_eval
from longshort.pipeline.run_config import load_run_config
from longshort.toy.task import write_jsonl
from longshort.tracking.tracker import Tracker, TrackingConfig, read_metrics

GSM8K = BENCHMARKS / "gsm8k_test.jsonl"
N = 6  # problems in the run's held-out set
SYSTEMS = [
    {"name": "base", "kind": "single", "model": "bootstrap/base_model"},
    {"name": "sft-pair", "kind": "pair", "long": "sft/long/model", "short": "sft/short/model"},
    {"name": "sft-long", "kind": "single", "model": "sft/long/model"},  # same dir as a pair member: engine reused
    {"name": "rl-pair", "kind": "pair", "long": "rl/long/model", "short": "rl/short/model"},  # never trained here
]


def eval_cfg(**kw) -> EvalConfig:
    """Built by the config loader (types, ranges and validate() as at config load); short answers for speed."""
    return build(EvalConfig, {"max_tokens": 6, "max_turn_tokens": 8, "max_turns": 4, **kw}, "eval")


def at(run: Path, systems: list[dict]) -> list[dict]:
    """``systems`` with the run's model paths made absolute, to evaluate them into another directory."""
    return [{k: str(run / v) if k in ("model", "long", "short") else v for k, v in s.items()} for s in systems]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    held_out = task_records(N, seed=3)
    write_jsonl(held_out, root / "bootstrap" / "data" / "eval.jsonl")
    base = tiny_model_dir(root / "bootstrap" / "base_model", task_records(200))
    pair = root / "sft" / "long" / "model"
    shutil.copytree(base, pair)
    _teach_format(pair, [(r["problem"], "7", "go", "so \\boxed{7}") for r in task_records(12) + held_out], 15, seed=0)
    (root / "sft" / "short").mkdir()
    (root / "sft" / "short" / "model").symlink_to(pair, target_is_directory=True)  # one model in both roles
    return root


@pytest.fixture(scope="module")
def greedy(run) -> dict:
    """The default benchmark (the run's held-out set), greedy, with a tracker; log lines kept for the engine count."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("longshort")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with Tracker(TrackingConfig(mode="disabled", backends=["jsonl"]), run) as tracker:
            summary = run_eval(eval_cfg(systems=SYSTEMS), run, tracker, shared_verifier())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return {"summary": summary, "logs": [r.getMessage() for r in records]}


def test_results_table_csv_and_plot(run, greedy):
    out, summary = run / "eval", greedy["summary"]
    assert json.loads((out / "results.json").read_text()) == summary
    assert list(summary["results"]) == ["base", "sft-pair", "sft-long"]
    assert "rl/long/model" in summary["skipped"]["rl-pair"] and "longshort rl" in summary["skipped"]["rl-pair"]
    assert summary["benchmarks"]["tiny"] == {"source": str(run / "bootstrap" / "data" / "eval.jsonl"), "n": N,
                                             "records_read": N, "bad_records_skipped": {}, "left_out_by_limit": 0}
    for system, per in summary["results"].items():
        m = per["tiny"]
        rows = read_jsonl(out / "samples" / system / "tiny.jsonl")
        assert m["n"] == N and m["k"] == 1 and len(rows) == N and m["accuracy_std"] == 0.0
        assert m["accuracy"] == sum(r["correct"] for r in rows) / N
        totals = [sum(r["tokens"].values()) for r in rows]
        assert m["mean_tokens"] == pytest.approx(statistics.fmean(totals))
        assert m["median_tokens"] == statistics.median(totals)
        assert m["truncated"] == sum(r["status"] != "finished" for r in rows) / N
        assert m["mean_turns"] == statistics.fmean(len(r["turns"]) for r in rows)
    single, pair = summary["results"]["base"]["tiny"], summary["results"]["sft-pair"]["tiny"]
    assert single["mean_turns"] == 1 and 0 < single["mean_tokens"] <= 6 and "tokens_long" not in single
    assert pair["tokens_long"] + pair["tokens_short"] == pytest.approx(pair["mean_tokens"])  # roles sum to the total
    assert 2 <= pair["mean_turns"] <= 4 and 0 < pair["tokens_long"] and 0 < pair["tokens_short"]
    for r in read_jsonl(out / "samples" / "sft-pair" / "tiny.jsonl"):
        assert set(r["tokens"]) == {"long", "short"}
        assert [t[0] for t in r["turns"]] == [("long", "short")[i % 2] for i in range(len(r["turns"]))]
    # the table: one row per system, Acc and Tokens per benchmark, then the averages; skipped systems named
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == "| System | tiny Acc | tiny Tokens | Avg Acc | Avg Tokens | Avg Tokens by role |"
    assert [line.split(" | ")[0] for line in table[2:5]] == ["| base", "| sft-pair", "| sft-long"]
    acc_cell = f"{100 * pair['accuracy']:.1f} ± {100 * pair['accuracy_se']:.1f}"  # accuracy ± standard error
    assert table[3].split(" | ")[1] == acc_cell and table[3].endswith(
        f" | {pair['mean_tokens']:.0f} | long {pair['tokens_long']:.0f} / short {pair['tokens_short']:.0f} |")
    assert table[2].endswith(f" | {single['mean_tokens']:.0f} |  |")  # a single model has no roles
    assert any(line.startswith("Skipped rl-pair:") for line in table)
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS and [(r["system"], r["benchmark"]) for r in rows] == [
        ("base", "tiny"), ("sft-pair", "tiny"), ("sft-long", "tiny")]
    assert float(rows[1]["accuracy_se"]) == pair["accuracy_se"]
    assert float(rows[1]["accuracy"]) == pair["accuracy"] and rows[1]["kind"] == "pair" and rows[0]["tokens_long"] == ""
    png = (out / "accuracy_vs_tokens.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # metrics went to the tracker; one engine per model directory (the pair's two roles and sft-long share one)
    logged = {k: v for rec in read_metrics(run / "metrics.jsonl") for k, v in rec.items()}
    assert logged["eval/sft-pair/tiny/accuracy"] == pair["accuracy"] and "eval/base/tiny/mean_tokens" in logged
    opened = [m for m in greedy["logs"] if m.startswith("rollouts: hf engine in this process")]
    assert len(opened) == 2, opened


def _half_right(rows: list[dict]) -> list[str]:
    """Gold answers: what the model answered for the first N/2 problems that have an answer, garbage elsewhere."""
    answered = [i for i, r in enumerate(rows) if r["predicted"] is not None]
    assert len(answered) >= N // 2, f"the fixture model answered only {len(answered)} of {N}: {rows}"
    right = set(answered[: N // 2])
    return [rows[i]["predicted"] if i in right else "-98765.4321" for i in range(N)]


@pytest.fixture(scope="module")
def half(run, greedy, tmp_path_factory) -> dict[str, Path]:
    """Per system: the held-out problems with gold answers right for exactly half of its greedy answers."""
    problems = read_jsonl(run / "bootstrap" / "data" / "eval.jsonl")
    out = {}
    for s in SYSTEMS[1:3]:  # the pair and its model alone (the random base model writes only special tokens)
        golds = _half_right(read_jsonl(run / "eval" / "samples" / s["name"] / "tiny.jsonl"))
        out[s["name"]] = tmp_path_factory.mktemp("bench") / f"half_{s['name']}.jsonl"
        out[s["name"]].write_text("".join(json.dumps({"id": p["id"], "problem": p["problem"], "answer": g}) + "\n"
                                          for p, g in zip(problems, golds, strict=True)))
    return out


def test_accuracy_is_the_hand_count_on_the_actual_generations(run, half, tmp_path):
    systems = SYSTEMS[1:3]
    benches = [{"name": f"half-{s['name']}", "source": {"path": str(half[s["name"]])}} for s in systems]
    summary = run_eval(eval_cfg(systems=at(run, systems), benchmarks=benches), tmp_path, verifier=shared_verifier())
    for s in systems:
        assert summary["results"][s["name"]][f"half-{s['name']}"]["accuracy"] == 0.5
        before = read_jsonl(run / "eval" / "samples" / s["name"] / "tiny.jsonl")
        after = read_jsonl(tmp_path / "eval" / "samples" / s["name"] / f"half-{s['name']}.jsonl")
        assert [r["turns"] for r in after] == [r["turns"] for r in before]  # same problems, same greedy answers


def test_k_samples_average_different_sample_sets(run, half, tmp_path):
    bench = [{"name": "tiny", "source": {"path": str(half["sft-pair"])}}]
    with pytest.raises(LongshortError, match="eval.k"):
        eval_cfg(k=2)
    cfg = eval_cfg(systems=at(run, SYSTEMS[1:2]), benchmarks=bench, k=2, temperature=0.5, seed=5)
    m = run_eval(cfg, tmp_path, verifier=shared_verifier())["results"]["sft-pair"]["tiny"]
    rows = read_jsonl(tmp_path / "eval" / "samples" / "sft-pair" / "tiny.jsonl")
    assert len(rows) == 2 * N and [r["sample"] for r in rows] == [0] * N + [1] * N
    assert [r["id"] for r in rows[:N]] == [r["id"] for r in rows[N:]]
    assert [r["turns"] for r in rows[:N]] != [r["turns"] for r in rows[N:]]  # two different sample sets
    runs = [sum(r["correct"] for r in rows[j * N : (j + 1) * N]) / N for j in range(2)]
    assert m["k"] == 2 and m["accuracy_runs"] == runs and 0 < m["accuracy"] < 1
    assert m["accuracy"] == pytest.approx(sum(runs) / 2) and m["accuracy_std"] == pytest.approx(abs(runs[0] - runs[1]) / 2)
    per_problem = [(rows[i]["correct"] + rows[N + i]["correct"]) / 2 for i in range(N)]  # problems are the unit
    assert m["accuracy_se"] == pytest.approx(statistics.stdev(per_problem) / N**0.5)
    assert m["mean_tokens"] == pytest.approx(statistics.fmean(sum(r["tokens"].values()) for r in rows))
    assert m["tokens_long"] + m["tokens_short"] == pytest.approx(m["mean_tokens"])
    assert "±" in (tmp_path / "eval" / "table.md").read_text().splitlines()[2]


def test_missing_systems_skip_or_fail(run, tmp_path):
    with pytest.raises(LongshortError) as e:
        run_eval(eval_cfg(systems=SYSTEMS, missing="fail"), run)
    assert "rl-pair" in str(e.value) and str(run / "rl" / "long" / "model") in str(e.value)
    assert "longshort rl" in str(e.value)
    bench = [{"name": "tiny", "source": {"path": str(run / "bootstrap" / "data" / "eval.jsonl")}}]
    with pytest.raises(LongshortError, match=r"eval: none of the systems can run \(base: .*longshort bootstrap.*"
                                             r"sft-pair: .*longshort sft"):
        run_eval(eval_cfg(benchmarks=bench), tmp_path)  # an empty run: every default system is missing
    assert not (tmp_path / "eval" / "results.json").exists()  # no empty table passed off as a result
    code = main(["eval", f"output_dir={tmp_path.parent}", f"name={tmp_path.name}", "tracking.mode=disabled",
                 "tracking.backends=[jsonl]", f"eval.benchmarks=[{{name: tiny, source: {{path: '{bench[0]['source']['path']}'}}}}]"])
    assert code == 2  # the command fails, it does not exit 0 with nothing evaluated


def test_config_and_benchmark_errors_name_the_key(run, tmp_path):
    with pytest.raises(LongshortError, match=r"eval\.k.*temperature"):
        load_run_config(None, ["eval.k=2"])
    assert load_run_config(None, ["eval.k=2", "eval.temperature=0.6"]).eval.k == 2
    with pytest.raises(LongshortError, match=r"eval\.systems\[0\]\.long"):
        load_run_config(None, ["eval.systems=[{name: p, kind: pair, long: a}]"])
    with pytest.raises(LongshortError, match=r"eval\.benchmarks.*used twice"):
        load_run_config(None, ["eval.benchmarks=[{name: a, source: {path: x}}, {name: a, source: {path: y}}]"])
    bad = [{"name": "MATH500", "source": {"path": str(tmp_path / "nope" / "math500.jsonl")}}]
    with pytest.raises(LongshortError, match=r"benchmark 'MATH500'.*nope/math500.jsonl.*not found"):
        run_eval(eval_cfg(benchmarks=bad), run)
    with pytest.raises(LongshortError, match=r"benchmark 'tiny'.*longshort bootstrap"):
        run_eval(eval_cfg(), tmp_path)  # the default benchmark of a run that has no held-out set


@pytest.mark.skipif(not GSM8K.is_file(), reason=f"shared benchmark file {GSM8K} is absent (no ../shared checkout)")
def test_gsm8k_preset_on_the_shared_file(run, tmp_path):
    bench = [{"name": "GSM8K", "source": {"path": str(GSM8K), "preset": "gsm8k", "limit": 4}}]
    systems = at(run, SYSTEMS[:2])  # absolute model paths
    summary = run_eval(eval_cfg(benchmarks=bench, systems=systems), tmp_path, verifier=shared_verifier())
    assert summary["benchmarks"]["GSM8K"]["n"] == 4
    rows = read_jsonl(tmp_path / "eval" / "samples" / "sft-pair" / "GSM8K.jsonl")
    assert [r["gold"] for r in rows] == ["18", "3", "70000", "540"]  # the numbers after '####'
    assert all(m["GSM8K"]["n"] == 4 for m in summary["results"].values())
    assert (tmp_path / "eval" / "table.md").read_text().startswith("| System | GSM8K Acc | GSM8K Tokens |")


def test_cli_eval_prints_the_table(run, capsys):
    code = main(["eval", f"output_dir={run.parent}", f"name={run.name}", "tracking.mode=disabled",
                 "tracking.backends=[jsonl]", "eval.max_tokens=4", "eval.max_turn_tokens=6", "eval.max_turns=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| System | tiny Acc | tiny Tokens | Avg Acc | Avg Tokens |" in printed and "| sft-pair |" in printed
    assert "Skipped rl-pair" in printed


def test_a_single_answer_cut_at_its_limit_is_wrong_as_a_cut_pair_is():
    """`eval`, the pair SFT's base comparison and the bootstrap grade through `judge`: the same rule for both kinds."""
    from longshort.eval.runner import Answer, judge

    ids = [("assistant", [1, 2, 3])]
    answers = [Answer(ids, "finished", r"so \boxed{7}"), Answer(ids, "length", r"so \boxed{7}"),
               Answer([("long", [1]), ("short", [2])], "cut", ""), Answer(ids, "max_turns", r"\boxed{7}")]
    verdicts = judge(answers, ["7"] * 4, shared_verifier())
    assert [v.correct for v in verdicts] == [True, False, False, False]
    assert [v.reason for v in verdicts] == ["correct", "cut", "cut", "cut"]


def test_standard_error_is_over_problems():
    from longshort.eval.runner import accuracy_se

    # k = 1: the binomial standard error sqrt(p (1 - p) / (n - 1)); 65% of 200 problems -> 3.4 points
    correct = [True] * 130 + [False] * 70
    assert accuracy_se(correct, 200, 1) == pytest.approx((0.65 * 0.35 / 199) ** 0.5)
    assert 0.033 < accuracy_se(correct, 200, 1) < 0.035
    # k = 2 with each problem either always or never right: samples add no independent information
    both = [True] * 10 + [False] * 10
    assert accuracy_se(both + both, 20, 2) == pytest.approx(accuracy_se(both, 20, 1))
    assert accuracy_se([True], 1, 1) == 0.0


def test_records_left_out_are_counted_in_the_results(run, tmp_path):
    good = [json.loads(line) for line in (run / "bootstrap" / "data" / "eval.jsonl").read_text().splitlines()]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join([json.dumps(good[0]), '{"problem": "cut off', json.dumps({"problem": "no answer"}),
                               *map(json.dumps, good[1:4])]) + "\n")
    bench = [{"name": "b", "source": {"path": str(path), "on_bad_record": "skip", "limit": 2}}]
    summary = run_eval(eval_cfg(systems=at(run, SYSTEMS[:1]), benchmarks=bench), tmp_path / "out")
    assert summary["benchmarks"]["b"] == {"source": str(path), "n": 2, "records_read": 4,
                                          "bad_records_skipped": {"invalid_json": 1, "missing_field": 1},
                                          "left_out_by_limit": 2}


def test_multiple_choice_benchmark_accepts_the_option_text(run, greedy, tmp_path):
    # The fixture pair answers \boxed{7}: as the text of the right option it must count, though the gold is a letter.
    problems = read_jsonl(run / "bootstrap" / "data" / "eval.jsonl")
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({"id": p["id"], "problem": p["problem"], "answer": "7",
                                        "choices": ["5", "7", "9"]}) + "\n" for p in problems))
    bench = [{"name": "mc", "source": {"path": str(path)}}]
    summary = run_eval(eval_cfg(systems=at(run, SYSTEMS[1:2]), benchmarks=bench), tmp_path, verifier=shared_verifier())
    rows = read_jsonl(tmp_path / "eval" / "samples" / "sft-pair" / "mc.jsonl")
    assert {r["gold"] for r in rows} <= set("ABC") and len({r["gold"] for r in rows}) > 1  # letters, shuffled
    sevens = [r for r in rows if r["predicted"] == "7"]
    assert sevens and all(r["correct"] for r in sevens)
    assert all(not r["correct"] for r in rows if r["predicted"] not in ("7", r["gold"]))
    assert summary["results"]["sft-pair"]["mc"]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / N)
