"""A training job's ranks as Ray actors: the one way training ranks run, on a laptop's local Ray instance and on a
multi-node cluster alike.

``run_ranks(fn, args, placement)`` reserves one bundle per rank in a placement group (``PACK`` fills a node first,
``SPREAD`` / ``STRICT_SPREAD`` put ranks on different nodes), starts a ``RankHost`` actor in each, meets at rank 0's
node address and runs ``fn(RankInfo, *args, report=...)`` on every rank (the same rank code RL's ``PolicyWorker``
runs). Each rank's device is the one Ray gave its actor (``CUDA_VISIBLE_DEVICES``), so the driver needs none. Rank
0's reports reach the driver while the job runs. A rank's ``LongshortError`` is raised here as it is; a crash or a
lost actor (its node gone) stops every rank and names the rank and its node. The actors are owned by the driver, so
they die with it (and a local cluster with them: ``reaper``); what a killed job leaves is its last checkpoint, which
may be newer than the last report the driver read (ranks run on while their reports travel).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from longshort.cluster.actor_calls import COLLECTIVE_GRACE_S, SFT_MEMORY, died_summary, error_summary
from longshort.cluster.topology import actor_options, bundle, ensure_ray, release, reserve
from longshort.core.errors import LongshortError
from longshort.training.ranks import Placement, RankInfo, Report, free_port

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankPlacement:
    """Where a job's ranks run. ``gpus_per_rank=None``: one whole ``accelerator`` per rank when the cluster has
    any, else none (CPU ranks). ``threads_per_rank=None``: the node's cores shared by the job's ranks (CPU)."""

    num_ranks: int = 1
    cpus_per_rank: float = 1.0
    gpus_per_rank: float | None = None
    threads_per_rank: int | None = None
    placement: Placement = "PACK"
    accelerator: str = "GPU"  # the Ray resource standing for a device (topology.accelerator)
    key: str = "sft"  # the config section that asks, named in errors

    def gpus(self) -> float:
        import ray

        if self.gpus_per_rank is not None:
            return self.gpus_per_rank
        return 1.0 if ray.cluster_resources().get(self.accelerator, 0) >= 1 else 0.0

    def bundles(self, gpus: float) -> list[dict[str, float]]:
        return [bundle(self.cpus_per_rank, gpus, self.accelerator) for _ in range(self.num_ranks)]


class _Forward(logging.Handler):
    """A rank's ``longshort`` log records, kept for the driver to log where the user looks (its console and log)."""

    def __init__(self, sink: Callable[[dict], None]):
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink({"kind": LOG_KIND, "name": record.name, "level": record.levelno, "text": record.getMessage()})


LOG_KIND = "_rank_log"


class RankHost:
    """One rank's process. Runs two calls at once: the job (``run``) and the driver's polls of what it reported
    (rank 0's reports, and the log records of its ``longshort`` loggers: INFO and up on rank 0, warnings elsewhere)."""

    def __init__(self, name: str):
        self.name = name
        self._reports: list[dict] = []
        self._lock = threading.Lock()

    def hello(self) -> dict:
        """This actor's node (for logs and failures) and, asked of rank 0, where the process group meets."""
        import ray

        from longshort.cluster.workers.engine import node_label

        return {"node": node_label(), "ip": ray.util.get_node_ip_address(), "port": free_port(""), "pid": os.getpid()}

    def run(self, fn: Callable[..., Any], info: RankInfo, args: tuple, threads: int | None, reports: bool) -> Any:
        import torch

        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // info.world_size))
        logger = logging.getLogger("longshort")
        handler, level = _Forward(self._report), logger.level
        handler.setLevel(logging.INFO if info.is_main else logging.WARNING)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            return fn(info, *args, report=self._report if reports else None)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

    def _report(self, msg: dict) -> None:
        with self._lock:
            self._reports.append(msg)

    def ping(self) -> bool:
        return True

    def drain(self) -> list[dict]:
        with self._lock:
            out, self._reports = self._reports, []
        return out


def _start(placement: RankPlacement, name: str, timeout_s: float, memory: str) -> tuple[Any, list, list[dict]]:
    import ray

    gpus = placement.gpus()
    key = placement.key
    pg = reserve(placement.bundles(gpus), placement.placement, timeout_s, key,
                 f"lower {key}.num_ranks / cpus_per_rank / gpus_per_rank")
    host = ray.remote(RankHost)
    actors = []
    for r in range(placement.num_ranks):  # two calls at once: the job, and the driver's polls of its reports
        opts = actor_options(pg, r, placement.cpus_per_rank, gpus, placement.accelerator, concurrency=2)
        actors.append(host.options(**opts).remote(f"{name}/rank{r}"))
    from ray.exceptions import GetTimeoutError, RayError

    calls, hello, deadline = [a.hello.remote() for a in actors], [], time.monotonic() + timeout_s
    try:
        for r, call in enumerate(calls):
            try:
                hello.append(ray.get(call, timeout=max(1.0, deadline - time.monotonic())))
            except GetTimeoutError:
                raise
            except RayError as e:  # its worker died while starting: killed for memory, or its node went away
                raise LongshortError(f"{name}: rank {r} died while starting, before its first step: "
                                     f"{died_summary(e, memory)}. Every rank of the job was stopped") from None
    except BaseException:
        _stop(actors, pg)
        raise
    return pg, actors, hello


def _alive(actor, wait_s: float = 3.0) -> bool:
    """False when the actor is gone (a busy one still answers: ``ping`` runs beside its job)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        ray.get(actor.ping.remote(), timeout=wait_s)
    except RayActorError:
        return False
    except GetTimeoutError:
        pass
    return True


def _stop(actors: list, pg) -> None:
    release([(f"rank{r}", a) for r, a in enumerate(actors)], pg)


def run_ranks(fn: Callable[..., Any], args: tuple, placement: RankPlacement, *, name: str = "sft",
              on_report: Report | None = None, start_timeout_s: float = 600.0,
              timeout_s: float | None = None, memory: str = SFT_MEMORY) -> list[Any]:
    """Run ``fn(info, *args, report=...)`` on ``placement.num_ranks`` Ray actors; their results by rank.

    Starts a local Ray instance when none is connected (``RAY_ADDRESS`` joins a cluster). ``fn`` and ``args`` travel
    by pickle. Rank 0's ``report(msg)`` calls reach ``on_report(msg)`` here, in order. The actors and their
    placement group are freed when this returns or raises. A rank that dies is named with the step rank 0 reported
    last; one killed for memory also with ``memory``, the settings that lower what a rank holds.
    """
    import ray
    from ray.exceptions import RayError, RayTaskError

    if placement.num_ranks < 1:
        raise LongshortError(f"{placement.key}.num_ranks must be >= 1, got {placement.num_ranks}")
    ensure_ray()
    pg, actors, hello = _start(placement, name, start_timeout_s, memory)
    nodes = [h["node"] for h in hello]
    log.info("%s: %d rank(s): %s", name, len(actors), ", ".join(f"rank{r} on node {n}" for r, n in enumerate(nodes)))
    n = len(actors)
    refs = [a.run.remote(fn, RankInfo(r, n, hello[0]["ip"], hello[0]["port"], local_rank=0), args,
                         placement.threads_per_rank, r == 0) for r, a in enumerate(actors)]
    rank_of = {ref: r for r, ref in enumerate(refs)}
    results: dict[int, Any] = {}
    user_error: tuple[int, LongshortError] | None = None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    grace_until = None
    last_step: list[int] = []  # the newest step rank 0 reported: where a failure happened

    def deliver(r: int, timeout: float = 60, reports: bool = True) -> None:
        """What rank ``r`` reported since the last call: log records logged here, the rest to ``on_report``."""
        for msg in ray.get(actors[r].drain.remote(), timeout=timeout):
            if isinstance(msg.get("step"), int):
                last_step[:] = [msg["step"]]
            if msg.get("kind") == LOG_KIND:
                logging.getLogger(msg["name"]).log(msg["level"], "%s%s", f"rank {r}: " if r else "", msg["text"])
            elif on_report is not None and reports:
                on_report(msg)

    def deliver_rest(reports: bool = True) -> None:  # every rank's last words (a dead rank has none)
        for r in range(n):
            try:
                deliver(r, timeout=5, reports=reports)
            except RayError:
                pass

    def fail(r: int, what: str, cause: str) -> LongshortError:
        at = f"after step {last_step[0]}" if last_step else "before its first reported step"
        return LongshortError(f"{name}: rank {r} {what} on node {nodes[r]} {at}: {cause}. Every rank of the job was "
                              "stopped; run the stage again to resume from its last checkpoint")

    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            try:
                deliver(0)
            except RayError:
                pass  # rank 0 is gone: its run call says how, below
            now = time.monotonic()
            if not ready:
                if grace_until is not None and now > grace_until:
                    break  # the other ranks are stuck in a collective with the failed one
                if deadline is not None and now > deadline:
                    raise TimeoutError(f"{name}: ranks did not finish within {timeout_s:.0f} s")
                continue
            r = rank_of[ready[0]]
            try:
                results[r] = ray.get(ready[0])
            except LongshortError as e:  # our own error inside the rank (bad input): raised as it is
                if user_error is None:
                    user_error = (r, getattr(e, "cause", None) or e)
                    grace_until = time.monotonic() + COLLECTIVE_GRACE_S
            except RayTaskError as e:  # a crash, or a collective whose peer died: blame a dead peer first
                dead = [q for q in range(n) if q != r and not _alive(actors[q])]
                if dead:
                    last = (error_summary(e).splitlines() or [""])[-1]
                    raise fail(dead[0], "died", f"its process exited (seen on rank {r}: {last})") from None
                raise fail(r, "failed", error_summary(e, 30)) from None
            except RayError as e:  # the actor, its worker or its node died
                raise fail(r, "died", died_summary(e, memory)) from None
        deliver_rest()
        if user_error is not None:
            raise user_error[1]
        return [results[r] for r in range(n)]
    except BaseException:  # a failed rank, or the driver's own (Ctrl-C, a report handler): the logs still count
        deliver_rest(reports=False)
        raise
    finally:
        _stop(actors, pg)
