"""The rank side of a training job: joining its process group (CPU/gloo or GPU/NCCL) and leaving it.

Rank code is a plain function ``fn(info: RankInfo, *args, report=...)``: it calls ``init_rank(info)``, does its
work, calls ``shutdown_rank()`` and returns a picklable result. ``cluster/rank_group.run_ranks`` hosts it on Ray
actors (the one way ranks run, on a laptop's local Ray instance as on a cluster); ``report`` is how rank 0 streams
small messages (metrics, progress) to the driver.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import torch

log = logging.getLogger(__name__)

Report = Callable[[dict], None]
# How a job's ranks (or a role's actors) spread over nodes: Ray placement-group strategies.
Placement = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


@dataclass(frozen=True)
class RankInfo:
    """Who this process is in the process group and where the group meets."""

    rank: int
    world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    local_rank: int | None = None  # the device index on this process's node; defaults to rank

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
