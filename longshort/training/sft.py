"""Supervised fine-tuning on chat-format examples: the loop, checkpoint/resume and export.

``prepare_sft`` validates and tokenizes the data in the calling process (bad input fails there, before any rank
starts); ``cluster/sft_job.run_sft`` then runs ``sft_rank``, one rank's whole job, on ``num_ranks`` Ray actors.
Layout of ``out_dir``::

    checkpoints/step-000040/   engine state, per-rank RNG, state.json (step, data position, fingerprint)
    model/                     final HF export (safetensors + tokenizer)
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from longshort.core import manifest
from longshort.core.config import PLACEMENT
from longshort.core.errors import LongshortError
from longshort.training.batch import Batch, masked_nll_sum
from longshort.training.checkpoint_prune import prune
from longshort.training.lora import LoraSettings
from longshort.training.ranks import Placement, RankInfo, Report, init_rank, shutdown_rank
from longshort.training.sft_data import (
    SFTExample,
    TokenizedSet,
    TokenizeStats,
    collate,
    load_sft_jsonl,
    plan_epoch,
    plan_steps,
    tokenize_examples,
    validate_examples,
)
from longshort.training.trainer import Trainer, TrainerConfig

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    lr: float = field(default=1e-4, metadata={"gt": 0})
    min_lr: float = field(default=1e-5, metadata={"ge": 0})
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = field(default=0.03, metadata={"ge": 0, "lt": 1})
    weight_decay: float = field(default=0.0, metadata={"ge": 0})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = field(default=1e-8, metadata={"gt": 0})
    grad_clip: float = field(default=1.0, metadata={"ge": 0})  # 0 disables
    epochs: int = field(default=1, metadata={"ge": 1})
    max_steps: int | None = field(default=None, metadata={"ge": 1})  # caps epochs * steps per epoch
    micro_batch_size: int = field(default=4, metadata={"ge": 1})  # sequences per micro-batch (bucket)
    pack_tokens: int | None = field(default=None, metadata={"ge": 1})  # tokens per packed row; None: max_len*mbs
    grad_accum: int = field(default=1, metadata={"ge": 1})
    max_len: int = field(default=1024, metadata={"ge": 8})
    overlong: Literal["truncate", "drop"] = "drop"
    # bucket: similar lengths padded together; pack: several sequences per row, attention kept inside each
    batching: Literal["bucket", "pack"] = "bucket"
    zero_stage: int = field(default=0, metadata={"ge": 0, "le": 3})
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU and on a CPU with fast bf16, else fp32
    offload: Literal["none", "optimizer", "all"] = "none"  # ZeRO-Offload to CPU memory (GPU runs only)
    gradient_checkpointing: bool = False
    seed: int = 0
    save_every: int = field(default=0, metadata={"ge": 0})  # steps; 0: only at the end
    keep_last: int = field(default=2, metadata={"ge": 1})
    log_every: int = field(default=1, metadata={"ge": 1})
    num_ranks: int = field(default=1, metadata={"ge": 1})  # data-parallel ranks, each a Ray actor
    cpus_per_rank: float = field(default=1.0, metadata={"gt": 0, PLACEMENT: True})  # Ray CPUs each rank reserves
    # Devices (topology.accelerator, default GPU) per rank; None: one when the cluster has any, else CPU ranks.
    gpus_per_rank: float | None = field(default=None, metadata={"ge": 0, PLACEMENT: True})
    placement: Placement = field(default="PACK", metadata={PLACEMENT: True})  # PACK: few nodes; SPREAD: many
    threads_per_rank: int | None = field(default=None, metadata={"ge": 1})  # CPU: default cores // num_ranks
    progress: bool = field(default=True, metadata={PLACEMENT: True})
    model_factory: str = "causal_lm"  # the module to train (training.models); a recipe's composite model names its own
    lora: LoraSettings | None = None  # train a LoRA adapter (peft) instead of every weight; export merges it

    def validate(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: need two numbers in [0, 1), got {self.betas}; accepted: e.g. [0.9, 0.95]")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr: {self.min_lr} is above lr {self.lr}; accepted: 0 <= min_lr <= lr")
        if self.batching == "pack" and self.pack_tokens is not None and self.pack_tokens < self.max_len:
            raise ValueError(f"pack_tokens: {self.pack_tokens} < max_len {self.max_len}; accepted: >= max_len")
        if self.offload != "none" and self.zero_stage == 0:
            raise ValueError("offload: needs ZeRO; accepted: zero_stage 1-3 with offload, or offload: none")
        if self.offload == "all" and self.zero_stage != 3:
            raise ValueError("offload: 'all' (parameters too) needs zero_stage 3; accepted: optimizer or none")

    @property
    def row_tokens(self) -> int:
        return self.pack_tokens or self.max_len * self.micro_batch_size

    def trainer_config(self, total_steps: int) -> TrainerConfig:
        return TrainerConfig(
            lr=self.lr, min_lr=self.min_lr, schedule=self.schedule,
            warmup_steps=int(self.warmup_ratio * total_steps), total_steps=total_steps,
            weight_decay=self.weight_decay, betas=(self.betas[0], self.betas[1]), eps=self.eps,
            grad_clip=self.grad_clip, zero_stage=self.zero_stage, precision=self.precision, offload=self.offload,
            grad_accum=self.grad_accum, micro_batch_size=1 if self.batching == "pack" else self.micro_batch_size,
            gradient_checkpointing=self.gradient_checkpointing, model_factory=self.model_factory, lora=self.lora,
        )


@dataclass
class SFTJob:
    """Everything one rank needs (picklable)."""

    cfg: SFTConfig
    model_dir: str
    out_dir: str
    data: TokenizedSet
    resume: bool = True
    stop_after: int | None = None  # stop (as if interrupted) after this step, with a checkpoint saved


@dataclass
class SFTResult:
    steps: int  # optimizer steps done in total
    total_steps: int
    losses: dict[int, float]  # step -> loss, for the steps this call ran
    model_dir: Path | None  # the HF export (None when stopped early)
    checkpoint: Path | None
    resumed_from: int  # step the run resumed at (0: fresh)
    stats: TokenizeStats | None = None
    tokens_run: float = 0.0  # real tokens through the steps this call ran (all ranks)
    step_seconds: float = 0.0  # the time in those steps (no start-up, checkpoints or export)

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens_run / self.step_seconds if self.step_seconds else None


def epoch_plans(cfg: SFTConfig, data: TokenizedSet, world_size: int) -> list[list[list[list[list[int]]]]]:
    lengths = data.lengths
    return [
        plan_steps(plan_epoch(lengths, e, cfg.seed, cfg.batching, cfg.micro_batch_size, cfg.row_tokens),
                   world_size, cfg.grad_accum)
        for e in range(cfg.epochs)
    ]


def check_packing(trainer: Trainer, vocab: int) -> None:
    """Refuse ``batching: pack`` if the model lets packed sequences attend to each other (collective)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, vocab, (1, 7), generator=g), torch.randint(0, vocab, (1, 5), generator=g)
    packed = Batch(torch.cat([a, b], 1), torch.zeros(1, 12), position_ids=torch.cat([torch.arange(7), torch.arange(5)])[None])
    alone = Batch(b, torch.zeros(1, 5), attention_mask=torch.ones(1, 5, dtype=torch.long))
    got, want = trainer.forward_logits(packed)[0, 7:].float(), trainer.forward_logits(alone)[0].float()
    tol = 1e-3 if trainer.dtype == torch.float32 else 5e-2
    if not torch.allclose(got, want, atol=tol * max(1.0, float(want.abs().max())), rtol=0):
        raise LongshortError(
            "sft.batching: 'pack' is unsafe for this model: packed sequences see each other "
            f"(max logit difference {float((got - want).abs().max()):.3g}); use sft.batching: bucket"
        )


def _checkpoints(root: Path) -> list[Path]:
    return sorted((p for p in root.glob("step-*") if (p / "state.json").exists()), key=lambda p: p.name)


def sft_rank(info: RankInfo, job: SFTJob, report: Report | None = None) -> dict[str, Any]:
    """One rank's SFT: build the engine, resume if a checkpoint exists, train, checkpoint, export."""
    from transformers import AutoTokenizer

    cfg = job.cfg
    device = init_rank(info)
    try:
        torch.manual_seed(cfg.seed + info.rank)
        plans = epoch_plans(cfg, job.data, info.world_size)
        schedule = [(e, i) for e, plan in enumerate(plans) for i in range(len(plan))]
        total = min(len(schedule), cfg.max_steps or len(schedule))
        tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        trainer = Trainer(job.model_dir, cfg.trainer_config(total), device)
        if cfg.batching == "pack":
            check_packing(trainer, len(tokenizer))
        ckpt_root = Path(job.out_dir) / "checkpoints"
        if info.is_main:  # leftovers of a save that was killed midway
            for junk in ckpt_root.glob(".tmp-*"):
                shutil.rmtree(junk, ignore_errors=True)
            for old in ckpt_root.glob(".old-*"):  # killed between the two renames of replace_dir: put it back
                target = old.with_name(old.name[len(".old-"):])
                if target.exists():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.replace(target)
        trainer.barrier()  # every rank now sees the same checkpoints
        fingerprint = {"data": job.data.fingerprint(), "seed": cfg.seed, "batching": cfg.batching,
                       "micro_batch_size": cfg.micro_batch_size, "row_tokens": cfg.row_tokens,
                       "grad_accum": cfg.grad_accum, "epochs": cfg.epochs, "total_steps": total}
        start, targets_done = 0, 0.0
        intact, skipped = manifest.newest_intact(_checkpoints(ckpt_root)) if job.resume else (None, [])
        if skipped and info.rank == 0:
            log.warning("sft: skipping damaged checkpoint(s) %s", "; ".join(skipped))
        if intact is not None:
            state = trainer.load_checkpoint(intact)
            if state["fingerprint"] != fingerprint:
                diff = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
                raise LongshortError(
                    f"cannot resume from {intact}: {', '.join(diff)} differ from the run that wrote it; "
                    "restore the original data/config or use a fresh output directory"
                )
            start, targets_done = state["step"], state["trained_tokens"]
        if report:
            report({"kind": "start", "step": start, "total": total, "checkpoint": str(intact) if intact else None,
                    "skipped": skipped})
        losses: dict[int, float] = {}
        tokens_run = step_seconds = 0.0
        window: list = []
        last_ckpt: Path | None = intact
        stop = total if job.stop_after is None else min(total, job.stop_after)
        for step in range(start, stop):
            epoch, idx = schedule[step]
            mine = plans[epoch][idx][info.rank]
            stats = trainer.step([collate(job.data, mb, pad_id, cfg.batching == "pack") for mb in mine],
                                 masked_nll_sum)
            losses[step + 1] = stats.loss
            targets_done += stats.targets
            tokens_run, step_seconds = tokens_run + stats.tokens, step_seconds + stats.seconds
            window.append(stats)
            if report:
                report({"kind": "step", "step": step + 1, "loss": stats.loss})
            if (step + 1) % cfg.log_every == 0 or step + 1 == stop:
                secs = sum(s.seconds for s in window)
                tgt = sum(s.targets for s in window)
                metrics = {
                    "loss": sum(s.loss * s.targets for s in window) / max(tgt, 1.0),
                    "lr": stats.lr,
                    "grad_norm": stats.grad_norm,
                    "tokens_per_s": sum(s.tokens for s in window) / max(secs, 1e-9),
                    "trained_tokens": targets_done,
                    "epoch": epoch + (idx + 1) / len(plans[epoch]),
                }
                if report:
                    report({"kind": "log", "step": step + 1, "metrics": metrics})
                window = []
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == stop:
                last_ckpt = trainer.save_checkpoint(
                    ckpt_root / f"step-{step + 1:06d}",
                    {"step": step + 1, "epoch": epoch, "index_in_epoch": idx + 1, "trained_tokens": targets_done,
                     "fingerprint": fingerprint, "config": asdict(cfg)},
                )
                if info.is_main:
                    prune(_checkpoints(ckpt_root), cfg.keep_last)
        model_dir = None
        if stop == total:
            model_dir = trainer.export(Path(job.out_dir) / "model", tokenizer)
        trainer.close()
        return {"steps": max(stop, start), "total": total, "losses": losses, "model_dir": model_dir,
                "checkpoint": last_ckpt, "resumed_from": start, "tokens_run": tokens_run, "step_seconds": step_seconds}
    finally:
        shutdown_rank()


class Progress:
    """Rank 0's reports → progress bar, log lines and the tracker."""

    def __init__(self, tracker, prefix: str, show: bool):
        self.tracker, self.prefix, self.show = tracker, prefix, show
        self.bar = self.task = None

    def __call__(self, msg: dict) -> None:
        kind = msg["kind"]
        if kind == "start" and msg.get("checkpoint"):  # said whatever the console shows, as RL says its own
            log.info("%s: resumed from %s (step %d of %d)%s", self.prefix.rstrip("/") or "sft", msg["checkpoint"],
                     msg["step"], msg["total"], f"; skipped damaged {'; '.join(msg['skipped'])}"
                     if msg.get("skipped") else "")
        if kind == "start" and self.show:
            from contextlib import ExitStack

            from longshort.core.progress import bar

            self.bar = ExitStack()
            self.task = self.bar.enter_context(bar("sft", msg["total"], completed=msg["step"]))
        elif kind == "step" and self.task is not None:
            self.task.update(completed=msg["step"], description=f"loss {msg['loss']:.4f}")
        elif kind == "log":
            m = msg["metrics"]
            log.info("sft step %d: loss %.4f lr %.3g grad_norm %s tokens/s %.0f", msg["step"], m["loss"], m["lr"],
                     "n/a" if m["grad_norm"] is None else f"{m['grad_norm']:.3f}", m["tokens_per_s"])
            if self.tracker is not None:
                self.tracker.log({f"{self.prefix}{k}": v for k, v in m.items() if v is not None}, step=msg["step"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = self.task = None


def prepare_sft(cfg: SFTConfig, data: str | Path | list[SFTExample] | TokenizedSet, model_dir: str | Path,
                out_dir: str | Path, *, resume: bool = True, stop_after: int | None = None) -> tuple[SFTJob, TokenizeStats]:
    """Check the config, model and data and tokenize here, in the driver, so bad input fails before any rank starts.

    ``data`` is a JSONL path, in-memory ``SFTExample``s, or a ``TokenizedSet`` a recipe built (side inputs for a
    composite model; ``sft.max_len`` was the recipe's to apply). With ``resume`` an existing checkpoint in
    ``out_dir`` is continued exactly.
    """
    from transformers import AutoConfig, AutoTokenizer

    try:
        cfg.validate()
    except ValueError as e:
        raise LongshortError(f"sft config: {e}") from None
    if not (Path(model_dir) / "config.json").exists():
        raise LongshortError(f"model dir {model_dir} has no config.json; point sft at a Hugging Face model directory")
    if isinstance(data, TokenizedSet):
        tokenized = data
        stats = TokenizeStats(examples=len(data), tokens=len(data.ids), targets=int(data.mask.sum()))
        if data.side and cfg.batching == "pack":
            raise LongshortError(f"sft.batching: 'pack' cannot carry the side inputs {sorted(data.side)}; use bucket")
    else:
        examples = load_sft_jsonl(data) if isinstance(data, (str, Path)) else list(data)
        if not isinstance(data, (str, Path)):
            validate_examples(examples)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        tokenized, stats = tokenize_examples(examples, tokenizer, cfg.max_len, cfg.overlong)
    vocab = AutoConfig.from_pretrained(str(model_dir)).get_text_config().vocab_size
    if int(tokenized.ids.max()) >= vocab:
        raise LongshortError(
            f"model {model_dir}: the tokenizer makes id {int(tokenized.ids.max())} but the model has only {vocab} "
            "embeddings; call longshort.data.protocol.add_protocol_tokens(tokenizer, model) and save both"
        )
    existing = _checkpoints(Path(out_dir) / "checkpoints")
    if existing and not resume:
        raise LongshortError(
            f"{out_dir} already has checkpoints (latest {existing[-1].name}) and resume is off; "
            "resume, or delete that directory / choose a fresh output directory to start over"
        )
    skipped = stats.truncated + stats.dropped_overlong + stats.dropped_no_targets
    (log.warning if skipped else log.info)("sft data: %s", stats.summary())
    return SFTJob(cfg, str(model_dir), str(out_dir), tokenized, resume, stop_after), stats


def sft_result(rank0: dict[str, Any], stats: TokenizeStats) -> SFTResult:
    r = rank0
    return SFTResult(r["steps"], r["total"], r["losses"], r["model_dir"], r["checkpoint"], r["resumed_from"], stats,
                     r["tokens_run"], r["step_seconds"])


def publish(result: SFTResult, dest: str | Path, stage: str) -> Path:
    """Copy a finished SFT's exported model to ``dest`` (the stage's published output), replacing what was there."""
    if result.model_dir is None:
        raise LongshortError(f"{stage}: SFT stopped before its last step; run the stage again to resume")
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(result.model_dir, dest)
    return dest


def steps_per_epoch(cfg: SFTConfig, data: TokenizedSet) -> list[int]:
    """Optimizer steps in each epoch for ``cfg.num_ranks`` ranks (for planning runs and schedules)."""
    return [len(p) for p in epoch_plans(cfg, data, cfg.num_ranks)]

