"""The RL stage's progress eval sets the pair beside the base model on the same problems, graded by one rule."""

from __future__ import annotations

import json

from longshort.core import run_dir as rd
from longshort.rl.metrics import base_metrics


def _rows(tmp_path, name, rows):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_base_is_read_on_the_pairs_problems_and_a_cut_answer_counts_wrong(tmp_path):
    # ten test problems: the first two right, the third right but cut at its limit, the rest wrong and long
    rows = [{"id": f"p{i}", "correct": i < 3, "finished": i != 2, "tokens": 10 if i < 3 else 100} for i in range(10)]
    _rows(tmp_path, rd.BOOTSTRAP_EVAL_SAMPLES, rows)
    got = base_metrics(tmp_path, ["p0", "p1", "p2", "p3"])  # what the RL eval reads (its limit: the first four)
    assert got == {"accuracy": 0.5, "mean_tokens": 32.5, "n": 4}  # not 0.3 / 73 over all ten, not 0.75 with p2
    assert base_metrics(tmp_path, ["p0", "p11"]) is None  # a problem the base never answered: no comparison
    assert base_metrics(tmp_path / "elsewhere", ["p0"]) is None  # no bootstrap in this run


def test_dev_answers_from_the_outcome_check_count_too(tmp_path):
    _rows(tmp_path, rd.BOOTSTRAP_EVAL_SAMPLES, [{"id": "eval-0", "correct": True, "finished": True, "tokens": 10}])
    _rows(tmp_path, rd.BOOTSTRAP_CHECK_SAMPLES, [{"id": f"dev-{i}", "correct": i == 0, "finished": True, "tokens": 20}
                                                 for i in range(4)])
    assert base_metrics(tmp_path, ["dev-0", "dev-1"]) == {"accuracy": 0.5, "mean_tokens": 20.0, "n": 2}
