"""The embedded default's bootstrap as a recipe stage, the same in every recipe that runs on the embedded task, and
the dev problems every stage's outcome check reads (``dev_problems``). Kept apart from ``bootstrap.py`` so that
declaring a recipe's stages imports no torch."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longshort.core import checks as outcome
from longshort.core import run_dir as rd
from longshort.core.stage import Stage

log = logging.getLogger("longshort")
HELP = "generate the synthetic task, build tokenizer + tiny model, SFT the long-CoT base model, evaluate it"


def _run(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.toy.bootstrap import check_base_model, run_bootstrap

    run_bootstrap(cfg.bootstrap, run_dir / rd.BOOTSTRAP, tracker, cfg.verify)
    check_base_model(cfg.bootstrap, run_dir, cfg.verify)


def bootstrap_stage(uses_embedded: Callable[[Any], bool], help: str = HELP,
                    report: Callable[[Any, Path], str] | None = None) -> Stage:
    """``uses_embedded(cfg)``: whether the config reads the embedded base model or its task data (a model or data
    path left unset); consulted when ``pipeline.bootstrap`` is ``auto`` (``always``/``never`` decide alone)."""

    def needed(cfg) -> bool:
        if cfg.pipeline.bootstrap != "auto":
            return cfg.pipeline.bootstrap == "always"
        return uses_embedded(cfg)

    return Stage("bootstrap", help, ("bootstrap",), (f"{rd.BASE_MODEL}/config.json", rd.BOOTSTRAP_EVAL), _run,
                 report=report, needed=needed)


def _dev_of_an_older_bootstrap(run_dir: Path) -> None:
    """A bootstrap made before dev splits has its task's settings (``data/task.json``): draw the same dev problems a
    new one writes (``toy.task.dev_split``) into ``data/dev.jsonl``, a file its completion record does not list."""
    from dataclasses import fields

    from longshort.toy.task import TaskConfig, dev_split, generate, write_jsonl

    saved = run_dir / rd.BOOTSTRAP / "data" / "task.json"
    if not saved.exists() or not (run_dir / rd.TRAIN_DATA).exists():
        return
    known = {f.name for f in fields(TaskConfig)}
    task = TaskConfig(**{k: v for k, v in json.loads(saved.read_text()).items() if k in known})
    dev = dev_split(task, *generate(task))
    write_jsonl(dev, run_dir / rd.DEV_DATA)
    log.info("wrote %s: the %d dev problems of this bootstrap's task (it was made before dev splits)",
             run_dir / rd.DEV_DATA, len(dev))


def dev_problems(run_dir: Path, source, n: int, stage: str, key: str, trained_on: str = "") -> list | None:
    """The first ``n`` problems a stage checks its outcome on: ``source`` (a ``ProblemSource`` at ``key``; path "":
    the run's ``bootstrap/data/dev.jsonl``). None, said on one INFO line, when there are none, or when the stage
    trained on data of its own (``trained_on``) and ``key`` names no dev problems of that data."""
    from dataclasses import replace

    from longshort.data.problems import load_problems

    if not source.path and trained_on:
        outcome.skip(stage, f"it trained on {trained_on}, not the embedded task; set {key}.path to dev problems of "
                            "that data to check it")
        return None
    path = rd.resolve(run_dir, source.path or None, rd.DEV_DATA)
    if not source.path and not path.exists():
        _dev_of_an_older_bootstrap(Path(run_dir))
    if not path.exists():
        outcome.skip(stage, f"no dev problems: {path} does not exist (it comes with the embedded task's bootstrap; "
                            f"set {key}.path to check on your own data)")
        return None
    problems, _ = load_problems(replace(source, path=str(path), limit=n))
    if not problems:
        outcome.skip(stage, f"{path} holds no dev problems")
        return None
    return problems
