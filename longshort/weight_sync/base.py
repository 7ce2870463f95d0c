"""Versioned weight sync from a policy's training ranks to its engines: the parts every transport shares.

* ``VersionedEngine`` wraps any ``Engine`` and owns the truth about which weights it serves: a sync opens with
  ``begin(v)``, loads any number of buckets, and only ``finish(v)`` (all tensors arrived) advertises ``v``.
  Between ``begin`` and ``finish``, or after an interrupted sync, the engine serves nothing: its weights are a
  mix of two versions. ``generate(..., min_version=v)`` refuses to serve anything older than ``v``.
* ``WeightSync``: a strategy (colocated in place, object store, collective broadcast) that a ``PolicyGroup`` runs
  after each update; one file per strategy holding its driver, sender (trainer rank) and receiver (engine) side,
  chosen by ``topology.<role>.weight_sync``. Bucket layout and packing are in ``buckets.py``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch

from longshort.core.errors import LongshortError
from longshort.core.registry import Registry
from longshort.engines.base import Engine, GenerationRequest, GenerationResult


class StaleWeightsError(LongshortError):
    """An engine was asked for weights newer than (or different from) the ones it holds."""


class SyncError(LongshortError):
    """A weight sync was malformed (out-of-order version, missing tensors)."""


class VersionedEngine:
    """An engine plus the version of the complete weights it holds (``None`` while they are incomplete)."""

    def __init__(self, engine: Engine, name: str, version: int = 0):
        self.engine = engine
        self.name = name
        self._version: int | None = version
        self._last_complete = version
        self._pending: int | None = None
        self._loaded = 0
        self._session: AbstractContextManager | None = None

    @property
    def version(self) -> int | None:
        """Version of the weights being served; ``None`` during or after an unfinished sync."""
        return self._version

    def generate(self, requests: list[GenerationRequest], min_version: int | None = None) -> list[GenerationResult]:
        if self._version is None:
            state = (f"a sync to version {self._pending} is in progress" if self._pending is not None
                     else f"the sync after version {self._last_complete} was interrupted")
            raise StaleWeightsError(f"engine {self.name}: refusing to generate: {state}, so its weights mix two "
                                    "versions; finish a full weight sync first")
        if min_version is not None and self._version < min_version:
            raise StaleWeightsError(f"engine {self.name} holds weight version {self._version} but version "
                                    f"{min_version} was asked for; sync the weights before generating")
        return self.engine.generate(requests)

    def begin(self, version: int) -> None:
        if self._pending is not None:
            self.abort()
        if version <= self._last_complete:
            raise SyncError(f"engine {self.name}: weight version must increase: it holds {self._last_complete}, "
                            f"the sync offered {version}")
        self._version, self._pending, self._loaded = None, version, 0
        open_session = getattr(self.engine, "weight_update_session", None)  # vLLM: post-process once at the end
        if open_session is not None:
            self._session = open_session(version)
            self._session.__enter__()

    def load(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        if self._pending is None:
            raise SyncError(f"engine {self.name}: load() outside a sync; call begin(version) first")
        items = list(named_tensors)
        self.engine.update_weights(items, self._pending)
        self._loaded += len(items)
        return len(items)

    def pending(self) -> int:
        """The version being synced; a ``SyncError`` outside a sync (a strategy's receiver checks before loading)."""
        if self._pending is None:
            raise SyncError(f"engine {self.name}: weights arrived outside a sync; call begin(version) first")
        return self._pending

    def count(self, tensors: int) -> None:
        """Tensors a backend loaded by itself (vLLM's workers receive broadcasts in their own processes)."""
        self.pending()
        self._loaded += tensors

    def finish(self, version: int, expected_tensors: int | None = None) -> None:
        if self._pending != version:
            raise SyncError(f"engine {self.name}: finish({version}) but the open sync is {self._pending}")
        if expected_tensors is not None and self._loaded != expected_tensors:
            loaded = self._loaded
            self.abort()
            raise SyncError(f"engine {self.name}: sync {version} delivered {loaded} of {expected_tensors} tensors; "
                            "the engine keeps refusing to generate until a complete sync")
        if self._session is not None:
            session, self._session = self._session, None
            session.__exit__(None, None, None)
        self._version = self._last_complete = version
        self._pending = None
        self.engine.weight_version = version

    def abort(self) -> None:
        """Close an open sync without advertising it (the weights stay marked incomplete)."""
        if self._session is not None:
            session, self._session = self._session, None
            try:
                session.__exit__(SyncError, SyncError("sync aborted"), None)
            except SyncError:
                pass
        self._pending = None
        self._version = None


@dataclass
class SyncStats:
    version: int
    seconds: float
    tensors: int
    bytes: int
    buckets: int = 0
    engines: int = 0
    extra: dict = field(default_factory=dict)


class WeightSync(ABC):
    """How a group's trained weights reach its engines. ``sync`` runs with every actor of the group alive and
    returns only when every engine advertises ``version`` (or raises through the group's failure handling)."""

    name: str = ""

    @abstractmethod
    def sync(self, group, version: int) -> SyncStats:
        """``group`` is a ``longshort.cluster.policy_group.PolicyGroup``."""


STRATEGIES: Registry[type[WeightSync]] = Registry("weight sync", {
    "colocated": "longshort.weight_sync.colocated:ColocatedSync",
    "object_store": "longshort.weight_sync.object_store:ObjectStoreSync",
    "collective": "longshort.weight_sync.collective:CollectiveSync",
}, check=lambda c: isinstance(c, type) and issubclass(c, WeightSync))


def register_weight_sync(name: str, target: str | type[WeightSync]) -> None:
    """Add a strategy: a ``WeightSync`` subclass or its lazy ``package.module:ClassName`` path."""
    STRATEGIES.register(name, target)


def make_weight_sync(name: str) -> WeightSync:
    return STRATEGIES.get(name)()


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
