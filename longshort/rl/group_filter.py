"""Dynamic sampling (DAPO's group filter): roll out more problems than a step trains on, keep the groups whose
episodes disagree on correctness.

A group whose episodes are all right (or all wrong) gives every episode the same correctness reward, so its
advantages carry only the side terms (length, format): on a pair that is right most of the time most groups are
like that, and the one or two informative groups per step are what RL learns the answer from. With
``rl.filter_groups.enable`` each step rolls out ``oversample x prompts_per_step`` problems and trains on the first
``prompts_per_step`` mixed groups, in stream order (fewer when fewer are mixed; the step says how many).
``metric: reward`` keeps the groups whose total rewards differ at all (any role), i.e. the ones with any signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from longshort.rl.episodes import Episode
from longshort.rl.rewards import Rewards


@dataclass
class GroupFilterConfig:
    """``rl.filter_groups``: off by default (every rolled-out group is trained on)."""

    enable: bool = False
    oversample: int = field(default=3, metadata={"ge": 1})  # problems rolled out per problem trained on
    metric: Literal["correctness", "reward"] = "correctness"  # what a kept group's episodes must disagree on

    def problems_per_step(self, train_problems: int) -> int:
        return train_problems * (self.oversample if self.enable else 1)


def mixed_groups(episodes: Sequence[Episode], rewards: Rewards, metric: str = "correctness") -> list[int]:
    """The groups (in order of first appearance) whose episodes disagree on ``metric``."""
    values = ([(c,) for c in rewards.correct] if metric == "correctness"
              else list(zip(*rewards.total.values(), strict=True)))
    seen: dict[int, set] = {}
    for e, v in zip(episodes, values, strict=True):
        seen.setdefault(e.group, set()).add(v)
    return [g for g, outcomes in seen.items() if len(outcomes) > 1]


def select_groups(episodes: Sequence[Episode], rewards: Rewards, keep: int,
                  metric: str = "correctness") -> tuple[list[Episode], Rewards, dict]:
    """The episodes and rewards of the first ``keep`` mixed groups, and what the filter saw."""
    n_groups = len({e.group for e in episodes})
    mixed = mixed_groups(episodes, rewards, metric)
    chosen = set(mixed[:keep])
    idx = [i for i, e in enumerate(episodes) if e.group in chosen]

    def pick(xs: Sequence) -> list:
        return [xs[i] for i in idx]

    kept = Rewards({r: pick(v) for r, v in rewards.total.items()},
                   {label: {r: pick(v) for r, v in by_role.items()} for label, by_role in rewards.parts.items()},
                   pick(rewards.correct))
    stats = {"filter/groups_rolled_out": float(n_groups), "filter/groups_mixed": float(len(mixed)),
             "filter/groups_trained": float(len(chosen))}
    return [episodes[i] for i in idx], kept, stats
