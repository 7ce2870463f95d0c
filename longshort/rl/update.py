"""One policy's RL update, run inside each of its training ranks (``PolicyWorker``) through Ray's ``__ray_call__``.

``PolicyWorker.train_step`` takes a loss but returns only the trainer's ``StepStats``; an RL step also needs the
reference's and (optionally) the pre-update policy's logprobs, computed on the rank that holds the batch, and the
loss's statistics (clip fraction, KL, entropy) back. Running this function on the actor instance does all of it in
one collective call per role and step, with the group's failure handling (``PolicyGroup.gather``) intact.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from longshort.core.errors import LongshortError
from longshort.rl.experience import MiniBatch
from longshort.rl.policy_loss import STAT_KEYS, LossSpec, PolicyLoss, scaled_token_logprobs
from longshort.training.batch import Batch
from longshort.training.trainer import TrainerConfig, model_logits


@dataclass
class RLOptimConfig:
    lr: float = field(default=2e-5, metadata={"gt": 0})
    min_lr: float = field(default=0.0, metadata={"ge": 0})
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = field(default=0, metadata={"ge": 0})
    weight_decay: float = field(default=0.0, metadata={"ge": 0})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = field(default=1.0, metadata={"ge": 0})
    grad_accum: int = field(default=1, metadata={"ge": 1})  # micro-batches per rank per optimizer step (at least)
    # MiB one micro-batch's logits may take (rows x padded length x vocab x 4 B): more is cut finer, same update; 0: off
    micro_batch_logits_mb: float = field(default=1024.0, metadata={"ge": 0})
    zero_stage: int = field(default=0, metadata={"ge": 0, "le": 3})
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def trainer_config(self, total_steps: int) -> TrainerConfig:
        return TrainerConfig(lr=self.lr, min_lr=self.min_lr, schedule=self.schedule, warmup_steps=self.warmup_steps,
                            total_steps=max(1, total_steps), weight_decay=self.weight_decay,
                            betas=(self.betas[0], self.betas[1]), grad_clip=self.grad_clip,
                            zero_stage=self.zero_stage, precision=self.precision, grad_accum=self.grad_accum)


@dataclass(frozen=True)
class UpdateSpec:
    loss: LossSpec
    recompute_old: bool = False  # old logprobs from the trainer before the update (else the rollout engine's)


def _logprobs(module, batch: Batch, device, temperature: float, keep: bool) -> torch.Tensor:
    """``[B, T]`` logprobs of ``batch``'s tokens (column 0 is 0: the first token has no prediction; with ``keep``
    the model's head skips the columns before the first target, whose logprobs are 0 too: no loss reads them)."""
    b = batch.to(device)
    start = b.first_target_column() if keep else 0
    with torch.no_grad():
        lp = scaled_token_logprobs(model_logits(module, b, start), b.input_ids[:, start:], temperature).cpu()
    return torch.cat([torch.zeros(lp.shape[0], start + 1, dtype=lp.dtype), lp], dim=1)


def worker_update(worker, minibatches: list[list[Batch]], normalizers: list[float], spec: UpdateSpec) -> dict:
    """On one rank: logprobs for every micro-batch first (all before any update), then one optimizer step per
    mini-batch. Collective across the role's ranks (each passes the same number of micro-batches)."""
    trainer = worker._need()
    if worker.engine is not None:
        worker.engine.engine.sleep()  # a colocated engine gives its memory to the trainer
    t0 = time.perf_counter()
    temp = spec.loss.temperature
    if spec.loss.uses_kl and worker.reference is None:
        raise LongshortError(f"{worker.name}: the KL term needs the frozen reference; set "
                             f"topology.{worker.role}.reference: true or rl.kl_estimator: none")
    for mbs in minibatches:
        for b in mbs:
            if spec.recompute_old:
                trainer.engine.eval()  # no dropout in the behaviour policy's logprobs
                b.extras["old_logprobs"] = _logprobs(trainer.engine, b, trainer.device, temp, trainer.keeps_logits)
                trainer.engine.train()
            if spec.loss.uses_kl:
                b.extras["ref_logprobs"] = _logprobs(worker.reference.module, b, worker.reference.device, temp,
                                                       worker.reference.keeps_logits)
    t_prep = time.perf_counter() - t0
    steps = []
    for mbs, norm in zip(minibatches, normalizers, strict=True):
        loss_fn = PolicyLoss(spec.loss)
        stats = trainer.step(mbs, loss_fn, norm)
        steps.append({"stats": asdict(stats), "metrics": dict(loss_fn.stats)})
    return {"steps": steps, "seconds": time.perf_counter() - t0, "prep_seconds": t_prep}


def train_role(group, minis: list[MiniBatch], spec: UpdateSpec) -> dict:
    """Run ``worker_update`` on every rank of ``group`` (a ``PolicyGroup``); metrics summed over ranks and
    mini-batches. The engines keep the old weights until ``group.sync_weights()``."""
    n = len(group.ranks)
    per_rank: list[list[list[Batch]]] = [[] for _ in range(n)]
    for mb in minis:
        if len(mb.micro_batches) % n:
            raise LongshortError(f"policy '{group.role}': {len(mb.micro_batches)} micro-batches cannot be shared "
                                 f"evenly by its {n} ranks")
        k = len(mb.micro_batches) // n
        for r in range(n):
            per_rank[r].append(mb.micro_batches[r * k : (r + 1) * k])
    norms = [mb.normalizer for mb in minis]
    calls = [(m.name, m.handle.__ray_call__.remote(worker_update, per_rank[r], norms, spec))
             for r, m in enumerate(group.ranks)]
    out = group.gather(calls, collective=True, what="rl update")
    seconds = max(o["seconds"] for o in out)
    group.timings["train"] += seconds
    sums = dict.fromkeys(STAT_KEYS, 0.0)
    for o in out:
        for s in o["steps"]:
            for k in STAT_KEYS:
                sums[k] = max(sums[k], s["metrics"][k]) if k == "ratio_max" else sums[k] + s["metrics"][k]
    first = out[0]["steps"]  # StepStats are already global (all-reduced over ranks)
    tok = max(sums["tokens"], 1.0)
    norms_g = [s["stats"]["grad_norm"] for s in first if s["stats"]["grad_norm"] is not None]
    return {
        "loss": sum(s["stats"]["loss"] for s in first) / len(first),
        "grad_norm": sum(norms_g) / len(norms_g) if norms_g else float("nan"),
        "lr": first[-1]["stats"]["lr"],
        "clip_frac": sums["clipped"] / tok,
        "clip_frac_low": sums["clipped_low"] / tok,
        "clip_frac_high": sums["clipped_high"] / tok,
        "kl": sums["kl"] / tok,
        "entropy": sums["entropy"] / tok,
        "ratio_mean": sums["ratio"] / tok,
        "ratio_max": sums["ratio_max"],
        "pg_loss": sums["pg_loss"] / tok,
        "train_tokens": sum(s["stats"]["tokens"] for s in first),
        "optimizer_steps": len(first),
        "seconds": seconds,
        "prep_seconds": max(o["prep_seconds"] for o in out),
    }
