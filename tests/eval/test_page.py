"""``report.html`` from a run directory's files (``eval/page.py``): what it shows at each point of a run, that a run's
text cannot break it, and that a page that cannot be written never stops the run. The page of a real run, rendered
in Chromium, is checked in ``tests/pipeline/test_pipeline.py`` (the smoke run) and the Hawkeye pipeline's test."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from builders import ROOT, render_page, write_jsonl

from longshort.core import run_dir as rd
from longshort.eval.page import PAGE, render, write_page
from longshort.eval.report import write_results
from longshort.pipeline.run_config import load_run_config
from longshort.pipeline.runner import refresh_page

STAGES = ["bootstrap", "chunk", "score", "coldstart", "sft", "rl", "eval", "export"]
HOSTILE = "</div><script>alert('x')</script><b>2 < 3 & 4 > 1</b>"


def _summary(se: float = 0.05) -> dict:
    return {"settings": {"k": 2, "temperature": 0.7}, "benchmarks": {"dev": {"n": 40}},
            "systems": {"base": {"kind": "single"}, "pair": {"kind": "pair"}},
            "results": {"base": {"dev": {"accuracy": 0.5, "accuracy_se": se, "mean_tokens": 120.0, "n": 40}},
                        "pair": {"dev": {"accuracy": 0.625, "accuracy_se": se, "mean_tokens": 70.0, "n": 40,
                                         "tokens_long": 20.0, "tokens_short": 50.0}}}}


def _run_dir(root: Path) -> Path:
    d = root / "r"
    write_results(_summary(), d / rd.EVAL)
    for folder in ("eval/samples/pair", "score", "coldstart"):
        (d / folder).mkdir(parents=True, exist_ok=True)
    write_jsonl(d / rd.EVAL / "samples" / "pair" / "dev.jsonl", [
        {"id": "p0", "correct": False, "gold": "7", "predicted": "8", "status": "finished", "tokens": {"long": 9},
         "turns": [["long", "First thought.\n\n" + HOSTILE], ["short", "\\boxed{8}"]]},
        {"id": "p1", "correct": True, "gold": "5", "predicted": "5", "status": "finished", "tokens": {"long": 4},
         "turns": [["long", "Add them."], ["short", "\\boxed{5}"]]},
    ])
    write_jsonl(d / rd.SCORES, [{"id": "c0", "thoughts": [{"text": "Keep this.\n\n", "importance": 0.42},
                                                          {"text": "Drop this.\n\n", "importance": -0.1}]}])
    write_jsonl(d / rd.DIALOGUES, [{"id": "c0", "messages": [{"role": "user", "content": "What is 2 + 3?"},
                                                             {"role": "long", "content": "Keep this."},
                                                             {"role": "short", "content": "So 5. \\boxed{5}"}]}])
    for i, stage in enumerate(STAGES[:7]):
        (d / stage).mkdir(parents=True, exist_ok=True)
        (d / stage / rd.STAGE_DONE).write_text(json.dumps({"seconds": 10.0 * (i + 1), "finished": "2026-12-06T10:00:00"}))
    (d / "export" / rd.STAGE_STARTED).parent.mkdir(exist_ok=True)
    (d / "export" / rd.STAGE_STARTED).write_text("{}")
    return d


def test_the_page_holds_the_table_with_intervals_stage_times_and_dialogues_by_author(tmp_path):
    text = render(_run_dir(tmp_path), "r", STAGES, frozenset({"chunk"}))
    assert "<td>chunk</td><td>not needed</td>" in text
    assert "62.5 ± 5.0 <span class='muted'>[53, 72]</span>" in text  # ± SE and the 95% interval (1.96 SE)
    assert "<td>long 20 / short 50</td>" in text
    assert "<td>rl</td><td>finished</td><td>60.0</td><td>2026-12-06 10:00:00</td>" in text
    assert "<td>export</td><td>started, not finished</td>" in text and "<b>280.0</b>" in text
    # a right answer first, then a wrong one (the ids with their label: a plot's SVG clip-path ids are "p" and a hash)
    assert text.index("problem p1:") < text.index("problem p0:")
    assert "kept · importance 0.42</span>Keep this." in text  # the cold start's kept thought, with its score
    assert '<a href="score/report.html">' not in text  # linked only when the score stage wrote it


def test_a_runs_text_is_shown_as_text_never_as_markup(tmp_path, chromium):
    d = _run_dir(tmp_path)
    text = render(d, "<i>r</i>", STAGES)
    assert "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    seen = render_page(chromium, write_page(d, "<i>r</i>", STAGES), tmp_path)
    assert seen["errors"] == [] and seen["console"] == []
    assert len(seen["dialogues"]) == 3 and seen["roles"].count("long") == 3  # two answers, one cold start
    assert len(seen["kept"]) == 4  # one box per thought of the long role: 2 + 1 + 1


def test_before_eval_the_page_says_so_and_shows_what_ran(tmp_path):
    d = tmp_path / "r"
    (d / "bootstrap").mkdir(parents=True)
    (d / "bootstrap" / rd.STAGE_DONE).write_text(json.dumps({"seconds": 3.5}))
    text = render(d, "r", STAGES)
    assert "No results yet" in text and "<td>bootstrap</td><td>finished</td><td>3.5</td>" in text
    assert "<td>chunk</td><td>not run</td>" in text and "<svg" not in text


def test_a_page_that_cannot_be_written_is_said_and_the_run_goes_on(tmp_path, caplog):
    cfg = load_run_config(str(ROOT / "ray_configs" / "tiny.yaml"), [f"output_dir={tmp_path}", "name=r"])
    d = _run_dir(tmp_path)
    refresh_page(cfg, d)
    good = (d / PAGE).read_text()
    (d / rd.EVAL_RESULTS).write_text(json.dumps({"results": {}}))  # a results file of another shape
    with caplog.at_level(logging.WARNING, logger="longshort"):
        refresh_page(cfg, d)  # no exception
    assert f"report page {d / PAGE} not rewritten: KeyError" in caplog.text
    assert (d / PAGE).read_text() == good and not (d / (PAGE + ".tmp")).exists()
