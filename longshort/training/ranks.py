"""Run one piece of rank code on N local processes (CPU/gloo or GPU/NCCL).

The rank code is a plain function ``fn(info: RankInfo, *args, report=...)``: it calls
``init_rank(info)``, does its work, calls ``shutdown_rank()`` and returns a picklable result. Here
``launch`` hosts it in spawned processes (or in the calling process for one rank); later a Ray actor
hosts the very same function by building the ``RankInfo`` itself. ``report`` is how a rank streams small
messages (metrics, progress) to whoever supervises it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue as queue_mod
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from longshort.core.errors import LongshortError

log = logging.getLogger(__name__)

Report = Callable[[dict], None]


@dataclass(frozen=True)
class RankInfo:
    """Who this process is in the process group and where the group meets."""

    rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    local_rank: int | None = None  # defaults to rank (single node)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def local(self) -> int:
        return self.rank if self.local_rank is None else self.local_rank


def free_port(addr: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def gloo_on_loopback(host: str) -> None:
    """For a loopback ``host``, gloo's connections of this process use the loopback interface: by default gloo binds
    the address the host name resolves to, which on many machines is the LAN address. (Read by every gloo group made
    after this.)"""
    if not is_loopback(host):
        return
    names = [name for _, name in socket.if_nameindex()]
    loop = next((n for n in ("lo", "lo0") if n in names), None)
    if loop is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loop)


def tcp_store(host: str, port: int, world_size: int, is_master: bool, timeout: timedelta,
              wait_for_workers: bool = True) -> torch.distributed.TCPStore:
    """A ``TCPStore`` (where a process group's members meet) whose server, for a loopback ``host``, listens on loopback
    only: torch's own server binds every interface (``::``), which exposes a laptop run's training to the network."""
    fd = None
    if is_master and is_loopback(host):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        fd = sock.detach()  # the store owns it now
    return torch.distributed.TCPStore(host, port, world_size, is_master=is_master, timeout=timeout,
                                      wait_for_workers=wait_for_workers, master_listen_fd=fd)


def default_extensions_dir() -> Path:
    """Where DeepSpeed JIT-builds ops: the checkout's ``.torch_extensions`` (git-ignored), else the user cache."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").exists():
        return root / ".torch_extensions"
    return Path.home() / ".cache" / "longshort" / "torch_extensions"


def use_cuda() -> bool:
    return torch.cuda.is_available()


def name_cpu_accelerator() -> None:
    """Without a GPU, tell DeepSpeed it runs on the CPU before anything imports it (transformers does, to load a
    model): its auto-detection otherwise warns "unable to detect" once per process."""
    if not use_cuda():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def init_rank(info: RankInfo, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group under DeepSpeed (NCCL on GPU, gloo on CPU); returns this rank's device."""
    env = {
        "MASTER_ADDR": info.master_addr,
        "MASTER_PORT": str(info.master_port),
        "RANK": str(info.rank),
        "WORLD_SIZE": str(info.world_size),
        "LOCAL_RANK": str(info.local),
    }
    os.environ.update(env)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(default_extensions_dir()))
    name_cpu_accelerator()
    import deepspeed
    import deepspeed.ops

    # DeepSpeed's logger prints its whole config at INFO on every rank; keep warnings and errors only.
    deepspeed.utils.logger.setLevel(logging.WARNING)
    if use_cuda():
        device = torch.device("cuda", info.local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
        # The CPU accelerator JIT-compiles a shared-memory all-reduce (~90 s on 2 cores) that only its
        # inference all-reduce uses; training collectives go through torch.distributed, so skip the build.
        try:
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        except (AttributeError, TypeError):  # layout of a future DeepSpeed: building the op is harmless
            pass
    timeout = timedelta(seconds=timeout_s)
    if backend == "gloo":
        gloo_on_loopback(info.master_addr)
    store = tcp_store(info.master_addr, info.master_port, info.world_size, info.is_main, timeout)
    extra = {"device_id": device} if backend == "nccl" and info.world_size > 1 else {}
    torch.distributed.init_process_group(backend, store=store, rank=info.rank, world_size=info.world_size,
                                         timeout=timeout, **extra)
    deepspeed.init_distributed(  # adopts the group above
        dist_backend=backend,
        auto_mpi_discovery=False,
        timeout=timeout,
        rank=info.rank,
        world_size=info.world_size,
    )
    return device


# DeepSpeed caches process groups in module globals; they die with the process group, so a process that
# hosts ranks more than once (tests, a Ray actor running SFT then RL) must forget them.
_DS_GROUP_CACHES = ("_WORLD_GROUP", "_ZERO_PARAM_INTRA_PARALLEL_GROUP", "_DATA_PARALLEL_GROUP", "_MODEL_PARALLEL_GROUP",
                    "_TENSOR_MODEL_PARALLEL_GROUP", "mpu", "mesh_device", "_EXPERT_PARALLEL_GROUP",
                    "_EXPERT_PARALLEL_GROUP_RANKS", "_EXPERT_DATA_PARALLEL_GROUP", "_EXPERT_DATA_PARALLEL_GROUP_RANKS",
                    "_ALL_TO_ALL_GROUP")


def shutdown_rank() -> None:
    """Leave the process group (gloo/NCCL complain at exit otherwise) and drop DeepSpeed's cached groups."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    groups = sys.modules.get("deepspeed.utils.groups")
    for name in _DS_GROUP_CACHES if groups is not None else ():
        value = getattr(groups, name, None)
        if isinstance(value, dict):
            value.clear()
        elif value is not None:
            setattr(groups, name, None)


def die_with_parent(parent_pid: int) -> None:
    """Linux: this process gets SIGKILL when the process that started it dies, by any signal; a rank left running
    would keep writing checkpoints and models that a rerun then takes as done. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _child(fn, info: RankInfo, args: tuple, out_q, threads: int | None, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    if threads:
        torch.set_num_threads(threads)
    report = (lambda msg: out_q.put(("msg", info.rank, msg))) if info.is_main else None
    try:
        result = fn(info, *args, report=report)
        out_q.put(("result", info.rank, result))
    except BaseException as e:  # noqa: BLE001 - every failure must reach the supervisor
        user = isinstance(e, LongshortError)
        out_q.put(("error", info.rank, (user, str(e), traceback.format_exc())))
        shutdown_rank()
        raise SystemExit(1) from None


def _raise_rank_error(rank: int, payload: tuple[bool, str, str]) -> None:
    user, message, tb = payload
    if user:
        raise LongshortError(message)
    raise RuntimeError(f"rank {rank} failed:\n{tb}")


def launch(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    *,
    on_report: Report | None = None,
    threads_per_rank: int | None = None,
    in_process: bool | None = None,
    timeout_s: float | None = None,
) -> list[Any]:
    """Run ``fn(info, *args, report=...)`` on ``world_size`` local ranks; returns their results by rank.

    Rank 0's ``report(msg)`` calls reach ``on_report(msg)`` here. One rank runs in this process unless
    ``in_process=False`` (no spawn cost, and the caller's objects stay usable); N ranks are spawned
    processes (``fn`` and ``args`` must be picklable; a script that calls this needs the usual
    ``if __name__ == "__main__":`` guard, as spawned children re-import it). On GPU, rank i uses ``cuda:i``.
    If a rank fails the others are terminated and its error is raised here (a ``LongshortError`` stays one).
    """
    if world_size < 1:
        raise LongshortError(f"num_ranks must be >= 1, got {world_size}")
    if use_cuda() and world_size > torch.cuda.device_count():
        raise LongshortError(
            f"num_ranks={world_size} but only {torch.cuda.device_count()} GPU(s) are visible; lower num_ranks"
        )
    port = free_port()
    if threads_per_rank is None and not use_cuda():
        threads_per_rank = max(1, (os.cpu_count() or 1) // world_size)
    if in_process is None:
        in_process = world_size == 1
    if in_process:
        if world_size != 1:
            raise LongshortError("in_process=True needs world_size=1")
        saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
        try:
            return [fn(RankInfo(0, 1, "127.0.0.1", port), *args, report=on_report)]
        finally:
            shutdown_rank()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    ctx = torch.multiprocessing.get_context("spawn")
    out_q = ctx.Queue()
    procs = []
    for rank in range(world_size):
        info = RankInfo(rank, world_size, "127.0.0.1", port)
        p = ctx.Process(target=_child, args=(fn, info, args, out_q, threads_per_rank, os.getpid()), daemon=False)
        p.start()
        procs.append(p)
    results: dict[int, Any] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def handle(kind: str, rank: int, payload: Any) -> None:
        if kind == "msg":
            if on_report is not None:
                on_report(payload)
        elif kind == "result":
            results[rank] = payload
        else:
            _raise_rank_error(rank, payload)

    try:
        while len(results) < world_size:
            try:
                handle(*out_q.get(timeout=0.5))
                continue
            except queue_mod.Empty:
                pass
            dead = [r for r, p in enumerate(procs) if r not in results and p.exitcode not in (None, 0)]
            if dead:
                # A failing rank queues its error before exiting: read what is left before blaming a crash.
                try:
                    while True:
                        handle(*out_q.get(timeout=2.0))
                except queue_mod.Empty:
                    pass
                raise RuntimeError(f"rank {dead[0]} died with exit code {procs[dead[0]].exitcode} without a result")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"ranks did not finish within {timeout_s:.0f} s")
    finally:
        for p in procs:
            if p.is_alive() and len(results) < world_size:
                p.terminate()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    return [results[r] for r in range(world_size)]
