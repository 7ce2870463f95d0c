"""``longshort run``: every stage of the method, in order, on one run directory; complete stages are skipped.

Each stage writes under ``<run>/<stage>/``. When it finishes it leaves ``<stage>/.complete.json`` with a
fingerprint of what decided its outputs: its own config sections plus the fingerprint of the stage before it,
so a change anywhere upstream reruns everything downstream. A stage is skipped when its marker matches and its
outputs exist. Otherwise it runs: an attempt interrupted with the same fingerprint (``.started.json``) resumes from
the stage's own checkpoints and caches; a changed config clears the stage's folder first (content-addressed
caches such as the score cache are kept, since their keys already say what they hold).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from longshort.core.config import to_dict
from longshort.core.errors import LongshortError
from longshort.tracking.tracker import OffsetTracker

log = logging.getLogger("longshort")

StageName = Literal["bootstrap", "chunk", "score", "coldstart", "sft", "rl", "eval", "export"]
MARKER, STARTED, STATE = ".complete.json", ".started.json", "pipeline.json"


@dataclass
class PipelineConfig:
    """Which stages ``longshort run`` runs (config section ``pipeline``)."""

    stages: list[StageName] = field(default_factory=lambda: ["bootstrap", "chunk", "score", "coldstart", "sft", "rl",
                                                             "eval", "export"])
    # auto: build the embedded base model only when some stage reads it (a model or data path left unset)
    bootstrap: Literal["auto", "always", "never"] = "auto"

    def validate(self) -> None:
        order = list(STAGES)
        if [s for s in order if s in self.stages] != list(self.stages) or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages: {self.stages} out of order or repeated; accepted: a subsequence of {order}")


@dataclass(frozen=True)
class Stage:
    sections: tuple[str, ...]  # config sections whose values decide the stage's outputs
    outputs: tuple[str, ...]  # files (relative to the run dir) a complete stage has; "{export.out}" = that config key
    run: Callable[[Any, Path, Any, bool], None]  # (run config, run dir, tracker, resume)
    keep: tuple[str, ...] = ()  # content-addressed entries of the stage folder kept when the config changed


def _bootstrap(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.toy.bootstrap import run_bootstrap

    run_bootstrap(cfg.bootstrap, run_dir / "bootstrap", tracker, cfg.verify)


def _analysis(name: str):
    def run(cfg, run_dir: Path, tracker, resume: bool) -> None:
        from longshort.pipeline.commands import ANALYSIS_STAGES

        ANALYSIS_STAGES[name](cfg, run_dir, tracker)

    return run


def _rl(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.data.verify import shared_verifier
    from longshort.rl import checkpoint as rl_checkpoint
    from longshort.rl.loop import run_rl

    resume = resume and bool(rl_checkpoint.checkpoints(run_dir / "rl" / "checkpoints"))
    run_rl(cfg.rl, run_dir, cfg.topology, tracker, shared_verifier(cfg.verify), resume=resume)


def _eval(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.data.verify import shared_verifier
    from longshort.eval.runner import run_eval

    run_eval(cfg.eval, run_dir, tracker, shared_verifier(cfg.verify))


def _export(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.longshort.export import run_export

    run_export(cfg.export, run_dir, tracker)


STAGES: dict[str, Stage] = {
    "bootstrap": Stage(("bootstrap",), ("bootstrap/base_model/config.json", "bootstrap/eval.json"), _bootstrap),
    "chunk": Stage(("chunk",), ("chunk/thoughts.jsonl",), _analysis("chunk")),
    "score": Stage(("score",), ("score/scores.jsonl",), _analysis("score"), keep=("cache",)),
    "coldstart": Stage(("coldstart",), ("coldstart/dialogues.jsonl",), _analysis("coldstart")),
    "sft": Stage(("sft",), ("sft/long/model/config.json", "sft/short/model/config.json"), _analysis("sft")),
    "rl": Stage(("rl",), ("rl/long/model/config.json", "rl/short/model/config.json"), _rl),
    "eval": Stage(("eval",), ("eval/results.json",), _eval),
    "export": Stage(("export",), ("{export.out}/manifest.json",), _export),
}


def needs_bootstrap(cfg) -> bool:
    """Whether a stage of this config reads the embedded base model or its task data (a path left unset)."""
    if cfg.pipeline.bootstrap != "auto":
        return cfg.pipeline.bootstrap == "always"
    reads = {
        "chunk": lambda: cfg.chunk.source.path == "",
        "score": lambda: cfg.score.model is None,
        "sft": lambda: cfg.sft.long_model is None or cfg.sft.short_model is None or cfg.sft.eval.source.path == "",
        "rl": lambda: cfg.rl.train.path == "" or cfg.rl.eval.path == "",
        "eval": lambda: any(b.source.path == "" for b in cfg.eval.benchmarks)
        or any(str(p).startswith("bootstrap/") for s in cfg.eval.systems for p in (s.model, s.long, s.short) if p),
    }
    return any(reads[k]() for k in cfg.pipeline.stages if k in reads)


def fingerprints(cfg) -> dict[str, str]:
    """Each stage's fingerprint: a hash of its config sections chained to the previous stage's."""
    out, prev = {}, ""
    for name, stage in STAGES.items():
        body = {"stage": name, "upstream": prev, "sections": {s: to_dict(getattr(cfg, s), results_only=True)
                                                                for s in stage.sections}}
        prev = out[name] = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def outputs(cfg, run_dir: Path, name: str) -> list[Path]:
    """The files a complete stage ``name`` has (an export may live outside the run directory)."""
    export = Path(cfg.export.out) if cfg.export.out else run_dir / "export"
    return [run_dir / o if "{export.out}" not in o else export / o.split("/", 1)[1] for o in STAGES[name].outputs]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stage_status(cfg, run_dir: Path, name: str, fp: str) -> str:
    """``done`` (skip), ``resume`` (an interrupted attempt of this config), ``changed`` (rerun clean) or ``new``."""
    folder = run_dir / name
    done = _read(folder / MARKER)
    if done is not None and done.get("fingerprint") == fp and all(o.exists() for o in outputs(cfg, run_dir, name)):
        return "done"
    started = _read(folder / STARTED)
    if started is not None and started.get("fingerprint") == fp:
        return "resume"
    return "changed" if folder.exists() and any(folder.iterdir()) else "new"


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
    status: str  # done | resume | changed | new | not needed
    action: str  # skipped | ran
    seconds: float = 0.0


def plan(cfg, run_dir: Path, restart_from: str | None = None) -> list[tuple[str, str]]:
    """(stage, status) for every stage the config runs, in order; ``restart_from`` forces it and all after it.

    Once a stage runs, every later one reruns too: its inputs are being rewritten, whatever its fingerprint says.
    """
    fps, out, forced = fingerprints(cfg), [], False
    for name in cfg.pipeline.stages:
        forced = forced or name == restart_from
        if name == "bootstrap" and not needs_bootstrap(cfg):
            out.append((name, "not needed"))
            continue
        status = stage_status(cfg, run_dir, name, fps[name])
        if forced and status in ("done", "resume"):
            status = "changed"
        out.append((name, status))
        forced = forced or status != "done"
    return out


def run_pipeline(cfg, run_dir: Path, tracker, restart_from: str | None = None) -> list[StageRecord]:
    """Run the config's stages in order (see the module docstring); returns what each one did."""
    from longshort.core.progress import pipeline_display

    if restart_from is not None and restart_from not in cfg.pipeline.stages:
        raise LongshortError(f"--restart-from {restart_from}: not a stage of this run; accepted: "
                             f"{', '.join(cfg.pipeline.stages)}")
    fps = fingerprints(cfg)
    state = _read(run_dir / STATE) or {}
    steps = state.get("next_step", 0)
    todo = plan(cfg, run_dir, restart_from)
    log.info("pipeline plan: %s", ", ".join(f"{n} ({s})" for n, s in todo))
    records: list[StageRecord] = []
    with pipeline_display() as display:
        overall = display.add_task("", total=len(todo), label="pipeline") if display is not None else None
        for i, (name, status) in enumerate(todo):
            if display is not None:
                display.update(overall, completed=i, description=name)
            if status in ("done", "not needed"):
                records.append(StageRecord(name, status, "skipped"))
                continue
            stage, folder = STAGES[name], run_dir / name
            if status == "changed":
                log.info("%s: config or inputs changed since its last run; clearing %s", name, folder)
                _clear(folder, stage.keep)
            folder.mkdir(parents=True, exist_ok=True)
            started = _read(folder / STARTED) if status == "resume" else None
            offset = started["step_offset"] if started else steps
            (folder / STARTED).write_text(json.dumps({"fingerprint": fps[name], "step_offset": offset}) + "\n")
            log.info("── stage %d/%d: %s (%s)", i + 1, len(todo), name, "resuming" if started else "running")
            t0 = time.perf_counter()
            view = OffsetTracker(tracker, offset, f"{name}/stage_step")
            stage.run(cfg, run_dir, view, status == "resume")
            seconds = time.perf_counter() - t0
            missing = [str(o) for o in outputs(cfg, run_dir, name) if not o.exists()]
            if missing:
                raise LongshortError(f"stage {name} finished without writing {', '.join(missing)}; check its config "
                                     f"section '{name}' (e.g. an export or eval switched off) or its log")
            steps = max(steps, view.top + 1)
            (folder / MARKER).write_text(json.dumps({"fingerprint": fps[name], "seconds": seconds,
                                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
            (folder / STARTED).unlink(missing_ok=True)
            records.append(StageRecord(name, status, "ran", seconds))
            state = {"next_step": steps, "stages": {**state.get("stages", {}), name: asdict(records[-1])}}
            (run_dir / STATE).write_text(json.dumps(state, indent=2) + "\n")
        if display is not None:
            display.update(overall, completed=len(todo), description="done")
    return records
