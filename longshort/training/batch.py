"""A micro-batch (``Batch``) and the per-token objectives on its logits, shared by the trainer, SFT and RL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    """One micro-batch. ``loss_mask[b, t] = 1`` when token ``t`` is a target (predicted from ``t-1``).

    Padded batches carry a 2-D ``attention_mask``; packed rows carry ``position_ids`` that restart at 0
    for each sequence and no ``attention_mask`` (transformers then isolates the sequences).
    """

    input_ids: torch.Tensor
    loss_mask: torch.Tensor
    attention_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-token loss inputs (advantages, old logprobs)
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # more forward() inputs (composite models)

    def to(self, device: torch.device) -> Batch:
        def mv(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(mv(self.input_ids), mv(self.loss_mask), mv(self.attention_mask), mv(self.position_ids),
                     {k: mv(v) for k, v in self.extras.items()}, {k: mv(v) for k, v in self.model_inputs.items()})

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) tokens."""
        if self.attention_mask is not None:
            return int(self.attention_mask.sum())
        return self.input_ids.numel()

    @property
    def num_targets(self) -> float:
        return float(self.loss_mask[:, 1:].sum())

    def first_target_column(self) -> int:
        """The first column whose logits any target needs (the target at column ``t`` is predicted at ``t - 1``):
        the columns before it (prompts, other roles' turns before the first of this role's) need no output head."""
        cols = self.loss_mask[:, 1:].any(0).nonzero()
        return int(cols[0]) if len(cols) else 0

    def tail(self, start: int) -> Batch:
        """The batch from column ``start`` on, for a loss on logits computed from there (``logits_to_keep``); the
        model inputs stay whole (the model still reads every column)."""
        if start == 0:
            return self

        def cut(t):
            return None if t is None else t[:, start:]

        return Batch(cut(self.input_ids), cut(self.loss_mask), cut(self.attention_mask), cut(self.position_ids),
                     {k: cut(v) for k, v in self.extras.items()}, self.model_inputs)


LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` log-probability of each next token, in fp32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def masked_nll_sum(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Summed negative log-likelihood of the target tokens (the SFT objective before normalising)."""
    targets = batch.input_ids[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return (nll * batch.loss_mask[:, 1:].reshape(-1).to(nll.dtype)).sum()
