"""A stage that learned nothing says so, before later stages build on it.

Every training stage ends by measuring its outcome on dev problems against what it is for (the responder answers
from the base model's CoTs, the assistant's states carry the problem ...), each number against a threshold of its own
config (``<section>.check.*``). ``record`` writes them to ``<run>/<stage>/checks.json``, inside the stage's folder so
that a rerun of the stage clears them, and logs a passing check on one line and a failing one as a loud warning that
names the stage, the number, the threshold and its setting. ``longshort run`` copies each stage's checks into
``pipeline.json`` and, under ``pipeline.on_failed_check: stop``, stops before the next stage; the results table lists
every check of the run (``read``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from longshort.core import run_dir as rd
from longshort.core.config import PLACEMENT

log = logging.getLogger("longshort")
RULE = "!" * 100
# What a failed check means downstream, when the stage names no more precise fix.
LATER = ("later stages build on a model that did not learn what this stage is for: their numbers will say more about "
         "this stage than about themselves")


@dataclass(frozen=True)
class Check:
    """One measured outcome of a stage against its threshold."""

    stage: str
    what: str  # what the number measures, in words
    value: float
    threshold: float
    setting: str  # the config key that sets the threshold (or the factor it is made from)
    direction: Literal["min", "max"] = "min"  # min: the value must reach the threshold; max: stay at or below it
    n: int = 0  # dev problems measured
    fix: str = ""  # what to change when it fails
    details: dict[str, float] = field(default_factory=dict)  # numbers recorded beside it (no threshold of their own)

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.direction == "min" else self.value <= self.threshold

    def line(self) -> str:
        """``responder: accuracy ... 0.975 >= 0.9 (hawkeye.responder.check.min_accuracy; 200 dev problems): passed``."""
        op = ">=" if self.direction == "min" else "<="
        extra = "".join(f", {k} {_num(v)}" for k, v in self.details.items())
        return (f"{self.stage}: {self.what} {_num(self.value)} {op} {_num(self.threshold)} ({self.setting}; {self.n} "
                f"dev problems{extra}): {'passed' if self.passed else 'FAILED'}")

    def warning(self) -> str:
        """The loud, multi-line form of a failed check."""
        op = "at least" if self.direction == "min" else "at most"
        return "\n".join([
            RULE,
            f"CHECK FAILED: stage '{self.stage}' did not learn what it is for",
            f"  {self.what}: {_num(self.value)} on {self.n} dev problems; it should be {op} {_num(self.threshold)} "
            f"(setting {self.setting})",
            *(f"  {k}: {_num(v)}" for k, v in self.details.items()),
            f"  {LATER}",
            f"  fix: {self.fix or 'rerun the stage with more training (examples, steps or epochs) and check its loss'}"
            f"; or set {self.setting} if this number is fine for your data; pipeline.on_failed_check: stop stops the "
            "pipeline here",
            RULE,
        ])

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_json(cls, data: dict) -> Check:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def check_field(cls: type):
    """A config section's ``check`` key. Left out of the stage's fingerprint (like a ``PLACEMENT`` knob): a check
    decides no output of the stage, only whether it is said to have learned, so a new threshold reruns no training
    (and a finished stage keeps the checks it recorded)."""
    return field(default_factory=cls, metadata={PLACEMENT: True})


def _num(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def record(run_dir: str | Path, checks: list[Check]) -> list[Check]:
    """Write ``checks`` to ``<run>/<stage>/checks.json`` (one file per stage, replacing an earlier one) and log each:
    a passing one on one INFO line, a failing one as a WARNING block."""
    by_stage: dict[str, list[Check]] = {}
    for c in checks:
        by_stage.setdefault(c.stage, []).append(c)
    for stage, group in by_stage.items():
        path = Path(run_dir) / stage / rd.STAGE_CHECKS
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([c.to_json() for c in group], indent=2) + "\n", encoding="utf-8")
    for c in checks:
        if c.passed:
            log.info("check %s", c.line())
        else:
            log.warning("%s", c.warning())
    return checks


def skip(stage: str, why: str) -> None:
    """A check that cannot run here (no dev problems): said on one line, nothing recorded."""
    log.info("check %s: skipped: %s", stage, why)


def stage_checks(run_dir: str | Path, stage: str) -> list[Check]:
    """The checks ``stage`` recorded (none: an empty list)."""
    path = Path(run_dir) / stage / rd.STAGE_CHECKS
    if not path.exists():
        return []
    return [Check.from_json(d) for d in json.loads(path.read_text(encoding="utf-8"))]


def read(run_dir: str | Path) -> list[Check]:
    """Every check of the run, in the order the stages recorded them."""
    paths = sorted(Path(run_dir).glob(f"*/{rd.STAGE_CHECKS}"), key=lambda p: p.stat().st_mtime_ns)
    return [c for p in paths for c in stage_checks(run_dir, p.parent.name)]


def failure_text(failed: list[Check]) -> str:
    """The stop error's message: every failed check's warning."""
    return "\n".join(c.warning() for c in failed)
