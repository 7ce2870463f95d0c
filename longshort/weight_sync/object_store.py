"""Object-store sync: rank 0 packs full parameters into buckets, each bucket is stored once, every engine reads it.

Flow per bucket ``k``: all ranks gather bucket ``k``'s parameters (collective under ZeRO-3; every rank follows
the same bucket plan), rank 0 returns the packed bucket as a second return value, so it lands in the object
store once and the driver only holds its reference; each engine is handed that reference and maps the shared
copy zero-copy on its node. Rank 0 packs bucket ``k+1`` while the engines load bucket ``k``; at most two buckets
are alive at a time. Engines advertise the new version only after ``finish_sync`` confirms every tensor arrived.
The CPU transport (GPU engines take ``collective``). Sender: ``pack_next`` on every trainer rank; receiver:
``load_bucket`` on every engine.
"""

from __future__ import annotations

import time

import numpy as np

from longshort.weight_sync.base import Stopwatch, SyncStats, VersionedEngine, WeightSync
from longshort.weight_sync.buckets import Bucket, Publisher, pack_bucket, unpack

_IN_FLIGHT = 2  # buckets whose engine loads may be outstanding at once (bounds object-store memory)


class ObjectStoreSync(WeightSync):
    name = "object_store"

    def sync(self, group, version: int) -> SyncStats:
        watch = Stopwatch()
        engines, ranks = group.engines, group.ranks
        group.gather([(e.name, e.handle.begin_sync.remote(version)) for e in engines], collective=False,
                     what=f"begin weight sync {version}")
        layout = group.gather([(r.name, r.handle.begin_publish.remote(group.topo.bucket_bytes)) for r in ranks],
                              collective=True, what=f"weight sync {version}")[0]
        n_buckets = len(layout)
        loads: list[list] = []
        tensors = nbytes = 0
        load_s = pack_s = 0.0

        def drain(batch: list) -> float:
            return max(group.gather(batch, collective=False, what=f"weight sync {version} (load bucket)"),
                       default=0.0)

        for k in range(n_buckets):
            calls = [r.handle.next_bucket.options(num_returns=2).remote(k) for r in ranks]
            infos = group.gather([(r.name, c[0]) for r, c in zip(ranks, calls, strict=True)], collective=True,
                                 what=f"weight sync {version} (bucket {k})")
            tensors += infos[0]["tensors"]
            nbytes += infos[0]["bytes"]
            pack_s += infos[0]["seconds"]
            bucket_ref = calls[0][1]
            loads.append([(e.name, e.handle.load_bucket.remote(bucket_ref)) for e in engines])
            del calls, bucket_ref  # the engines' tasks hold the bucket now; it is freed once they are done
            while len(loads) >= _IN_FLIGHT:
                load_s += drain(loads.pop(0))
        for batch in loads:
            load_s += drain(batch)
        group.gather([(e.name, e.handle.finish_sync.remote(version, tensors)) for e in engines], collective=False,
                     what=f"finish weight sync {version}")
        return SyncStats(version, watch(), tensors=tensors, bytes=nbytes, buckets=n_buckets, engines=len(engines),
                         extra={"pack_s": pack_s, "load_s": load_s})


def pack_next(publisher: Publisher, index: int, root: bool, bucket_bytes: int,
              staging: np.ndarray | None) -> tuple[dict, Bucket | None, np.ndarray | None]:
    """Sender, on every trainer rank: gather bucket ``index`` (collective); the root packs it. Returns the info for
    the driver, the bucket (root only) and the staging buffer to reuse: Ray copies a return value into the object
    store as the call returns, so one buffer serves every bucket (fresh pages would cost a fault per 4 KiB)."""
    t0 = time.perf_counter()
    items = publisher.take(index, "next_bucket")
    if root:
        bucket = pack_bucket(items, bucket_bytes, staging)
        staging = bucket.data.base if isinstance(bucket.data.base, np.ndarray) else None
    else:
        bucket = None
        for _ in items:
            pass
    info = {"tensors": len(publisher.layout[index]),
            "bytes": 0 if bucket is None else bucket.nbytes, "seconds": time.perf_counter() - t0}
    return info, bucket, staging


def load_bucket(engine: VersionedEngine, bucket: Bucket) -> float:
    """Receiver, on every engine: load views of the shared bucket; returns the seconds it took."""
    t0 = time.perf_counter()
    engine.load(unpack(bucket))
    return time.perf_counter() - t0
