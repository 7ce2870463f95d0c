"""Where each policy's actors run: per-role resources from the run config, placement groups, actor options.

Roles are data: a recipe declares them (``core.stage.RoleSpec``) and ``topology_config_class`` makes the config
section with one ``RoleResources`` key per role (``topology.long``, ``topology.short`` for the pair). Each role gets
one placement group. A bundle per training rank holds that rank's process,
which also hosts the frozen reference and, when ``colocate`` is on, an engine that sleeps while the trainer
runs (one process per device, trainer and engine share its memory). With ``colocate: false`` each engine is
its own actor in its own bundle. The same section runs on one CPU box (fractional CPUs, no GPUs) and on a
multi-GPU cluster (``gpus_per_rank: 1``, ``placement: SPREAD`` ...); only numbers change. A frozen role
(``trainable: false``) gets its ``num_engines`` engines as standalone actors and nothing else: no ranks, optimizer
or reference, and no weight sync.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Literal

from longshort.core import precision
from longshort.core.errors import LongshortError
from longshort.core.stage import RoleSpec
from longshort.training.ranks import Placement

log = logging.getLogger(__name__)


@dataclass
class RoleResources:
    """Actors of one policy. Defaults: one CPU rank with a colocated HF engine, small enough that both roles
    fit on a 2-core laptop."""

    trainable: bool = True  # false: a frozen role, engines only (colocate, ranks and reference are ignored)
    num_ranks: int = field(default=1, metadata={"ge": 1})  # data-parallel training ranks (DeepSpeed)
    cpus_per_rank: float = field(default=0.5, metadata={"gt": 0})
    gpus_per_rank: float = field(default=0.0, metadata={"ge": 0})
    # true: engines live inside the first num_engines rank processes (in-place weight sync, no copy between
    # processes); false: each engine is its own actor fed through the object store.
    colocate: bool = True
    num_engines: int = field(default=1, metadata={"ge": 1})
    engine_backend: str = "hf"  # a name in longshort.engines.registry ("hf", "vllm", or one you registered)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor args, e.g. tensor_parallel_size
    cpus_per_engine: float = field(default=0.5, metadata={"gt": 0})  # standalone engines only
    gpus_per_engine: float = field(default=0.0, metadata={"ge": 0})  # standalone engines only (= TP size for vLLM)
    reference: bool = True  # a frozen copy of the starting weights for KL / reference logprobs
    placement: Placement = "PACK"
    # How trained weights reach the engines: colocated (in place, colocate: true), object_store (buckets in Ray's
    # store) or collective (rank 0 broadcasts buckets: NCCL on GPUs, gloo on CPU). auto: colocated when colocated,
    # collective for GPU engines, object_store for CPU engines.
    weight_sync: Literal["auto", "colocated", "object_store", "collective"] = "auto"
    sync_backend: Literal["auto", "nccl", "gloo"] = "auto"  # collective only; auto: nccl when ranks and engines have GPUs
    threads_per_actor: int | None = field(default=None, metadata={"ge": 1})  # CPU torch threads; None: from CPUs

    def validate(self) -> None:
        from longshort.engines.registry import backends

        if not self.trainable:
            if self.weight_sync != "auto":
                raise ValueError(f"weight_sync: {self.weight_sync!r} is set on a frozen role (trainable: false), "
                                 "which is never synced; accepted: auto")
        elif self.colocate and self.num_engines > self.num_ranks:
            raise ValueError(f"num_engines: {self.num_engines} colocated engines need as many ranks to live in "
                             f"(num_ranks is {self.num_ranks}); accepted: num_engines <= num_ranks, or colocate: false")
        if self.engine_backend not in backends():
            raise ValueError(f"engine_backend: {self.engine_backend!r} is unknown; accepted: {', '.join(backends())}")
        for key in ("gpus_per_rank", "gpus_per_engine"):
            g = getattr(self, key)
            if g > 1 and g != int(g):
                raise ValueError(f"{key}: {g} is not allowed; accepted: a fraction below 1 or a whole number")
        if 0 < self.gpus_per_rank < 1 and self.num_ranks > 1:
            raise ValueError(f"gpus_per_rank: {self.gpus_per_rank} would let {self.num_ranks} ranks share a GPU, which "
                             "NCCL refuses; accepted: a whole number of GPUs per rank when num_ranks > 1")
        if (self.weight_sync == "colocated") != self.colocate and self.weight_sync != "auto":
            raise ValueError(f"weight_sync: {self.weight_sync!r} does not fit colocate: {str(self.colocate).lower()}; "
                             "accepted: colocated (or auto) with colocate: true, object_store / collective (or auto) "
                             "with colocate: false")
        if (self.colocate or not self.trainable) and "model" in self.engine_kwargs:
            raise ValueError("engine_kwargs: 'model' is set by the topology (the policy's model dir); remove it")

    @property
    def sync_strategy(self) -> str:
        """The weight-sync strategy ``auto`` resolves to (a name in ``longshort.weight_sync``)."""
        if self.weight_sync != "auto":
            return self.weight_sync
        if self.colocate:
            return "colocated"
        return "collective" if self.gpus_per_engine > 0 else "object_store"

    @property
    def standalone_engines(self) -> int:
        return self.num_engines if not (self.trainable and self.colocate) else 0

    @property
    def ranks(self) -> int:
        """Training rank actors: none for a frozen role."""
        return self.num_ranks if self.trainable else 0

    def threads(self, cpus: float) -> int:
        return self.threads_per_actor or max(1, round(cpus))


@dataclass
class TopologyConfig:
    """Ray layout of a run: weight-sync bucket size and how long to wait on actors. A recipe's section adds one
    ``RoleResources`` key per role (``topology_config_class``)."""

    bucket_mb: float = field(default=64.0, metadata={"gt": 0})  # weight-sync bucket (object store transfers)
    actor_start_timeout_s: float = field(default=600.0, metadata={"gt": 0})  # placement + model load
    call_timeout_s: float = field(default=3600.0, metadata={"gt": 0})  # any one call (generate, step, sync)
    ray_address: str | None = None  # None: the RAY_ADDRESS variable, else a local Ray instance
    # The Ray resource that gpus_per_rank / gpus_per_engine ask for: GPU, or a custom resource a cluster declares for
    # its accelerators (a test cluster's stand-in for GPUs, e.g. fake_gpu); only GPU makes a process use CUDA/NCCL.
    accelerator: str = "GPU"

    @property
    def role_names(self) -> list[str]:
        return [f.name for f in fields(self) if isinstance(getattr(self, f.name), RoleResources)]

    def role(self, name: str) -> RoleResources:
        if name not in self.role_names:
            raise LongshortError(f"unknown role {name!r}; accepted: {', '.join(self.role_names)}")
        return getattr(self, name)

    @property
    def bucket_bytes(self) -> int:
        return int(self.bucket_mb * 2**20)


def topology_config_class(roles: dict[str, RoleSpec], name: str = "Topology") -> type[TopologyConfig]:
    """The ``topology`` section for a recipe's roles: ``TopologyConfig`` plus one ``RoleResources`` key per role,
    whose ``trainable`` default is the role's. Roles come first, as a config file lists them."""

    def resources(spec: RoleSpec):
        return lambda: RoleResources(trainable=spec.trainable)

    role_fields = [(r, RoleResources, field(default_factory=resources(s))) for r, s in roles.items()]
    cls = make_dataclass(name, role_fields, bases=(TopologyConfig,))
    cls.__doc__ = f"Ray layout of the roles {', '.join(roles)}: " + (TopologyConfig.__doc__ or "")
    return cls


def actor_name(role: str, kind: Literal["rank", "engine"], index: int) -> str:
    """The name failures report, e.g. ``long/rank0`` or ``short/engine1``."""
    return f"{role}/{kind}{index}"


def bundle(cpus: float, gpus: float, accelerator: str = "GPU") -> dict[str, float]:
    """One placement-group bundle: ``cpus`` CPUs and ``gpus`` of ``accelerator``."""
    out = {"CPU": float(cpus)}
    if gpus > 0:  # Ray refuses zero-valued bundle entries
        out[accelerator] = float(gpus)
    return out


def device_options(gpus: float, accelerator: str = "GPU") -> dict:
    """The ``.options(...)`` an actor asks its devices with: Ray's ``num_gpus`` for GPU (which also sets the
    process's CUDA_VISIBLE_DEVICES), else a custom resource (a test cluster's stand-in for GPUs)."""
    if gpus <= 0:
        return {}
    return {"num_gpus": gpus} if accelerator == "GPU" else {"resources": {accelerator: gpus}}


def role_bundles(res: RoleResources, accelerator: str = "GPU") -> list[dict[str, float]]:
    """Bundles of a role's placement group: ranks first (index = rank), then standalone engines."""
    ranks = [bundle(res.cpus_per_rank, res.gpus_per_rank, accelerator) for _ in range(res.ranks)]
    return ranks + [bundle(res.cpus_per_engine, res.gpus_per_engine, accelerator)
                    for _ in range(res.standalone_engines)]


@dataclass
class _Cluster:
    address: str | None = None
    accelerator: str = "GPU"


_RUN = _Cluster()


def use_cluster(topo: TopologyConfig | None) -> None:
    """Where a command's work goes: ``topology.ray_address`` (else RAY_ADDRESS, else a local instance) and the Ray
    resource a device is (``topology.accelerator``). The pipeline sets it from the run config before any stage; SFT
    ranks and the stages' engine pools read it (RL reads its topology itself). Nothing connects until work needs Ray."""
    global _RUN
    _RUN = _Cluster(topo.ray_address, topo.accelerator) if topo is not None else _Cluster()


def run_accelerator() -> str:
    """The Ray resource a device is, for work outside the topology (``use_cluster``)."""
    return _RUN.accelerator


def ensure_ray(cfg: TopologyConfig | None = None, **kwargs) -> None:
    """Connect to Ray (``ray_address`` of ``cfg``, else of the run's ``use_cluster``, else RAY_ADDRESS) or start a
    local instance, unless already connected."""
    import ray

    if ray.is_initialized():
        return
    if threading.current_thread() is not threading.main_thread():
        # Linux stops the processes Ray starts when the *thread* that started them ends (PR_SET_PDEATHSIG): a
        # cluster started in a worker thread dies with it, in the middle of a run.
        raise RuntimeError("ensure_ray() from a worker thread; connect from the main thread before starting "
                           "threads that use Ray")
    from longshort.cluster.reaper import start_ray

    start_ray((cfg.ray_address if cfg else _RUN.address) or os.environ.get("RAY_ADDRESS"), **kwargs)


def create_placement_group(role: str, res: RoleResources, timeout_s: float, accelerator: str = "GPU"):
    """Reserve the role's bundles; a clear error naming the role and the shortfall when the cluster cannot fit it."""
    return reserve(role_bundles(res, accelerator), res.placement, timeout_s, f"topology.{role}",
                   f"lower topology.{role}.num_ranks / cpus_per_rank / gpus_per_rank / num_engines")


def reserve(bundles: list[dict[str, float]], strategy: Placement, timeout_s: float, key: str, lower: str):
    """A placement group of ``bundles``; when the cluster cannot fit it in ``timeout_s``, an error naming ``key``
    (the config that asks), the totals asked, had and free, and the fix (``lower`` the keys that ask, or add nodes)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group(bundles, strategy=strategy, name=f"longshort-{key.replace('.', '-')}-{uuid.uuid4().hex[:8]}")
    if not pg.wait(timeout_seconds=timeout_s):
        remove_placement_group(pg)
        need: dict[str, float] = {}
        for b in bundles:
            for k, v in b.items():
                need[k] = need.get(k, 0.0) + v
        have = {k: ray.available_resources().get(k, 0.0) for k in need}
        total = {k: ray.cluster_resources().get(k, 0.0) for k in need}
        spread = " or placement: PACK" if strategy != "PACK" else ""
        raise LongshortError(
            f"{key}: Ray could not place {len(bundles)} actor(s) needing {need} in total (strategy {strategy}) within "
            f"{timeout_s:.0f} s; the cluster has {total}, free now {have}. Fix: {lower}{spread}, or add nodes"
        )
    return pg


def actor_options(pg, bundle_index: int, cpus: float, gpus: float, accelerator: str = "GPU",
                  concurrency: int = 1) -> dict:
    """``.options(...)`` for an actor pinned to one bundle of ``pg``; ``gpus`` of ``accelerator`` (Ray's GPU, or a
    custom resource); ``concurrency`` calls at once."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    opts: dict = {
        "num_cpus": cpus,
        **device_options(gpus, accelerator),
        "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle_index),
        "max_restarts": 0,  # a rank cannot rejoin its process group: the job restarts from a checkpoint
        "max_concurrency": concurrency,
    }
    env = _runtime_env()
    if env:
        opts["runtime_env"] = env
    return opts


def release(actors: list[tuple[str, Any]], pg) -> None:
    """Kill ``actors`` (``(name, handle)``) at once, also those stuck in a collective, then free ``pg``; what is
    already gone is skipped."""
    import ray
    from ray.util.placement_group import remove_placement_group

    for name, handle in actors:
        try:
            ray.kill(handle, no_restart=True)
        except Exception as e:  # noqa: BLE001 - already gone is fine; keep killing the rest
            log.debug("kill %s: %s", name, e)
    if pg is not None:
        try:
            remove_placement_group(pg)
        except Exception as e:  # noqa: BLE001
            log.debug("remove placement group: %s", e)


def _runtime_env() -> dict:
    """Actors must import ``longshort`` and compute in the run's CPU precision (``cpu_precision``). Ray puts the
    driver's working directory on the workers' path; when the package runs from a checkout and the driver started
    elsewhere, add the checkout to theirs. ``auto`` goes to them as the driver's decision (one precision per run)."""
    env = {precision.ENV: precision.decided(os.environ[precision.ENV])} if precision.ENV in os.environ else {}
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists() and Path.cwd().resolve() != root:
        prev = os.environ.get("PYTHONPATH", "")
        env["PYTHONPATH"] = f"{root}{os.pathsep}{prev}" if prev else str(root)
    return {"env_vars": env} if env else {}


def split_evenly(n: int, parts: int) -> list[range]:
    """``n`` items into ``parts`` contiguous ranges whose sizes differ by at most one (earlier ones larger)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(range(start, end))
        start = end
    return out
