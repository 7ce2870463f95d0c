"""Split a long chain of thought into thoughts, losslessly (``longshort chunk``).

A CoT is ``head + thoughts + tail``: ``head`` runs up to the first thought (``<think>`` and the whitespace after
it), ``tail`` is ``</think>`` and the answer after it; either may be empty (a trace without tags is all thoughts).
Concatenating ``head``, the thoughts and ``tail`` gives the text back byte for byte: every separator is kept at
the end of the thought it follows.

1. *Steps*: the thinking text is cut at blank lines, except inside fenced code blocks (```` ``` ````/``~~~``) and
   display math (``$$``, ``\\[ \\]``, ``\\begin{..} \\end{..}``), whose blank lines belong to the content.
2. *Thoughts* (``mode: rules``, the default): steps are grouped by cues at their start ("Wait", "Alternatively",
   "Let me double-check", "So", ...; regexes per language in ``ChunkConfig``), one reasoning move per thought
   (``rules: moves``) or one thought per cue (``rules: cues``); see ``rules.py``.
3. *Model grouping* (``mode: model``): an engine is shown the numbered steps and answers with ranges such as
   ``1-3,4,5-7``. The answer must cover every step exactly once, in order; anything else falls back to the rules
   and is counted by reason in ``ChunkStats.fallbacks``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from longshort.cluster.engine_pool import open_engine_pool
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.data.problems import load_problems
from longshort.data.protocol import THINK_CLOSE, THINK_OPEN
from longshort.recipes.longshort.chunking.config import ChunkConfig, ChunkStats
from longshort.recipes.longshort.chunking.rules import cues_of, group_steps

log = logging.getLogger("longshort")

_FENCE = re.compile(r"^\s*(```|~~~)")
_MATH_OPEN = re.compile(r"\\begin\{([A-Za-z*]+)\}|\\\[")
_MATH_CLOSE = re.compile(r"\\end\{([A-Za-z*]+)\}|\\\]")


@dataclass
class Chunked:
    """A CoT as ``head + "".join(thoughts) + tail`` (exactly)."""

    head: str
    thoughts: list[str]
    tail: str
    method: str = "rules"  # rules | model | fallback:<reason>

    @property
    def text(self) -> str:
        return self.head + "".join(self.thoughts) + self.tail

    def boundaries(self) -> list[int]:
        """Character offsets where thought k ends (k = 0 is the end of ``head``); ``len(thoughts) + 1`` entries."""
        out = [len(self.head)]
        for t in self.thoughts:
            out.append(out[-1] + len(t))
        return out

    def to_json(self) -> dict:
        return {"head": self.head, "thoughts": self.thoughts, "tail": self.tail, "method": self.method}

    @classmethod
    def from_json(cls, obj: dict) -> Chunked:
        return cls(obj["head"], list(obj["thoughts"]), obj["tail"], obj.get("method", "rules"))


# ----------------------------------------------------------------------------------------------- splitting


def split_head_tail(text: str, open_tag: str = THINK_OPEN, close_tag: str = THINK_CLOSE) -> tuple[str, str, str]:
    """(head, body, tail): head ends after the open tag and its whitespace; tail starts at the close tag.

    A trace without an open tag (R1 puts ``<think>`` in the prompt) has an empty head; one that never closes
    (cut off) has an empty tail.
    """
    start = 0
    i = text.find(open_tag) if open_tag else -1
    if i >= 0 and not text[:i].strip():
        start = i + len(open_tag)
        while start < len(text) and text[start].isspace():
            start += 1
    j = text.find(close_tag, start) if close_tag else -1
    end = j if j >= 0 else len(text)
    return text[:start], text[start:end], text[end:]


def split_steps(body: str) -> list[str]:
    """Blank-line-separated steps of ``body``, each with its trailing separator; ``"".join`` gives ``body`` back.

    Blank lines inside fenced code and display math do not split.
    """
    if not body:
        return []
    steps: list[str] = []
    cur: list[str] = []
    fence: str | None = None
    math = 0
    dollars = False  # inside a $$ ... $$ block spanning lines
    pending_break = False  # the current step has seen its separating blank line(s)
    for line in body.splitlines(keepends=True):
        blank = not line.strip()
        if pending_break and not blank:
            steps.append("".join(cur))
            cur, pending_break = [], False
        cur.append(line)
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        m = _FENCE.match(line)
        if m:
            fence = m.group(1)
            continue
        if line.count("$$") % 2:
            dollars = not dollars
        math = max(0, math + sum(1 for _ in _MATH_OPEN.finditer(line)) - sum(1 for _ in _MATH_CLOSE.finditer(line)))
        if blank and not dollars and math == 0 and any(c.strip() for c in cur):
            pending_break = True
    if cur:
        if steps and not any(c.strip() for c in cur):
            steps[-1] += "".join(cur)  # trailing whitespace only: belongs to the last step
        else:
            steps.append("".join(cur))
    return steps


def chunk_text(text: str, cfg: ChunkConfig | None = None, groups: list[tuple[int, int]] | None = None,
               method: str = "rules") -> Chunked:
    """Chunk one CoT with the rules (or with given step ``groups``, e.g. a validated model answer)."""
    cfg = cfg or ChunkConfig()
    head, body, tail = split_head_tail(text, cfg.think_open, cfg.think_close)
    steps = split_steps(body)
    if groups is None:
        groups = group_steps(steps, cfg)
    thoughts = ["".join(steps[a:b]) for a, b in groups]
    out = Chunked(head, thoughts, tail, method)
    if out.text != text:  # a bug, never bad input: the invariant every later stage relies on
        raise AssertionError("chunking lost text")
    return out


def chunk_many(texts: list[str], cfg: ChunkConfig, generate=None, tokenizer=None,
               stats: ChunkStats | None = None) -> list[Chunked]:
    """Chunk ``texts``; with ``cfg.mode == "model"``, ``generate`` (a rollout backend: list of
    ``GenerationRequest`` -> results) and ``tokenizer`` (to build chat prompts) group the steps."""
    stats = stats if stats is not None else ChunkStats()
    cues = cues_of(cfg)
    parts = [split_head_tail(t, cfg.think_open, cfg.think_close) for t in texts]
    steps = [split_steps(body) for _, body, _ in parts]
    groups: list[list[tuple[int, int]] | None] = [None] * len(texts)
    methods = ["rules"] * len(texts)
    if cfg.mode == "model":
        if generate is None or tokenizer is None:
            raise LongshortError("chunk.mode 'model' needs an engine: set chunk.engine (model path) or use mode: rules")
        from longshort.recipes.longshort.chunking.grouping import model_groups

        groups, methods = model_groups(steps, cfg, generate, tokenizer, stats)
    out = []
    for text, st, grp, method in zip(texts, steps, groups, methods, strict=True):
        if grp is None:
            grp = group_steps(st, cfg, cues)
        ch = chunk_text(text, cfg, grp, method)
        stats.cots += 1
        stats.thoughts += len(ch.thoughts)
        stats.steps += len(st)
        out.append(ch)
    return out


# ------------------------------------------------------------------------------------ teacher alignment

def teacher_cover(chunked: Chunked, teacher: list[dict]) -> list[list[int]] | None:
    """Indices of the teacher thoughts each thought covers (synthetic task only; the scorer never sees them).

    Teacher thought texts are located in order in the CoT; a thought covers every teacher thought its span
    overlaps. None when a teacher text cannot be found (the CoT is then left out of tag-based evaluation).
    """
    text = chunked.text
    spans, cursor = [], len(chunked.head)
    for t in teacher:
        at = text.find(t["text"], cursor)
        if at < 0:
            return None
        spans.append((at, at + len(t["text"])))
        cursor = at + len(t["text"])
    bounds = chunked.boundaries()
    return [[i for i, (s, e) in enumerate(spans) if s < bounds[k + 1] and e > bounds[k]]
            for k in range(len(chunked.thoughts))]


# ------------------------------------------------------------------------------------------------- stage


@dataclass
class ChunkResult:
    path: Path  # run_dir/chunk/thoughts.jsonl
    stats: ChunkStats


def run_chunk(cfg: ChunkConfig, run_dir: str | Path, tracker=None) -> ChunkResult:
    """Chunk every long CoT of ``cfg.source`` into ``run_dir/chunk/thoughts.jsonl`` (one CoT per line).

    Problems without a long CoT are skipped and counted. Teacher tags of the synthetic task ride along under
    ``teacher`` for evaluation only.
    """
    from dataclasses import replace

    try:
        cfg.validate()
    except ValueError as e:
        raise LongshortError(f"chunk config: key 'chunk.{e}") from None
    t0 = time.perf_counter()
    src = replace(cfg.source, path=str(rd.resolve(run_dir, cfg.source.path, rd.TRAIN_DATA)))
    if not Path(src.path).exists() and not cfg.source.path:
        raise LongshortError(f"chunk: {src.path} does not exist; run `longshort bootstrap` first or set "
                             "chunk.source.path to a file of problems with long CoTs (key long_cot)")
    problems, report = load_problems(src)
    usable = [p for p in problems if p.long_cot and p.long_cot.strip()]
    if len(usable) < len(problems):
        log.warning("chunk: %d of %d problems have no long CoT (key long_cot) and are skipped",
                    len(problems) - len(usable), len(problems))
    if not usable:
        raise LongshortError(f"chunk: no problem in {src.path} has a long CoT; map the field with "
                             "chunk.source.fields.long_cot: <key>")
    stats = ChunkStats()
    backend = tokenizer = None
    if cfg.mode == "model":
        from transformers import AutoTokenizer

        model = str(rd.resolve(run_dir, cfg.model, rd.BASE_MODEL))
        backend = open_engine_pool(cfg.engines, model)
        tokenizer = AutoTokenizer.from_pretrained(model)
    try:
        chunks = chunk_many([p.long_cot for p in usable], cfg, backend, tokenizer, stats)
    finally:
        if backend is not None:
            backend.close()
    out = Path(run_dir) / rd.THOUGHTS
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p, ch in zip(usable, chunks, strict=True):
            rec = {"id": p.id, "problem": p.problem, "answer": p.answer, "solution": p.solution, **ch.to_json()}
            teacher = p.meta.get("thoughts") if isinstance(p.meta, dict) else None
            if teacher:
                rec["teacher"] = {"thoughts": teacher, "cover": teacher_cover(ch, teacher)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(out)
    summary = {**stats.summary(), "skipped_no_long_cot": len(problems) - len(usable),
               "left_out_by_limit": report.not_read, "seconds": time.perf_counter() - t0}
    (out.parent / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("chunk: %d CoTs -> %d thoughts (%.1f per CoT), %d model-grouped, %d fallbacks -> %s%s", stats.cots,
             stats.thoughts, stats.thoughts / max(stats.cots, 1), stats.by_model, sum(stats.fallbacks.values()), out,
             f" ({report.not_read} more CoTs in the source left out by chunk.source.limit: {src.limit})"
             if report.not_read else "")
    if tracker is not None:
        tracker.log({f"chunk/{k}": v for k, v in summary.items()}, step=0)
    return ChunkResult(out, stats)
