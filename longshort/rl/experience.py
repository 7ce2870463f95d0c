"""Episodes -> per-role training batches.

For role R, every episode in which R wrote tokens becomes one training sequence: the full dialogue ids (the other
role's turns included, as context), loss mask = R's spans, the rollout logprobs at R's positions and R's episode
advantage on every one of R's tokens. The same episode feeds both roles, each with its own mask and advantage.

Loss aggregation is explicit (``Trainer.step`` divides the summed loss by one normaliser per optimizer step):

* ``token-mean``: every token of the mini-batch weighs the same; normaliser = role tokens.
* ``seq-mean-token-sum``: a sequence's token losses are summed, sequences averaged; normaliser = sequences
  (no length normalisation: Dr. GRPO's choice, long wrong answers are not diluted).
* ``seq-mean-token-mean``: each sequence's tokens averaged, then sequences averaged (the original GRPO).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from longshort.core.errors import LongshortError
from longshort.rl.episodes import Episode
from longshort.training.batch import Batch

Aggregation = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]


@dataclass
class RoleSequence:
    episode: int  # index into the step's episodes
    ids: list[int]
    mask: list[int]  # 1 on the role's trainable tokens
    old_logprobs: list[float]  # rollout logprob at the role's tokens, 0 elsewhere
    advantage: float

    @property
    def num_targets(self) -> int:
        return sum(self.mask)


def role_sequences(episodes: Sequence[Episode], role: str, advantages: Sequence[float]) -> list[RoleSequence]:
    """One sequence per episode with at least one trainable token of ``role``.

    A long turn whose EOS was rewritten to END_TURN (``Turn.rewritten``) keeps that last token out of the mask:
    the context holds a token the policy did not sample, so it has no rollout logprob to compare with.
    """
    out = []
    for i, (e, adv) in enumerate(zip(episodes, advantages, strict=True)):
        mask = [0] * len(e.ids)
        old = [0.0] * len(e.ids)
        for t in e.turns:
            if t.role != role:
                continue
            end = t.end - 1 if t.rewritten else t.end
            lps = t.logprobs
            for k, pos in enumerate(range(t.start, end)):
                mask[pos] = 1
                old[pos] = float(lps[k]) if lps is not None else 0.0
        if any(mask):
            out.append(RoleSequence(i, list(e.ids), mask, old, float(adv)))
    return out


def aggregation(seqs: Sequence[RoleSequence], agg: Aggregation) -> tuple[list[float], float]:
    """Per-sequence token weight and the normaliser of ``seqs`` (one optimizer step) for ``agg``."""
    if agg == "token-mean":
        return [1.0] * len(seqs), float(max(1, sum(s.num_targets for s in seqs)))
    if agg == "seq-mean-token-sum":
        return [1.0] * len(seqs), float(max(1, len(seqs)))
    if agg == "seq-mean-token-mean":
        return [1.0 / max(1, s.num_targets) for s in seqs], float(max(1, len(seqs)))
    raise LongshortError(f"loss aggregation {agg!r} is unknown; accepted: token-mean, seq-mean-token-sum, "
                         "seq-mean-token-mean")


def split_by_length(lengths: Sequence[int], ranks: int, per_rank: int) -> list[list[int]]:
    """Indices into ``ranks x per_rank`` groups, rank-major. Similar lengths share a group (a micro-batch costs its
    padded size, rows x longest: sorted runs of near-equal count waste the least on padding), and each rank's padded
    total is balanced (the costliest groups first, each to the lightest rank with room). Every group is non-empty
    when there are at least ``ranks x per_rank`` items. Deterministic."""
    parts = ranks * per_rank
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    bounds = [round(g * len(order) / parts) for g in range(parts + 1)]
    chunks = [sorted(order[bounds[g]:bounds[g + 1]]) for g in range(parts)]
    cost = [len(c) * max((lengths[i] for i in c), default=0) for c in chunks]
    per: list[list[list[int]]] = [[] for _ in range(ranks)]
    load = [0] * ranks
    for g in sorted(range(parts), key=lambda g: (-cost[g], g)):
        r = min((r for r in range(ranks) if len(per[r]) < per_rank), key=lambda r: (load[r], r))
        per[r].append(chunks[g])
        load[r] += cost[g]
    return [group for rank in per for group in rank]


def to_batch(seqs: Sequence[RoleSequence], weights: Sequence[float], pad_id: int) -> Batch:
    """Right-padded batch with ``advantages``, ``old_logprobs`` and ``weights`` extras (all ``[B, T]``)."""
    width = max(len(s.ids) for s in seqs)
    n = len(seqs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    adv = torch.zeros((n, width), dtype=torch.float32)
    old = torch.zeros((n, width), dtype=torch.float32)
    w = torch.zeros((n, width), dtype=torch.float32)
    for b, (s, wt) in enumerate(zip(seqs, weights, strict=True)):
        L = len(s.ids)
        ids[b, :L] = torch.tensor(s.ids)
        attn[b, :L] = 1
        m = torch.tensor(s.mask, dtype=torch.long)
        mask[b, :L] = m
        adv[b, :L] = s.advantage * m
        old[b, :L] = torch.tensor(s.old_logprobs, dtype=torch.float32)
        w[b, :L] = wt * m
    return Batch(ids, mask, attn, extras={"advantages": adv, "old_logprobs": old, "weights": w})


@dataclass
class MiniBatch:
    micro_batches: list[Batch]  # num_ranks x (grad_accum or more), rank-major (what train_role splits)
    normalizer: float
    sequences: int
    targets: int


def split_within(lengths: Sequence[int], ranks: int, per_rank: int, max_tokens: int | None) -> list[list[int]]:
    """``split_by_length`` into ``ranks x k`` groups, ``k >= per_rank`` the least that keeps every group's padded
    size (rows x longest) within ``max_tokens`` (None: ``k = per_rank``), as far as one sequence per group allows."""
    k = per_rank
    while True:
        groups = split_by_length(lengths, ranks, k)
        worst = max(len(g) * max(lengths[i] for i in g) for g in groups)
        if max_tokens is None or worst <= max_tokens or ranks * (k + 1) > len(lengths):
            return groups
        k += 1


def make_minibatches(seqs: Sequence[RoleSequence], *, mini_batches: int, ranks: int, agg: Aggregation,
                     pad_id: int, grad_accum: int = 1, max_tokens: int | None = None) -> list[MiniBatch]:
    """Cut a role's sequences into ``mini_batches`` optimizer steps, each of ``ranks x k`` micro-batches: ``k`` is
    ``grad_accum``, or more where a micro-batch would pad to over ``max_tokens`` (its logits' memory; the update is
    the same however it is cut).

    Sequences go to mini-batches in episode order (round robin), then to micro-batches by length.
    """
    need = mini_batches * ranks * grad_accum
    if len(seqs) < need:
        raise LongshortError(f"{len(seqs)} training sequences cannot fill {mini_batches} mini-batch(es) x "
                             f"{ranks * grad_accum} micro-batch(es); raise rl.prompts_per_step x rl.group_size or "
                             "lower rl.mini_batches / rl.optim.grad_accum / topology ranks")
    out = []
    for m in range(mini_batches):
        part = list(seqs[m::mini_batches])
        weights, norm = aggregation(part, agg)
        groups = split_within([len(s.ids) for s in part], ranks, grad_accum, max_tokens)
        mbs = [to_batch([part[i] for i in g], [weights[i] for i in g], pad_id) for g in groups]
        out.append(MiniBatch(mbs, norm, len(part), sum(s.num_targets for s in part)))
    return out
