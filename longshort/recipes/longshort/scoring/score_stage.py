"""The score stage (``longshort score``): every chunked CoT's thoughts scored by the configured judge, cached and
resumable, into ``run_dir/score/`` (``scores.jsonl``, ``summary.json``, ``report.html``)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.recipes.longshort.scoring.rollouts import (
    BaseModelJudge,
    RolloutCache,
    ScoreConfig,
    ScoreStats,
    load_chunked,
    rollout_cots,
    scored_record,
)
from longshort.recipes.longshort.scoring.summary import summarize

log = logging.getLogger("longshort")


def _pair_judge():
    from longshort.recipes.longshort.scoring.pair_judge import PairJudge

    return PairJudge


JUDGES = {"base": lambda: BaseModelJudge, "pair": _pair_judge}  # score.judge -> (cfg, run_dir, backend) -> judge


@dataclass
class ScoreResult:
    path: Path  # run_dir/score/scores.jsonl
    summary: dict
    stats: ScoreStats


def run_score(cfg: ScoreConfig, run_dir: str | Path, tracker=None, verifier=None, backend=None) -> ScoreResult:
    """Score every chunked CoT into ``run_dir/score/scores.jsonl`` (+ ``summary.json``, ``report.html``).

    ``backend`` overrides ``cfg.engines``: a callable ``list[GenerationRequest] -> list[GenerationResult]`` for the
    base-model judge, a mapping role -> such a callable for the pair judge.
    """
    from longshort.data.verify import shared_verifier
    from longshort.recipes.longshort.scoring.report import write_report

    try:
        cfg.importance.validate()
    except ValueError as e:
        raise LongshortError(f"score config: key 'score.importance.{e}") from None
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    data = load_chunked(rd.resolve(run_dir, cfg.data, rd.THOUGHTS), cfg.limit)
    out_dir = (run_dir / rd.SCORES).parent
    cache = RolloutCache(rd.resolve(run_dir, cfg.cache_dir, rd.SCORE_CACHE) / "rollouts.jsonl")
    judge = JUDGES[cfg.judge]()(cfg, run_dir, backend)
    items = [(judge.key(rec, ch), rec, ch) for rec, ch in data]
    stats = ScoreStats(cots=len(items))
    try:
        rollout_cots(items, judge, verifier or shared_verifier(), cfg, cache, stats)
    finally:
        judge.close()
    scored = [scored_record(rec, ch, cache.entries[key], cfg.importance) for key, rec, ch in items]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "scores.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored), encoding="utf-8")
    tmp.replace(path)
    summary = {k: (None if isinstance(v, float) and math.isnan(v) else v)  # strict JSON: no NaN
               for k, v in summarize(scored, stats, time.perf_counter() - t_start).items()}
    summary["config"] = asdict(cfg)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if cfg.report:
        write_report(scored, summary, out_dir / "report.html", max_cots=cfg.report_cots)
    log.info("score: %d CoTs (%d from cache), %d rollouts in %.0fs; AUC essential+correction vs redundant: %s",
             stats.cots, stats.cached, stats.rollouts, summary["seconds"], summary.get("auc"))
    if tracker is not None:
        tracker.log({f"score/{k}": v for k, v in summary.items() if isinstance(v, (int, float))}, step=0)
    return ScoreResult(path, summary, stats)
