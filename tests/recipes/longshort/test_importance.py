"""The importance metric: the bound on random inputs, the extremes that reach it, hand-computed values, ROC AUC."""

from __future__ import annotations

import math
import random

import pytest

from longshort.recipes.longshort.scoring.importance import (
    ImportanceConfig,
    accuracies,
    costs,
    effectiveness,
    gain,
    importance,
    relative,
    relative_costs,
    roc_auc,
)


def test_bound_holds_on_random_inputs():
    rng = random.Random(0)
    for case in range(4000):
        n = rng.randint(1, 64)
        k = rng.randint(1, 30)
        successes = [rng.choice([0, n, rng.randint(0, n)]) for _ in range(k + 1)]
        tokens = [rng.choice([0, 1, rng.randint(0, 5000)]) for _ in range(k)]
        effect = rng.choice(["delta", "gain", "relative"])
        combine = rng.choice(["scale", "add"])
        beta = rng.choice([0.0, 0.5, 2.0]) if effect == "delta" else rng.choice([1e-6, 0.5, 2.0])
        w_e, w_c = rng.choice([(1.0, 0.0), (0.0, 1.0), (rng.random() * 5, rng.random() * 5), (1e-9, 3.0)])
        cfg = ImportanceConfig(w_effect=w_e, w_cost=w_c, effect=effect, beta=beta, combine=combine)
        sc = importance(successes, n, tokens, cfg)
        upper = w_e / (w_e + w_c) if combine == "add" else 1.0
        for i, e in zip(sc.importance, sc.effect, strict=True):
            assert -1.0 - 1e-12 <= i <= upper + 1e-12, (case, successes, tokens, cfg, i)
            if combine == "scale":  # same sign as the effect, never larger: a thought that changes nothing is 0
                assert abs(i) <= abs(e) + 1e-12 and i * e >= 0 and (e != 0 or i == 0)
        assert all(-1.0 - 1e-12 <= e <= 1.0 + 1e-12 for e in sc.effect)
        assert all(0.0 < a < 1.0 for a in sc.acc) if beta > 0 else all(0.0 <= a <= 1.0 for a in sc.acc)
        assert all(0.0 <= c <= 1.0 for c in sc.cost)
        assert math.isclose(sum(sc.cost), 1.0) or sum(tokens) == 0
        assert all(0.0 <= r < 1.0 for r in relative_costs(tokens))


def test_bounds_are_reached():
    both = ImportanceConfig(w_effect=1.0, w_cost=1.0, beta=0.0, combine="add")
    lo = importance([8, 0], 8, [10], both).importance[0]
    assert lo == pytest.approx((-1.0 - 0.5) / 2)  # a single thought is "average length": r = 1/2
    # add: a costly thought among many free ones has r = K/(K+1) -> 1: I approaches -1
    lo = importance([8] * 1000 + [0], 8, [0] * 999 + [10**6], both).importance[-1]
    assert lo == pytest.approx(-(1 + 1000 / 1001) / 2) and lo < -0.999
    # add: a free thought that takes success from 0 to 1 reaches the upper bound w_e / (w_e + w_c)
    add = ImportanceConfig(w_effect=3.0, w_cost=1.0, beta=0.0, combine="add")
    assert importance([0, 8, 8], 8, [0, 50], add).importance[0] == pytest.approx(0.75)
    # scale: a free thought from 0 to 1 scores 1; with no cost weight any thought from 1 to 0 scores -1
    scale = ImportanceConfig(w_effect=1.0, w_cost=1.0, beta=0.0)
    assert importance([0, 8, 8], 8, [0, 50], scale).importance[0] == 1.0
    assert importance([8, 0], 8, [10], ImportanceConfig(w_cost=0.0, beta=0.0)).importance[0] == -1.0
    assert gain([0.0, 1.0, 0.0]) == [1.0, -1.0]


def test_hand_computed_values():
    cfg = ImportanceConfig(w_effect=1.0, w_cost=0.25, effect="delta", beta=0.5, combine="add")
    sc = importance([1, 3, 3, 4], 4, [10, 30, 20], cfg)
    assert sc.acc == pytest.approx([0.3, 0.7, 0.7, 0.9])
    assert sc.effect == pytest.approx([0.4, 0.0, 0.2])
    assert sc.cost == pytest.approx([1 / 6, 1 / 2, 1 / 3])
    # relative costs n/(n + 20): 1/3, 3/5, 1/2
    assert sc.importance == pytest.approx([(0.4 - 0.25 / 3) / 1.25, (0.0 - 0.15) / 1.25, (0.2 - 0.125) / 1.25])
    # default: relative effect, scale combination, lam = 1/2
    assert importance([1, 3, 3, 4], 4, [10, 30, 20]).importance == pytest.approx(
        [0.4 / 0.7 * (1 - 0.5 / 3), 0.0, 0.2 / 0.9 * (1 - 0.25)])
    # scale (default weights: lam = 1/2): the help is discounted by the relative cost, no-change stays 0
    scale = importance([1, 3, 3, 4], 4, [10, 30, 20], ImportanceConfig(effect="delta"))
    assert scale.importance == pytest.approx([0.4 * (1 - 0.5 / 3), 0.0, 0.2 * (1 - 0.25)])
    hurt = importance([3, 1], 4, [10], ImportanceConfig(effect="delta")).importance  # one average thought: r = 1/2
    assert hurt == pytest.approx([-0.4 * (1 - 0.5 + 0.25)])  # the harm is discounted by its cheapness
    rel = importance([1, 3, 3, 4], 4, [10, 30, 20], ImportanceConfig(effect="relative", w_cost=0.0)).effect
    assert rel == pytest.approx([0.4 / 0.7, 0.0, 0.2 / 0.9])
    g = importance([1, 3, 3, 4], 4, [10, 30, 20], ImportanceConfig(effect="gain", w_cost=0.0)).effect
    assert g == pytest.approx([0.4 / 0.7, 0.0, 0.2 / 0.3])
    assert gain([0.8, 0.2]) == pytest.approx([-0.75])  # lost 0.6 of the 0.8 there was to lose
    assert relative([0.8, 0.2, 0.0, 0.0]) == pytest.approx([-0.75, -1.0, 0.0])
    assert effectiveness([0.1, 0.5, 0.25]) == pytest.approx([0.4, -0.25])
    assert accuracies([0, 2], 2, 0.0) == [0.0, 1.0]
    assert costs([0, 0]) == [0.0, 0.0]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one more prefix"):
        importance([1, 2], 4, [3, 4])
    with pytest.raises(ValueError, match="outside"):
        importance([5, 2], 4, [3])
    with pytest.raises(ValueError, match="w_effect"):
        ImportanceConfig(w_effect=0.0, w_cost=0.0).validate()
    with pytest.raises(ValueError, match="beta"):
        ImportanceConfig(effect="gain", beta=0.0).validate()


def test_roc_auc():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [True, False, False]) == 0.5  # ties count one half
    assert roc_auc([0.3, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.625)
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(2, 40)
        s = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(n)]
        y = [rng.random() < 0.4 for _ in range(n)]
        pos = [a for a, b in zip(s, y, strict=True) if b]
        neg = [a for a, b in zip(s, y, strict=True) if not b]
        if not pos or not neg:
            continue
        brute = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))
        assert roc_auc(s, y) == pytest.approx(brute)
