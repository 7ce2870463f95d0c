"""The HF engine's next-token choice: greedy or a seeded inverse-CDF sample per row, with top-p."""

from __future__ import annotations

import torch


def pick(logits: torch.Tensor, temps: torch.Tensor, top_ps: torch.Tensor, uniforms: list[float | None]):
    """Next token and its logprob per row: greedy where ``uniforms`` is None (temperature 0), else a sample.

    Sampling inverts the CDF at the row's own uniform number (its RNG's next draw, or the coupled hash), so a row's
    sample depends only on its seed and step, never on the other rows of the batch (no per-row kernel launch).
    """
    greedy = temps == 0
    logp = torch.log_softmax(logits / torch.where(greedy, 1.0, temps)[:, None], dim=-1)
    if all(u is None for u in uniforms):
        tokens = logits.argmax(-1)
    else:
        probs = logp.exp()
        if bool((top_ps < 1).any()):
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = (sorted_p.cumsum(-1) - sorted_p) >= top_ps[:, None]  # mass before a token already reaches top_p
            probs = probs.masked_fill(drop.scatter(1, order, drop), 0.0)
        cdf = probs.double().cumsum(-1)  # float64: a float32 running sum over a large vocabulary drifts
        u = torch.tensor([0.0 if u is None else u for u in uniforms], dtype=torch.float64, device=logits.device)
        # right=True: the first token whose cdf exceeds u, so zero-probability tokens are never picked
        sampled = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
        tokens = sampled.clamp(max=logits.shape[-1] - 1)
        if any(u is None for u in uniforms):
            tokens = torch.where(greedy, logits.argmax(-1), tokens)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)
