"""Colocated sync: each rank copies the full parameters into the engine living in its own process.

No serialization and no transfer between processes: under ZeRO-3 every rank gathers each parameter anyway
(``iter_full_params`` is collective), so every rank that hosts an engine copies it in place from the gather.
On GPUs this is a device-to-device copy inside one process (the CUDA-IPC case of the issue needs no IPC here:
trainer and engine share the process). Sender and receiver are one function, ``copy_in_place``, run by every rank.
"""

from __future__ import annotations

import time

from longshort.weight_sync.base import Stopwatch, SyncStats, VersionedEngine, WeightSync


class ColocatedSync(WeightSync):
    name = "colocated"

    def sync(self, group, version: int) -> SyncStats:
        watch = Stopwatch()
        calls = [(m.name, m.handle.sync_colocated.remote(version)) for m in group.ranks]
        out = group.gather(calls, collective=True, what=f"weight sync to version {version}")
        return SyncStats(version, watch(), tensors=out[0]["tensors"], bytes=out[0]["bytes"],
                         engines=sum(1 for o in out if o["engine"]),
                         extra={"inside_s": max(o["seconds"] for o in out)})


def copy_in_place(trainer, engine: VersionedEngine | None, version: int) -> dict:
    """On one rank: stream the full parameters into this process's engine, if it hosts one (collective: every
    rank gathers under ZeRO-3, whether or not it hosts an engine)."""
    t0 = time.perf_counter()
    tensors = nbytes = 0
    if engine is not None:
        engine.engine.wake()
        engine.begin(version)
    try:
        for name, t in trainer.iter_full_params():
            if engine is not None:
                engine.load([(name, t)])
            tensors += 1
            nbytes += t.numel() * t.element_size()
    except BaseException:
        if engine is not None:
            engine.abort()
        raise
    if engine is not None:
        engine.finish(version, tensors)
    return {"tensors": tensors, "bytes": nbytes, "seconds": time.perf_counter() - t0, "engine": engine is not None}
