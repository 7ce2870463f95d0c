"""Colocated sync: each rank copies the full parameters into the engine living in its own process.

No serialization and no transfer between processes: under ZeRO-3 every rank gathers each parameter anyway
(``iter_full_params`` is collective), so every rank that hosts an engine copies it in place from the gather.
On GPUs this is a device-to-device copy inside one process (the CUDA-IPC case of the issue needs no IPC here:
trainer and engine share the process).
"""

from __future__ import annotations

from longshort.weight_sync.base import Stopwatch, SyncStats, WeightSync


class ColocatedSync(WeightSync):
    name = "colocated"

    def sync(self, group, version: int) -> SyncStats:
        watch = Stopwatch()
        calls = [(m.name, m.handle.sync_colocated.remote(version)) for m in group.ranks]
        out = group.gather(calls, collective=True, what=f"weight sync to version {version}")
        return SyncStats(version, watch(), tensors=out[0]["tensors"], bytes=out[0]["bytes"],
                         engines=sum(1 for o in out if o["engine"]),
                         extra={"inside_s": max(o["seconds"] for o in out)})
