"""Episode rewards: named terms from a registry (or a user's ``package.module:function``), weighted and summed per role.

A term scores a whole step's episodes at once (group-relative terms need the group) and returns either one value
per episode (every role gets it) or ``{role: [...], ...}`` for each role of the recipe (each role its own, e.g. a
length term over that role's own tokens). A term applies to ``roles`` (default: every role of the recipe). Config::

    rewards:
      - {name: correctness, weight: 1.0}
      - {name: format, weight: 0.2}
      - {name: length, weight: 0.5, kwargs: {kind: kimi}}
      - {name: collaboration, weight: 0.1}
      - {name: my_pkg.rewards:brevity, weight: 0.3, roles: [long]}

Every term is logged on its own (``<role>/reward/<name>``) next to the weighted total.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from longshort.core.errors import LongshortError
from longshort.data.protocol import PAIR_ROLES
from longshort.rl.episodes import Episode

RoleScores = list[float] | dict[str, list[float]]
RewardFn = Callable[..., RoleScores]
REWARDS: dict[str, RewardFn] = {}
_BOXED = re.compile(r"\\boxed\{[^{}]*\S[^{}]*\}")


@dataclass
class RewardTerm:
    """One reward term: a registered name or ``package.module:function``, its weight and keyword arguments."""

    name: str = "correctness"
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    roles: list[str] | None = None  # roles whose reward includes this term; None: every role of the recipe

    def validate(self) -> None:
        if self.roles is not None and not self.roles:
            raise ValueError("roles: []; accepted: a non-empty list of the recipe's roles, or leave it out (all)")
        fn = resolve_reward(self.name)
        try:
            inspect.signature(fn).bind(None, None, **self.kwargs)
        except TypeError as e:
            raise ValueError(f"kwargs: {self.kwargs!r} do not fit reward {self.name!r} ({e}); accepted: "
                             f"{_params(fn)}") from None

    @property
    def label(self) -> str:
        """Metric name: the registry name, or a user function's last component."""
        return self.name.rpartition(":")[2].rpartition(".")[2] or self.name

    def applies_to(self, roles: Sequence[str]) -> list[str]:
        return list(roles) if self.roles is None else list(self.roles)


def check_terms(terms: Sequence[RewardTerm], roles: Sequence[str], trainable: Sequence[str]) -> None:
    """Each term's ``roles`` are roles of the recipe, and at least one is trained (a term on frozen roles only
    trains nothing); the error names the key."""
    for i, term in enumerate(terms):
        unknown = [r for r in term.applies_to(roles) if r not in roles]
        if unknown:
            raise LongshortError(f"rl.rewards[{i}].roles: {unknown!r} are not roles of this recipe; accepted: "
                                 f"{', '.join(roles)}")
        if not any(r in trainable for r in term.applies_to(roles)):
            raise LongshortError(f"rl.rewards[{i}] ({term.name}) applies only to frozen role(s) "
                                 f"{term.applies_to(roles)}: it trains nothing; accepted roles: {', '.join(trainable)}")


def _params(fn: RewardFn) -> str:
    ps = list(inspect.signature(fn).parameters.values())[2:]
    return ", ".join(f"{p.name}={p.default!r}" if p.default is not p.empty else p.name for p in ps) or "no kwargs"


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make ``fn(episodes, ctx, **kwargs) -> RoleScores`` available as reward ``name``."""

    def deco(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return deco


def resolve_reward(name: str) -> RewardFn:
    """A registered reward, or a user function given as ``package.module:function``."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" not in name:
        raise ValueError(f"name: unknown reward {name!r}; accepted: {', '.join(sorted(REWARDS))}, or a user "
                         "function as 'package.module:function'")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"name: cannot import {module_name!r} for reward {name!r} ({e}); put the module on "
                         "PYTHONPATH (Ray workers inherit it)") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"name: {module_name!r} has no function {attr!r}; define fn(episodes, ctx, **kwargs)")
    return fn


class RewardContext:
    """What terms may use besides the episodes: the verifier (answers judged once, shared by all terms)."""

    def __init__(self, episodes: Sequence[Episode], verifier, tokenizer=None, roles: Sequence[str] = PAIR_ROLES):
        self.episodes, self.verifier, self.tokenizer, self.roles = episodes, verifier, tokenizer, tuple(roles)
        self._correct: list[bool] | None = None

    @property
    def correct(self) -> list[bool]:
        """Is each episode finished with the gold answer (the project's verifier)?"""
        if self._correct is None:
            verdicts = self.verifier.judge_many([e.answer_text for e in self.episodes],
                                                [e.answer for e in self.episodes],
                                                finished=[e.finished for e in self.episodes])
            self._correct = [v.correct for v in verdicts]
        return self._correct

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i, e in enumerate(self.episodes):
            out.setdefault(e.group, []).append(i)
        return out


def _per_role(scores: RoleScores, n: int, name: str, roles: Sequence[str]) -> dict[str, list[float]]:
    if isinstance(scores, dict):
        missing = [r for r in roles if r not in scores]
        if missing:
            raise LongshortError(f"reward {name!r} returned a dict without role(s) {missing}; return a list (shared) "
                                 "or one list per role")
        out = {r: [float(x) for x in scores[r]] for r in roles}
    else:
        shared = [float(x) for x in scores]
        out = {r: shared for r in roles}
    for r, vals in out.items():
        if len(vals) != n:
            raise LongshortError(f"reward {name!r} gave {len(vals)} values for role {r!r}, expected one per episode "
                                 f"({n})")
    return out


@dataclass
class Rewards:
    total: dict[str, list[float]]  # role -> weighted sum per episode
    parts: dict[str, dict[str, list[float]]]  # term label -> role -> unweighted value per episode
    correct: list[bool]


def compute_rewards(episodes: Sequence[Episode], terms: Sequence[RewardTerm], verifier, tokenizer=None,
                    roles: Sequence[str] = PAIR_ROLES) -> Rewards:
    """Score every term, then each role's total = sum of weight x term over the terms that include that role."""
    ctx = RewardContext(episodes, verifier, tokenizer, roles)
    n = len(episodes)
    total = {r: [0.0] * n for r in roles}
    parts: dict[str, dict[str, list[float]]] = {}
    for term in terms:
        scores = _per_role(resolve_reward(term.name)(episodes, ctx, **term.kwargs), n, term.name, roles)
        label = term.label if term.label not in parts else f"{term.label}_{len(parts)}"
        parts[label] = scores
        for r in term.applies_to(roles):
            total[r] = [t + term.weight * s for t, s in zip(total[r], scores[r], strict=True)]
    return Rewards(total, parts, list(ctx.correct))


# ---------------------------------------------------------------------------------------------- built-in terms


@register_reward("correctness")
def correctness(episodes: Sequence[Episode], ctx: RewardContext) -> RoleScores:
    """1 when the short role finished with the gold answer, else 0."""
    return [1.0 if c else 0.0 for c in ctx.correct]


@register_reward("format")
def format_reward(episodes: Sequence[Episode], ctx: RewardContext, require_boxed: bool = True) -> RoleScores:
    """1 for a well-formed dialogue: every turn ended with its terminator (none cut, no long-role EOS), the short
    role finished, and (``require_boxed``) its last turn holds a ``\\boxed{}`` answer; else 0."""
    out = []
    for e in episodes:
        ok = e.finished and all(t.end_kind != "cut" and not t.rewritten for t in e.turns)
        if ok and require_boxed:
            ok = _BOXED.search(e.answer_text) is not None
        out.append(1.0 if ok else 0.0)
    return out


def kimi_length(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """Kimi k1.5's group-relative length reward: lambda = 0.5 - (len - min) / (max - min) within the group; a correct
    sample gets lambda, a wrong one min(0, lambda) (never rewarded for being short and wrong). 0 if all lengths tie."""
    lo, hi = min(lengths), max(lengths)
    if hi == lo:
        return [0.0] * len(lengths)
    lam = [0.5 - (n - lo) / (hi - lo) for n in lengths]
    return [x if c else min(0.0, x) for x, c in zip(lam, correct, strict=True)]


def _words(text: str) -> int:
    return len(text.split())


def target_penalty(n: int, n_ref: int, ratio: float, coef: float) -> float:
    """Hawkeye's length penalty: ``-coef * max(0, n - ratio * n_ref)^2`` (0 up to the target length)."""
    return -coef * max(0.0, n - ratio * n_ref) ** 2


@register_reward("length")
def length(episodes: Sequence[Episode], ctx: RewardContext, kind: str = "kimi", budget: int = 256,
           ratio: float = 0.3, coef: float = 0.01, unit: str = "tokens", reference: str = "long_cot") -> RoleScores:
    """Each role's own generated tokens. ``kind: kimi``: group-relative (``kimi_length`` per group and role);
    ``kind: budget``: ``-min(1, max(0, tokens - budget) / budget)``, a penalty only past the budget;
    ``kind: target`` (Hawkeye): ``target_penalty`` against ``ratio`` x the length of the problem's ``reference``
    text (``long_cot`` or ``solution`` of its record), lengths in ``unit`` (tokens, or words as the paper)."""
    if kind not in ("kimi", "budget", "target"):
        raise LongshortError(f"reward 'length': kind {kind!r} is unknown; accepted: kimi, budget, target")
    if budget < 1:
        raise LongshortError(f"reward 'length': budget {budget} must be >= 1")
    if unit not in ("tokens", "words") or reference not in ("long_cot", "solution"):
        raise LongshortError(f"reward 'length': unit {unit!r} / reference {reference!r}; accepted: unit tokens or "
                             "words, reference long_cot or solution")
    out: dict[str, list[float]] = {}
    for role in ctx.roles:
        if kind == "target":
            out[role] = [target_penalty(*_target_lengths(e, role, ctx, unit, reference), ratio, coef)
                         for e in episodes]
            continue
        lengths = [e.tokens(role) for e in episodes]
        if kind == "budget":
            out[role] = [-min(1.0, max(0, n - budget) / budget) for n in lengths]
            continue
        vals = [0.0] * len(episodes)
        for idx in ctx.groups().values():
            for i, v in zip(idx, kimi_length([lengths[i] for i in idx], [ctx.correct[i] for i in idx]), strict=True):
                vals[i] = v
        out[role] = vals
    return out


def _target_lengths(e: Episode, role: str, ctx: RewardContext, unit: str, reference: str) -> tuple[int, int]:
    """(the role's own turns' length, the reference's) in ``unit``; a problem without the reference is refused."""
    ref = e.references.get(reference)
    if not ref:
        raise LongshortError(f"reward 'length' (kind target): problem {e.problem_id!r} has no {reference!r} text; "
                             f"give the data a {reference} field, or set kwargs.reference to one it has")
    if unit == "words":
        text = " ".join(ctx.tokenizer.decode(ids, skip_special_tokens=True) for r, ids in e.turn_ids() if r == role)
        return _words(text), _words(ref)
    return e.tokens(role), len(ctx.tokenizer.encode(ref, add_special_tokens=False))


@register_reward("collaboration")
def collaboration(episodes: Sequence[Episode], ctx: RewardContext, turn_penalty: float = 0.1,
                  require_correct: bool = True) -> RoleScores:
    """Credit for the pair working as designed: the long role opened with its thought(s) and the short role
    carried the dialogue to a (correct, with ``require_correct``) finish. 1 for the shortest such exchange
    (long, short), minus ``turn_penalty`` per extra hand-off pair (each costs a context switch); 0 otherwise."""
    out = []
    for e, ok in zip(episodes, ctx.correct, strict=True):
        good = e.finished and e.num_turns("long") >= 1 and (ok or not require_correct)
        extra = max(0, (e.num_turns() - 2) // 2)
        out.append(max(0.0, 1.0 - turn_penalty * extra) if good else 0.0)
    return out
