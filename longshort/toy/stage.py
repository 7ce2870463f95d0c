"""The embedded default's bootstrap as a recipe stage, the same in every recipe that runs on the embedded task.
Kept apart from ``bootstrap.py`` so that declaring a recipe's stages imports no torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from longshort.core import run_dir as rd
from longshort.core.stage import Stage

HELP = "generate the synthetic task, build tokenizer + tiny model, SFT the long-CoT base model, evaluate it"


def _run(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.toy.bootstrap import run_bootstrap

    run_bootstrap(cfg.bootstrap, run_dir / rd.BOOTSTRAP, tracker, cfg.verify)


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
