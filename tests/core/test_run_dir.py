"""Where a configured model path points: the run's own outputs, or the user's directories."""

from __future__ import annotations

from longshort.core import run_dir as rd


def test_a_relative_model_path_is_the_runs_when_it_is_there_or_nowhere_else_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "r"
    (run / "sft" / "long" / "model").mkdir(parents=True)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert rd.model_path(run, "sft/long/model") == run / "sft/long/model"  # a stage's output
    assert rd.model_path(run, "rl/long/model") == run / "rl/long/model"  # made later by a stage: still the run's
    assert rd.model_path(run, "models/mine").resolve() == tmp_path / "models/mine"  # the user's, from the cwd
    assert rd.model_path(run, str(tmp_path / "x")) == tmp_path / "x"
