"""The bounded importance of a thought, from Monte Carlo accuracies and token counts (pure functions).

Notation for one CoT with thoughts ``1..K``: ``s_k`` of ``N`` rollouts continued from the prefix that ends after
thought ``k`` reach the gold answer (``k = 0``: only the problem and ``<think>``); ``n_k`` is thought ``k``'s token
count and ``T = n_1 + ... + n_K``. See ``docs/importance.md`` for the motivation and a worked example.

* accuracy      ``a_k = (s_k + beta) / (N + 2 beta)``, a Beta(beta, beta)-smoothed success rate, in (0, 1)
                for ``beta > 0`` (in [0, 1] for ``beta = 0``).
* effectiveness ``E_k`` in [-1, 1], the change in success probability the thought causes, one of
  ``delta``:    ``e_k = a_k - a_{k-1}``;
  ``gain``:     ``e_k / (1 - a_{k-1})`` if ``e_k >= 0`` else ``e_k / a_{k-1}`` (share of the room to move);
  ``relative``: ``e_k / max(a_k, a_{k-1})`` (share of the success probability the thought created or destroyed).
  Each is in [-1, 1] (proofs in ``gain`` and ``relative``).
* cost          ``c_k = n_k / T`` in [0, 1]: the thought's share of the CoT's tokens. The score uses it relative to
  an average thought, squashed: ``r_k = K c_k / (1 + K c_k) = n_k / (n_k + T/K)`` in [0, 1) (1/2 for an
  average-length thought), so the cost term means the same in a CoT of 5 thoughts and one of 500.
* importance, with weights ``w_e, w_c >= 0``, ``w_e + w_c > 0``, and ``lam = w_c / (w_e + w_c)`` in [0, 1]:
  ``combine: scale`` (default): ``I_k = E_k (1 - lam r_k)`` if ``E_k >= 0``, else ``E_k (1 - lam + lam r_k)``:
  cost decides how much of the effect counts: the help a thought gives is discounted by its cost, the harm
  it does by its cheapness, and a thought that changes nothing scores 0 at any length.
  ``combine: add``: ``I_k = (w_e E_k - w_c r_k) / (w_e + w_c)``: cost is charged even when nothing changed.

**Bound.** ``scale``: ``-1 <= I_k <= 1``. Proof: with ``lam`` in [0, 1] and ``r_k`` in [0, 1), both multipliers
``1 - lam r_k`` and ``1 - lam + lam r_k`` lie in ``[1 - lam, 1]`` within [0, 1], so ``|I_k| <= |E_k| <= 1`` and
``I_k`` has the sign of ``E_k``. The ends are reached by a free thought (``n_k = 0``) taking success from 0 to 1
(``I = 1``) and, for ``lam = 0``, by any thought taking it from 1 to 0 (``I = -1``).
``add``: ``-1 <= I_k <= w_e / (w_e + w_c) <= 1``. Proof: the numerator ``w_e E_k - w_c r_k`` lies in
``[-w_e - w_c, w_e]`` since both weights are non-negative; dividing by ``w_e + w_c > 0`` keeps the order. The
upper end is reached by a free thought taking success from 0 to 1; the lower end is approached by a thought
taking it from 1 to 0 while holding nearly all tokens of a CoT with many thoughts (``r_k <= K/(K+1)``).
``tests/test_importance.py`` checks both bounds on random inputs and hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ImportanceConfig:
    """Weights of the importance metric (config section ``score.importance``)."""

    w_effect: float = field(default=1.0, metadata={"ge": 0})
    w_cost: float = field(default=1.0, metadata={"ge": 0})
    effect: Literal["delta", "gain", "relative"] = "relative"
    combine: Literal["scale", "add"] = "scale"
    beta: float = field(default=0.5, metadata={"ge": 0})  # pseudo-successes and -failures smoothing each accuracy

    def validate(self) -> None:
        if self.w_effect + self.w_cost <= 0:
            raise ValueError("w_effect: w_effect + w_cost must be > 0; accepted: non-negative weights, not both 0")
        if self.effect == "gain" and self.beta <= 0:
            raise ValueError("beta: the 'gain' effect divides by a_{k-1} and 1 - a_{k-1}; accepted: beta > 0")


def accuracies(successes: Sequence[int], n: int, beta: float = 0.5) -> list[float]:
    """Smoothed success rates ``(s_k + beta) / (n + 2 beta)`` of the prefixes ``k = 0..K``."""
    if n < 1:
        raise ValueError(f"n: {n} rollouts per prefix; accepted: n >= 1")
    for s in successes:
        if not 0 <= s <= n:
            raise ValueError(f"successes: {s} is outside [0, {n}]")
    return [(s + beta) / (n + 2 * beta) for s in successes]


def effectiveness(acc: Sequence[float]) -> list[float]:
    """``e_k = a_k - a_{k-1}`` for ``k = 1..K`` (``acc`` has ``K + 1`` entries)."""
    return [acc[k] - acc[k - 1] for k in range(1, len(acc))]


def gain(acc: Sequence[float]) -> list[float]:
    """Normalised effectiveness: the share of the room to improve (or to lose) that the thought used.

    Bound: for ``e = a_k - a_{k-1} >= 0``, ``0 <= e <= 1 - a_{k-1}`` since ``a_k <= 1``, so ``e / (1 - a_{k-1})``
    is in [0, 1]; for ``e < 0``, ``-a_{k-1} <= e < 0`` since ``a_k >= 0``, so ``e / a_{k-1}`` is in [-1, 0).
    A zero denominator only occurs with a zero numerator (taken as 0).
    """
    out = []
    for k in range(1, len(acc)):
        e = acc[k] - acc[k - 1]
        room = (1.0 - acc[k - 1]) if e >= 0 else acc[k - 1]
        out.append(0.0 if room <= 0 else max(-1.0, min(1.0, e / room)))
    return out


def relative(acc: Sequence[float]) -> list[float]:
    """Effectiveness relative to the level: ``e_k / max(a_k, a_{k-1})``, the share of the success probability
    after the thought that it created (if it helped) or of the probability before it that it destroyed.

    Bound: ``|a_k - a_{k-1}| <= max(a_k, a_{k-1})`` for accuracies in [0, 1], so the ratio is in [-1, 1]
    (0 when both are 0). In a chain where each needed step multiplies the success probability by ``1/p``, every
    such step gets ``1 - p`` wherever it sits, where ``e_k`` and ``gain`` favour the late steps.
    """
    out = []
    for k in range(1, len(acc)):
        top = max(acc[k], acc[k - 1])
        out.append(0.0 if top <= 0 else max(-1.0, min(1.0, (acc[k] - acc[k - 1]) / top)))
    return out


def costs(token_counts: Sequence[int]) -> list[float]:
    """``c_k = n_k / T``: each thought's share of the CoT's thought tokens (0 for an empty CoT)."""
    total = sum(token_counts)
    return [n / total if total else 0.0 for n in token_counts]


def relative_costs(token_counts: Sequence[int]) -> list[float]:
    """``r_k = n_k / (n_k + T/K)`` in [0, 1): 1/2 for an average-length thought."""
    if not token_counts:
        return []
    mean = sum(token_counts) / len(token_counts)
    return [n / (n + mean) if n + mean > 0 else 0.0 for n in token_counts]


@dataclass
class ThoughtScores:
    acc: list[float]  # K + 1 smoothed accuracies (prefix 0 = no thought yet)
    effect: list[float]  # K effectiveness values E_k (delta, gain or relative, as configured)
    cost: list[float]  # K token shares c_k
    importance: list[float]  # K bounded importances


def importance(successes: Sequence[int], n: int, token_counts: Sequence[int],
               cfg: ImportanceConfig | None = None) -> ThoughtScores:
    """Accuracy curve, effectiveness, cost and importance of every thought of one CoT."""
    cfg = cfg or ImportanceConfig()
    cfg.validate()
    if len(successes) != len(token_counts) + 1:
        raise ValueError(f"successes: {len(successes)} prefixes for {len(token_counts)} thoughts; "
                         "accepted: one more prefix than thoughts (prefix 0 has no thought)")
    acc = accuracies(successes, n, cfg.beta)
    eff = {"delta": effectiveness, "gain": gain, "relative": relative}[cfg.effect](acc)
    rel = relative_costs(token_counts)
    total = cfg.w_effect + cfg.w_cost
    if cfg.combine == "add":
        imp = [(cfg.w_effect * e - cfg.w_cost * r) / total for e, r in zip(eff, rel, strict=True)]
    else:
        lam = cfg.w_cost / total
        imp = [e * (1 - lam * r) if e >= 0 else e * (1 - lam + lam * r) for e, r in zip(eff, rel, strict=True)]
    return ThoughtScores(acc, eff, costs(token_counts), imp)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties counting 1/2.

    NaN when either class is empty. Mann-Whitney U with average ranks, O(n log n).
    """
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: p[0])
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2  # ranks i+1..j share their mean
        rank_sum += avg_rank * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
