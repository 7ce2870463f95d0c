"""Versioned weight sync from a policy's training ranks to its engines: the parts every transport shares.

* ``VersionedEngine`` wraps any ``Engine`` and owns the truth about which weights it serves: a sync opens with
  ``begin(v)``, loads any number of buckets, and only ``finish(v)`` (all tensors arrived) advertises ``v``.
  Between ``begin`` and ``finish``, or after an interrupted sync, the engine serves nothing: its weights are a
  mix of two versions. ``generate(..., min_version=v)`` refuses to serve anything older than ``v``.
* Buckets: full parameters packed into flat byte buffers of ~``bucket_bytes`` (numpy, so Ray's object store
  hands every reader on a node a zero-copy view of one shared copy); ``unpack`` gives tensor views into it.
* ``WeightSync``: a strategy (colocated in place, object store, collective broadcast) that a ``PolicyGroup`` runs
  after each update; one file per strategy, chosen by ``topology.<role>.weight_sync``.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch

from longshort.core.errors import LongshortError
from longshort.engines.base import Engine, GenerationRequest, GenerationResult

ALIGN = 64  # bytes; every tensor starts on this boundary so a byte view can be re-viewed as any dtype


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

    def receive(self, metas: list[TensorMeta], group) -> int:
        """Load one broadcast bucket laid out by ``metas`` from ``group`` (a ``process_group.SyncGroup``).

        A backend with its own receivers (vLLM: one per tensor-parallel worker process) takes the bucket there
        (``receive_bucket``); any other engine gets the bytes in this process and loads views of them.
        """
        if self._pending is None:
            raise SyncError(f"engine {self.name}: receive() outside a sync; call begin(version) first")
        own = getattr(self.engine, "receive_bucket", None)
        if own is not None:
            own(metas, self._pending)
        else:
            if group is None:
                raise SyncError(f"engine {self.name}: no weight-sync group is open; open_sync_group() first")
            flat = group.receive(layout_bytes(metas))
            self.engine.update_weights(unpack_flat(flat, metas), self._pending)
        self._loaded += len(metas)
        return len(metas)

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


# ---------------------------------------------------------------------------------------------------- buckets


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # torch dtype name without the "torch." prefix
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass
class Bucket:
    """Several full tensors in one flat uint8 buffer (``data``), described by ``metas``."""

    metas: list[TensorMeta]
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    # Stays on its device: copy_ into the CPU bucket is then the one device-to-host copy.
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def plan_buckets(sizes: list[int], bucket_bytes: int) -> list[int]:
    """How many tensors (of ``sizes`` bytes, in order) go in each bucket of at most ``bucket_bytes`` (a larger
    tensor gets a bucket of its own).

    Every rank of a ZeRO-3 group computes the same plan from the parameter shapes, so all of them gather
    exactly the same parameters for each bucket.
    """
    counts: list[int] = []
    used = -1  # -1: no open bucket
    for size in sizes:
        if used < 0 or (used > 0 and _aligned(used) + size > bucket_bytes):
            counts.append(0)
            used = 0
        used = (_aligned(used) if used else 0) + size
        counts[-1] += 1
    return counts


def pack_bucket(named_tensors: Iterable[tuple[str, torch.Tensor]], capacity: int,
                buffer: np.ndarray | None = None) -> Bucket:
    """Copy tensors (each once, while it is valid: it may be a ZeRO-3 gather) into one buffer of ``capacity``
    bytes or more. ``buffer`` (uint8) is reused when it is large enough: pass one only if the previous bucket
    packed into it has been consumed (e.g. serialized into the object store as a Ray return value)."""
    buf: np.ndarray | None = buffer if buffer is not None and buffer.nbytes >= capacity else None
    metas: list[TensorMeta] = []
    used = 0
    for name, t in named_tensors:
        size = _nbytes(t)
        off = _aligned(used) if metas else 0
        if buf is None or off + size > buf.nbytes:
            grown = np.empty(max(capacity, off + size), dtype=np.uint8)
            if buf is not None:
                grown[:used] = buf[:used]
            buf = grown
        torch.from_numpy(buf[off : off + size]).copy_(_as_bytes(t))
        metas.append(TensorMeta(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), off, size))
        used = off + size
    return Bucket(metas, (buf if buf is not None else np.empty(0, dtype=np.uint8))[:used])


def unpack(bucket: Bucket) -> list[tuple[str, torch.Tensor]]:
    """Tensor views into ``bucket.data`` (no copy; read-only when it comes from the object store)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-writable buffer: we only read from it
        flat = torch.from_numpy(bucket.data)
    return unpack_flat(flat, bucket.metas)


def unpack_flat(flat: torch.Tensor, metas: list[TensorMeta]) -> list[tuple[str, torch.Tensor]]:
    """Tensor views into one flat uint8 tensor laid out by ``metas`` (any device)."""
    return [(m.name, flat[m.offset : m.offset + m.nbytes].view(getattr(torch, m.dtype)).view(m.shape))
            for m in metas]


def plan_layout(params: list[tuple[str, torch.dtype, tuple[int, ...]]], bucket_bytes: int) -> list[list[TensorMeta]]:
    """The buckets of full parameters ``(name, dtype, full shape)``, in order, with every tensor's offset.

    Computed from shapes alone (``ds_shape`` under ZeRO-3), so a receiver can allocate and unpack a bucket before
    any parameter is gathered; ``pack_into`` fills exactly this layout (``pack_bucket`` lays out the same way).
    """
    sizes = [int(torch.Size(shape).numel()) * torch.empty(0, dtype=dtype).element_size() for _, dtype, shape in params]
    layout, i = [], 0
    for count in plan_buckets(sizes, bucket_bytes):
        metas, used = [], 0
        for (name, dtype, shape), size in zip(params[i : i + count], sizes[i : i + count], strict=True):
            off = _aligned(used) if metas else 0
            metas.append(TensorMeta(name, str(dtype).removeprefix("torch."), tuple(shape), off, size))
            used = off + size
        layout.append(metas)
        i += count
    return layout


def layout_bytes(metas: list[TensorMeta]) -> int:
    return metas[-1].offset + metas[-1].nbytes if metas else 0


def pack_into(named_tensors: Iterable[tuple[str, torch.Tensor]], metas: list[TensorMeta], out: torch.Tensor) -> None:
    """Copy tensors (each once, while it is valid) into ``out`` (uint8, any device) at the offsets of ``metas``;
    a tensor whose name, dtype or shape differs from the plan is a ``SyncError`` (the receivers would misread it)."""
    n = 0
    for (name, t), m in zip(named_tensors, metas, strict=False):
        if (name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) != (m.name, m.dtype, m.shape):
            raise SyncError(f"weight sync: parameter {name} {t.dtype} {tuple(t.shape)} does not match the planned "
                            f"{m.name} {m.dtype} {m.shape}; the trainer's parameters changed after the plan")
        out[m.offset : m.offset + m.nbytes].copy_(_as_bytes(t))
        n += 1
    if n != len(metas):
        raise SyncError(f"weight sync: {n} tensors for a bucket planned with {len(metas)}")


# ---------------------------------------------------------------------------------------------------- strategies


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


_STRATEGIES: dict[str, str] = {
    "colocated": "longshort.weight_sync.colocated:ColocatedSync",
    "object_store": "longshort.weight_sync.object_store:ObjectStoreSync",
    "collective": "longshort.weight_sync.collective:CollectiveSync",
}


def register_weight_sync(name: str, target: str) -> None:
    """Add a strategy as a lazy ``package.module:ClassName`` path (e.g. an NCCL broadcast)."""
    _STRATEGIES[name] = target


def make_weight_sync(name: str) -> WeightSync:
    import importlib

    if name not in _STRATEGIES:
        raise LongshortError(f"weight sync {name!r} is unknown; accepted: {', '.join(sorted(_STRATEGIES))}")
    module, _, attr = _STRATEGIES[name].partition(":")
    return getattr(importlib.import_module(module), attr)()


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
