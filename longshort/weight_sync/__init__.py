"""Weight sync: trained parameters -> a policy's engines, versioned. ``base`` (versioning, the strategy interface and
registry), ``buckets`` (layout and packing), and one file per strategy with its driver, sender and receiver:
``colocated``, ``object_store``, ``collective``; ``vllm_extension`` is the receiver inside vLLM's workers."""

from longshort.weight_sync.base import (
    StaleWeightsError,
    SyncError,
    SyncStats,
    VersionedEngine,
    WeightSync,
    make_weight_sync,
    register_weight_sync,
)
from longshort.weight_sync.buckets import Bucket, pack_bucket, plan_buckets, unpack

__all__ = ["Bucket", "StaleWeightsError", "SyncError", "SyncStats", "VersionedEngine", "WeightSync",
           "make_weight_sync", "pack_bucket", "plan_buckets", "register_weight_sync", "unpack"]
