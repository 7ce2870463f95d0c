"""What an RL step reports: episode statistics per role, reward parts, sample rows, and held-out evaluation."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.data.protocol import PAIR_ROLES, PAIR_RULES, TurnRules
from longshort.rl.episodes import Episode, EpisodeConfig, Generate, PromptItem, rollout
from longshort.rl.rewards import Rewards


def sample_columns(roles=PAIR_ROLES) -> list[str]:
    """Columns of the ``rl/samples`` table for a recipe's roles."""
    return ["problem", "gold", "answer", "correct", "status", "turns", *(f"tokens_{r}" for r in roles),
            *(f"reward_{r}" for r in roles), "dialogue"]




def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def episode_metrics(episodes: Sequence[Episode], rewards: Rewards, advantages: Mapping[str, Sequence[float]],
                    roles: Sequence[str] = PAIR_ROLES) -> dict:
    """Accuracy, ends, turns and tokens per episode; per role: reward total and parts, tokens, turns, advantages."""
    n = len(episodes)
    m: dict[str, float] = {
        "episode/accuracy": _mean([float(c) for c in rewards.correct]),
        "episode/turns": _mean([e.num_turns() for e in episodes]),
        "episode/tokens": _mean([e.tokens() for e in episodes]),
        "episode/count": n,
    }
    for status in ("finished", "cut", "budget", "max_turns"):
        m[f"episode/{status}"] = _mean([float(e.status == status) for e in episodes])
    by_group: dict[int, list[bool]] = {}
    for e, c in zip(episodes, rewards.correct, strict=True):
        by_group.setdefault(e.group, []).append(c)
    m["episode/groups_all_correct"] = _mean([float(all(v)) for v in by_group.values()])
    m["episode/groups_none_correct"] = _mean([float(not any(v)) for v in by_group.values()])
    for role in roles:
        m[f"{role}/reward"] = _mean(rewards.total[role])
        for label, scores in rewards.parts.items():
            m[f"{role}/reward/{label}"] = _mean(scores[role])
        m[f"{role}/tokens"] = _mean([e.tokens(role) for e in episodes])
        m[f"{role}/turns"] = _mean([e.num_turns(role) for e in episodes])
        m[f"{role}/eos_rewritten"] = float(sum(t.rewritten for e in episodes for t in e.turns if t.role == role))
        if role in advantages:
            adv = advantages[role]
            m[f"{role}/advantage_abs"] = _mean([abs(a) for a in adv])
            m[f"{role}/advantage_zero"] = _mean([float(abs(a) < 1e-8) for a in adv])
    return m


def sample_rows(episodes: Sequence[Episode], rewards: Rewards, tokenizer, k: int, rng: random.Random,
                roles: Sequence[str] = PAIR_ROLES) -> list[list]:
    """``k`` random episodes as rows of ``sample_columns(roles)`` (the dialogue with its role markers)."""
    picks = sorted(rng.sample(range(len(episodes)), min(k, len(episodes))))
    rows = []
    for i in picks:
        e = episodes[i]
        rows.append([e.problem, str(e.answer), e.answer_text, rewards.correct[i], e.status, e.num_turns(),
                     *(e.tokens(r) for r in roles), *(round(rewards.total[r][i], 4) for r in roles),
                     e.text(tokenizer)])
    return rows


def evaluate(generators: Mapping[str, Generate], tokenizer, prompts: Sequence[PromptItem], cfg: EpisodeConfig,
             verifier, *, seed: int, context_limit: int | None, base: dict | None = None,
             rules: TurnRules = PAIR_RULES) -> dict:
    """The pair on held-out problems, one episode each (greedy at ``cfg.temperature`` 0): accuracy and tokens,
    next to the base long-CoT model's (``base``: its ``accuracy`` and ``mean_tokens``) when known."""
    t0 = time.perf_counter()
    episodes, _ = rollout(prompts, generators, tokenizer, cfg, group_size=1, seed=seed, step=-1,
                          context_limit=context_limit, logprobs=False, rules=rules)
    verdicts = verifier.judge_many([e.answer_text for e in episodes], [e.answer for e in episodes],
                                   finished=[e.finished for e in episodes])
    correct = [v.correct for v in verdicts]
    out = {
        "problems": len(episodes),
        "accuracy": _mean([float(c) for c in correct]),
        "tokens": _mean([e.tokens() for e in episodes]),
        **{f"tokens_{r}": _mean([e.tokens(r) for e in episodes]) for r in dict.fromkeys(rules.order)},
        "turns": _mean([e.num_turns() for e in episodes]),
        "finished": _mean([float(e.finished) for e in episodes]),
        "seconds": time.perf_counter() - t0,
    }
    if base and base.get("accuracy") is not None and base.get("mean_tokens"):
        out["base_problems"] = int(base.get("n", 0))
        out["base_accuracy"] = float(base["accuracy"])
        out["base_tokens"] = float(base["mean_tokens"])
        out["accuracy_minus_base"] = out["accuracy"] - out["base_accuracy"]
        out["token_ratio_vs_base"] = out["tokens"] / out["base_tokens"]
    return out


def base_metrics(run_dir: Path, problem_ids: Sequence[str]) -> dict | None:
    """The bootstrap base model's accuracy and tokens on exactly the problems ``problem_ids``, from its per-problem
    answers (to the dev problems of its check and to the test problems: ``bootstrap/{check,eval}_samples.jsonl``),
    graded as the pair is: an answer cut at its limit is wrong. None when that stage did not run here or did not
    answer every one of these problems: a base number on other problems would compare unlike with unlike."""
    if not problem_ids:
        return None
    rows: dict[str, dict] = {}
    for path in (run_dir / rd.BOOTSTRAP_CHECK_SAMPLES, run_dir / rd.BOOTSTRAP_EVAL_SAMPLES):  # dev, test
        if path.exists():
            rows.update((r["id"], r) for r in map(json.loads, path.read_text().splitlines()))
    if not all(i in rows for i in problem_ids):
        return None
    picked = [rows[i] for i in problem_ids]
    return {"accuracy": _mean([float(r["correct"] and r["finished"]) for r in picked]),
            "mean_tokens": _mean([float(r["tokens"]) for r in picked]), "n": len(picked)}
