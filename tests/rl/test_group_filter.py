"""Dynamic sampling: only groups whose episodes disagree on correctness are trained on, in stream order."""

from __future__ import annotations

from longshort.core.config import build
from longshort.rl.episodes import Episode, Turn
from longshort.rl.group_filter import select_groups
from longshort.rl.loop import RLConfig
from longshort.rl.rewards import RewardTerm, compute_rewards

RIGHT, WRONG = "\\boxed{7}", "\\boxed{8}"


def ep(group: int, answer_text: str, long_tokens: int) -> Episode:
    """A finished two-turn episode (long then short) on a problem whose gold answer is 7."""
    turns = [Turn("long", 4, 4 + long_tokens, None, "handoff"), Turn("short", 5 + long_tokens, 10 + long_tokens, None,
                                                                    "handoff")]
    return Episode("p", "q", "7", group, 0, [0] * (10 + long_tokens), 3, turns, "finished", answer_text)


def test_keeps_the_first_mixed_groups_with_their_rewards(verifier):
    outcomes = {0: [RIGHT, RIGHT], 1: [RIGHT, WRONG], 2: [WRONG, WRONG], 3: [WRONG, RIGHT], 4: [RIGHT, WRONG]}
    episodes = [ep(g, a, 10 + k) for g, answers in outcomes.items() for k, a in enumerate(answers)]
    rewards = compute_rewards(episodes, [RewardTerm("correctness"), RewardTerm("length", 0.5)], verifier)
    kept, kept_rewards, stats = select_groups(episodes, rewards, keep=2)
    assert [e.group for e in kept] == [1, 1, 3, 3]  # group 4 is mixed too, but two were asked for
    assert kept_rewards.correct == [True, False, False, True]
    assert kept_rewards.parts["correctness"]["long"] == [1, 0, 0, 1]
    assert kept_rewards.total["short"] == [rewards.total["short"][i] for i in (2, 3, 6, 7)]
    assert stats == {"filter/groups_rolled_out": 5.0, "filter/groups_mixed": 3.0, "filter/groups_trained": 2.0}
    uniform = episodes[:2] + episodes[4:6]  # one all-right and one all-wrong group
    none, none_rewards, stats = select_groups(uniform, compute_rewards(uniform, [RewardTerm("correctness")], verifier),
                                              keep=8)
    assert none == [] and none_rewards.correct == [] and stats["filter/groups_trained"] == 0.0


def test_config_rolls_out_oversample_times_the_problems():
    cfg = build(RLConfig, {"prompts_per_step": 4, "filter_groups": {"enable": True, "oversample": 3}})
    assert cfg.filter_groups.problems_per_step(cfg.prompts_per_step) == 12
    assert build(RLConfig, {"prompts_per_step": 4}).filter_groups.problems_per_step(4) == 4
