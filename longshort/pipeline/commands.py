"""What the CLI runs: one stage (``longshort <stage>``) or the whole pipeline (``longshort run``). Both make the run
directory, the tracker and logging, then run each stage through the same ``runner.run_stage`` (which records it
finished, so either command's stages are skipped by the next ``run``); both first run ``longshort check``
(``pipeline/check.py``) and stop on its errors before writing anything."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

from longshort.cluster.topology import use_cluster
from longshort.core import disk, precision
from longshort.core import run_dir as rd
from longshort.core.config import dump_yaml, to_dict
from longshort.core.errors import LongshortError
from longshort.core.logs import setup_logging
from longshort.core.run_lock import RunLock
from longshort.pipeline.check import preflight
from longshort.tracking.tracker import Tracker, scrub

log = logging.getLogger("longshort")


def run_dir_of(cfg) -> Path:
    return Path(cfg.output_dir) / cfg.name


def prepare_run(cfg) -> Path:
    """Write the resolved config (credentials scrubbed) next to the outputs in ``runs/<name>/`` (locked first); point
    the work outside the topology (SFT ranks, engine pools) at the run's cluster and accelerator."""
    use_cluster(getattr(cfg, "topology", None))
    precision.set_policy(cfg.cpu_precision)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    disk.writing_under(run_dir)
    (run_dir / rd.CONFIG).write_text(dump_yaml(scrub(cfg)), encoding="utf-8")
    setup_logging(run_dir, "INFO")
    return run_dir


@contextlib.contextmanager
def _resume_hint(resume_flag: bool):
    """A stage stopped with a checkpoint to resume from: say the command that resumes it (``longshort run``
    resumes by being run again; a stage command needs ``--resume``)."""
    try:
        yield
    except LongshortError as e:
        if getattr(e, "checkpoint", None) is None:
            raise
        again = " ".join(["longshort", *sys.argv[1:]]) + (" --resume" if resume_flag else "")
        e.args = (f"{e}; to continue, run `{again}`",)
        raise


def open_tracker(cfg, run_dir: Path) -> Tracker:
    return Tracker(cfg.tracking, run_dir, config=to_dict(cfg))


def stage_command(cfg, name: str, resume: bool = False) -> int:
    """``longshort <name>``: run one stage of the config's recipe on the run directory, then print its report."""
    from longshort.recipes import RECIPES

    recipe = RECIPES.get(cfg.recipe)
    if name not in recipe.stage_names:
        raise LongshortError(f"'{name}' is not a stage of the {recipe.name} recipe (config key 'recipe'); "
                             f"its stages: {', '.join(recipe.stage_names)}")
    from longshort.pipeline.runner import run_stage, stage_command_status

    stage = recipe.stage(name)
    preflight(cfg, run_dir_of(cfg))
    with RunLock(run_dir_of(cfg)), _resume_hint(resume_flag=stage.resumable and not resume):
        run_dir = prepare_run(cfg)
        with open_tracker(cfg, run_dir) as tracker:
            run_stage(cfg, run_dir, tracker, name, stage_command_status(cfg, run_dir, name, resume))
    log.info("%s done: outputs in %s", name, run_dir / name)
    if stage.report is not None:
        print("\n" + stage.report(cfg, run_dir))
    return 0


def pipeline_command(cfg, restart_from: str | None = None) -> int:
    """``longshort run``: the whole pipeline on ``runs/<name>/``, then the results and time per stage."""
    from longshort.pipeline.runner import run_pipeline

    t0 = time.perf_counter()
    preflight(cfg, run_dir_of(cfg))
    with RunLock(run_dir_of(cfg)), _resume_hint(resume_flag=False):
        run_dir = prepare_run(cfg)
        with open_tracker(cfg, run_dir) as tracker:
            records = run_pipeline(cfg, run_dir, tracker, restart_from)
    total = time.perf_counter() - t0
    width = max(len(r.stage) for r in records)
    lines = [f"  {r.stage:<{width}}  {r.action:<7}  " + (f"{r.seconds:7.1f} s" if r.action == "ran" else f"({r.status})")
             for r in records]
    print(f"\nPipeline done in {total:.0f} s; outputs in {run_dir}\n" + "\n".join(lines))
    table = run_dir / rd.EVAL_TABLE
    if table.exists():
        print("\n" + table.read_text(encoding="utf-8"))
    if (run_dir / "report.html").exists():
        print(f"The run at a glance (table, plot, stage times, dialogues): {run_dir / 'report.html'}")
    return 0
