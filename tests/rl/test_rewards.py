"""Reward terms (hand-computed), the registry, user functions from an import path, and config errors."""

from __future__ import annotations

import sys
import textwrap

import pytest

from longshort.core.config import build
from longshort.core.errors import LongshortError
from longshort.rl.episodes import Episode, Turn
from longshort.rl.loop import RLConfig
from longshort.rl.rewards import RewardTerm, compute_rewards, kimi_length, resolve_reward


def ep(group: int, status: str, answer_text: str, long_tokens: int, short_tokens: int, gold: str = "7",
       turns: int = 2, cut: bool = False) -> Episode:
    out, pos = [], 3
    for k in range(turns):
        role, n = ("long", long_tokens) if k % 2 == 0 else ("short", short_tokens)
        n = n // ((turns + 1 - k % 2) // 2)  # split a role's tokens evenly over its turns
        out.append(Turn(role, pos + 1, pos + 1 + n, None, "cut" if cut and k == turns - 1 else "handoff"))
        pos += 1 + n
    return Episode("p", "q", gold, group, 0, [0] * pos, 3, out, status, answer_text)


def test_correctness_format_and_collaboration(verifier):
    episodes = [
        ep(0, "finished", "so \\boxed{7}", 10, 4),  # right, well formed
        ep(0, "finished", "the answer is 7", 10, 4),  # right but no box
        ep(0, "finished", "\\boxed{8}", 10, 4, turns=6),  # wrong, 6 turns
        ep(0, "cut", "", 10, 4, cut=True),  # unfinished
    ]
    terms = [RewardTerm("correctness"), RewardTerm("format"), RewardTerm("collaboration", kwargs={"turn_penalty": 0.25})]
    r = compute_rewards(episodes, terms, verifier)
    assert r.correct == [True, True, False, False]
    assert r.parts["correctness"]["long"] == [1, 1, 0, 0] and r.parts["correctness"]["short"] == [1, 1, 0, 0]
    assert r.parts["format"]["long"] == [1, 0, 1, 0]
    assert r.parts["collaboration"]["short"] == [1, 1, 0, 0]
    both = compute_rewards(episodes[2:3], [RewardTerm("collaboration", kwargs={"require_correct": False,
                                                                               "turn_penalty": 0.25})], verifier)
    assert both.parts["collaboration"]["long"] == [0.5]  # 6 turns: two extra hand-off pairs
    assert r.total["long"] == [3, 2, 1, 0]


def test_kimi_length_is_group_relative_and_per_role(verifier):
    assert kimi_length([10, 20, 30], [True, True, False]) == pytest.approx([0.5, 0.0, -0.5])
    assert kimi_length([10, 20, 30], [False, False, True]) == pytest.approx([0.0, 0.0, -0.5])  # wrong: min(0, .)
    assert kimi_length([5, 5], [True, False]) == [0.0, 0.0]
    episodes = [ep(0, "finished", "\\boxed{7}", 10, 40), ep(0, "finished", "\\boxed{7}", 30, 20),
                ep(1, "finished", "\\boxed{7}", 99, 1)]  # alone in its group: ties with itself
    r = compute_rewards(episodes, [RewardTerm("length", 2.0, {"kind": "kimi"}, roles=["long"])], verifier)
    assert r.parts["length"]["long"] == pytest.approx([0.5, -0.5, 0.0])  # long tokens 10 vs 30
    assert r.parts["length"]["short"] == pytest.approx([-0.5, 0.5, 0.0])  # short tokens 40 vs 20
    assert r.total["long"] == pytest.approx([1.0, -1.0, 0.0]) and r.total["short"] == [0.0, 0.0, 0.0]
    b = compute_rewards(episodes, [RewardTerm("length", kwargs={"kind": "budget", "budget": 20})], verifier)
    assert b.parts["length"]["long"] == pytest.approx([0.0, -0.5, -1.0])


def test_user_reward_from_an_import_path(tmp_path, monkeypatch, verifier):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def brevity(episodes, ctx, scale=1.0):
            return {"long": [-scale * e.tokens("long") for e in episodes], "short": [0.0] * len(episodes)}

        def broken(episodes, ctx):
            return [1.0]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    r = compute_rewards([ep(0, "finished", "\\boxed{7}", 10, 4)],
                        [RewardTerm("my_rewards:brevity", 0.5, {"scale": 0.1})], verifier)
    assert r.parts["brevity"]["long"] == pytest.approx([-1.0]) and r.total["long"] == pytest.approx([-0.5])
    with pytest.raises(LongshortError, match="reward 'my_rewards:broken' gave 1 values for role 'long', expected"):
        compute_rewards([ep(0, "cut", "", 1, 1)] * 2, [RewardTerm("my_rewards:broken")], verifier)
    assert resolve_reward("correctness") is resolve_reward("correctness")
    sys.modules.pop("my_rewards", None)


@pytest.mark.parametrize("rewards, message", [
    ([{"name": "corectness"}], "key 'rl.rewards[0].name': unknown reward 'corectness'; accepted: collaboration, "
                               "correctness, format, length"),
    ([{"name": "nope_pkg.mod:fn"}], "key 'rl.rewards[0].name': cannot import 'nope_pkg.mod'"),
    ([{"name": "length", "kwargs": {"kinds": "kimi"}}], "key 'rl.rewards[0].kwargs': {'kinds': 'kimi'} do not fit "
                                                        "reward 'length'"),
    ([{"name": "length", "roles": ["medium"]}], "key 'rl.rewards': rl.rewards[0].roles: ['medium'] are not roles"),
    ([], "key 'rl.rewards': empty"),
])
def test_bad_reward_config_names_the_key(rewards, message):
    with pytest.raises(LongshortError) as info:
        build(RLConfig, {"rewards": rewards}, "rl")
    assert message in str(info.value)


def test_rl_config_checks():
    cfg = build(RLConfig, {"advantage": "rloo", "loss_agg": "seq-mean-token-sum", "schedule": "alternate",
                           "alternate_every": 2}, "rl")
    assert [cfg.training_roles(s) for s in range(1, 6)] == [("long",), ("long",), ("short",), ("short",), ("long",)]
    assert build(RLConfig, {}, "rl").training_roles(3) == ("long", "short")
    for data, message in [({"advantage": "ppo"}, "key 'rl.advantage' is 'ppo', expected one of 'grpo'"),
                          ({"episode": {"temperature": 0}}, "temperature 0 (greedy)"),
                          ({"kl_coef": 0.1, "kl_estimator": "none"}, "kl_estimator k1 or k3"),
                          ({"loss_agg": "mean"}, "key 'rl.loss_agg' is 'mean'")]:
        with pytest.raises(LongshortError, match=None) as info:
            build(RLConfig, data, "rl")
        assert message in str(info.value), (data, str(info.value))
