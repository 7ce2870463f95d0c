"""Model-based grouping of CoT steps into thoughts (``chunk.mode: model``), validated, with counted fallbacks.

An engine sees the numbered steps and answers with ranges such as ``1-3,4,5-7``. The answer must cover every
step exactly once and in order; otherwise the CoT falls back to the rules and the reason is counted.
"""

from __future__ import annotations

import re

from longshort.data.protocol import THINK_CLOSE, Message, prompt_ids
from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.recipes.longshort.chunking.config import ChunkConfig, ChunkStats

GROUP_PROMPT = (
    "Group the numbered reasoning steps below into thoughts. A thought is a run of consecutive steps that pursue "
    "one idea; a new thought starts where the reasoning reflects, checks, or changes approach.\n"
    "Answer with one line of step ranges that covers every step exactly once and in order, like 1-3,4,5-7.\n\n"
    "{steps}"
)
_RANGES_LINE = re.compile(r"^\s*\d+(?:\s*[-–]\s*\d+)?(?:\s*,\s*\d+(?:\s*[-–]\s*\d+)?)*\s*\.?\s*$")
_RANGE = re.compile(r"(\d+)(?:\s*[-–]\s*(\d+))?")


def group_prompt(steps: list[str], max_step_chars: int) -> str:
    shown = []
    for i, s in enumerate(steps, 1):
        s = s.strip()
        shown.append(f"[{i}] " + (s if len(s) <= max_step_chars else s[:max_step_chars] + " ..."))
    return GROUP_PROMPT.format(steps="\n".join(shown))


def parse_groups(answer: str, n_steps: int, close_tag: str = THINK_CLOSE) -> list[tuple[int, int]] | str:
    """Step groups ``[start, end)`` (0-based) from a model answer, or the reason it is invalid.

    Reasons: ``no_ranges`` (no line of ranges), ``out_of_range``, ``reversed`` (5-3), ``gap`` (a step left
    out), ``overlap`` (a step twice), ``not_in_order``, ``incomplete`` (the last steps missing).
    """
    if close_tag and close_tag in answer:
        answer = answer.rsplit(close_tag, 1)[1]
    lines = [ln for ln in answer.splitlines() if _RANGES_LINE.match(ln)]
    if not lines:
        return "no_ranges"
    ranges = []
    for m in _RANGE.finditer(lines[-1]):
        a = int(m.group(1))
        ranges.append((a, int(m.group(2)) if m.group(2) else a))
    if any(r[0] < q[0] for q, r in zip(ranges, ranges[1:], strict=False)):
        return "not_in_order"
    groups: list[tuple[int, int]] = []
    expected = 1
    for a, b in ranges:
        if not (1 <= a <= n_steps and 1 <= b <= n_steps):
            return "out_of_range"
        if b < a:
            return "reversed"
        if a > expected:
            return "gap"
        if a < expected:
            return "overlap"
        groups.append((a - 1, b))
        expected = b + 1
    return groups if expected == n_steps + 1 else "incomplete"


def model_groups(steps: list[list[str]], cfg: ChunkConfig, generate, tokenizer, stats: ChunkStats):
    g = cfg.grouping
    groups: list[list[tuple[int, int]] | None] = [None] * len(steps)
    methods = ["rules"] * len(steps)
    requests, index = [], []
    # A prompt must leave room for the answer inside the model's context; longer ones go to the rules, counted.
    context = getattr(generate, "context_limit", None)
    prompt_limit = g.max_prompt_tokens if context is None else min(g.max_prompt_tokens, context - g.max_tokens)
    for i, st in enumerate(steps):
        if len(st) < 2:
            continue  # nothing to group
        reason = None
        if len(st) > g.max_steps:
            reason = "too_many_steps"
        else:
            ids = prompt_ids([Message("user", group_prompt(st, g.max_step_chars))], tokenizer, "assistant")
            if len(ids) > prompt_limit:
                reason = "prompt_too_long"
        if reason:
            stats.fallbacks[reason] += 1
            methods[i] = f"fallback:{reason}"
            continue
        requests.append(GenerationRequest(ids, SamplingParams(temperature=g.temperature, max_tokens=g.max_tokens,
                                                              seed=i, logprobs=False), request_id=str(i)))
        index.append(i)
    results = generate(requests) if requests else []
    for i, res in zip(index, results, strict=True):
        parsed = parse_groups(res.samples[0].text, len(steps[i]), cfg.think_close)
        if isinstance(parsed, str):
            stats.fallbacks[parsed] += 1
            methods[i] = f"fallback:{parsed}"
        else:
            groups[i], methods[i] = parsed, "model"
            stats.by_model += 1
    return groups, methods
