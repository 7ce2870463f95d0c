"""Episode-level advantages from group rewards (one value per episode; every token of the role's turns gets it).

* ``grpo``: ``(r - mean_g) / (std_g + eps)``, std over the group (population, as DeepSeekMath).
* ``dr_grpo``: ``r - mean_g``; Dr. GRPO drops the std division (it up-weights near-solved and near-failed groups).
  Pair it with a length-independent aggregation (``seq-mean-token-sum``) for the full Dr. GRPO objective.
* ``rloo``: ``r - mean of the other samples of the group`` = ``G / (G - 1) * (r - mean_g)``.
* ``reinforce_pp_baseline``: ``r - mean_g``, then whitened over the whole batch (REINFORCE++-baseline).

Each role gets its own advantages from its own rewards (e.g. its own length term).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from longshort.core.errors import LongshortError

Estimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"]
EPS = 1e-6


def _groups(groups: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        out.setdefault(g, []).append(i)
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _centered(rewards: Sequence[float], groups: Sequence[int]) -> list[float]:
    out = [0.0] * len(rewards)
    for idx in _groups(groups).values():
        m = _mean([rewards[i] for i in idx])
        for i in idx:
            out[i] = rewards[i] - m
    return out


def grpo(rewards: Sequence[float], groups: Sequence[int], eps: float = EPS) -> list[float]:
    out = [0.0] * len(rewards)
    for idx in _groups(groups).values():
        vals = [rewards[i] for i in idx]
        m, s = _mean(vals), _std(vals)
        for i in idx:
            out[i] = (rewards[i] - m) / (s + eps)
    return out


def dr_grpo(rewards: Sequence[float], groups: Sequence[int], eps: float = EPS) -> list[float]:
    return _centered(rewards, groups)


def rloo(rewards: Sequence[float], groups: Sequence[int], eps: float = EPS) -> list[float]:
    out = [0.0] * len(rewards)
    for idx in _groups(groups).values():
        n = len(idx)
        if n < 2:
            continue  # no other sample to form a baseline: no signal
        total = sum(rewards[i] for i in idx)
        for i in idx:
            out[i] = rewards[i] - (total - rewards[i]) / (n - 1)
    return out


def reinforce_pp_baseline(rewards: Sequence[float], groups: Sequence[int], eps: float = EPS) -> list[float]:
    centered = _centered(rewards, groups)
    m, s = _mean(centered), _std(centered)
    return [(a - m) / (s + eps) for a in centered]


ESTIMATORS: dict[str, Callable[..., list[float]]] = {
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "reinforce_pp_baseline": reinforce_pp_baseline,
}


def compute_advantages(rewards: Sequence[float], groups: Sequence[int], estimator: str = "grpo",
                       eps: float = EPS) -> list[float]:
    """One advantage per episode; ``groups[i]`` is the group (problem) of episode ``i``."""
    if estimator not in ESTIMATORS:
        raise LongshortError(f"advantage estimator {estimator!r} is unknown; accepted: {', '.join(ESTIMATORS)}")
    if len(rewards) != len(groups):
        raise LongshortError(f"{len(rewards)} rewards but {len(groups)} group ids")
    if not rewards:
        return []
    return ESTIMATORS[estimator](list(map(float, rewards)), list(groups), eps)
