"""The training core: a DeepSpeed engine around a causal LM, shared by SFT now and RL later.

One ``Trainer`` per rank (after ``longshort.training.ranks.init_rank``). The caller owns the data and the
objective: ``step(micro_batches, loss_fn)`` runs one optimizer step over ``grad_accum`` micro-batches,
where ``loss_fn(logits, batch)`` returns a *summed* loss and the trainer divides by one global
normaliser (by default the number of target tokens over all ranks and micro-batches), so the update is
the same whatever the split over ranks and accumulation. Everything that touches parameters
(``step``, ``forward_*``, ``iter_full_params``, ``export``, checkpoints) is collective: all ranks call it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from longshort.core import manifest
from longshort.core.checkpoint_io import replace_dir, rng_state, set_rng_state
from longshort.core.errors import LongshortError
from longshort.training import lora
from longshort.training.batch import Batch, LossFn, masked_nll_sum, token_logprobs
from longshort.training.checkpoint_prune import DROPPED
from longshort.training.ds_setup import deepspeed_config, lr_factor, resolve_dtype
from longshort.training.models import load_model

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """What a trainer needs (optimizer, schedule, ZeRO, precision, which model); each stage's config section builds
    one (``SFTConfig.trainer_config``, ``rl.update.RLOptimConfig.trainer_config``)."""

    lr: float = 1e-4
    min_lr: float = 0.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    total_steps: int = 1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    zero_stage: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    offload: Literal["none", "optimizer", "all"] = "none"
    grad_accum: int = 1
    micro_batch_size: int = 1  # DeepSpeed bookkeeping only; batches may hold any number of rows
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    model_factory: str = "causal_lm"  # a name in training.models.MODEL_FACTORIES or package.module:function
    lora: lora.LoraSettings | None = None  # train a peft LoRA adapter instead of every weight


def keeps_logits(module: torch.nn.Module) -> bool:
    """Whether ``module`` takes transformers' ``logits_to_keep`` (a LoRA model: its base model)."""
    base = module.get_base_model() if lora.is_lora(module) else module
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def model_logits(module, batch: Batch, start: int = 0) -> torch.Tensor:
    """``module``'s logits for ``batch``'s columns from ``start`` on (pass ``start > 0`` only to a module that
    ``keeps_logits``). The columns before the first target need no output head: on a 135M model with a 49k-token
    vocabulary the head is a fifth of the forward's FLOPs and its softmax the largest tensors of the step."""
    keep = {"logits_to_keep": batch.input_ids.shape[1] - start} if start else {}
    logits = module(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    use_cache=False, **keep, **batch.model_inputs).logits
    if logits.shape[1] != batch.input_ids.shape[1] - start:
        raise LongshortError(f"{type(module).__name__} returned logits for {logits.shape[1]} columns of "
                             f"{batch.input_ids.shape[1]} (logits_to_keep={keep.get('logits_to_keep')})")
    return logits


@dataclass
class StepStats:
    loss: float  # global loss_fn sum / normaliser
    grad_norm: float | None
    lr: float
    tokens: int  # real tokens over all ranks
    targets: float  # target tokens over all ranks
    seconds: float


class Trainer:
    """A DeepSpeed engine for one rank of a data-parallel group (ZeRO stage from the config)."""

    def __init__(self, model_dir: str | Path, cfg: TrainerConfig, device: torch.device | None = None):
        import deepspeed

        if not dist.is_initialized():
            raise RuntimeError("call longshort.training.ranks.init_rank before building a Trainer")
        self.cfg = cfg
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        cuda = torch.cuda.is_available()
        self.device = device or (torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu"))
        self.dtype = resolve_dtype(cfg.precision, self.device)
        self.ds_config = deepspeed_config(cfg, self.world_size, self.dtype, self.device)
        self._manual_clip = cfg.grad_clip > 0 and self.ds_config["gradient_clipping"] == 0.0
        kwargs: dict = {"dtype": self.dtype}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        self.zero_stage = self.ds_config["zero_optimization"]["stage"]
        model = load_model(cfg.model_factory, model_dir, self.ds_config if self.zero_stage == 3 else None, **kwargs)
        if getattr(model, "config", None) is not None:
            model.config.use_cache = False
        self.model_dir = str(Path(model_dir).resolve())
        if cfg.lora is not None:
            tokens = lora.protocol_token_ids(model_dir) if cfg.lora.train_tokens == "protocol" else None
            model = lora.apply(model, cfg.lora, tokens)
            if self.rank == 0:
                n_train, n_all = lora.trainable_count(model)
                log.info("LoRA rank %d: %s of %s parameters train (%.2f%%)", cfg.lora.rank, f"{n_train:,}",
                         f"{n_all:,}", 100 * n_train / max(n_all, 1))
        if cfg.gradient_checkpointing:
            ckpt = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt)
        groups = self._param_groups(model)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=groups,
            # fused: one pass over the weights instead of an op at a time; on SmolLM2-135M (2-core Zen 4) the
            # optimizer part of an SFT step fell from 1.10 to 0.70 s in bf16 (ZeRO-1) and 0.26 to 0.08 s in fp32
            optimizer=lambda params: torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                                       fused=True),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg)),
            config=self.ds_config,
        )
        self.engine.train()
        self.module = self.engine.module
        # A composite model's frozen parts come from their own files: DeepSpeed leaves them (and, under ZeRO-2/3, their
        # fragments) out of checkpoints with exclude_frozen_parameters, and a resume loads the rest non-strictly.
        self.has_frozen = any(not p.requires_grad for p in self.module.parameters())
        self.keeps_logits = keeps_logits(self.module)  # the head skips the columns before the first target

    def _param_groups(self, model) -> list[dict]:
        # No weight decay on biases and norm gains (1-D); ZeRO-3 params keep their real shape in ds_shape.
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (decay if len(getattr(p, "ds_shape", p.shape)) >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    # ---- training ---------------------------------------------------------------------------------
    def _forward(self, batch: Batch, start: int = 0) -> torch.Tensor:
        return model_logits(self.engine, batch, start)

    def _all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(t)
        return t.tolist()

    def step(self, micro_batches: Sequence[Batch], loss_fn: LossFn = masked_nll_sum,
             normalizer: float | None = None) -> StepStats:
        """One optimizer step over this rank's micro-batches (every rank calls it, each with as many).

        The objective is ``sum(loss_fn over all ranks' micro-batches) / normalizer``; ``normalizer``
        defaults to the global number of target tokens (token-mean loss). SFT passes ``grad_accum`` micro-batches;
        RL as many as keep each one's logits within its memory budget (RL trainers never offload, whose ZeRO path
        sizes buffers by ``grad_accum``): the step is the same however it is cut, as the boundary is set here.
        """
        if not micro_batches:
            raise ValueError("a step needs at least one micro-batch")
        t0 = time.perf_counter()
        targets, tokens = self._all_sum([sum(b.num_targets for b in micro_batches), sum(b.num_tokens for b in micro_batches)])
        norm = normalizer if normalizer is not None else max(targets, 1.0)
        # DeepSpeed averages gradients over ranks; multiplying by world_size turns that into a global sum.
        scale = self.world_size / norm
        lr = float(self.engine.get_lr()[0])
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        grad_norm = None
        for i, mb in enumerate(micro_batches):
            mb = mb.to(self.device)
            self.engine.set_gradient_accumulation_boundary(i == len(micro_batches) - 1)
            start = mb.first_target_column() if self.keeps_logits else 0
            loss = loss_fn(self._forward(mb, start), mb.tail(start))
            self.engine.backward(loss * scale, scale_wrt_gas=False)
            total += loss.detach().double()
            if self.engine.is_gradient_accumulation_boundary() and self._manual_clip:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grad_clip))
            self.engine.step()
        if grad_norm is None:
            g = self.engine.get_global_grad_norm()
            grad_norm = None if g is None else float(g)
        (loss_sum,) = self._all_sum([float(total)])
        return StepStats(loss_sum / norm, grad_norm, lr, int(tokens), targets, time.perf_counter() - t0)

    @torch.no_grad()
    def forward_logits(self, batch: Batch) -> torch.Tensor:
        return self._forward(batch.to(self.device))

    @torch.no_grad()
    def forward_logprobs(self, batch: Batch) -> torch.Tensor:
        """``[B, T-1]`` log-probabilities of the given next tokens (e.g. old/reference policy for RL)."""
        batch = batch.to(self.device)
        return token_logprobs(self._forward(batch), batch.input_ids)

    # ---- weights ----------------------------------------------------------------------------------
    def iter_full_params(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, full tensor)`` on every rank, gathering one parameter at a time under ZeRO-3.

        Collective; the tensor is only valid until the next iteration (copy it or send it right away).
        """
        import deepspeed

        if lora.is_lora(self.module):  # the merged weights, under the base model's names
            yield from lora.effective_params(self.module)
            return
        for name, p in self.module.named_parameters():
            if hasattr(p, "ds_id"):
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    yield name, p.data
            else:
                yield name, p.data

    def param_specs(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """``(name, dtype, full shape)`` of what ``iter_full_params`` yields, in its order, without gathering."""
        if lora.is_lora(self.module):
            return lora.effective_specs(self.module)
        return [(n, p.dtype, tuple(getattr(p, "ds_shape", p.shape))) for n, p in self.module.named_parameters()]

    def _plain_model(self):
        """The module whose names and ``save_pretrained`` an export uses (a LoRA model's base)."""
        return self.module.get_base_model() if lora.is_lora(self.module) else self.module

    def gathered_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Full CPU state dict on rank 0 (``None`` elsewhere); collective. Only what ``module.state_dict()`` holds
        is copied: a composite model whose state leaves out its frozen parts (SoftCoT's) exports none of them. A
        LoRA model's is its merged model's."""
        keep = {lora.plain_name(k) for k in self.module.state_dict() if not lora.is_adapter_param(k)}
        sd: dict[str, torch.Tensor] = {}
        for name, t in self.iter_full_params():
            if self.rank == 0 and name in keep:
                sd[name] = t.detach().to("cpu", copy=True)
        if self.rank != 0:
            return None
        for name, b in self._plain_model().named_buffers():
            if name in keep:
                sd[name] = b.detach().to("cpu", copy=True)
        return sd

    def _adapter_state(self) -> dict[str, torch.Tensor] | None:
        """The LoRA factors (CPU, on rank 0); collective."""
        import deepspeed

        out: dict[str, torch.Tensor] = {}
        for name, p in self.module.named_parameters():
            if lora.is_adapter_param(name):
                with deepspeed.zero.GatheredParameters([p] if hasattr(p, "ds_id") else [], modifier_rank=None):
                    if self.rank == 0:
                        out[name] = p.data.detach().to("cpu", copy=True)
        return out if self.rank == 0 else None

    def export(self, out_dir: str | Path, tokenizer=None) -> Path:
        """Write an HF model dir (safetensors + config + tokenizer) loadable by ``from_pretrained``; collective. A
        LoRA model exports its merged model, and its adapter in ``adapter/`` (``lora.ADAPTER_DIR``)."""
        out_dir = Path(out_dir)
        sd = self.gathered_state_dict()
        adapter = self._adapter_state() if lora.is_lora(self.module) else None
        if self.rank == 0:
            tmp = out_dir.parent / f".tmp-{out_dir.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            if adapter is not None:
                self._plain_model().save_pretrained(tmp, state_dict=sd)
                lora.save_adapter(self.module, tmp / lora.ADAPTER_DIR, adapter, self.model_dir)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp / lora.ADAPTER_DIR)
            elif hasattr(self.module, "save_pretrained"):
                self.module.save_pretrained(tmp, state_dict=sd)
            else:  # a composite model from a factory: its weights, for the factory to load again
                from safetensors.torch import save_file

                tmp.mkdir(parents=True)
                save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp / "model.safetensors"))
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            replace_dir(tmp, out_dir)
        self.barrier()
        return out_dir

    # ---- checkpoints ------------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def save_checkpoint(self, path: str | Path, client_state: dict) -> Path:
        """Save engine (weights, optimizer, scheduler), every rank's RNG and ``client_state`` (JSON-able).

        Written into ``.tmp-<name>`` beside ``path`` and renamed once all ranks are done, so ``path``
        is either the complete old checkpoint or the complete new one. Collective; ranks must share
        the filesystem.
        """
        path = Path(path)
        tmp = path.parent / f".tmp-{path.name}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        with lora.adapter_state_only(self.module) if lora.is_lora(self.module) else nullcontext():
            self.engine.save_checkpoint(str(tmp), tag="engine", client_state={}, save_latest=False,
                                        exclude_frozen_parameters=self.has_frozen)
        torch.save(rng_state(), tmp / f"rng-rank{self.rank}.pt")
        self.barrier()
        if self.rank == 0:
            meta = {"world_size": self.world_size, "zero_stage": self.zero_stage, "client": client_state}
            with open(tmp / "state.json", "w") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            manifest.seal(tmp)  # a resume checks it and falls back to an older checkpoint if this one is damaged
            replace_dir(tmp, path)
        self.barrier()
        return path

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore what ``save_checkpoint`` wrote; returns its ``client_state``. Collective."""
        path = Path(path)
        meta = json.loads((path / "state.json").read_text())
        if meta["world_size"] != self.world_size:
            raise LongshortError(
                f"checkpoint {path} was written by {meta['world_size']} rank(s) but this run has {self.world_size}; "
                f"resume with num_ranks={meta['world_size']} or start a fresh output directory"
            )
        fresh = (path / DROPPED).exists()
        if fresh and self.rank == 0:
            log.warning("%s: resuming with fresh optimizer moments (only the newest checkpoint keeps them)", path)
        loaded, _ = self.engine.load_checkpoint(str(path), tag="engine", load_module_strict=not self.has_frozen,
                                                load_optimizer_states=not fresh)
        if loaded is None:
            raise LongshortError(f"checkpoint {path}: DeepSpeed could not load 'engine'; delete it to start over")
        set_rng_state(torch.load(path / f"rng-rank{self.rank}.pt", weights_only=False))
        return meta["client"]

    def close(self) -> None:
        destroy = getattr(self.engine, "destroy", None)
        if destroy is not None:
            destroy()
        self.engine = self.module = self.optimizer = self.scheduler = None
