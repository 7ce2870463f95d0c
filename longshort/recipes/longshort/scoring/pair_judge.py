"""Importance to the pair (``score.judge: pair``): a thought is worth what it adds to an SFT'd pair's dialogues.

The base model's own continuations barely tell the steps a *pair* needs from the ones it can skip (on the
embedded default: AUC 0.60 against the teacher's tags, and the restatement the pair needs is worth ~0 to the base
model). Here, for prefix ``k`` of a CoT, the long role's first turn is the CoT's thoughts ``1..k`` verbatim (the
text a cold-start dialogue gives it when it keeps them) and the judge pair carries the dialogue on, token in,
token out, ``n_rollouts`` times through the one dialogue driver (``rl.episodes.rollout``). ``s_k`` dialogues
verify; the opening thought is always the long role's, so prefix 0 counts as prefix 1 (thought 1 scores 0). The
success counts then go through the same importance metric and cache as the base model's.

The judge pair comes from the ``judge`` stage (``judge_stage.py``) or from ``score.pair_judge.pair``. All prefixes of
a CoT share their random numbers (sample ``j``, turn ``t``), as the base-model judge's do.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from longshort.cluster.engine_pool import open_engine_pool
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.data.protocol import Message
from longshort.recipes.longshort.chunking.thoughts import Chunked
from longshort.recipes.longshort.scoring.rollouts import (
    ScoreConfig,
    ScoreStats,
    model_content_id,
    prefix_cuts,
)
from longshort.rl.episodes import EpisodeConfig, PromptItem, rollout

ROLES = ("long", "short")
_CACHE_VERSION = 1


class PairJudge:
    """Scores prefixes by the judge pair's dialogues (see the module docstring)."""

    def __init__(self, cfg: ScoreConfig, run_dir: Path, backend=None):
        from transformers import AutoTokenizer

        from longshort.data.tokenizers import check_shared_tokenizer

        self.cfg, self.backend, self.own = cfg, backend, backend is None
        pair = rd.resolve(run_dir, cfg.pair_judge.pair, rd.JUDGE_PAIR)
        self.dirs = {r: pair / r / "model" for r in ROLES}
        missing = [str(d) for d in self.dirs.values() if not (d / "config.json").exists()]
        if missing:
            raise LongshortError(f"score: the judge pair lacks {', '.join(missing)}; run `longshort judge` or set "
                                 "score.pair_judge.pair to a dir with long/model and short/model (an SFT'd pair)")
        check_shared_tokenizer(self.dirs, "score.pair_judge")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dirs["short"]))
        self.model_ids = {r: model_content_id(d) for r, d in self.dirs.items()}
        pj = cfg.pair_judge
        self.limits = EpisodeConfig(max_turn_tokens_long=pj.max_turn_tokens_long,
                                    max_turn_tokens_short=pj.max_turn_tokens_short,
                                    max_episode_tokens=pj.max_episode_tokens, temperature=pj.temperature)

    def key(self, rec: dict, chunked: Chunked) -> str:
        ident = {"v": _CACHE_VERSION, "judge": "pair", "models": self.model_ids, "problem": rec["problem"],
                 "answer": str(rec["answer"]), "cot": chunked.text, "bounds": chunked.boundaries(),
                 "n": self.cfg.n_rollouts, "seed": self.cfg.seed, "limits": vars(self.limits)}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]

    def rollout(self, batch: list[tuple[str, dict, Chunked]], verifier, stats: ScoreStats) -> list[dict]:
        """Every prefix ``k >= 1`` of each CoT in ``batch``, ``n_rollouts`` dialogues each: their cache entries."""
        if self.backend is None:
            # the roles take turns: each role's actors reserve half their threads, so both pools fit in the
            # CPUs one pool would take
            self.backend = {r: open_engine_pool(self.cfg.engines, d, self.cfg.seed, f"judge-{r}", 1 / len(ROLES))
                            for r, d in self.dirs.items()}
        prompts, owners = [], []  # owners[g]: (CoT index in batch, k) of prompt group g
        for c, (_, rec, ch) in enumerate(batch):
            for k in range(1, len(ch.thoughts) + 1):
                opening = "".join(ch.thoughts[:k]).strip()  # a blank thought fails in render, named
                prompts.append(PromptItem(f"{rec['id']}/{k}", rec["problem"], str(rec["answer"]),
                                          opening=(Message("long", opening),)))
                owners.append((c, k))
        seeds = [int(batch[c][0][:15], 16) for c, _ in owners]
        t0 = time.perf_counter()
        episodes, _ = rollout(prompts, self.backend, self.tokenizer, self.limits, group_size=self.cfg.n_rollouts,
                              logprobs=False, seed_fn=lambda e, turn: seeds[e.group] + 1_000_003 * e.sample + turn)
        t1 = time.perf_counter()
        done = [e for e in episodes if e.finished]
        verdicts = verifier.judge_many([e.answer_text for e in done], [str(e.answer) for e in done])
        correct = {id(e): v.correct for e, v in zip(done, verdicts, strict=True)}
        stats.seconds_generate += t1 - t0
        stats.seconds_verify += time.perf_counter() - t1
        entries = []
        for key, rec, ch in batch:
            _, cuts = prefix_cuts(self.tokenizer, ch)
            entries.append({"key": key, "id": rec["id"], "n": self.cfg.n_rollouts, "cuts": cuts, "judge": "pair",
                            "successes": [0] * len(cuts), "gen_tokens": [0] * len(cuts)})
        for e in episodes:
            c, k = owners[e.group]
            entries[c]["successes"][k] += int(correct.get(id(e), False))
            entries[c]["gen_tokens"][k] += e.tokens()
            stats.rollouts += 1
            stats.gen_tokens += e.tokens()
        for e in entries:  # the opening thought is always the long role's: prefix 0 is prefix 1
            e["successes"][0], e["gen_tokens"][0] = e["successes"][1], 0
        return entries

    def close(self) -> None:
        if self.own and self.backend is not None:
            for pool in self.backend.values():
                pool.close()
