"""Thought analysis + cold start on the tiny default: time each stage and print the issue's targets.

    python bench/analysis_pipeline.py RUN_DIR [--cots 200] [--rollouts 8] [--threads 2] [--fresh]

RUN_DIR must hold a bootstrapped base model (``longshort bootstrap`` leaves ``RUN_DIR/bootstrap``). Runs
chunk -> score -> coldstart -> SFT of the pair -> pair-vs-base evaluation, and prints a table:

* importance ROC AUC, essential+correction vs redundant thoughts (target >= 0.8),
* wall time of chunk + score + coldstart + SFT of both models (target <= 15 min on 2 CPU cores),
* the pair's accuracy relative to the base model's (target >= 90%) and its tokens (target <= 50%).

``--fresh`` deletes earlier outputs of these stages (including the rollout cache) so the timing is a cold run.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--cots", type=int, default=None, help="CoTs to chunk and score (default: the stage default)")
    ap.add_argument("--rollouts", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval", type=int, default=None, help="held-out problems for the pair evaluation")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from longshort.recipes.longshort.chunking.config import ChunkConfig
    from longshort.recipes.longshort.chunking.thoughts import run_chunk
    from longshort.recipes.longshort.coldstart.dialogues import ColdstartConfig, run_coldstart
    from longshort.recipes.longshort.pair_sft import PairSFTConfig, run_pair_eval, run_pair_sft
    from longshort.recipes.longshort.scoring.rollouts import ScoreConfig
    from longshort.recipes.longshort.scoring.score_stage import run_score

    run = Path(args.run_dir)
    if args.fresh:
        for stage in ("chunk", "score", "coldstart", "sft"):
            shutil.rmtree(run / stage, ignore_errors=True)
    chunk_cfg, score_cfg, cold_cfg, sft_cfg = ChunkConfig(), ScoreConfig(), ColdstartConfig(), PairSFTConfig()
    if args.cots:
        chunk_cfg.source.limit = args.cots
    if args.rollouts:
        score_cfg.n_rollouts = args.rollouts
    if args.eval:
        sft_cfg.eval.source.limit = args.eval
    times = {}
    t = time.perf_counter()
    run_chunk(chunk_cfg, run)
    times["chunk"] = time.perf_counter() - t
    t = time.perf_counter()
    score = run_score(score_cfg, run)
    times["score"] = time.perf_counter() - t
    t = time.perf_counter()
    cold = run_coldstart(cold_cfg, run)
    times["coldstart"] = time.perf_counter() - t
    sft_cfg.run_eval = False
    t = time.perf_counter()
    run_pair_sft(sft_cfg, run)
    times["sft_pair"] = time.perf_counter() - t
    total = sum(times.values())
    ev = run_pair_eval(sft_cfg, run)

    s = score.summary
    rows = [
        ("CoTs scored / rollouts", f"{s['cots']} / {s['rollouts']} ({score_cfg.n_rollouts} per prefix)"),
        ("importance AUC (ess+corr vs redundant)", f"{s.get('auc')}  [target >= 0.8]"),
        ("  AUC effectiveness only / cheapness only", f"{s.get('auc_effect_only')} / {s.get('auc_cost_only')}"),
        ("  mean importance by tag", ", ".join(f"{k[5:]} {v:+.3f}" for k, v in s.items() if k.startswith("mean_")
                                               and k != "mean_importance")),
        ("dialogues kept / CoTs", f"{cold.summary['kept']} / {cold.summary['cots']} "
                                  f"(tokens {cold.summary['token_ratio']:.2f} of the CoTs)"),
        *[(f"time {k}", f"{v:.0f} s") for k, v in times.items()],
        ("time chunk+score+coldstart+sft", f"{total:.0f} s = {total / 60:.1f} min  [target <= 15 min]"),
        ("base accuracy / tokens", f"{ev['base_accuracy']:.3f} / {ev['base_tokens']:.1f}"),
        ("pair accuracy / tokens", f"{ev['pair_accuracy']:.3f} / {ev['pair_tokens']:.1f}"),
        ("pair vs base: accuracy kept / token ratio",
         f"{(ev['accuracy_kept'] or 0):.2f} [>= 0.9] / {ev['token_ratio']:.2f} [<= 0.5]"),
        ("pair turns / finished", f"{ev['pair_turns']:.2f} / {ev['pair_finished']:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    (run / "bench_analysis.json").write_text(json.dumps({"times": times, "score": s, "coldstart": cold.summary,
                                                         "eval": ev}, indent=2, default=str))


if __name__ == "__main__":
    main()
