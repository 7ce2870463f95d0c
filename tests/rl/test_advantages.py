"""Advantage estimators against hand-computed values."""

from __future__ import annotations

import math

import pytest

from longshort.core.errors import LongshortError
from longshort.rl.advantages import compute_advantages

# group 0: rewards 1, 0, 0, 1 (mean 0.5, std 0.5); group 1: 2, 0, 1 (mean 1, std sqrt(2/3))
REWARDS = [1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0]
GROUPS = [0, 0, 0, 0, 1, 1, 1]
S = math.sqrt(2 / 3)
W = math.sqrt(3 / 7)  # std of all centered rewards [.5, -.5, -.5, .5, 1, -1, 0] (mean 0)


@pytest.mark.parametrize("estimator, expected", [
    ("grpo", [1, -1, -1, 1, 1 / S, -1 / S, 0]),
    ("dr_grpo", [0.5, -0.5, -0.5, 0.5, 1, -1, 0]),
    ("rloo", [2 / 3, -2 / 3, -2 / 3, 2 / 3, 1.5, -1.5, 0]),  # r_i - mean of the other samples
    ("reinforce_pp_baseline", [0.5 / W, -0.5 / W, -0.5 / W, 0.5 / W, 1 / W, -1 / W, 0]),
])
def test_estimators_match_hand_computed_values(estimator, expected):
    got = compute_advantages(REWARDS, GROUPS, estimator)
    assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_a_group_of_equal_rewards_carries_no_signal(estimator):
    assert compute_advantages([0.7, 0.7, 0.7], [3, 3, 3], estimator) == pytest.approx([0, 0, 0], abs=1e-6)


def test_groups_need_not_be_contiguous_and_singletons_get_zero():
    # interleaved group ids give the same values as sorted ones
    got = compute_advantages([1.0, 2.0, 0.0, 0.0], [0, 1, 0, 1], "dr_grpo")
    assert got == pytest.approx([0.5, 1.0, -0.5, -1.0])
    assert compute_advantages([5.0], [0], "rloo") == [0.0]
    assert compute_advantages([5.0], [0], "grpo") == [0.0]


def test_bad_input_is_named():
    with pytest.raises(LongshortError, match="estimator 'ppo' is unknown; accepted: grpo, dr_grpo, rloo"):
        compute_advantages([1.0], [0], "ppo")
    with pytest.raises(LongshortError, match="2 rewards but 1 group ids"):
        compute_advantages([1.0, 2.0], [0], "grpo")
