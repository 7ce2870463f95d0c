"""The pair SFT's outcome check on a real format-taught tiny pair: the same greedy dialogues as the stage's pair eval
(``evaluate_pair``), on the run's dev problems, recorded in ``sft/checks.json``; a pair trained on other data skips it."""

from __future__ import annotations

from builders import build_run_dir, problems, write_problems

from longshort.core import checks
from longshort.data.problems import ProblemSource, load_problems
from longshort.pipeline.run_config import load_run_config
from longshort.recipes.longshort.pair_sft import check_pair, evaluate_pair

LIMITS = ["sft.eval.max_turn_tokens=40", "sft.eval.max_turns=4", "sft.check.n=8"]


def test_the_pair_check_is_the_pair_evals_accuracy_on_dev(tmp_path, verifier):
    run = build_run_dir(tmp_path / "run", steps=60)
    dev = write_problems(run / "bootstrap" / "data" / "dev.jsonl", problems(10, seed=9))
    cfg = load_run_config(None, [*LIMITS, "sft.check.min_accuracy=0.99"])
    (found,) = check_pair(cfg.sft, run, verifier)
    assert (found.stage, found.setting, found.n, found.threshold) == ("sft", "sft.check.min_accuracy", 8, 0.99)
    expected = evaluate_pair(cfg.sft.eval, run / "sft" / "long" / "model", run / "sft" / "long" / "model",
                             run / "sft" / "short" / "model", load_problems(ProblemSource(str(dev), limit=8))[0],
                             verifier)
    assert found.value == expected["pair_accuracy"] and found.passed == (found.value >= 0.99)
    assert found.details["finished"] == expected["pair_finished"] > 0  # the taught pair holds dialogues
    assert checks.read(run) == [found]
    assert check_pair(cfg.sft, run, verifier, trained_on="my_cots.jsonl") == []  # not the embedded task: skipped
