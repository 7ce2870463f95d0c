"""Collective sync: trainer rank 0 broadcasts each bucket to every engine over a process group of their own.

The GPU transport (NCCL; gloo on CPU, where the same code is tested). Members: rank 0 of the training group as
the root, then every engine's receivers (one per tensor-parallel worker of a vLLM engine, one for an HF engine).
The group is opened on the first sync and kept for the run. Flow per sync: engines open a versioned sync; all
ranks compute the same bucket layout from the parameter shapes (so receivers allocate before any gather); for
each bucket every rank gathers its parameters (collective under ZeRO-3), rank 0 packs them into one device
buffer and broadcasts it, and each engine loads views of the bytes it received. No copy passes through the
driver or the object store; engines advertise the new version only after ``finish_sync`` counts every tensor.
"""

from __future__ import annotations

from longshort.weight_sync.base import Stopwatch, SyncStats, WeightSync, layout_bytes


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
            backend = "nccl" if group.res.gpus_per_rank > 0 and group.res.gpus_per_engine > 0 else "gloo"
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
