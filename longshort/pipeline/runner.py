"""``longshort run``: every stage of the method, in order, on one run directory; complete stages are skipped.

Each stage writes under ``<run>/<stage>/``. When it finishes it leaves ``<stage>/.complete.json`` with a
fingerprint of what decided its outputs: its own config sections plus the fingerprint of the stage before it,
so a change anywhere upstream reruns everything downstream. A stage is skipped when its marker matches and its
outputs exist. Otherwise it runs: an attempt interrupted with the same fingerprint (``.started.json``) resumes from
the stage's own checkpoints and caches; a changed config clears the stage's folder first (content-addressed
caches such as the score cache are kept, since their keys already say what they hold).

A stage's outcome checks (``core/checks.py``: ``<stage>/checks.json``) go into its ``pipeline.json`` record; under
``pipeline.on_failed_check: stop`` a failed one stops the pipeline before the next stage starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from longshort.core import checks as outcome
from longshort.core import manifest, precision
from longshort.core import run_dir as rd
from longshort.core.config import to_dict
from longshort.core.errors import LongshortError
from longshort.core.stage import Recipe
from longshort.tracking.tracker import OffsetTracker, last_logged_step

log = logging.getLogger("longshort")
MARKER, STARTED, STATE = rd.STAGE_DONE, rd.STAGE_STARTED, rd.PIPELINE_STATE


@dataclass
class PipelineConfig:
    """Which stages ``longshort run`` runs (config section ``pipeline``)."""

    stages: list[str] | None = None  # a subsequence of the recipe's stages; None: all of them (resolved on load)
    # auto: build the embedded base model only when some stage reads it (a model or data path left unset)
    bootstrap: Literal["auto", "always", "never"] = "auto"
    # a stage's outcome check failed (it learned less than later stages need): warn loudly and go on, or stop
    # before the next stage (a skipped stage's failed check stops it too, until the stage reruns or this says warn)
    on_failed_check: Literal["warn", "stop"] = "warn"
    # the embedded toy's model may score and train on your own CoTs (longshort refuses it otherwise: it learns nothing)
    toy_model_on_own_data: bool = False


def _recipe(cfg) -> Recipe:
    from longshort.recipes import RECIPES

    return RECIPES.get(cfg.recipe)


def stage_names(cfg) -> list[str]:
    """The stages this config runs, in order."""
    return list(cfg.pipeline.stages or _recipe(cfg).stage_names)


def _section(cfg, key: str):
    """A config section or a dotted key inside one (``hawkeye.responder``), as plain data."""
    import dataclasses
    import functools

    value = functools.reduce(getattr, key.split("."), cfg)
    return to_dict(value, results_only=True) if dataclasses.is_dataclass(value) else value


def fingerprints(cfg) -> dict[str, str]:
    """Each stage's fingerprint: a hash of its config sections chained to the previous stage's. A stage this config
    does not need decides nothing: it passes the previous fingerprint on (its settings rerun nothing)."""
    out, prev = {}, ""
    bf16 = precision.is_bf16(getattr(cfg, "cpu_precision", "fp32"))
    for stage in _recipe(cfg).stages:
        if stage.needed is not None and not stage.needed(cfg):
            out[stage.name] = prev
            continue
        body = {"stage": stage.name, "upstream": prev,
                "sections": {s: _section(cfg, s) for s in stage.sections}}
        also = stage.also(cfg) if stage.also is not None else {}
        if also:
            body["also"] = also
        if bf16:  # a run computed in fp32 keeps the fingerprints it had before the CPU policy existed
            body["cpu_precision"] = "bf16"
        prev = out[stage.name] = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def outputs(cfg, run_dir: Path, name: str) -> list[Path]:
    """The files a complete stage ``name`` has (an export may live outside the run directory)."""
    out = []
    for o in _recipe(cfg).stage(name).outputs:
        if o.startswith("{"):
            key, _, rest = o[1:].partition("}/")
            section, _, attr = key.partition(".")
            given = getattr(getattr(cfg, section), attr)
            out.append((Path(given) if given else run_dir / section) / rest)
        else:
            out.append(run_dir / o)
    return out


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def damage(cfg, run_dir: Path, name: str, done: dict | None = None) -> list[str]:
    """What a finished stage wrote that is no longer there as it was (missing, truncated, overwritten); ``done`` is
    its completion record when the caller has read it already."""
    done = done if done is not None else _read(run_dir / name / MARKER) or {}
    found = [f"{o} is missing" for o in outputs(cfg, run_dir, name) if not o.exists()]
    return found + [p for p in manifest.problems(done.get("files", {}), run_dir) if p not in found]


def stage_status(cfg, run_dir: Path, name: str, fp: str) -> str:
    """``done`` (skip), ``resume`` (an interrupted attempt of this config), or a reason to run it from a clean
    folder: ``changed`` (config or inputs), ``damaged`` (an output file missing or altered since it finished),
    ``unrecorded`` (files without a completion record), ``new``."""
    folder = run_dir / name
    done = _read(folder / MARKER)
    if done is not None and done.get("fingerprint") == fp:
        return "damaged" if damage(cfg, run_dir, name, done) else "done"
    started = _read(folder / STARTED)
    if started is not None and started.get("fingerprint") == fp:
        return "resume"
    if done is not None or started is not None:
        return "changed"
    return "unrecorded" if folder.exists() and any(folder.iterdir()) else "new"


_WHY = {"changed": "its config or inputs changed since its last run",
        "unrecorded": f"it has files but no completion record ({MARKER}): an attempt that did not finish"}


def _clear(folder: Path, keep: tuple[str, ...]) -> None:
    if not folder.exists():
        return
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


@dataclass
class StageRecord:
    stage: str
    status: str  # done | resume | changed | damaged | unrecorded | new | not needed
    action: str  # skipped | ran
    seconds: float = 0.0
    checks: list[dict] = field(default_factory=list)  # the stage's outcome checks (core/checks.py)


def plan(cfg, run_dir: Path, restart_from: str | None = None) -> list[tuple[str, str]]:
    """(stage, status) for every stage the config runs, in order; ``restart_from`` forces it and all after it.

    Once a stage runs, every later one reruns too: its inputs are being rewritten, whatever its fingerprint says.
    """
    fps, out, forced, recipe = fingerprints(cfg), [], False, _recipe(cfg)
    for name in stage_names(cfg):
        forced = forced or name == restart_from
        needed = recipe.stage(name).needed
        if needed is not None and not needed(cfg):
            out.append((name, "not needed"))
            continue
        status = stage_status(cfg, run_dir, name, fps[name])
        if forced and status in ("done", "resume", "damaged"):
            status = "changed"
        out.append((name, status))
        forced = forced or status != "done"
    return out


def _judge(cfg, found: list[outcome.Check], again: bool = False) -> None:
    """Stop here under ``pipeline.on_failed_check: stop`` when a check of the stage failed. ``again``: the stage was
    skipped (done earlier), so its failed checks are said once more, on one line each."""
    failed = [c for c in found if not c.passed]
    if again:
        for c in failed:
            log.warning("check %s (recorded when the stage ran)", c.line())
    if failed and cfg.pipeline.on_failed_check == "stop":
        raise LongshortError(outcome.failure_text(failed) + "\npipeline.on_failed_check is stop: the pipeline stops "
                             "before the next stage (set it to warn to go on regardless)")


def run_pipeline(cfg, run_dir: Path, tracker, restart_from: str | None = None) -> list[StageRecord]:
    """Run the config's stages in order (see the module docstring); returns what each one did."""
    from longshort.core.progress import pipeline_display

    if restart_from is not None and restart_from not in stage_names(cfg):
        raise LongshortError(f"--restart-from {restart_from}: not a stage of this run; accepted: "
                             f"{', '.join(stage_names(cfg))}")
    todo = plan(cfg, run_dir, restart_from)
    log.info("pipeline plan: %s", ", ".join(f"{n} ({s})" for n, s in todo))
    records: list[StageRecord] = []
    with pipeline_display() as display:
        overall = display.add_task("", total=len(todo), label="pipeline") if display is not None else None
        for i, (name, status) in enumerate(todo):
            if display is not None:
                display.update(overall, completed=i, description=name)
            if status in ("done", "not needed"):
                found = outcome.stage_checks(run_dir, name) if status == "done" else []
                records.append(StageRecord(name, status, "skipped", checks=[c.to_json() for c in found]))
                _judge(cfg, found, again=True)
                continue
            log.info("── stage %d/%d: %s (%s)", i + 1, len(todo), name, "resuming" if status == "resume" else "running")
            records.append(run_stage(cfg, run_dir, tracker, name, status))
            _judge(cfg, outcome.stage_checks(run_dir, name))
        if display is not None:
            display.update(overall, completed=len(todo), description="done")
    return records


def stage_command_status(cfg, run_dir: Path, name: str, resume: bool) -> str:
    """How ``longshort <stage>`` runs its stage: asked by name, it reruns a finished one from a clean folder
    (``changed``), or with ``--resume`` continues from the stage's own checkpoints (``resume``)."""
    status = stage_status(cfg, run_dir, name, fingerprints(cfg)[name])
    if resume:
        return "resume"
    return "changed" if status in ("done", "resume", "damaged") else status


def run_stage(cfg, run_dir: Path, tracker, name: str, status: str) -> StageRecord:
    """Run one stage as ``longshort run`` and ``longshort <stage>`` both do: clear what a changed, damaged or
    unrecorded attempt left, mark it started, run it on the run's metric steps, then record its files and checks
    (``.complete.json``, ``pipeline.json``), so that either command's finished stage is skipped by the next ``run``."""
    fps, state = fingerprints(cfg), _read(run_dir / STATE) or {}
    steps, logged = state.get("next_step", 0), last_logged_step(run_dir)  # a killed attempt may log past next_step
    stage, folder = _recipe(cfg).stage(name), run_dir / name
    if status == "damaged":
        log.warning("%s: rerunning it (and every stage after it): its outputs changed since it finished: %s",
                    name, "; ".join(damage(cfg, run_dir, name)))
    elif status in _WHY:
        log.info("%s: %s; clearing %s", name, _WHY[status], folder)
    if status in ("changed", "damaged", "unrecorded"):
        _clear(folder, stage.keep)
    folder.mkdir(parents=True, exist_ok=True)
    started = _read(folder / STARTED) if status == "resume" else None
    offset = started["step_offset"] if started else steps
    (folder / STARTED).write_text(json.dumps({"fingerprint": fps[name], "step_offset": offset}) + "\n")
    t0 = time.perf_counter()
    view = OffsetTracker(tracker, offset, f"{name}/stage_step", floor=logged)
    try:
        stage.run(cfg, run_dir, view, status == "resume")
    except BaseException as e:
        if isinstance(e, LongshortError) and not str(e).startswith("stage "):
            e.args = (f"stage {name}: {e}", *e.args[1:])  # which stage stopped, whatever layer said why
        refresh_page(cfg, run_dir)  # the page then shows the stage as started, not finished
        raise
    seconds = time.perf_counter() - t0
    missing = [str(o) for o in outputs(cfg, run_dir, name) if not o.exists()]
    if missing:
        raise LongshortError(f"stage {name} finished without writing {', '.join(missing)}; check its config "
                             f"section '{name}' (e.g. an export or eval switched off) or its log")
    external = [o for o in outputs(cfg, run_dir, name) if not o.is_relative_to(run_dir)]
    files = manifest.record([folder, *external], {MARKER, STARTED, *stage.keep}, run_dir)
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fps[name], "seconds": seconds,
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files}) + "\n")
    tmp.replace(folder / MARKER)
    (folder / STARTED).unlink(missing_ok=True)
    found = outcome.stage_checks(run_dir, name)
    record = StageRecord(name, status, "ran", seconds, [c.to_json() for c in found])
    state = {"next_step": max(steps, view.top + 1), "stages": {**state.get("stages", {}), name: asdict(record)}}
    (run_dir / STATE).write_text(json.dumps(state, indent=2) + "\n")
    refresh_page(cfg, run_dir)
    return record


def refresh_page(cfg, run_dir: Path) -> None:
    """Rewrite ``<run>/report.html`` (``eval/page.py``) from what the run holds now. The page is a view: a failure
    to write it is said, and never stops the run or hides the stage's own outcome."""
    from longshort.eval.page import write_page

    try:
        recipe, names = _recipe(cfg), stage_names(cfg)
        skipped = frozenset(n for n in names if recipe.stage(n).needed is not None and not recipe.stage(n).needed(cfg))
        path = write_page(run_dir, f"{cfg.name} · {cfg.recipe} recipe", names, skipped)
        log.info("report page: %s", path)
    except Exception as e:  # noqa: BLE001 (a view of the run; the stage's result stands either way)
        log.warning("report page %s not rewritten: %s: %s", run_dir / "report.html", type(e).__name__, e)
