"""What every tracking backend shares: the ``tracking`` config section, the ``Backend`` interface and the backend
registry. ``tracker.py`` fans metrics out to the backends; ``console.py`` and ``wandb.py`` are two of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass
class TrackingConfig:
    """Where metrics go. W&B ``mode: auto`` is online when credentials exist (WANDB_API_KEY, or a netrc entry for the
    W&B host) and offline otherwise; an explicit WANDB_MODE environment variable is honoured in auto mode."""

    project: str = "longshort"
    entity: str | None = None
    group: str | None = None
    name: str | None = None  # W&B run name; default: the run directory's name
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    backends: list[str] = field(default_factory=lambda: ["console", "jsonl", "wandb"])  # jsonl is always added
    console_every: int = field(default=1, metadata={"ge": 1})  # print at most every N steps ...
    console_interval_s: float = field(default=2.0, metadata={"ge": 0})  # ... and at most every S seconds
    console_keys: list[str] = field(default_factory=list)  # glob patterns of metrics to print; empty: all
    console_max_keys: int = field(default=8, metadata={"ge": 1})
    wandb_dir: str | None = None  # default: $WANDB_DIR, else the run directory
    wandb_init_timeout_s: float = field(default=90.0, metadata={"gt": 0})
    # "upload" copies files into the W&B artifact (uploaded when online); "reference" records file:// references
    # with checksums only (cheap for multi-GB checkpoints); "off" keeps artifacts out of W&B (artifacts.jsonl only).
    artifacts: Literal["upload", "reference", "off"] = "reference"

    def validate(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ValueError(f"backends: unknown {unknown}; accepted: {sorted(BACKENDS)}")
        if len(set(self.backends)) != len(self.backends):
            raise ValueError(f"backends: duplicate entries in {self.backends}; list each backend once")
        if not self.project.strip():
            raise ValueError("project: must not be empty; accepted: a W&B project name such as 'longshort'")
        if not all(isinstance(t, str) and t and len(t) <= 64 for t in self.tags):
            raise ValueError(f"tags: {self.tags!r}; accepted: non-empty strings of at most 64 characters")


class Backend:
    """One destination. Subclasses override what they support; the Tracker has validated every argument."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None: ...

    def log_artifact(self, path: Path, name: str, type: str) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def finish(self, exit_code: int) -> None: ...


# A factory builds a backend for (config, run_dir, scrubbed run config); it may return None to opt out.
BackendFactory = Callable[[TrackingConfig, Path, dict], "Backend | None"]
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def deco(factory: BackendFactory) -> BackendFactory:
        BACKENDS[name] = factory
        return factory

    return deco
