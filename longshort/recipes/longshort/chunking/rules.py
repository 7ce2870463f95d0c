"""Rule-based grouping of CoT steps (blank-line paragraphs) into thoughts: ``chunk.rules``.

``moves`` (the default) aims at one reasoning move per thought, the unit a long model hands over or keeps:

1. a step that opens with an *opener* cue ("Wait", "Alternatively", "Hmm", "Now", "Let me try", ...) or a *check*
   cue ("Let me double-check", "To verify", ...) starts a new thought; any other step joins the open one;
2. a step that opens with a *conclusion* cue ("So", "Therefore", "Thus", "Then", ...) continues the thought before
   it: a conclusion belongs with the working it concludes (real R1 text opens a third of its paragraphs so);
3. a check keeps the step right after it, whatever its cue: the recomputation is part of the check;
4. a thought shorter than ``min_thought_chars`` (after stripping) joins the thought before it ("Yes, that's
   right.", "Hmm.", "Okay, so x is real, good."), or the next one when it is the first;
5. a thought reaching ``max_thought_chars`` is closed at the next step boundary, before any of the above.

``cues`` is the earlier rule: every step opening with any cue (openers, checks and conclusions alike) starts a
thought. It is what the synthetic teacher's CoTs need: each paragraph there is one tagged thought.

Counts on three R1-style CoTs (``coldstart_data/r1_style``, ``python bench/chunk_rules.py``) are in
``docs/importance.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from longshort.core.errors import LongshortError
from longshort.recipes.longshort.chunking.config import ChunkConfig

# Markdown a step may open with before its cue: emphasis, list bullets, headings, quotes.
_LEAD = r"[\s>#*_\-]*"
_NEVER = re.compile(r"(?!x)x")

Groups = list[tuple[int, int]]  # [start, end) step indices


@dataclass(frozen=True)
class Cues:
    opener: re.Pattern[str]
    check: re.Pattern[str]
    conclusion: re.Pattern[str]

    def any(self, step: str) -> bool:
        return bool(self.opener.match(step) or self.check.match(step) or self.conclusion.match(step))


def _compile(pats: Sequence[str]) -> re.Pattern[str]:
    return re.compile(_LEAD + "(?:" + "|".join(f"(?:{p})" for p in pats) + ")") if pats else _NEVER


def cues_of(cfg: ChunkConfig) -> Cues:
    if cfg.language not in cfg.cues:
        raise LongshortError(f"chunk.language {cfg.language!r} has no cue list; set chunk.cues.{cfg.language}")
    return Cues(_compile(cfg.cues[cfg.language]), _compile(cfg.check_cues.get(cfg.language, [])),
                _compile(cfg.conclusion_cues.get(cfg.language, [])))


def by_cues(steps: Sequence[str], cues: Cues, cfg: ChunkConfig) -> Groups:
    """Any cue opens a thought; other steps join the open one; a thought closes past ``max_thought_chars``."""
    groups: Groups = []
    start, size = 0, 0
    for i, step in enumerate(steps):
        if i > start and (cues.any(step) or (cfg.max_thought_chars and size >= cfg.max_thought_chars)):
            groups.append((start, i))
            start, size = i, 0
        size += len(step)
    if steps:
        groups.append((start, len(steps)))
    return groups


def by_moves(steps: Sequence[str], cues: Cues, cfg: ChunkConfig) -> Groups:
    """One reasoning move per thought (rules 1-5 of the module docstring)."""
    groups: Groups = []
    start, size, keep_next = 0, 0, False
    for i, step in enumerate(steps):
        if i > start:
            if cfg.max_thought_chars and size >= cfg.max_thought_chars:
                new = True
            elif keep_next or cues.conclusion.match(step):
                new = False
            else:
                new = bool(cues.opener.match(step) or cues.check.match(step))
            if new:
                groups.append((start, i))
                start, size = i, 0
        keep_next = i == start and bool(cues.check.match(step))
        size += len(step)
    if steps:
        groups.append((start, len(steps)))
    return _merge_short(steps, groups, cfg.min_thought_chars)


def _merge_short(steps: Sequence[str], groups: Groups, min_chars: int) -> Groups:
    def short(g: tuple[int, int]) -> bool:
        return len("".join(steps[g[0] : g[1]]).strip()) < min_chars

    out: Groups = []
    for g in groups:
        if out and (short(g) or short(out[-1])):  # a short one joins its neighbour; a short first one the next
            out[-1] = (out[-1][0], g[1])
        else:
            out.append(g)
    return out


RULES: dict[str, Callable[[Sequence[str], Cues, ChunkConfig], Groups]] = {"moves": by_moves, "cues": by_cues}


def group_steps(steps: Sequence[str], cfg: ChunkConfig, cues: Cues | None = None) -> Groups:
    return RULES[cfg.rules](steps, cues or cues_of(cfg), cfg)
