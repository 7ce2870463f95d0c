"""Driver-side handles on the policies' actors: one ``PolicyGroup`` per role, ``Policies`` for both.

A group owns a placement group, its rank actors (``PolicyWorker``) and standalone engines (``EngineWorker``); a frozen
role (``trainable: false``) has engines only, and its training, sync and checkpoint methods refuse. Collective methods
(train step, forward, weight sync, checkpoints) are sent to every rank at once and their results collected; data is
split across ranks. Every remote call goes through ``gather``, which turns a dead actor, a crashed call or a timeout
into an ``ActorFailure`` naming the role and the actor, after killing all of the group's actors (a rank stuck in a
collective with a dead peer would otherwise hang forever). Checkpoints are written atomically by the trainer, so the
last good one survives and loads into a fresh group; each actor's node is logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from longshort.cluster.actor_calls import (
    COLLECTIVE_GRACE_S,
    ActorFailure,
    FailureKind,
    Member,
    dead_members,
    died_summary,
    error_summary,
)
from longshort.cluster.topology import (
    RoleResources,
    TopologyConfig,
    actor_name,
    actor_options,
    create_placement_group,
    ensure_ray,
    release,
    split_evenly,
)
from longshort.core.errors import LongshortError
from longshort.engines.base import GenerationRequest, GenerationResult
from longshort.training.batch import Batch, LossFn
from longshort.training.trainer import StepStats, TrainerConfig
from longshort.weight_sync.base import SyncStats, make_weight_sync

log = logging.getLogger(__name__)


class PolicyGroup:
    """The actors of one policy (``role``), built from ``topology.<role>``; see the module docstring."""

    def __init__(self, role: str, model_dir: str | Path, topo: TopologyConfig, trainer_cfg: TrainerConfig | None = None,
                 seed: int = 0):
        if role not in topo.role_names:
            raise LongshortError(f"unknown role {role!r}; accepted: {', '.join(topo.role_names)}")
        if not (Path(model_dir) / "config.json").exists():
            raise LongshortError(f"policy '{role}': model dir {model_dir} has no config.json; give a Hugging Face "
                                 "model directory")
        self.role, self.model_dir, self.topo = role, str(model_dir), topo
        self.res: RoleResources = topo.role(role)
        self.trainer_cfg = trainer_cfg or TrainerConfig()
        self.seed = seed
        self.call_timeout_s = topo.call_timeout_s
        self.ranks: list[Member] = []
        self.engines: list[Member] = []  # standalone engine actors (colocate: false)
        self.pg = None
        self.version = 0  # weight version every engine holds after the last complete sync
        self.last_checkpoint: str | None = None
        self.alive = False
        self.nodes: dict[str, str] = {}  # actor name -> Ray node id (with its address), once ready
        self.timings: dict[str, float] = defaultdict(float)  # seconds inside actors, by activity
        self.sync = make_weight_sync(self.res.sync_strategy) if self.res.trainable else None

    @property
    def trainable(self) -> bool:
        return self.res.trainable

    @property
    def colocated(self) -> bool:
        """Engines live inside the rank processes (a trainable role with ``colocate: true``)."""
        return self.res.trainable and self.res.colocate

    def _trainer(self, what: str) -> None:
        if not self.res.trainable:
            raise LongshortError(f"policy '{self.role}' is frozen (topology.{self.role}.trainable: false): it has no "
                                 f"trainer, so it cannot {what}; set trainable: true to train it")

    # ---- start / stop -------------------------------------------------------------------------------
    @classmethod
    def start(cls, role: str, model_dir: str | Path, topo: TopologyConfig, trainer_cfg: TrainerConfig | None = None,
              seed: int = 0) -> PolicyGroup:
        group = cls(role, model_dir, topo, trainer_cfg, seed)
        try:
            group.launch()
            group.wait_ready()
        except BaseException:
            group.kill()  # a half-started group must not keep its actors and resources
            raise
        return group

    def launch(self) -> None:
        """Reserve resources and create the actors (their processes start importing in the background)."""
        import ray

        from longshort.cluster.workers.engine import EngineWorker
        from longshort.cluster.workers.policy import PolicyWorker

        ensure_ray(self.topo)
        res, acc = self.res, self.topo.accelerator
        self.pg = create_placement_group(self.role, res, self.topo.actor_start_timeout_s, acc)
        rank_cls, engine_cls = ray.remote(PolicyWorker), ray.remote(EngineWorker)
        for r in range(res.ranks):
            name = actor_name(self.role, "rank", r)
            opts = actor_options(self.pg, r, res.cpus_per_rank, res.gpus_per_rank, acc)
            self.ranks.append(Member(name, rank_cls.options(**opts).remote(self.role, r, name), "rank", r))
        for e in range(res.standalone_engines):
            name = actor_name(self.role, "engine", e)
            opts = actor_options(self.pg, res.ranks + e, res.cpus_per_engine, res.gpus_per_engine, acc)
            self.engines.append(Member(name, engine_cls.options(**opts).remote(self.role, e, name), "engine", e))
        self.alive = True

    def wait_ready(self) -> None:
        """Join the ranks into one process group and load every model (in parallel)."""
        from longshort.cluster.workers.policy import WorkerSpec

        res, timeout = self.res, self.topo.actor_start_timeout_s
        calls = []
        if self.ranks:
            ((addr, port),) = self.gather([(self.ranks[0].name, self.ranks[0].handle.address.remote())],
                                          collective=False, what="start", timeout_s=timeout)
        for m in self.ranks:
            spec = WorkerSpec(self.model_dir, self.trainer_cfg, res.num_ranks, addr, port,
                              threads=res.threads(res.cpus_per_rank),
                              engine_backend=res.engine_backend if res.colocate and m.index < res.num_engines else None,
                              engine_kwargs=res.engine_kwargs, reference=res.reference, seed=self.seed)
            calls.append((m.name, m.handle.setup.remote(spec)))
        for m in self.engines:
            calls.append((m.name, m.handle.setup.remote(res.engine_backend, self.model_dir, res.engine_kwargs,
                                                        res.threads(res.cpus_per_engine))))
        out = self.gather(calls, collective=True, what="setup", timeout_s=timeout)
        self.timings["setup"] += max(o["seconds"] for o in out)
        self.nodes = {m.name: o["node"] for m, o in zip(self.members, out, strict=True)}
        log.info("policy %s ready (%.1f s, %s parameters): %s", self.role, max(o["seconds"] for o in out),
                 out[0].get("params"), ", ".join(f"{n} on node {node}" for n, node in self.nodes.items()))

    @property
    def members(self) -> list[Member]:
        return self.ranks + self.engines

    def kill(self) -> None:
        """Stop every actor at once (also those stuck in a collective) and free the placement group."""
        release([(m.name, m.handle) for m in self.members], self.pg)
        self.pg = None
        self.alive = False

    def close(self, timeout_s: float = 60.0) -> None:
        """Leave process groups and free engines cleanly, then stop the actors."""
        if self.alive:
            try:
                self.gather([(m.name, m.handle.shutdown.remote()) for m in self.members], collective=True,
                            what="shutdown", timeout_s=timeout_s)
            except LongshortError as e:
                log.warning("policy %s: unclean shutdown: %s", self.role, e)
        self.kill()

    # ---- failure-aware calls ------------------------------------------------------------------------
    def gather(self, calls: list[tuple[str, Any]], *, collective: bool, what: str,
               timeout_s: float | None = None) -> list:
        """Results of ``calls`` (``(actor name, ObjectRef)``) in order.

        A dead actor, a crash or a timeout kills the group and raises ``ActorFailure``. A ``LongshortError``
        raised inside an actor (bad input, stale weights) is re-raised, prefixed with the actor's name, once the
        other calls are done; in a collective call whose other ranks do not finish soon after, the group is
        killed instead (they are stuck waiting for the failed one).
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayError, RayTaskError

        if not self.alive:
            raise LongshortError(f"policy '{self.role}': its actors were stopped; start a new group "
                                 f"(last good checkpoint: {self.last_checkpoint or 'none'})")
        names, order, results = {ref: name for name, ref in calls}, [ref for _, ref in calls], {}
        pending = list(order)
        deadline = time.monotonic() + (timeout_s or self.call_timeout_s)
        user_error: tuple[str, LongshortError] | None = None
        grace_until = deadline
        while pending:
            until = deadline if user_error is None or not collective else min(deadline, grace_until)
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, until - time.monotonic()))
            if not ready:
                if user_error is not None and collective and time.monotonic() < deadline:
                    self._fail(user_error[0], "error", error_summary(user_error[1]), what, [names[r] for r in pending])
                self._fail(names[pending[0]], "timeout", f"no answer after {timeout_s or self.call_timeout_s:.0f} s "
                           "(raise topology.call_timeout_s if the work is just slow)", what,
                           [names[r] for r in pending])
            ref = ready[0]
            try:
                results[ref] = ray.get(ref)
            except LongshortError as e:  # raised by our code inside the actor: the actor itself is fine
                if user_error is None:
                    user_error = (names[ref], getattr(e, "cause", None) or e)
                    grace_until = time.monotonic() + COLLECTIVE_GRACE_S
            except RayTaskError as e:
                self._fail(names[ref], "error", error_summary(e), what, [names[r] for r in pending])
            except GetTimeoutError as e:
                self._fail(names[ref], "timeout", error_summary(e), what, [names[r] for r in pending])
            except RayError as e:  # actor/worker/node died, object lost with its owner
                self._fail(names[ref], "died", died_summary(e), what, [names[r] for r in pending])
        if user_error is not None:
            name, err = user_error
            try:
                relabeled = type(err)(f"{name}: {err}")
            except TypeError:
                relabeled = LongshortError(f"{name}: {err}")
            raise relabeled from None
        return [results[r] for r in order]

    def _fail(self, actor: str, kind: FailureKind, cause: str, during: str, pending: list[str]) -> None:
        if kind != "died":
            # A rank whose peer died usually fails or hangs in the collective first: blame the dead one.
            dead = dead_members(self.members)
            if dead:
                last = (cause.splitlines() or [""])[-1]
                cause = f"the actor process exited (seen as '{kind}' on {actor}: {last})"
                actor, kind = dead[0], "died"
        self.kill()
        failure = ActorFailure(self.role, actor, kind, cause, during, self.last_checkpoint, pending, self.nodes.get(actor))
        log.error("%s", failure)
        raise failure

    # ---- generation ---------------------------------------------------------------------------------
    @property
    def engine_members(self) -> list[Member]:
        return self.ranks[: self.res.num_engines] if self.colocated else self.engines

    def generate(self, requests: list[GenerationRequest], min_version: int | None = None) -> list[GenerationResult]:
        """Generate on all engines (requests split evenly, results in request order). Engines must hold at
        least ``min_version`` (default: the group's current version) or they refuse."""
        if min_version is None:
            min_version = self.version
        targets = self.engine_members
        chunks = [(m, r) for m, r in zip(targets, split_evenly(len(requests), len(targets)), strict=True) if len(r)]
        calls = [(m.name, m.handle.generate.remote(requests[r.start : r.stop], min_version)) for m, r in chunks]
        out = self.gather(calls, collective=False, what="generate")
        self.timings["generate"] += max((s for _, s in out), default=0.0)
        return [res for results, _ in out for res in results]

    def engine_versions(self) -> list[int | None]:
        method = "engine_version" if self.colocated else "version"
        calls = [(m.name, getattr(m.handle, method).remote()) for m in self.engine_members]
        return self.gather(calls, collective=False, what="engine version")

    def engine_state_dicts(self) -> list[dict]:
        """Every engine's weights (HF engines; for checks and tests)."""
        method = "engine_state_dict" if self.colocated else "state_dict"
        calls = [(m.name, getattr(m.handle, method).remote()) for m in self.engine_members]
        return self.gather(calls, collective=False, what="engine state")

    # ---- training -----------------------------------------------------------------------------------
    def _per_rank(self, micro_batches: list) -> list[list[Batch]]:
        n, ga = len(self.ranks), self.trainer_cfg.grad_accum
        if micro_batches and all(isinstance(x, list) for x in micro_batches):
            if len(micro_batches) != n:
                raise LongshortError(f"policy '{self.role}': got micro-batches for {len(micro_batches)} ranks, the "
                                     f"group has {n}")
            return micro_batches
        if len(micro_batches) != n * ga:
            raise LongshortError(f"policy '{self.role}': a step takes num_ranks x grad_accum = {n} x {ga} = {n * ga} "
                                 f"micro-batches, got {len(micro_batches)}")
        return [micro_batches[r * ga : (r + 1) * ga] for r in range(n)]

    def train_step(self, micro_batches: list, loss_fn: LossFn | None = None,
                   normalizer: float | None = None) -> StepStats:
        """One optimizer step on all ranks: a flat list (rank r gets the r-th ``grad_accum`` slice) or one list
        per rank. The loss is global (see ``Trainer.step``); engines keep their weights until ``sync_weights``."""
        self._trainer("train")
        per_rank = self._per_rank(micro_batches)
        calls = [(m.name, m.handle.train_step.remote(per_rank[i], loss_fn, normalizer))
                 for i, m in enumerate(self.ranks)]
        out = self.gather(calls, collective=True, what="train step")
        self.timings["train"] += max(o["seconds"] for o in out)
        return StepStats(**out[0]["stats"])

    def forward(self, batches: list[Batch], what: Literal["logprobs", "logits", "ref_logprobs"] = "logprobs") -> list:
        """Per-batch outputs of the trainer (or the frozen reference), computed on all ranks (each gets the same
        number of batches, as ZeRO-3 needs; a short rank repeats the last batch and that output is dropped)."""
        self._trainer(f"compute {what}")
        if not batches:
            return []
        n = len(self.ranks)
        per = math.ceil(len(batches) / n)
        padded = batches + [batches[-1]] * (per * n - len(batches))
        calls = [(m.name, m.handle.forward.remote(padded[i * per : (i + 1) * per], what))
                 for i, m in enumerate(self.ranks)]
        out = self.gather(calls, collective=True, what=f"forward ({what})")
        self.timings["forward"] += max(s for _, s in out)
        return [t for ts, _ in out for t in ts][: len(batches)]

    # ---- weights ------------------------------------------------------------------------------------
    def sync_weights(self) -> SyncStats:
        """Send the trained weights to every engine as version ``self.version + 1``."""
        self._trainer("sync weights")
        stats = self.sync.sync(self, self.version + 1)
        self.version = stats.version
        self.timings["sync"] += stats.seconds
        return stats

    def save_checkpoint(self, path: str | Path, client_state: dict | None = None) -> str:
        """Atomic checkpoint of every rank (weights, optimizer, RNG) plus ``client_state`` (JSON-able)."""
        self._trainer("save a checkpoint")
        state = dict(client_state or {})
        state["_weight_version"] = self.version
        calls = [(m.name, m.handle.save_checkpoint.remote(str(path), state)) for m in self.ranks]
        (saved, *_) = self.gather(calls, collective=True, what="save checkpoint")
        self.last_checkpoint = saved
        return saved

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore a checkpoint into the trainers, then sync the engines to it; returns its ``client_state``."""
        self._trainer("load a checkpoint")
        calls = [(m.name, m.handle.load_checkpoint.remote(str(path))) for m in self.ranks]
        (state, *_) = self.gather(calls, collective=True, what="load checkpoint")
        state = dict(state)
        self.version = int(state.pop("_weight_version", 0))
        self.last_checkpoint = str(path)
        self.sync_weights()  # engines still hold the initial weights: bring them to the checkpoint's
        return state

    def gathered_state_dict(self) -> dict:
        self._trainer("gather its weights")
        calls = [(m.name, m.handle.gathered_state_dict.remote()) for m in self.ranks]
        return self.gather(calls, collective=True, what="gather state dict")[0]

    def export(self, out_dir: str | Path) -> str:
        self._trainer("export")
        calls = [(m.name, m.handle.export.remote(str(out_dir), self.model_dir)) for m in self.ranks]
        return self.gather(calls, collective=True, what="export")[0]

    def take_timings(self) -> dict[str, float]:
        out, self.timings = dict(self.timings), defaultdict(float)
        return out


class Policies:
    """Both roles' groups, as the controller holds them. Leaving the ``with`` block on an exception kills every
    actor (no hung Ray job); a normal exit shuts them down cleanly."""

    def __init__(self, groups: dict[str, PolicyGroup]):
        self.groups = groups

    @classmethod
    def start(cls, topo: TopologyConfig, model_dirs: dict[str, str | Path],
              trainer_cfgs: dict[str, TrainerConfig] | TrainerConfig | None = None, seed: int = 0) -> Policies:
        """Start the groups of the roles in ``model_dirs``; their actors load models concurrently."""
        groups: dict[str, PolicyGroup] = {}
        try:
            for role, model_dir in model_dirs.items():
                cfg = trainer_cfgs.get(role) if isinstance(trainer_cfgs, dict) else trainer_cfgs
                groups[role] = PolicyGroup(role, model_dir, topo, cfg, seed)
                groups[role].launch()
            for g in groups.values():
                g.wait_ready()
        except BaseException:
            for g in groups.values():
                g.kill()
            raise
        return cls(groups)

    def __getitem__(self, role: str) -> PolicyGroup:
        if role not in self.groups:
            raise LongshortError(f"no policy group for role {role!r}; started: {', '.join(self.groups)}")
        return self.groups[role]

    def kill(self) -> None:
        for g in self.groups.values():
            g.kill()

    def close(self) -> None:
        for g in self.groups.values():
            g.close()

    def __enter__(self) -> Policies:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.kill()
