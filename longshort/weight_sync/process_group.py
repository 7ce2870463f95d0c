"""A process group of its own for weight broadcasts: trainer rank 0 sends, every engine receiver listens.

Its members (one trainer rank plus the engines' workers) are not DeepSpeed's training group, so it is built
directly from a ``TCPStore`` and a backend's process-group class instead of ``torch.distributed.init_process_group``:
neither side's global ``torch.distributed`` state is touched (the trainer keeps its default group, a vLLM worker
keeps its own). NCCL on GPUs, gloo on CPU; the same code runs both, so the CPU tests exercise the GPU path's logic.
"""

from __future__ import annotations

import datetime
from typing import Literal

import torch
import torch.distributed as dist

from longshort.core.errors import LongshortError

Backend = Literal["auto", "nccl", "gloo"]


def resolve_backend(backend: Backend, device: torch.device) -> str:
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise LongshortError(f"weight sync backend 'nccl' needs CUDA tensors, this process works on {device}; "
                             "fix: topology.<role>.sync_backend: gloo (or auto)")
    return backend


class SyncGroup:
    """Rank ``rank`` of a ``world``-member broadcast group meeting at ``host:port`` (rank 0 hosts the store)."""

    def __init__(self, host: str, port: int, rank: int, world: int, backend: Backend, device: torch.device,
                 timeout_s: float, name: str = "longshort-weights"):
        self.rank, self.world, self.device = rank, world, device
        self.backend = resolve_backend(backend, device)
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, world, is_master=rank == 0, timeout=timeout, wait_for_workers=False)
        store = dist.PrefixStore(name, store)
        if self.backend == "nccl":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(store, rank, world, opts)
        else:
            self.pg = dist.ProcessGroupGloo(store, rank, world, timeout)
        self._store = store  # the group keeps talking to it

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` lands in every member's ``tensor`` (same size and dtype); blocks until done."""
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([tensor], opts).wait()
        return tensor

    def receive(self, nbytes: int) -> torch.Tensor:
        """A fresh byte buffer on this member's device filled by rank 0's broadcast."""
        return self.broadcast(torch.empty(nbytes, dtype=torch.uint8, device=self.device))
