"""The ``console`` backend of `longshort.tracking.tracker`: a throttled, compact one-line digest per printed step.

Lines go through the ``longshort.metrics`` logger: always into ``<run_dir>/log.txt``, on the console with ``longshort -v``
(a stage prints its own one line per step there).
"""

from __future__ import annotations

import fnmatch
import math
import time
from pathlib import Path
from typing import Any

from longshort.core.logs import METRICS_LOGGER, get_logger
from longshort.tracking.base import Backend, TrackingConfig


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value or value in (math.inf, -math.inf) or value == 0:
        return str(value)
    return f"{value:.3e}" if abs(value) >= 1e5 or abs(value) < 1e-3 else f"{value:.4g}"


class ConsoleBackend(Backend):
    """One compact line per printed step. A step is printed when at least ``console_every`` steps and
    ``console_interval_s`` seconds have passed since the last printed one; every call at a printed step prints,
    and the last step is printed at finish if it was skipped, so the final state is always on screen."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, config: dict):
        self.cfg, self.logger = cfg, get_logger(METRICS_LOGGER)
        self.printed_step: int | None = None
        self.printed_time = -math.inf
        self.step: int | None = None
        self.pending: dict[str, float] = {}  # metrics of the current step if it is not printed
        self.tables_seen: set[str] = set()

    def _line(self, step: int, metrics: dict[str, float]) -> str:
        keys = [
            k for k in metrics if not self.cfg.console_keys or any(fnmatch.fnmatch(k, p) for p in self.cfg.console_keys)
        ]
        shown = keys[: self.cfg.console_max_keys]
        parts = [f"step {step}", *(f"{k} {format_value(metrics[k])}" for k in shown)]
        if len(keys) > len(shown):
            parts.append(f"+{len(keys) - len(shown)} more")
        return " | ".join(parts)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if step != self.step:
            self.step, self.pending = step, {}
            now = time.monotonic()
            due = self.printed_step is None or (
                abs(step - self.printed_step) >= self.cfg.console_every
                and now - self.printed_time >= self.cfg.console_interval_s
            )
            if due:
                self.printed_step, self.printed_time = step, now
        if step == self.printed_step:
            self.logger.info(self._line(step, metrics))
        else:
            self.pending.update(metrics)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        if name not in self.tables_seen:
            self.tables_seen.add(name)
            self.logger.info(
                "table %s (%s): %d rows at step %d -> tables/%s.jsonl", name, ", ".join(columns), len(rows), step, name
            )

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        self.logger.info("artifact %s (%s): %s", name, type, path)

    def summary(self, values: dict[str, Any]) -> None:
        self.logger.info(
            "summary: %s", ", ".join(f"{k}={format_value(v) if isinstance(v, float) else v}" for k, v in values.items())
        )

    def finish(self, exit_code: int) -> None:
        if self.pending and self.step is not None:
            self.logger.info(self._line(self.step, self.pending))
            self.pending = {}
