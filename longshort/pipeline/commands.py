"""Stage entry points the CLI calls: each makes the run directory, tracker and logging, then runs one stage."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from longshort.core.config import dump_yaml
from longshort.core.logs import setup_logging
from longshort.pipeline.run_config import RunConfig
from longshort.tracking.tracker import Tracker, scrub

log = logging.getLogger("longshort")


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def prepare_run(cfg: RunConfig) -> Path:
    """Create ``runs/<name>/`` and write the resolved config (credentials scrubbed) next to the outputs."""
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(scrub(cfg)), encoding="utf-8")
    setup_logging(run_dir, "INFO")
    return run_dir


def open_tracker(cfg: RunConfig, run_dir: Path) -> Tracker:
    from longshort.core.config import to_dict

    return Tracker(cfg.tracking, run_dir, config=to_dict(cfg))


def bootstrap_stage(cfg: RunConfig) -> int:
    from longshort.toy.bootstrap import run_bootstrap

    run_dir = prepare_run(cfg)
    with open_tracker(cfg, run_dir) as tracker:
        result = run_bootstrap(cfg.bootstrap, run_dir / "bootstrap", tracker)
    summary = json.loads((run_dir / "bootstrap" / "eval.json").read_text())
    log.info("bootstrap done: %s", json.dumps(summary))
    print(f"\nBase model: {result.model_dir}\n" + format_table(summary))
    return 0


def _chunk(cfg: RunConfig, run_dir: Path, tracker) -> None:
    from longshort.recipes.longshort.chunking.thoughts import run_chunk

    run_chunk(cfg.chunk, run_dir, tracker)


def _score(cfg: RunConfig, run_dir: Path, tracker) -> None:
    from longshort.data.verify import shared_verifier
    from longshort.recipes.longshort.scoring.rollouts import run_score

    run_score(cfg.score, run_dir, tracker, shared_verifier(cfg.verify))


def _coldstart(cfg: RunConfig, run_dir: Path, tracker) -> None:
    from longshort.data.verify import shared_verifier
    from longshort.recipes.longshort.coldstart.dialogues import run_coldstart

    run_coldstart(cfg.coldstart, run_dir, tracker, shared_verifier(cfg.verify))


def _sft(cfg: RunConfig, run_dir: Path, tracker) -> None:
    from longshort.data.verify import shared_verifier
    from longshort.recipes.longshort.pair_sft import run_pair_sft

    run_pair_sft(cfg.sft, run_dir, tracker, shared_verifier(cfg.verify))


# Stages that read the previous stage's outputs from runs/<name>/ and write their own folder there.
ANALYSIS_STAGES = {"chunk": _chunk, "score": _score, "coldstart": _coldstart, "sft": _sft}


def analysis_stage(cfg: RunConfig, stage: str) -> int:
    run_dir = prepare_run(cfg)
    with open_tracker(cfg, run_dir) as tracker:
        ANALYSIS_STAGES[stage](cfg, run_dir, tracker)
    log.info("%s done: outputs in %s", stage, run_dir / stage)
    return 0


def format_table(metrics: dict) -> str:
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in metrics.items() if not isinstance(v, dict)]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def pipeline_stage(cfg: RunConfig, restart_from: str | None = None) -> int:
    """``longshort run``: the whole pipeline on ``runs/<name>/``, then the results and time per stage."""
    from longshort.pipeline.runner import run_pipeline

    run_dir = prepare_run(cfg)
    t0 = time.perf_counter()
    with open_tracker(cfg, run_dir) as tracker:
        records = run_pipeline(cfg, run_dir, tracker, restart_from)
    total = time.perf_counter() - t0
    width = max(len(r.stage) for r in records)
    lines = [f"  {r.stage:<{width}}  {r.action:<7}  " + (f"{r.seconds:7.1f} s" if r.action == "ran" else f"({r.status})")
             for r in records]
    print(f"\nPipeline done in {total:.0f} s; outputs in {run_dir}\n" + "\n".join(lines))
    table = run_dir / "eval" / "table.md"
    if table.exists():
        print("\n" + table.read_text(encoding="utf-8"))
    return 0
