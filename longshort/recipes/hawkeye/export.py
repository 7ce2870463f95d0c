"""``longshort export`` for Hawkeye: the planner and the responder as two Hugging Face model directories and a
manifest saying how they talk (``<out>/planner``, ``<out>/responder``, ``manifest.json``), written beside ``<out>``
and renamed into place."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from longshort import __version__
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.core.hub import upload_commands
from longshort.core.manifest import sha256
from longshort.data.protocol import PLANNER_RESPONDER_RULES, ROLE_TOKENS
from longshort.recipes.hawkeye.config import RESPONDER_MODEL, WARMUP_MODEL

log = logging.getLogger("longshort")
FORMAT = "longshort-hawkeye"
MANIFEST = "manifest.json"
LAYOUT = "<|user|>problem<|end_turn|><|assistant|>concise CoT<|end_turn|><|short|>answer<|endoftext|>"


@dataclass
class HawkeyeExportConfig:
    """Export of the planner/responder pair (config section ``export``)."""

    source: Literal["auto", "rl", "warmup", "base"] = "auto"  # the planner: auto = the latest stage that made one
    out: str | None = None  # None: <run>/export


def planner_dir(run_dir: Path, source: str, given: str | None = None) -> tuple[str, Path]:
    """(stage, directory) of the planner to ship."""
    found = {"rl": run_dir / rd.role_model("rl", "planner"), "warmup": run_dir / WARMUP_MODEL,
             "base": rd.resolve(run_dir, given, rd.BASE_MODEL)}
    order = ("rl", "warmup", "base") if source == "auto" else (source,)
    for stage in order:
        if (found[stage] / "config.json").exists():
            return stage, found[stage]
    raise LongshortError(f"export: no planner model in {run_dir} for source {source!r} (looked at "
                         f"{', '.join(str(found[s]) for s in order)}); run the stage that makes it first")


def run_export(cfg: HawkeyeExportConfig, run_dir: str | Path, hawkeye=None) -> Path:
    from longshort.core.checkpoint_io import staged_dir

    run_dir = Path(run_dir)
    stage, planner = planner_dir(run_dir, cfg.source, getattr(hawkeye, "planner_model", None))
    responder = rd.resolve(run_dir, getattr(hawkeye, "responder_model", None), RESPONDER_MODEL)
    if not (responder / "config.json").exists():
        raise LongshortError(f"export: the responder {responder} does not exist; run `longshort responder` first")
    out = Path(cfg.out) if cfg.out else run_dir / rd.EXPORT
    with staged_dir(out) as tmp:
        models = {}
        for role, src in (("planner", planner), ("responder", responder)):
            shutil.copytree(src, tmp / role, ignore=shutil.ignore_patterns("*.tmp", ".*"))
            models[role] = {"source": str(src), "sha256": {f.name: sha256(f) for f in sorted((tmp / role).glob(
                "*.safetensors"))}}
        rules = PLANNER_RESPONDER_RULES
        evals = run_dir / rd.EVAL_RESULTS
        manifest = {"format": FORMAT, "format_version": 1, "longshort_version": __version__, "run": run_dir.name,
                    "planner_stage": stage, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": models,
                    "protocol": {"layout": LAYOUT, "order": list(rules.order), "finishers": sorted(rules.finishers),
                                 "headers": {r: ROLE_TOKENS[rules.header(r)] for r in rules.order}},
                    "eval": json.loads(evals.read_text())["results"] if evals.exists() else None}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("export: %s planner + responder of run %s -> %s", stage, run_dir.name, out)
    log.info(upload_commands(out, ("planner", "responder"), run_dir.name))
    return out
