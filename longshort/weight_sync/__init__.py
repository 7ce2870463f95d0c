"""Weight sync strategies: trained parameters → a policy's engines, versioned (see ``base``)."""

from longshort.weight_sync.base import (
    Bucket,
    StaleWeightsError,
    SyncError,
    SyncStats,
    VersionedEngine,
    WeightSync,
    make_weight_sync,
    pack_bucket,
    plan_buckets,
    register_weight_sync,
    unpack,
)

__all__ = ["Bucket", "StaleWeightsError", "SyncError", "SyncStats", "VersionedEngine", "WeightSync",
           "make_weight_sync", "pack_bucket", "plan_buckets", "register_weight_sync", "unpack"]
