"""Monte Carlo importance of thoughts (``longshort score``): prefix rollouts, cached and resumable.

For a CoT chunked into thoughts ``1..K``, prefix ``k`` is the problem in the model's chat format, then the CoT's
own tokens up to the end of thought ``k`` (prefix 0 ends after ``<think>``). The CoT is tokenized once, the way
SFT rendered it, and cut at token boundaries, so every prefix is an exact token prefix of what the model was
trained on. ``N`` samples continue each prefix to an answer, which is verified against the gold answer; the
success counts give the accuracy after each thought (see ``importance.py`` for the metric).

All prefixes of a CoT share one seed: sample ``j`` of prefix ``k`` and of prefix ``k-1`` draw the same random
numbers (common random numbers), which makes the *difference* of two accuracies, the effectiveness, less noisy.

Cache: ``cache_dir/rollouts.jsonl``, one line per finished CoT, keyed by a hash of (model content, problem, gold
answer, CoT text and thought boundaries, N, seed, sampling parameters). A re-run reuses every line (no
generation); a killed run loses at most the batch in flight and resumes from the lines already written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
from longshort.core import run_dir as rd
from longshort.core.config import PLACEMENT
from longshort.core.errors import LongshortError
from longshort.data.protocol import Message, prompt_ids
from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.recipes.longshort.chunking.thoughts import Chunked
from longshort.recipes.longshort.scoring.importance import ImportanceConfig, importance

log = logging.getLogger("longshort")
_CACHE_VERSION = 1


@dataclass
class PairJudgeConfig:
    """The pair that judges thoughts under ``score.judge: pair`` (config section ``score.pair_judge``)."""

    pair: str | None = None  # a dir with long/model and short/model; None: the judge stage's (run_dir/judge/sft)
    # the judge stage's cold start keeps thoughts chosen at random, or by the base model's importance (it scores
    # them first: a second round, slower and a better judge; docs/importance.md)
    rank_by: Literal["random", "importance"] = "random"
    rank_seed: int = 0  # rank_by: random
    temperature: float = field(default=0.7, metadata={"ge": 0})  # the pair's (the RL stage's) sampling temperature
    max_turn_tokens_long: int = field(default=192, metadata={"ge": 1})
    max_turn_tokens_short: int = field(default=128, metadata={"ge": 1})
    max_episode_tokens: int = field(default=512, metadata={"ge": 2})


@dataclass
class ScoreConfig:
    """Prefix rollouts and the importance metric (config section ``score``)."""

    RENAMED_KEYS = {"rollout": "engines"}  # old configs still load (with a warning)

    n_rollouts: int = field(default=8, metadata={"ge": 1})  # N samples per prefix
    max_tokens: int = field(default=320, metadata={"ge": 1})  # per continuation
    temperature: float = field(default=1.0, metadata={"ge": 0})
    top_p: float = field(default=1.0, metadata={"gt": 0, "le": 1})
    seed: int = 0
    common_seed: bool = True  # all prefixes of a CoT share a seed (common random numbers); False: one per prefix
    # Coupled rollouts (HF engine): random numbers keyed by the seed and the last N tokens, so the rollouts of
    # neighbouring prefixes continue identically once they reach the same text (docs/importance.md); 0: off;
    # None: 8 on the hf backend, off on others (vLLM samples with its own streams).
    couple_context: int | None = field(default=None, metadata={"ge": 0})
    # CoTs per generate call (also the resume unit); the scores do not depend on it
    batch_cots: int = field(default=16, metadata={"ge": 1, PLACEMENT: True})
    limit: int | None = field(default=None, metadata={"ge": 1})  # score only the first N chunked CoTs
    model: str | None = None  # HF model dir; None: the bootstrap base model
    data: str | None = None  # chunked CoTs (JSONL); None: run_dir/chunk/thoughts.jsonl
    cache_dir: str | None = None  # None: run_dir/score/cache (point several runs at one dir to share it)
    # whose continuations measure a thought: the base model's own (the paper's measure), or the pair's: an SFT'd
    # pair carries on a dialogue whose long turn is the CoT's prefix (pair_judge.py, docs/importance.md)
    judge: Literal["base", "pair"] = "base"
    pair_judge: PairJudgeConfig = field(default_factory=PairJudgeConfig)
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    engines: EnginePoolConfig = field(default_factory=EnginePoolConfig)  # per role for the pair judge
    report: bool = True  # write report.html
    report_cots: int = field(default=30, metadata={"ge": 0})  # CoTs drawn in report.html

    @property
    def coupling(self) -> int:
        """Context tokens that key the coupled sampler (``couple_context`` resolved; 0: off)."""
        if self.couple_context is not None:
            return self.couple_context
        return 8 if self.engines.backend == "hf" else 0


# ------------------------------------------------------------------------------------------- identities


def model_content_id(model_dir: str | Path) -> str:
    """A hash of the model's weights, config and tokenizer files (not paths or times: a copy has the same id).

    Files up to 256 MiB are hashed whole; bigger ones by size plus their first and last 16 MiB (a retrained
    model differs there too) so that a 15 GB checkpoint costs well under a second.
    """
    h = hashlib.sha256()
    root = Path(model_dir)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in {".json", ".safetensors", ".bin", ".model",
                                                                            ".txt", ".jinja"})
    if not files:
        raise LongshortError(f"model dir {root} has no model files; point score.model at a Hugging Face model dir")
    big, edge = 256 << 20, 16 << 20
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}\n".encode())
        with p.open("rb") as f:
            if size <= big:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
            else:
                h.update(f.read(edge))
                f.seek(size - edge)
                h.update(f.read(edge))
    return h.hexdigest()[:20]


def cot_key(model_id: str, rec: dict, chunked: Chunked, cfg: ScoreConfig) -> str:
    ident = {"v": _CACHE_VERSION, "model": model_id, "problem": rec["problem"], "answer": str(rec["answer"]),
             "cot": chunked.text, "bounds": chunked.boundaries(), "n": cfg.n_rollouts, "seed": cfg.seed,
             "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens,
             "common_seed": cfg.common_seed}
    if cfg.coupling:  # only when on, so caches written before coupling existed stay valid
        ident["couple_context"] = cfg.coupling
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def prefix_cuts(tokenizer, chunked: Chunked) -> tuple[list[int], list[int]]:
    """Token ids of the whole CoT and, for each prefix ``k = 0..K``, how many of them it keeps.

    A token that straddles a thought boundary stays with the later thought, so a prefix never shows text of a
    thought it does not include.
    """
    enc = tokenizer(chunked.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    cuts, t = [], 0
    for b in chunked.boundaries():
        while t < len(ids) and offsets[t][1] <= b:
            t += 1
        cuts.append(t)
    return ids, cuts


# -------------------------------------------------------------------------------------------------- cache


class RolloutCache:
    """Append-only JSONL of finished CoTs; a torn last line (killed mid-write) is ignored and counted."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        self.torn = 0
        if path.exists():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                        self.entries[obj["key"]] = obj
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.torn += 1
        if self.torn:
            log.warning("score cache %s: %d unreadable line(s) ignored (a killed run); those CoTs are redone",
                        path, self.torn)

    def add(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn_end = False
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn_end = f.read(1) != b"\n"
        with self.path.open("a", encoding="utf-8") as f:
            if torn_end:
                f.write("\n")  # never glue a new line onto a torn one
            for e in entries:
                f.write(json.dumps(e) + "\n")
                self.entries[e["key"]] = e
            f.flush()
            os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------------ rollouts


@dataclass
class ScoreStats:
    cots: int = 0
    cached: int = 0  # CoTs whose rollouts came from the cache
    rollouts: int = 0  # samples generated in this run
    gen_tokens: int = 0
    straddles: int = 0
    seconds_generate: float = 0.0
    seconds_verify: float = 0.0


def rollout_cots(items: list[tuple[str, dict, Chunked]], judge, verifier, cfg: ScoreConfig, cache: RolloutCache,
                 stats: ScoreStats) -> None:
    """Roll out and verify, with ``judge``, the prefixes of the ``(key, record, chunked)`` items not in ``cache``."""
    from longshort.core.progress import bar

    todo = [it for it in items if it[0] not in cache.entries]
    stats.cached += len(items) - len(todo)
    with bar("score", len(todo)) as row:
        for start in range(0, len(todo), cfg.batch_cots):
            cache.add(judge.rollout(todo[start : start + cfg.batch_cots], verifier, stats))
            row.update(completed=min(start + cfg.batch_cots, len(todo)), description=f"{stats.rollouts} rollouts")
            log.info("score: %d/%d CoTs rolled out (%d samples, %.0f tokens/s)", min(start + cfg.batch_cots, len(todo)),
                     len(todo), stats.rollouts, stats.gen_tokens / max(stats.seconds_generate, 1e-9))


class BaseModelJudge:
    """A thought is worth what it adds to the base model's own continuations of the CoT (the paper's measure)."""

    def __init__(self, cfg: ScoreConfig, run_dir: Path, backend=None):
        from transformers import AutoTokenizer

        self.cfg, self.backend, self.own = cfg, backend, backend is None
        self.model_dir = rd.resolve(run_dir, cfg.model, rd.BASE_MODEL)
        if not (self.model_dir / "config.json").exists():
            raise LongshortError(f"score: model {self.model_dir} has no config.json; run `longshort bootstrap` or "
                                 "set score.model")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model_id = model_content_id(self.model_dir)

    def key(self, rec: dict, chunked: Chunked) -> str:
        return cot_key(self.model_id, rec, chunked, self.cfg)

    def rollout(self, batch, verifier, stats: ScoreStats) -> list[dict]:
        if self.backend is None:
            self.backend = open_engine_pool(self.cfg.engines, self.model_dir, self.cfg.seed)
        return _rollout_batch(batch, self.backend, self.tokenizer, verifier, self.cfg, stats)

    def close(self) -> None:
        if self.own and self.backend is not None:
            self.backend.close()


def _rollout_batch(batch, generate, tokenizer, verifier, cfg: ScoreConfig, stats: ScoreStats) -> list[dict]:
    """Roll out and verify every prefix of one batch of CoTs: their cache entries."""
    requests, owners = [], []
    meta = {}
    for key, rec, ch in batch:
        head = prompt_ids([Message("user", rec["problem"])], tokenizer, "assistant")
        ids, cuts = prefix_cuts(tokenizer, ch)
        seed = int(key[:15], 16)
        for k, cut in enumerate(cuts):
            params = SamplingParams(n=cfg.n_rollouts, temperature=cfg.temperature, top_p=cfg.top_p,
                                    max_tokens=cfg.max_tokens, seed=seed if cfg.common_seed else seed + 7919 * k,
                                    logprobs=False, couple_context=cfg.coupling)
            requests.append(GenerationRequest(head + ids[:cut], params, request_id=f"{rec['id']}/{k}"))
            owners.append((key, k))
        meta[key] = (rec, cuts)
    t0 = time.perf_counter()
    results = generate(requests)
    t1 = time.perf_counter()
    texts = [s.text for r in results for s in r.samples]
    golds = [str(meta[key][0]["answer"]) for (key, _), r in zip(owners, results, strict=True) for _ in r.samples]
    verdicts = iter(verifier.judge_many(texts, golds))
    stats.seconds_generate += t1 - t0
    stats.seconds_verify += time.perf_counter() - t1
    out: dict[str, dict] = {}
    for (key, k), res in zip(owners, results, strict=True):
        rec, cuts = meta[key]
        e = out.setdefault(key, {"key": key, "id": rec["id"], "n": cfg.n_rollouts, "cuts": cuts,
                                 "successes": [0] * len(cuts), "gen_tokens": [0] * len(cuts),
                                 "outcomes": [""] * len(cuts)})  # per sample: "1" correct, "0" not
        for s in res.samples:
            ok = next(verdicts).correct
            e["successes"][k] += int(ok)
            e["outcomes"][k] += "1" if ok else "0"
            e["gen_tokens"][k] += len(s.token_ids)
            stats.rollouts += 1
            stats.gen_tokens += len(s.token_ids)
    return list(out.values())


def scored_record(rec: dict, ch: Chunked, entry: dict, cfg: ImportanceConfig) -> dict:
    """One output line: the CoT's thoughts with accuracy-after, effectiveness, cost and importance."""
    cuts = entry["cuts"]
    tokens = [cuts[k + 1] - cuts[k] for k in range(len(ch.thoughts))]
    sc = importance(entry["successes"], entry["n"], tokens, cfg)
    thoughts = [{"text": t, "tokens": tokens[k], "acc_after": sc.acc[k + 1], "effect": sc.effect[k],
                 "cost": sc.cost[k], "importance": sc.importance[k]} for k, t in enumerate(ch.thoughts)]
    out = {"id": rec["id"], "problem": rec["problem"], "answer": rec["answer"], "solution": rec.get("solution"),
           "head": ch.head, "tail": ch.tail, "method": ch.method, "n": entry["n"], "acc0": sc.acc[0],
           "successes": entry["successes"], "thoughts": thoughts}
    if rec.get("teacher"):
        out["teacher"] = rec["teacher"]
    return out


# --------------------------------------------------------------------------------------------------- stage


def load_chunked(path: Path, limit: int | None = None) -> list[tuple[dict, Chunked]]:
    if not path.exists():
        raise LongshortError(f"score: {path} does not exist; run `longshort chunk` first or set score.data")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out.append((rec, Chunked.from_json(rec)))
            except (json.JSONDecodeError, KeyError) as e:
                raise LongshortError(f"{path}:{lineno}: not a chunked CoT ({e}); regenerate it with "
                                     "`longshort chunk`") from None
            if limit is not None and len(out) >= limit:
                break
    return out
