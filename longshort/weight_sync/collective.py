"""Collective sync: trainer rank 0 broadcasts each bucket to every engine over a process group of their own.

The GPU transport (NCCL; gloo on CPU, where the same code is tested). Members: rank 0 of the training group as
the root, then every engine's receivers (one per tensor-parallel worker of a vLLM engine, one for an HF engine).
The group is opened on the first sync and kept for the run. Flow per sync: engines open a versioned sync; all
ranks compute the same bucket layout from the parameter shapes (so receivers allocate before any gather); for
each bucket every rank gathers its parameters (collective under ZeRO-3), rank 0 packs them into one device
buffer and broadcasts it, and each engine loads views of the bytes it received. No copy passes through the
driver or the object store; engines advertise the new version only after ``finish_sync`` counts every tensor.

The group is a process group of its own (``SyncGroup``): its members are not DeepSpeed's training group, so it is
built from a ``TCPStore`` and a backend's process-group class instead of ``torch.distributed.init_process_group``;
neither side's global ``torch.distributed`` state is touched (the trainer keeps its default group, a vLLM worker
keeps its own). Sender: ``broadcast_bucket`` on every trainer rank; receivers: ``open_receiver`` and
``receive_bucket`` on every engine (vLLM's workers use ``SyncGroup`` from ``vllm_extension``).
"""

from __future__ import annotations

import datetime
import time
from typing import Literal

import torch
import torch.distributed as dist

from longshort.core.errors import LongshortError
from longshort.training.ranks import gloo_on_loopback, tcp_store
from longshort.weight_sync.base import Stopwatch, SyncError, SyncStats, VersionedEngine, WeightSync
from longshort.weight_sync.buckets import Publisher, layout_bytes, pack_into, unpack_flat


class CollectiveSync(WeightSync):
    name = "collective"

    def __init__(self) -> None:
        self.backend: str | None = None  # set once the group is open

    def _open(self, group) -> None:
        engines, rank0 = group.engines, group.ranks[0]
        receivers = group.gather([(e.name, e.handle.sync_receivers.remote()) for e in engines], collective=False,
                                 what="weight sync group (receivers)")
        ((host, port),) = group.gather([(rank0.name, rank0.handle.address.remote())], collective=False,
                                       what="weight sync group (address)")
        world, timeout = 1 + sum(receivers), group.topo.call_timeout_s
        backend = group.res.sync_backend
        if backend == "auto":  # one backend for every member: NCCL only when trainer and engines both hold GPUs
            gpus = group.topo.accelerator == "GPU" and group.res.gpus_per_rank > 0 and group.res.gpus_per_engine > 0
            backend = "nccl" if gpus else "gloo"
        calls = [(rank0.name, rank0.handle.open_sync_group.remote(host, port, world, backend, timeout))]
        first = 1
        for e, n in zip(engines, receivers, strict=True):
            calls.append((e.name, e.handle.open_sync_group.remote(host, port, first, world, backend, timeout)))
            first += n
        self.backend = group.gather(calls, collective=True, what=f"weight sync group of {world} members")[0]

    def sync(self, group, version: int) -> SyncStats:
        watch = Stopwatch()
        if self.backend is None:
            self._open(group)
        engines, ranks = group.engines, group.ranks
        group.gather([(e.name, e.handle.begin_sync.remote(version)) for e in engines], collective=False,
                     what=f"begin weight sync {version}")
        layout = group.gather([(r.name, r.handle.begin_publish.remote(group.topo.bucket_bytes)) for r in ranks],
                              collective=True, what=f"weight sync {version}")[0]
        send_s = 0.0
        for k, metas in enumerate(layout):
            calls = [(r.name, r.handle.broadcast_bucket.remote(k)) for r in ranks]
            calls += [(e.name, e.handle.receive_bucket.remote(metas)) for e in engines]
            out = group.gather(calls, collective=True, what=f"weight sync {version} (bucket {k})")
            send_s += out[0]["seconds"]
        tensors = sum(len(m) for m in layout)
        group.gather([(e.name, e.handle.finish_sync.remote(version, tensors)) for e in engines], collective=False,
                     what=f"finish weight sync {version}")
        return SyncStats(version, watch(), tensors=tensors, bytes=sum(layout_bytes(m) for m in layout),
                         buckets=len(layout), engines=len(engines),
                         extra={"send_s": send_s, "backend": self.backend})


# ---- the transport ------------------------------------------------------------------------------------------------
Backend = Literal["auto", "nccl", "gloo"]


def resolve_backend(backend: Backend, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise LongshortError(f"weight sync backend 'nccl' needs CUDA tensors, this process works on {device}; "
                             "fix: topology.<role>.sync_backend: gloo (or auto)")
    return backend


class SyncGroup:
    """Rank ``rank`` of a ``world``-member broadcast group meeting at ``host:port`` (rank 0 hosts the store)."""

    def __init__(self, host: str, port: int, rank: int, world: int, backend: Backend, device: torch.device,
                 timeout_s: float, name: str = "longshort-weights"):
        self.rank, self.world, self.device = rank, world, device
        self.backend = resolve_backend(backend, device)
        timeout = datetime.timedelta(seconds=timeout_s)
        store = tcp_store(host, port, world, is_master=rank == 0, timeout=timeout, wait_for_workers=False)
        store = dist.PrefixStore(name, store)
        if self.backend == "nccl":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(store, rank, world, opts)
        else:
            gloo_on_loopback(host)
            self.pg = dist.ProcessGroupGloo(store, rank, world, timeout)
        self._store = store  # the group keeps talking to it

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` lands in every member's ``tensor`` (same size and dtype); blocks until done."""
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([tensor], opts).wait()
        return tensor

    def receive(self, nbytes: int) -> torch.Tensor:
        """A fresh byte buffer on this member's device filled by rank 0's broadcast."""
        return self.broadcast(torch.empty(nbytes, dtype=torch.uint8, device=self.device))


# ---- sender (trainer ranks) and receivers (engines) ----------------------------------------------------------
class Broadcaster:
    """A trainer rank's side: rank 0 joins the group as its root and sends each bucket; other ranks only gather."""

    def __init__(self) -> None:
        self.group: SyncGroup | None = None
        self._buffer: torch.Tensor | None = None  # one device buffer serves every bucket

    def open(self, rank: int, host: str, port: int, world: int, backend: Backend, device: torch.device,
             timeout_s: float) -> str | None:
        if rank != 0:
            return None
        self.group = SyncGroup(host, port, 0, world, backend, device, timeout_s)
        return self.group.backend

    def send(self, publisher: Publisher, index: int, rank: int, device: torch.device, who: str) -> dict:
        """Gather bucket ``index`` (all ranks, collective); rank 0 packs it on its device and broadcasts it."""
        t0 = time.perf_counter()
        items = publisher.take(index, "broadcast_bucket")
        nbytes = 0
        if rank == 0:
            if self.group is None:
                raise LongshortError(f"{who}: broadcast_bucket before open_sync_group")
            metas = publisher.layout[index]
            nbytes = layout_bytes(metas)
            if self._buffer is None or self._buffer.numel() < nbytes:
                self._buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)
            buf = self._buffer[:nbytes]
            pack_into(items, metas, buf)
            self.group.broadcast(buf)
        else:
            for _ in items:
                pass
        return {"tensors": len(publisher.layout[index]), "bytes": nbytes, "seconds": time.perf_counter() - t0}


def open_receiver(engine: VersionedEngine, host: str, port: int, rank: int, world: int, backend: Backend,
                  timeout_s: float) -> SyncGroup | None:
    """Join the group as ranks ``rank ..``. A backend with receivers of its own (vLLM: one per worker process)
    joins them itself and None is returned; otherwise this process is the one member."""
    own = getattr(engine.engine, "open_sync_group", None)
    if own is not None:
        own(host, port, rank, world, backend, timeout_s)
        return None
    device = getattr(engine.engine, "device", torch.device("cpu"))
    return SyncGroup(host, port, rank, world, backend, device, timeout_s)


def receive_bucket(engine: VersionedEngine, metas: list, group: SyncGroup | None) -> int:
    """Load one broadcast bucket laid out by ``metas``: in the backend's own receivers (vLLM), or as views of the
    bytes received in this process."""
    version = engine.pending()
    own = getattr(engine.engine, "receive_bucket", None)
    if own is not None:
        own(metas, version)
        engine.count(len(metas))
        return len(metas)
    if group is None:
        raise SyncError(f"engine {engine.name}: no weight-sync group is open; open_sync_group() first")
    return engine.load(unpack_flat(group.receive(layout_bytes(metas)), metas))
