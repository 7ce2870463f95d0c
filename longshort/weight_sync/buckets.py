"""Buckets: full parameters packed into flat byte buffers of ~``bucket_bytes`` (numpy, so Ray's object store hands
every reader on a node a zero-copy view of one shared copy; or a device tensor for a broadcast), and ``Publisher``,
the trainer-rank side that streams full parameters bucket by bucket for the object-store and collective strategies.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from longshort.weight_sync.base import SyncError

ALIGN = 64  # bytes; every tensor starts on this boundary so a byte view can be re-viewed as any dtype


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


class Publisher:
    """A trainer rank's stream of full parameters for one sync, cut into the planned buckets (collective: every
    rank of a ZeRO-3 group takes every bucket, since gathering a parameter needs all of them)."""

    def __init__(self) -> None:
        self.layout: list[list[TensorMeta]] = []
        self._params: Iterator | None = None

    def begin(self, trainer, bucket_bytes: int) -> list[list[TensorMeta]]:
        """Plan the buckets from the parameter shapes alone (``ds_shape`` under ZeRO-3) and start the stream."""
        self.close()
        self.layout = plan_layout(trainer.param_specs(), bucket_bytes)
        self._params = iter(trainer.iter_full_params())
        return self.layout

    def take(self, index: int, what: str) -> Iterator[tuple[str, torch.Tensor]]:
        """The (gathered) parameters of bucket ``index``; consume them all, in order, while each is valid."""
        if self._params is None or index >= len(self.layout):
            raise SyncError(f"{what}({index}) outside a publish of {len(self.layout)} buckets")
        return self._stream(index)

    def _stream(self, index: int) -> Iterator[tuple[str, torch.Tensor]]:
        params = self._params
        for _ in range(len(self.layout[index])):
            yield next(params)
        if index == len(self.layout) - 1:
            self.close()

    def close(self) -> None:
        if self._params is not None:
            self._params.close()
            self._params = None
