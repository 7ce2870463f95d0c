"""The ``judge`` stage (``score.judge: pair``): the pair that judges thoughts, trained before the score stage.

The base model is SFT'd as long and short (the run's ``sft`` settings) on a cold start (the run's ``coldstart``
settings) whose long-role thoughts are chosen by ``score.pair_judge.rank_by``: at random, or by the base model's
own importance (scored first, with the run's score cache: the base-model judge's work, reused). Everything lands
in ``run_dir/judge/`` (``thoughts.jsonl`` or ``score/``, ``coldstart/``, ``sft/``); the run's own ``coldstart/``
and ``sft/`` belong to the pair the judge's scores will train.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.recipes.longshort.scoring.pair_judge import ROLES
from longshort.recipes.longshort.scoring.rollouts import load_chunked, prefix_cuts, scored_record


def _unscored(cfg, run_dir: Path, out: Path, tokenizer) -> Path:
    """The chunked CoTs as scored records with no importance (all a random ranking needs)."""
    path = out / "thoughts.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for rec, ch in load_chunked(rd.resolve(run_dir, cfg.score.data, rd.THOUGHTS), cfg.score.limit):
            _, cuts = prefix_cuts(tokenizer, ch)
            entry = {"n": 1, "cuts": cuts, "successes": [0] * len(cuts)}
            f.write(json.dumps(scored_record(rec, ch, entry, cfg.score.importance), ensure_ascii=False) + "\n")
    return path


def _base_scored(cfg, run_dir: Path, out: Path, verifier) -> Path:
    """The chunked CoTs scored by the base model's continuations, into ``judge/score/`` (the run's cache)."""
    from longshort.recipes.longshort.scoring.score_stage import run_score

    base = replace(cfg.score, judge="base", data=str(rd.resolve(run_dir, cfg.score.data, rd.THOUGHTS)),
                   cache_dir=str(rd.resolve(run_dir, cfg.score.cache_dir, rd.SCORE_CACHE)),
                   model=str(rd.resolve(run_dir, cfg.score.model, rd.BASE_MODEL)), report=False)
    return run_score(base, out, None, verifier).path


def train_judge_pair(cfg, run_dir: Path, tracker=None, verifier=None) -> Path:
    """Train ``run_dir/judge/sft/{long,short}/model``; returns ``judge/sft``."""
    from transformers import AutoTokenizer

    from longshort.recipes.longshort.coldstart.dialogues import run_coldstart
    from longshort.recipes.longshort.pair_sft import run_pair_sft

    run_dir = Path(run_dir)
    out = run_dir / rd.JUDGE
    out.mkdir(parents=True, exist_ok=True)
    starts = {r: rd.resolve(run_dir, getattr(cfg.sft, f"{r}_model"), rd.BASE_MODEL) for r in ROLES}
    judge = cfg.score.pair_judge
    if judge.rank_by == "importance":
        data = _base_scored(cfg, run_dir, out, verifier)
    else:
        data = _unscored(cfg, run_dir, out, AutoTokenizer.from_pretrained(str(starts["long"])))
    coldstart = replace(cfg.coldstart, rank_by=judge.rank_by, rank_seed=judge.rank_seed, data=str(data),
                        tokenizer=str(starts["long"]))
    run_coldstart(coldstart, out, None, verifier)
    sft = replace(cfg.sft, data=None, long_model=str(starts["long"]), short_model=str(starts["short"]),
                  run_eval=False)
    # Its losses stay in judge/sft/*/ (one step counter per tracked run); it trains with the sft section's settings.
    run_pair_sft(sft, out, None, verifier)
    if tracker is not None:
        summary = json.loads((out / "coldstart/summary.json").read_text())
        tracker.log({f"judge/coldstart_{k}": v for k, v in summary.items() if isinstance(v, (int, float))}, step=0)
    return run_dir / rd.JUDGE_PAIR
