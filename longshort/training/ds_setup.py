"""How a ``TrainerConfig`` becomes DeepSpeed's: the learning-rate schedule, the dtype, the ZeRO stage and config."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from longshort.core.precision import auto_dtype

log = logging.getLogger("longshort.training.trainer")


def lr_factor(cfg) -> Callable[[int], float]:
    """Multiplier of ``cfg.lr`` for optimizer step ``s`` (0-based): linear warmup, then decay to ``min_lr``."""
    floor = cfg.min_lr / cfg.lr

    def f(s: int) -> float:
        if s < cfg.warmup_steps:
            return (s + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        p = min(1.0, (s - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps - 1))
        shape = 0.5 * (1.0 + math.cos(math.pi * p)) if cfg.schedule == "cosine" else 1.0 - p
        return floor + (1.0 - floor) * shape

    return f


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return auto_dtype(device)
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def zero_stage_for(cfg, dtype: torch.dtype) -> int:
    """The ZeRO stage used: bf16 needs >= 1, as DeepSpeed's stage 0 accumulates and all-reduces bf16 gradients
    (ZeRO-1 keeps fp32 gradients and master weights, and on one rank costs nothing extra)."""
    if dtype == torch.bfloat16 and cfg.zero_stage == 0:
        log.warning("precision bf16 with zero_stage 0: using ZeRO stage 1 for fp32 gradients and master weights")
        return 1
    return cfg.zero_stage


def deepspeed_config(cfg, world_size: int, dtype: torch.dtype, device: torch.device) -> dict:
    stage = zero_stage_for(cfg, dtype)
    zero: dict = {"stage": stage}
    if cfg.offload != "none" and device.type == "cuda":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if cfg.offload == "all":
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    elif cfg.offload != "none":
        log.info("offload=%s ignored: the model already lives in CPU memory", cfg.offload)
    # Stage 0 in fp32 has no DeepSpeed optimizer wrapper to report the grad norm; we clip ourselves there.
    ds_clips = stage > 0 or dtype != torch.float32
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip if ds_clips else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        # The optimizer is a plain torch AdamW: no JIT-built op, the same maths on CPU and GPU.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }
