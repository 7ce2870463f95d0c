"""Cold-start dialogues from scored CoTs (``longshort coldstart``), in the pair protocol of ``protocol.py``.

Per CoT, the thoughts the scorer ranks highest (``select``: the top ``ratio`` of each CoT, or importance >=
``threshold``) stay verbatim in the long role's turns; each stretch of other thoughts between them becomes one
short-role turn holding its compressed form, and the last short turn ends with the CoT's final answer line:

* ``compression: teacher`` (synthetic task): the teacher's concise step lines (``solution``) of the steps whose
  right equation first appears in the stretch, each labelled with its step (``step_labels``: "Step 2: 5 - 3 = 2";
  without the label the tiny short model loses count of which operation comes next: pair accuracy 49% -> 63% on
  the tiny default); a stretch without one (restating, checking, a planted wrong step) is dropped.
* ``compression: engine`` (real data): an engine rewrites the stretch with ``REWRITE_PROMPT``; a rewrite that
  drops a key quantity of the stretch (the result of each of its equations, and any of its numbers that the
  final answer uses), invents a number, or is not shorter is rejected (``rewrite_check``); if all ``attempts``
  for a stretch are rejected the dialogue is dropped (``rewrite.on_rejected: verbatim``: the stretch is kept as
  written). Rejections, drops and verbatim stretches are counted.

Turns of one role that end up adjacent are merged. The long role opens: if the CoT would open with a non-empty
short stretch, one of that stretch's thoughts moves to the long role (counted as ``promoted_opening``): with
``promote: cheapest`` (teacher compression) the one with the fewest tokens among those whose predecessors compress
to nothing (restating, planning), else the first. Kept are
only well-formed dialogues (``protocol.check_pair_dialogue``, at most ``max_turns`` turns) whose final answer
verifies against the gold answer; every drop is counted by reason.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.data.protocol import MAX_TURNS, THINK_CLOSE, Message, check_pair_dialogue, prompt_ids
from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.recipes.longshort.coldstart.compression import (
    REWRITE_PROMPT,
    TeacherCompressor,
    answer_line,
    rewrite_check,
)
from longshort.recipes.longshort.coldstart.ranking import RANKERS

log = logging.getLogger("longshort")

@dataclass
class RewriteConfig:
    """The engine that compresses stretches (``compression: engine``)."""

    RENAMED_KEYS = {"rollout": "engines"}  # old configs still load (with a warning)

    model: str | None = None  # None: the bootstrap base model
    prompt: str = REWRITE_PROMPT  # must contain {text}
    max_tokens: int = field(default=256, metadata={"ge": 1})
    temperature: float = field(default=0.7, metadata={"ge": 0})
    attempts: int = field(default=2, metadata={"ge": 1})  # samples per stretch; the shortest valid one is kept
    # every attempt rejected: drop the CoT, or keep the stretch as written (uncompressed, counted: a small rewriter
    # often drops a number)
    on_rejected: Literal["drop", "verbatim"] = "drop"
    seed: int = 0
    engines: EnginePoolConfig = field(default_factory=EnginePoolConfig)


@dataclass
class ColdstartConfig:
    """Cold-start synthesis (config section ``coldstart``)."""

    select: Literal["ratio", "threshold"] = "ratio"
    # what orders the thoughts: the scorer's importance, or a control (random, the teacher's tags) to judge it by
    rank_by: Literal["importance", "random", "tags"] = "importance"
    rank_seed: int = 0  # rank_by: random
    ratio: float = field(default=0.4, metadata={"gt": 0, "le": 1})  # share of each CoT's thoughts kept (>= 1)
    threshold: float = field(default=0.0, metadata={"ge": -1, "le": 1})  # select: threshold
    max_turns: int = field(default=MAX_TURNS, metadata={"ge": 2})
    # when no important thought opens the CoT, which thought of the opening stretch the long role opens with:
    # the first, or the cheapest one whose predecessors compress to nothing
    promote: Literal["first", "cheapest"] = "cheapest"
    compression: Literal["teacher", "engine"] = "teacher"
    # teacher: label each concise line with its step ("Step 2: 5 - 3 = 2"), so the short model knows which of the
    # problem's operations comes next (a tiny one loses count without it)
    step_labels: bool = True
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    data: str | None = None  # scored CoTs; None: run_dir/score/scores.jsonl
    tokenizer: str | None = None  # for token counts; None: sft.long_model's, else the bootstrap base model's

    def validate(self) -> None:
        if "{text}" not in self.rewrite.prompt:
            raise ValueError("rewrite: prompt has no {text} placeholder; accepted: a template containing {text}")


# ------------------------------------------------------------------------------------------- selection


def long_role_thoughts(rec: dict, cfg: ColdstartConfig) -> set[int]:
    """Indices of the CoT's thoughts kept by the long role, ranked by ``cfg.rank_by``.

    With ``select: threshold`` a control ranking (random, tags) keeps as many thoughts of each CoT as the threshold
    keeps by importance, so the arms of the functional check differ only in which thoughts they keep.
    """
    ranks = RANKERS[cfg.rank_by](rec, cfg.rank_seed)
    if cfg.select == "threshold" and cfg.rank_by != "importance":
        return top_ranked(ranks, len(select_important(RANKERS["importance"](rec, cfg.rank_seed), cfg)))
    return select_important(ranks, cfg)


def top_ranked(ranks: list[float], count: int) -> set[int]:
    """The ``count`` highest-ranked thoughts; ties: the earlier thought first."""
    return set(sorted(range(len(ranks)), key=lambda k: (-ranks[k], k))[:count])


def select_important(importances: list[float], cfg: ColdstartConfig) -> set[int]:
    """Indices of the thoughts kept by the long role, given one rank score per thought."""
    if cfg.select == "threshold":
        return {k for k, v in enumerate(importances) if v >= cfg.threshold}
    return top_ranked(importances, max(1, math.ceil(cfg.ratio * len(importances))) if importances else 0)


def stretches(n: int, important: set[int]) -> list[tuple[str, list[int]]]:
    """Maximal runs ``(role, thought indices)``: long for important thoughts, short for the others."""
    out: list[tuple[str, list[int]]] = []
    for k in range(n):
        role = "long" if k in important else "short"
        if out and out[-1][0] == role:
            out[-1][1].append(k)
        else:
            out.append((role, [k]))
    return out


# --------------------------------------------------------------------------------------------- synthesis


@dataclass
class ColdstartStats:
    cots: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    promoted_opening: int = 0
    rewrites: int = 0
    rewrites_rejected: Counter[str] = field(default_factory=Counter)  # reason -> count
    kept_verbatim: int = 0  # stretches kept as written after every rewrite was rejected (rewrite.on_rejected)

    def summary(self) -> dict:
        return {"cots": self.cots, "kept": self.kept, "promoted_opening": self.promoted_opening,
                "rewrites": self.rewrites, "rewrites_rejected": sum(self.rewrites_rejected.values()),
                "stretches_kept_verbatim": self.kept_verbatim,
                **{f"rewrites_rejected_{k}": v for k, v in sorted(self.rewrites_rejected.items())},
                **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())}}


def _text(rec: dict, ids: list[int]) -> str:
    return "".join(rec["thoughts"][k]["text"] for k in ids).strip()


def _turns(rec: dict, important: set[int], compressor) -> list[Message] | None:
    """The model turns for one choice of long-role thoughts (None: a stretch's compression was rejected)."""
    turns: list[Message] = []
    for role, ids in stretches(len(rec["thoughts"]), important):
        text = _text(rec, ids) if role == "long" else compressor.compress(rec, ids)
        if text is None:
            return None
        if not text:
            continue
        if turns and turns[-1].role == role:
            turns[-1] = Message(role, turns[-1].content + ("\n\n" if role == "long" else "\n") + text)
        else:
            turns.append(Message(role, text))
    return turns


def _opening_candidates(rec: dict, important: set[int], promote: str) -> list[int]:
    """Thoughts of the opening (unimportant) stretch that may move to the long role, in order of preference."""
    first = next((k for k in range(len(rec["thoughts"])) if k in important), len(rec["thoughts"]))
    ids = list(range(first))
    if promote == "cheapest":  # fewest tokens first: the long role only has to open
        ids.sort(key=lambda k: (rec["thoughts"][k].get("tokens", len(rec["thoughts"][k]["text"])), k))
    return ids


def build_dialogue(rec: dict, cfg: ColdstartConfig, compressor, stats: ColdstartStats) -> list[Message] | str:
    """The dialogue for one scored CoT, or the reason it is dropped. ``compressor.compress(rec, thought_ids)``
    gives a short turn's text ("" drops the stretch, None: rejected); ``compressor.final(rec)`` the answer line."""
    n = len(rec["thoughts"])
    if n == 0:
        return "no_thoughts"
    important = long_role_thoughts(rec, cfg)
    turns = _turns(rec, important, compressor)
    if turns and turns[0].role == "short":
        # The long role opens: one thought of the opening stretch moves to it. A thought after the stretch's
        # start only works when what precedes it compresses to nothing (restating, planning).
        promote = cfg.promote if cfg.compression == "teacher" else "first"  # rewrites exist for the first only
        for k in _opening_candidates(rec, important, promote):
            promoted = _turns(rec, important | {k}, compressor)
            if promoted is None or (promoted and promoted[0].role == "long"):
                turns = promoted
                stats.promoted_opening += 1
                break
    if turns is None:
        return "rewrite_rejected" if cfg.compression == "engine" else "teacher_mismatch"
    final = compressor.final(rec)
    if not final:
        return "no_answer"
    if turns and turns[-1].role == "short":
        turns[-1] = Message("short", turns[-1].content + "\n" + final)
    else:
        turns.append(Message("short", final))
    messages = [Message("user", rec["problem"]), *turns]
    problem = check_pair_dialogue(messages, cfg.max_turns)
    if problem:
        return "too_many_turns" if "max_turns" in problem else "malformed"
    return messages


class _Teacher:
    def __init__(self, step_labels: bool = False):
        self._by_id: dict[str, TeacherCompressor] = {}
        self.step_labels = step_labels

    def _of(self, rec: dict) -> TeacherCompressor:
        if rec["id"] not in self._by_id:
            self._by_id[rec["id"]] = TeacherCompressor(rec, self.step_labels)
        return self._by_id[rec["id"]]

    def compress(self, rec: dict, ids: list[int]) -> str | None:
        t = self._of(rec)
        return None if t.where is None else t.compress(ids)

    def final(self, rec: dict) -> str:
        return self._of(rec).answer_line


class _Rewriter:
    """Rewrites every short stretch of a batch of CoTs with one engine call, before the dialogues are built."""

    def __init__(self, cfg: ColdstartConfig, generate, tokenizer, stats: ColdstartStats):
        self.cfg, self.generate, self.tokenizer, self.stats = cfg, generate, tokenizer, stats
        self.done: dict[tuple[str, tuple[int, ...]], str | None] = {}

    def prepare(self, recs: list[dict]) -> None:
        rw = self.cfg.rewrite
        wanted = []
        for rec in recs:
            imp = long_role_thoughts(rec, self.cfg)
            for extra in (set(), {0}) if 0 not in imp else (set(),):  # {0}: the opening promotion, if needed
                for role, ids in stretches(len(rec["thoughts"]), imp | extra):
                    if role == "short" and (rec["id"], tuple(ids)) not in self.done:
                        self.done[(rec["id"], tuple(ids))] = None
                        wanted.append((rec, ids))
        requests = [GenerationRequest(
            prompt_ids([Message("user", rw.prompt.format(text=_text(rec, ids)))], self.tokenizer, "assistant"),
            SamplingParams(n=rw.attempts, temperature=rw.temperature, max_tokens=rw.max_tokens, seed=rw.seed + i,
                           logprobs=False), request_id=f"{rec['id']}/{ids[0]}") for i, (rec, ids) in enumerate(wanted)]
        results = self.generate(requests) if requests else []
        for (rec, ids), res in zip(wanted, results, strict=True):
            src, ans = _text(rec, ids), answer_line(rec) or ""
            good = []
            for s in res.samples:
                text = s.text.rsplit(THINK_CLOSE, 1)[-1].strip()
                self.stats.rewrites += 1
                why = rewrite_check(text, src, ans, rec["problem"])
                if why is None:
                    good.append(text)
                else:
                    self.stats.rewrites_rejected[why] += 1
            if not good and rw.on_rejected == "verbatim":
                self.stats.kept_verbatim += 1
                good = [src]
            self.done[(rec["id"], tuple(ids))] = min(good, key=len) if good else None

    def compress(self, rec: dict, ids: list[int]) -> str | None:
        return self.done.get((rec["id"], tuple(ids)))

    def final(self, rec: dict) -> str | None:
        return answer_line(rec)


def synthesize(scored: list[dict], cfg: ColdstartConfig, verifier, generate=None, tokenizer=None,
               stats: ColdstartStats | None = None) -> list[dict]:
    """Dialogue records (SFT JSONL layout: id, messages, train_roles, meta) for the scored CoTs that pass."""
    stats = stats if stats is not None else ColdstartStats()
    if cfg.compression == "engine":
        if generate is None or tokenizer is None:
            raise LongshortError("coldstart.compression 'engine' needs a rewrite engine (coldstart.rewrite.model)")
        compress = _Rewriter(cfg, generate, tokenizer, stats)
        compress.prepare(scored)
    else:
        compress = _Teacher(cfg.step_labels)
    built = []
    for rec in scored:
        stats.cots += 1
        out = build_dialogue(rec, cfg, compress, stats)
        if isinstance(out, str):
            stats.dropped[out] += 1
        else:
            built.append((rec, out))
    verdicts = verifier.judge_many([m[-1].content for _, m in built], [str(r["answer"]) for r, _ in built])
    dialogues = []
    for (rec, messages), v in zip(built, verdicts, strict=True):
        if not v.correct:
            stats.dropped["unverified"] += 1
            continue
        stats.kept += 1
        dialogues.append({"id": rec["id"], "messages": [{"role": m.role, "content": m.content} for m in messages],
                          "train_roles": ["long", "short"],
                          "meta": {"turns": len(messages) - 1, "answer": rec["answer"]}})
    return dialogues


# ------------------------------------------------------------------------------------------------- stage


@dataclass
class ColdstartResult:
    path: Path  # run_dir/coldstart/dialogues.jsonl
    summary: dict


def run_coldstart(cfg: ColdstartConfig, run_dir: str | Path, tracker=None, verifier=None,
                  backend=None) -> ColdstartResult:
    """Synthesize ``run_dir/coldstart/dialogues.jsonl`` (+ ``summary.json``) from the scored CoTs."""
    from transformers import AutoTokenizer

    from longshort.data.verify import shared_verifier
    from longshort.recipes.longshort.scoring.rollouts import load_chunked

    try:
        cfg.validate()
    except ValueError as e:
        raise LongshortError(f"coldstart config: key 'coldstart.{e}") from None
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    scored = [rec for rec, _ in load_chunked(rd.resolve(run_dir, cfg.data, rd.SCORES))]
    tok_dir = rd.resolve(run_dir, cfg.tokenizer, rd.BASE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    stats = ColdstartStats()
    own = backend is None and cfg.compression == "engine"
    if own:
        backend = open_engine_pool(cfg.rewrite.engines, rd.resolve(run_dir, cfg.rewrite.model, rd.BASE_MODEL), cfg.rewrite.seed)
    try:
        rw_tok = tokenizer if cfg.compression == "teacher" or cfg.rewrite.model is None else \
            AutoTokenizer.from_pretrained(cfg.rewrite.model)
        dialogues = synthesize(scored, cfg, verifier or shared_verifier(), backend, rw_tok, stats)
    finally:
        if own:
            backend.close()
    out = run_dir / rd.DIALOGUES
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dialogues), encoding="utf-8")
    tmp.replace(out)
    summary = {**stats.summary(), **token_summary(scored, dialogues, tokenizer), "seconds": time.perf_counter() - t0}
    (out.parent / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("coldstart: %d of %d CoTs -> dialogues (%s); tokens kept %.0f%% of the CoTs'", stats.kept, stats.cots,
             ", ".join(f"{k} {v}" for k, v in summary.items() if k.startswith("dropped_")) or "none dropped",
             100 * (summary["token_ratio"] or 0.0))
    if not dialogues:
        raise LongshortError(f"coldstart: no dialogue passed ({stats.summary()}); check the scores and "
                             "coldstart.compression")
    if tracker is not None:
        tracker.log({f"coldstart/{k}": v for k, v in summary.items()}, step=0)
    return ColdstartResult(out, summary)


def token_summary(scored: list[dict], dialogues: list[dict], tokenizer) -> dict:
    """Tokens written by each role in the kept dialogues, against the tokens of their source CoTs."""
    by_id = {r["id"]: r for r in scored}
    counts = {"long": 0, "short": 0}
    cot = 0
    for d in dialogues:
        rec = by_id[d["id"]]
        cot += len(tokenizer.encode(rec["head"] + "".join(t["text"] for t in rec["thoughts"]) + rec["tail"],
                                    add_special_tokens=False))
        for m in d["messages"][1:]:
            counts[m["role"]] += len(tokenizer.encode(m["content"], add_special_tokens=False)) + 1
    total = counts["long"] + counts["short"]
    n = max(len(dialogues), 1)
    return {"long_tokens_per_dialogue": counts["long"] / n, "short_tokens_per_dialogue": counts["short"] / n,
            "cot_tokens_per_dialogue": cot / n, "token_ratio": total / cot if cot else None,
            "turns_per_dialogue": sum(d["meta"]["turns"] for d in dialogues) / n}
