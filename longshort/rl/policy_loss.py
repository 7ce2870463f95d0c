"""The clipped policy-gradient loss with an optional KL penalty to the frozen reference, per token.

Runs inside a training rank as the ``loss_fn`` of ``Trainer.step``: it returns the *summed* weighted loss and the
trainer divides by the step's normaliser. A batch carries, as ``extras`` aligned with ``input_ids`` (position t is
token t, predicted from t-1):

* ``advantages``: the episode advantage on the role's tokens, 0 elsewhere;
* ``old_logprobs``: the behaviour policy's logprob of each role token (rollout engine or recomputed);
* ``weights``: loss mask x aggregation weight (see ``experience.aggregation``): the other role's tokens weigh 0,
  so they are pure context and get no gradient;
* ``ref_logprobs``: the reference's logprobs (only when the KL term is on).

Logprobs are taken at the sampling temperature (logits / T), as the rollout engine computed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

KLEstimator = Literal["k1", "k3", "none"]
STAT_KEYS = ("tokens", "clipped", "clipped_low", "clipped_high", "kl", "entropy", "ratio", "ratio_max", "pg_loss")


@dataclass(frozen=True)
class LossSpec:
    clip_low: float = 0.2  # ratio floor 1 - clip_low
    clip_high: float = 0.28  # ratio ceiling 1 + clip_high ("clip-higher" leaves room to raise rare tokens)
    dual_clip: float | None = None  # c > 1: caps the loss of negative-advantage tokens at c x |A| (None: off)
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = "k3"
    temperature: float = 1.0

    @property
    def uses_kl(self) -> bool:
        return self.kl_coef > 0 and self.kl_estimator != "none"


def scaled_token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[B, T-1]`` logprob of each next token under ``softmax(logits / temperature)``, in fp32.

    ``gathered - logsumexp`` keeps one ``[B, T, V]`` temporary instead of a full log-softmax copy."""
    logits = logits[:, :-1].float()
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    picked = logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from samples of pi: k1 = log(pi/ref); k3 = ref/pi - log(ref/pi) - 1
    (unbiased and non-negative, Schulman's estimator)."""
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k3":
        d = (ref_logp - logp).clamp(-20.0, 20.0)
        return torch.exp(d) - d - 1.0
    return torch.zeros_like(logp)


def token_losses(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, spec: LossSpec,
                 ref_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss ``max(-A r, -A clip(r, 1-lo, 1+hi))`` (+ dual clip) ``+ kl_coef * KL`` and per-token parts."""
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1.0 - spec.clip_low, 1.0 + spec.clip_high)
    pg = torch.maximum(pg1, pg2)
    if spec.dual_clip is not None:
        pg = torch.where(adv < 0, torch.minimum(pg, -adv * spec.dual_clip), pg)
    parts = {"ratio": ratio, "pg": pg,
             "clipped_low": (pg2 > pg1) & (ratio < 1.0 - spec.clip_low),
             "clipped_high": (pg2 > pg1) & (ratio > 1.0 + spec.clip_high)}
    loss = pg
    if spec.uses_kl:
        if ref_logp is None:
            raise ValueError("the KL term needs ref_logprobs in the batch")
        kl = kl_penalty(logp, ref_logp, spec.kl_estimator)
        parts["kl"] = kl
        loss = loss + spec.kl_coef * kl
    return loss, parts


@dataclass
class PolicyLoss:
    """``loss_fn(logits, batch)`` for ``Trainer.step``; sums statistics over the role's tokens in ``stats``."""

    spec: LossSpec
    stats: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0.0))

    def __call__(self, logits: torch.Tensor, batch) -> torch.Tensor:
        ex = batch.extras
        logp = scaled_token_logprobs(logits, batch.input_ids, self.spec.temperature)
        weights = ex["weights"][:, 1:].float()
        ref = ex["ref_logprobs"][:, 1:].float() if self.spec.uses_kl else None
        loss, parts = token_losses(logp, ex["old_logprobs"][:, 1:].float(), ex["advantages"][:, 1:].float(),
                                   self.spec, ref)
        with torch.no_grad():
            mask = batch.loss_mask[:, 1:] > 0
            s = self.stats
            s["tokens"] += float(mask.sum())
            s["clipped_low"] += float(parts["clipped_low"][mask].sum())
            s["clipped_high"] += float(parts["clipped_high"][mask].sum())
            s["clipped"] = s["clipped_low"] + s["clipped_high"]
            s["ratio"] += float(parts["ratio"][mask].sum())
            s["ratio_max"] = max(s["ratio_max"], float(parts["ratio"][mask].max())) if mask.any() else s["ratio_max"]
            s["pg_loss"] += float(parts["pg"][mask].sum())
            if "kl" in parts:
                s["kl"] += float(parts["kl"][mask].sum())
            s["entropy"] += float(_entropy(logits, mask, self.spec.temperature))
        return (loss * weights).sum()


def _entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Summed entropy of the policy's next-token distribution at the role's tokens (metric only)."""
    sel = logits[:, :-1][mask].float()
    if temperature not in (0.0, 1.0):
        sel = sel / temperature
    logp = torch.log_softmax(sel, dim=-1)
    return -(logp.exp() * logp).sum()
