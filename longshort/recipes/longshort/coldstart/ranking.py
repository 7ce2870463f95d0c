"""What ranks a CoT's thoughts for the long role: the scorer's importance, or a control to judge the scorer by.

``coldstart.rank_by`` picks one; ``select`` then keeps the top ``ratio`` of each CoT by that rank:

* ``importance`` -- the Monte Carlo importance from ``longshort score`` (the method),
* ``random``     -- a random order per CoT (``rank_seed`` and the CoT's id fix it): the floor a scorer must beat,
* ``tags``       -- the synthetic teacher's ground-truth tags (correction > essential > error > redundant, earlier
  first): what a perfect tagger of "important" would choose.

``bench/scorer_ablation.py`` builds the cold start each way at the same keep ratio and compares the SFT'd pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from longshort.core.errors import LongshortError
from longshort.recipes.longshort.scoring.summary import thought_tags

Ranker = Callable[[dict, int], list[float]]  # (scored CoT, rank_seed) -> one score per thought, higher = kept first
TAG_PRIORITY = {"correction": 3.0, "essential": 2.0, "error": 1.0, "redundant": 0.0}


def by_importance(rec: dict, seed: int) -> list[float]:
    return [float(t["importance"]) for t in rec["thoughts"]]


def by_random(rec: dict, seed: int) -> list[float]:
    rng = random.Random(f"{seed}/{rec['id']}")
    return [rng.random() for _ in rec["thoughts"]]


def by_tags(rec: dict, seed: int) -> list[float]:
    tags = thought_tags(rec)
    if tags is None:
        raise LongshortError(f"coldstart.rank_by 'tags': CoT {rec['id']!r} carries no teacher tags (only the synthetic "
                             "task's CoTs, chunked with their teacher record, do); use rank_by: importance or random")
    n = len(tags)
    # a thought covering several teacher thoughts ranks by its most important tag; ties: the earlier thought first
    return [max(TAG_PRIORITY.get(t, 0.0) for t in covered or {"redundant"}) + (n - k) / (n + 1)
            for k, covered in enumerate(tags)]


RANKERS: dict[str, Ranker] = {"importance": by_importance, "random": by_random, "tags": by_tags}
