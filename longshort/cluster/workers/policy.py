"""A Ray actor hosting one training rank of a policy, optionally with a colocated engine and a frozen reference.

The actor runs the same rank code as an SFT rank (``cluster/rank_group``: ``init_rank`` → ``Trainer`` → ``shutdown_rank``)
but keeps the trainer alive between calls, so the driver can interleave generate / train / sync. Every method
that touches parameters is collective: the group calls it on all ranks at once. A colocated engine lives in
this process: it sleeps while the trainer works (frees GPU memory where the backend can) and is refreshed in
place from ``iter_full_params`` (no serialization, no second process).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from longshort.core.errors import LongshortError
from longshort.engines.base import GenerationRequest
from longshort.training.batch import Batch, LossFn, masked_nll_sum, token_logprobs
from longshort.training.models import load_model
from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
from longshort.training.trainer import Trainer, TrainerConfig, keeps_logits
from longshort.weight_sync import collective, colocated, object_store
from longshort.weight_sync.base import VersionedEngine
from longshort.weight_sync.buckets import Bucket, Publisher, TensorMeta


@dataclass
class WorkerSpec:
    """Everything a rank needs to start (picklable)."""

    model_dir: str
    trainer_cfg: TrainerConfig
    world_size: int
    master_addr: str
    master_port: int
    threads: int = 1
    engine_backend: str | None = None  # a colocated engine on this rank; None: none
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    reference: bool = False
    seed: int = 0


class Reference:
    """The frozen starting policy. Under ZeRO-3 it is sharded like the trainer (a DeepSpeed engine without an
    optimizer), otherwise each rank holds a full copy; under LoRA it is the trainer's own model, adapter off."""

    def __init__(self, model_dir: str, trainer: Trainer):
        cfg = trainer.cfg
        self.device = trainer.device
        if cfg.lora is not None:  # the base model under the adapter is the starting policy: no second copy
            self.module = _AdapterOff(trainer)
            self.keeps_logits = trainer.keeps_logits
            return
        if cfg.zero_stage == 3:
            import deepspeed

            ds = {"train_micro_batch_size_per_gpu": 1, "train_batch_size": trainer.world_size,
                  "zero_optimization": {"stage": 3}, "bf16": {"enabled": trainer.dtype == torch.bfloat16},
                  "steps_per_print": 2**62}
            model = load_model(cfg.model_factory, model_dir, ds, dtype=trainer.dtype)
            self.module = deepspeed.initialize(model=model, config=ds)[0]
        else:
            model = load_model(cfg.model_factory, model_dir, dtype=trainer.dtype)
            self.module = model.to(trainer.device)
        self.keeps_logits = keeps_logits(model)  # the head may skip the prompt's columns (a ZeRO-3 engine passes it on)
        self.module.eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def logprobs(self, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.device)
        logits = self.module(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=False, **batch.model_inputs).logits
        return token_logprobs(logits, batch.input_ids)


class _AdapterOff:
    """A LoRA trainer's model called with its adapter switched off (peft's ``disable_adapter``)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def __call__(self, **inputs):
        with self.trainer.module.disable_adapter():
            return self.trainer.engine(**inputs)


class PolicyWorker:
    """Rank ``rank`` of role ``role``. Construction is cheap; ``setup`` joins the process group and loads models."""

    def __init__(self, role: str, rank: int, name: str):
        self.role, self.rank, self.name = role, rank, name
        self.trainer: Trainer | None = None
        self.engine: VersionedEngine | None = None
        self.reference: Reference | None = None
        self._publisher = Publisher()
        self._bucket_bytes = 0
        self._staging: np.ndarray | None = None
        self._broadcaster = collective.Broadcaster()

    # ---- lifecycle ----------------------------------------------------------------------------------
    def ping(self) -> str:
        return self.name

    def address(self) -> tuple[str, int]:
        """Where the group's process group meets: this node's IP and a port free on it (asked of rank 0)."""
        import ray

        ip = ray.util.get_node_ip_address()
        return ip, free_port("")

    def setup(self, spec: WorkerSpec) -> dict:
        from transformers.utils import logging as hf_logging

        from longshort.cluster.workers.engine import build_engine, node_label

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per actor and model is only noise
        t0 = time.perf_counter()
        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed + self.rank)
        # Ray gives each GPU actor only its own device (CUDA_VISIBLE_DEVICES), so the local device is always 0.
        device = init_rank(RankInfo(self.rank, spec.world_size, spec.master_addr, spec.master_port, local_rank=0))
        self.trainer = Trainer(spec.model_dir, spec.trainer_cfg, device)
        if spec.reference:
            self.reference = Reference(spec.model_dir, self.trainer)
        if spec.engine_backend is not None:
            self.engine = build_engine(spec.engine_backend, spec.model_dir, spec.engine_kwargs,
                                       f"{self.role}/engine{self.rank}")
        n = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in self.trainer.module.parameters())
        return {"seconds": time.perf_counter() - t0, "params": n, "device": str(device), "node": node_label()}

    def shutdown(self) -> None:
        self._publisher.close()
        if self.engine is not None:
            close = getattr(self.engine.engine, "close", None)
            if close is not None:
                close()
        if self.trainer is not None:
            self.trainer.close()
        self.trainer = self.engine = self.reference = None
        self._broadcaster = collective.Broadcaster()
        shutdown_rank()

    def _need(self) -> Trainer:
        if self.trainer is None:
            raise LongshortError(f"{self.name}: setup() was not called")
        return self.trainer

    # ---- training -----------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[Batch], loss_fn: LossFn | None = None,
                   normalizer: float | None = None) -> dict:
        trainer = self._need()
        if self.engine is not None:
            self.engine.engine.sleep()  # the colocated engine gives its memory to the trainer
        stats = trainer.step(micro_batches, loss_fn or masked_nll_sum, normalizer)
        return {"stats": asdict(stats), "seconds": stats.seconds}

    def forward(self, batches: list[Batch], what: Literal["logprobs", "logits", "ref_logprobs"]) -> tuple[list, float]:
        trainer = self._need()
        t0 = time.perf_counter()
        if what == "ref_logprobs":
            if self.reference is None:
                raise LongshortError(f"{self.name}: no reference model; set topology.{self.role}.reference: true")
            out = [self.reference.logprobs(b).cpu() for b in batches]
        elif what == "logits":
            out = [trainer.forward_logits(b).float().cpu() for b in batches]
        else:
            out = [trainer.forward_logprobs(b).cpu() for b in batches]
        return out, time.perf_counter() - t0

    # ---- generation (colocated engine) ----------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest], min_version: int | None = None) -> tuple[list, float]:
        if self.engine is None:
            raise LongshortError(f"{self.name} hosts no engine")
        self.engine.engine.wake()
        t0 = time.perf_counter()
        results = self.engine.generate(requests, min_version)
        return results, time.perf_counter() - t0

    def engine_version(self) -> int | None:
        return None if self.engine is None else self.engine.version

    def engine_state_dict(self) -> dict:
        from longshort.cluster.workers.engine import engine_state_dict

        if self.engine is None:
            raise LongshortError(f"{self.name} hosts no engine")
        return engine_state_dict(self.engine)

    # ---- weight sync ----------------------------------------------------------------------------------
    def sync_colocated(self, version: int) -> dict:
        """Copy the full parameters into this process's engine in place (collective: ZeRO-3 gathers)."""
        return colocated.copy_in_place(self._need(), self.engine, version)

    def begin_publish(self, bucket_bytes: int) -> list[list[TensorMeta]]:
        """Start streaming full parameters in buckets (collective); returns the bucket layout (from the shapes
        alone, so a broadcast's receivers can allocate and unpack each bucket before it is gathered)."""
        self._bucket_bytes = bucket_bytes
        return self._publisher.begin(self._need(), bucket_bytes)

    # collective transport: rank 0 broadcasts each bucket over a process group of its own to every engine
    def open_sync_group(self, host: str, port: int, world: int, backend: str, timeout_s: float) -> str | None:
        """Rank 0 joins the weight-broadcast group as its root (it blocks until every receiver has joined)."""
        return self._broadcaster.open(self.rank, host, port, world, backend, self._need().device, timeout_s)

    def broadcast_bucket(self, index: int) -> dict:
        """Gather bucket ``index`` (all ranks, collective); rank 0 packs it on its device and broadcasts it."""
        return self._broadcaster.send(self._publisher, index, self.rank, self._need().device, self.name)

    def next_bucket(self, index: int) -> tuple[dict, Bucket | None]:
        """Gather the parameters of bucket ``index`` (all ranks, collective); rank 0 returns them packed.

        Called with ``num_returns=2``: the small info goes to the driver, the bucket stays in the object store
        and is handed to the engines by reference.
        """
        info, bucket, self._staging = object_store.pack_next(self._publisher, index, self.rank == 0,
                                                             self._bucket_bytes, self._staging)
        return info, bucket

    # ---- checkpoints / export -------------------------------------------------------------------------
    def save_checkpoint(self, path: str, client_state: dict) -> str:
        return str(self._need().save_checkpoint(Path(path), client_state))

    def load_checkpoint(self, path: str) -> dict:
        return self._need().load_checkpoint(Path(path))

    def export(self, out_dir: str, model_dir: str) -> str:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir) if self.rank == 0 else None
        return str(self._need().export(Path(out_dir), tokenizer))

    def gathered_state_dict(self) -> dict | None:
        return self._need().gathered_state_dict()
