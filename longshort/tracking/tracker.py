"""Run tracking: one `Tracker` fans metrics, tables, artifacts and the run summary out to registered backends.

``jsonl`` is always on, so every run can be inspected (and plotted) with no service and no account:

    <run_dir>/metrics.jsonl          {"step": 3, "time": 1732240137.123, "attempt": 1, "loss": 0.52, ...}  per log call
    <run_dir>/tables/<name>.jsonl    {"step": 3, "time": ..., "attempt": 1, <column>: <value>, ...}          per row

``attempt`` counts the commands that logged into the run directory (1 for the first; a rerun that resumes after a
crash or a checkpoint fallback writes 2, ...), so steps a resumed stage redoes are told apart.
    <run_dir>/artifacts.jsonl        {"time": ..., "name": ..., "type": ..., "path": ..., "bytes": ..., "files": ...}
    <run_dir>/summary.json           the merged summary

Non-finite floats are written as the strings "NaN", "Infinity", "-Infinity" (strict JSON); `read_metrics` turns
them back into floats. ``console`` (`longshort.tracking.console`) prints a throttled one-line digest through the
``longshort`` logger; ``wandb`` (`longshort.tracking.wandb`) is imported only when used. Create a Tracker in the driver process only.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from longshort.core.errors import LongshortError, where
from longshort.core.logs import get_logger, setup_logging
from longshort.core.redact import scrub
from longshort.tracking.base import BACKENDS, Backend, TrackingConfig, register_backend

__all__ = ["BACKENDS", "Backend", "Tracker", "TrackingConfig", "read_metrics", "register_backend", "scrub"]

log = get_logger(__name__)
RESERVED_KEYS = ("step", "time", "attempt")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # W&B's rule for artifact names and types
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _number(key: str, value: Any) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return float(value)  # float, numpy scalar, 1-element tensor
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r}: {type(value).__name__} {value!r} is not a number") from None


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metric keys must be non-empty strings, got {key!r}")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, full + "/"))
        else:
            out[full] = _number(full, value)
    return out


def _step(step: Any) -> int:
    try:
        value = operator.index(step)  # int, numpy/torch integer
    except TypeError:
        value = -1
    if isinstance(step, bool) or value < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return value


def _plain(obj: Any) -> Any:
    """JSON-shaped copy (paths and other objects as strings) that every backend can store."""
    return json.loads(json.dumps(obj, default=str))


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalar
        return value.item()
    raise TypeError(f"table cell {value!r} ({type(value).__name__}) is not a str, number, bool or None")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _dumps(obj: Any) -> str:
    return json.dumps(_json_safe(obj), ensure_ascii=False, allow_nan=False, default=str)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` with "NaN"/"Infinity" strings turned back into floats.

    A line cut short by a crash is skipped with a warning (it can only be the last line written before the crash).
    """
    records, bad = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad.append(lineno)
                continue
            records.append({k: _NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in rec.items()})
    if bad:
        log.warning("%s: skipped %d unreadable line(s) %s (cut short by a crash?)", path, len(bad), bad[:10])
    return records


class Tracker:
    """Fan-out to the configured backends; use as a context manager so a crash marks the W&B run failed.

    ``config`` is the run's resolved config tree; it is passed through `scrub` before any backend sees it.
    """

    def __init__(self, cfg: TrackingConfig | None, run_dir: str | Path, config: Mapping[str, Any] | None = None):
        self.cfg = cfg = cfg or TrackingConfig()
        cfg.validate()
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(self.run_dir, level=None)
        clean = _plain(scrub(dict(config or {})))
        self.backends: dict[str, Backend] = {}
        try:
            for name in ["jsonl", *[b for b in cfg.backends if b != "jsonl"]]:
                backend = BACKENDS[name](cfg, self.run_dir, clean)
                if backend is not None:
                    self.backends[name] = backend
        except BaseException:
            self._close(1, raise_errors=False)  # the backends opened so far; the original error is what matters
            raise
        self._lock = threading.Lock()
        self._finished = False
        if "wandb" in self.backends:  # the W&B run resumes across attempts (its id file): say which one this is
            self.backends["wandb"].summary({"attempt": self.attempt})

    @property
    def attempt(self) -> int:
        """This command's attempt on the run directory (``metrics.jsonl``'s ``attempt``)."""
        return self.backends["jsonl"].attempt

    @property
    def wandb_run_id(self) -> str | None:
        return getattr(self.backends.get("wandb"), "run_id", None)

    @property
    def wandb_mode(self) -> str:
        """The W&B mode in use: online, offline, or disabled."""
        return getattr(self.backends.get("wandb"), "mode", "disabled")

    def _each(self, method: str, *args: Any) -> None:
        with self._lock:
            if self._finished:
                raise RuntimeError(f"Tracker.{method} after finish()")
            for backend in self.backends.values():
                getattr(backend, method)(*args)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalar metrics at ``step`` (nested dicts become ``a/b`` keys; several calls may share a step)."""
        step = _step(step)
        flat = _flatten(metrics)
        clash = [k for k in RESERVED_KEYS if k in flat]
        if clash:
            raise ValueError(f"metric names {clash} are reserved for the jsonl record; rename them (e.g. 'train/step')")
        if flat:
            self._each("log", flat, step)

    def log_table(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], step: int) -> None:
        """Log rows (e.g. sampled dialogues) as table ``name`` (``/`` allowed: ``rl/samples``) at ``step``."""
        if not _TABLE_NAME.match(name) or ".." in name.split("/"):
            raise ValueError(f"table name {name!r}: use letters, digits, '_', '-', '.', and '/' between parts")
        columns = [str(c) for c in columns]
        if len(set(columns)) != len(columns) or set(columns) & set(RESERVED_KEYS):
            raise ValueError(f"table {name!r}: columns {columns} must be unique and not {list(RESERVED_KEYS)}")
        table = []
        for i, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"table {name!r} row {i}: {len(row)} cells for {len(columns)} columns {columns}")
            table.append([_cell(v) for v in row])
        self._each("log_table", name, columns, table, _step(step))

    def log_artifact(self, path: str | Path, name: str, type: str) -> None:
        """Record a file or directory (checkpoint, dataset, export) as artifact ``name`` of kind ``type``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {name!r}: {path} does not exist")
        for what, value in (("name", name), ("type", type)):
            if not _NAME.match(value):
                raise ValueError(f"artifact {what} {value!r}: use 1-128 letters, digits, '_', '-' or '.'")
        self._each("log_artifact", path.resolve(), name, type)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set final/best values for the run (merged with earlier calls; last write wins)."""
        self._each("summary", _plain(scrub(dict(values))))

    def finish(self, exit_code: int = 0) -> None:
        """Flush and close every backend; idempotent. A non-zero ``exit_code`` marks the W&B run failed."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._close(exit_code)

    def _close(self, exit_code: int, raise_errors: bool = True) -> None:
        errors = []
        for backend in reversed(list(self.backends.values())):
            try:
                backend.finish(exit_code)
            except Exception as e:  # finish the others, then report
                errors.append(e)
        if errors and raise_errors:
            raise errors[0]

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


@register_backend("jsonl")
class JsonlBackend(Backend):
    def __init__(self, cfg: TrackingConfig, run_dir: Path, config: dict):
        self.run_dir = run_dir
        self.attempt = next_attempt(run_dir / "metrics.jsonl")
        self.metrics = self._append(run_dir / "metrics.jsonl")  # a resumed run continues the same files
        self.tables: dict[str, Any] = {}
        self.summary_path = run_dir / "summary.json"
        self.summary_values: dict[str, Any] = {}
        if self.summary_path.exists():
            try:
                self.summary_values = json.loads(self.summary_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise LongshortError(
                    f"{where(str(self.summary_path), e.lineno)}: not valid JSON ({e.msg}); fix or delete the file "
                    "(it is rebuilt from the next summary call)"
                ) from None

    @staticmethod
    def _append(path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
            if cut:  # a crash cut the last line: start on a fresh line, readers skip the partial one
                log.warning("%s ends in a partial line (crash?); appending after it", path)
                with open(path, "a", encoding="utf-8") as f:
                    f.write("\n")
        return open(path, "a", encoding="utf-8")

    def _write(self, f, record: dict) -> None:
        f.write(_dumps(record) + "\n")
        f.flush()  # a crash loses nothing already logged

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._write(self.metrics, {"step": step, "time": round(time.time(), 3), "attempt": self.attempt, **metrics})

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        if name not in self.tables:
            self.tables[name] = self._append(self.run_dir / "tables" / f"{name}.jsonl")
        now = round(time.time(), 3)
        for row in rows:
            self.tables[name].write(_dumps({"step": step, "time": now, "attempt": self.attempt,
                                            **dict(zip(columns, row, strict=True))}) + "\n")
        self.tables[name].flush()

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        record = {"time": round(time.time(), 3), "name": name, "type": type, "path": str(path)}
        record.update(bytes=sum(p.stat().st_size for p in files), files=len(files))
        with open(self.run_dir / "artifacts.jsonl", "a", encoding="utf-8") as f:
            self._write(f, record)

    def summary(self, values: dict[str, Any]) -> None:
        self.summary_values.update(values)
        tmp = self.summary_path.with_suffix(".json.tmp")
        tmp.write_text(_dumps(self.summary_values) + "\n", encoding="utf-8")
        os.replace(tmp, self.summary_path)  # never a half-written summary

    def finish(self, exit_code: int) -> None:
        for f in [self.metrics, *self.tables.values()]:
            f.close()


@register_backend("console")
def _console_backend(cfg: TrackingConfig, run_dir: Path, config: dict) -> Backend:
    from longshort.tracking.console import ConsoleBackend

    return ConsoleBackend(cfg, run_dir, config)


@register_backend("wandb")
def _wandb_backend(cfg: TrackingConfig, run_dir: Path, config: dict) -> Backend | None:
    from longshort.tracking.wandb import make_wandb_backend  # wandb is imported only when it is used

    return make_wandb_backend(cfg, run_dir, config)


def next_attempt(path: Path) -> int:
    """1 + the attempt of the last complete record of ``metrics.jsonl`` (records from before attempts were counted:
    1); 1 for a run that logged nothing yet."""
    if not path.exists():
        return 1
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
        lines = f.read().splitlines()
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line cut by a crash, or the tail's first partial line
        if isinstance(rec, dict):
            return int(rec.get("attempt", 1)) + 1
    return 1


def last_logged_step(run_dir: str | Path) -> int:
    """The highest step in the run's ``metrics.jsonl`` (-1 when nothing was logged)."""
    path = Path(run_dir) / "metrics.jsonl"
    return max((int(r.get("step", -1)) for r in read_metrics(path)), default=-1) if path.exists() else -1


class OffsetTracker:
    """A tracker whose caller counts steps from 0 while the run's step counter has moved on (a later pipeline
    stage, the second model of a pair SFT): steps are shifted by ``offset`` because W&B ignores a step lower than
    one it has seen; with ``step_key`` each record also carries the caller's own step."""

    def __init__(self, tracker, offset: int, step_key: str | None = None, floor: int = -1):
        self.tracker, self.offset, self.step_key, self.top = tracker, offset, step_key, offset - 1
        self.floor = floor  # the highest step already logged (by an earlier attempt): never log at or below it

    def _shift(self, step: int) -> None:
        """A resumed stage redoes steps after its checkpoint: its first record lands above everything logged."""
        if self.floor >= 0:
            self.offset = max(self.offset, self.floor + 1 - step)
            self.floor = -1

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self._shift(step)
        self.top = max(self.top, self.offset + step)
        extra = {self.step_key: step} if self.step_key else {}
        self.tracker.log({**metrics, **extra}, step=self.offset + step)

    def log_table(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], step: int) -> None:
        self._shift(step)
        self.top = max(self.top, self.offset + step)
        self.tracker.log_table(name, columns, rows, step=self.offset + step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)
