"""Training examples of the Hawkeye models, made from problems with a reference solution (and a long CoT when the
data has one: the embedded task's records, OpenR1, ...).

The planner's CoT is its turn under the assistant header; the responder answers under the short header
(``protocol.PLANNER_RESPONDER_RULES``). The responder must answer whatever the planner hands over, so it learns
from CoTs of every completeness: the teacher's whole long CoT (what the base model writes), its essential thoughts
(what the warmed-up planner writes), the concise solution, a prefix of any of them, or no steps at all; with steps missing it has to compute them itself, which a smaller model does
worse: that is what makes the planner's steps worth their tokens.
"""

from __future__ import annotations

import random
import re

from longshort.data.problems import Problem
from longshort.data.protocol import Message
from longshort.training.sft_data import SFTExample

NO_STEPS = "Answer directly."  # the CoT of the "none" variant (a turn needs text)
VARIANTS = ("long", "long_prefix", "essential", "essential_prefix", "concise", "concise_prefix", "none")


def concise_steps(p: Problem) -> str:
    """The problem's reference solution without the line that states the answer: the steps a planner hands over."""
    lines = (p.solution or "").splitlines()
    return "\n".join(line for line in lines if line.strip() and "\\boxed" not in line) or NO_STEPS


def essential_thoughts(p: Problem) -> list[str]:
    """The teacher's essential thoughts, in order (the embedded task tags each thought; a CoT with a planted error
    has none usable: its right step is inside the correction). Empty for data without tags."""
    thoughts = p.meta.get("thoughts") or []
    if not thoughts or p.meta.get("error_step") is not None:
        return []
    return [t["text"] for t in thoughts if isinstance(t, dict) and t.get("tag") == "essential"]


_STEP = re.compile(r"^Step \d+: (.*), so (.*)\.$")
PLANNER_STYLES = ("essential", "plain", "compact", "concise")


def planner_cot(p: Problem, style: str = "essential") -> str:
    """A concise CoT for the warm-up, in one of ``PLANNER_STYLES`` when the data tags its thoughts: the teacher's
    essential thoughts (``Step 1: double it, so 4 × 2 = 8.``), without the numbering (``double it, so 4 × 2 = 8.``),
    as operation and equation (``double it: 4 × 2 = 8``), or the reference solution's equations alone (``4 × 2 =
    8``). Data without tagged thoughts: the reference solution's steps."""
    kept = essential_thoughts(p)
    if not kept or style == "concise":
        return concise_steps(p)
    if style == "essential":
        return "\n\n".join(kept)
    parts = [_STEP.match(t) for t in kept]
    if not all(parts):  # wording the patterns do not know: keep the thoughts as they are
        return "\n\n".join(kept)
    if style == "plain":
        return "\n".join(f"{m.group(1)}, so {m.group(2)}." for m in parts)
    return "\n".join(f"{m.group(1)}: {m.group(2)}" for m in parts)


def answer_line(p: Problem) -> str:
    return f"The final number is \\boxed{{{p.answer}}}."


def responder_cot(p: Problem, variant: str, rng: random.Random) -> str:
    """The CoT a responder example shows for ``variant`` (see ``VARIANTS``; without a long CoT, the concise one)."""
    if variant.startswith("long") and not p.long_cot or variant.startswith("essential") and not essential_thoughts(p):
        variant = "concise" + variant.partition("_")[1] + variant.partition("_")[2]
    if variant == "long":
        return p.long_cot
    if variant == "long_prefix":
        thoughts = p.long_cot.split("\n\n")
        return "\n\n".join(thoughts[: rng.randint(1, max(1, len(thoughts) - 2))])
    if variant.startswith("essential"):
        kept = essential_thoughts(p)
        return "\n\n".join(kept if variant == "essential" else kept[: rng.randint(1, max(1, len(kept) - 1))])
    steps = concise_steps(p).splitlines()
    if variant == "concise":
        return "\n".join(steps)
    if variant == "concise_prefix" and len(steps) > 1:
        return "\n".join(steps[: rng.randint(1, len(steps) - 1)])
    return NO_STEPS


def responder_examples(problems: list[Problem], n: int, seed: int) -> list[SFTExample]:
    """``n`` examples (problems reused in order when ``n`` is larger), each with a random ``VARIANTS`` CoT."""
    rng = random.Random(f"hawkeye-responder/{seed}")
    out = []
    for i in range(n):
        p = problems[i % len(problems)]
        cot = responder_cot(p, rng.choice(VARIANTS), rng)
        out.append(SFTExample(f"{p.id}/{i}", [Message("user", p.problem), Message("assistant", cot),
                                              Message("short", answer_line(p))], train_roles=("short",)))
    return out


def warmup_examples(problems: list[Problem], n: int, seed: int = 0,
                    styles: tuple[str, ...] = PLANNER_STYLES) -> list[SFTExample]:
    """The planner's warm-up: the problem, then ``planner_cot`` in a random one of ``styles`` as its turn (RL then
    finds which is short enough and still right), handed over with END_TURN (the responder's answer follows,
    untrained), so the planner samples its own hand-over token and RL can train when it stops (a rewritten EOS
    carries no loss). Problems whose CoT has a planted error are skipped when the data has tagged thoughts (their
    essential steps are incomplete)."""
    rng = random.Random(f"hawkeye-warmup/{seed}")
    tagged = any(p.meta.get("thoughts") for p in problems)
    usable = [p for p in problems if essential_thoughts(p)] if tagged else problems
    return [SFTExample(p.id, [Message("user", p.problem), Message("assistant", planner_cot(p, rng.choice(styles))),
                              Message("short", answer_line(p))]) for p in usable[:n]]
