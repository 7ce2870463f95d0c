"""Which judge should score thoughts? The run's CoTs scored by the base model and by the pair, each cold start SFT'd.

    python bench/judge_ablation.py RUN_DIR [--config RUN_DIR/config.yaml] [--eval 500]

RUN_DIR is a finished run through ``longshort sft`` (``runs/tiny`` after ``longshort run``). For each judge
(``score.judge``: ``base``, the base model's own continuations of each CoT prefix, the paper's measure; ``pair``, a
pair SFT'd on randomly chosen thoughts carrying the dialogue on from each prefix) in ``RUN_DIR-judges/<judge>``:
the bootstrap and chunk outputs are linked, the judge pair is the run's own (``RUN_DIR/judge``) or trained with
``longshort judge``, and ``longshort score`` runs on the run's score cache, so the judge the run used costs nothing
again. Then each judge's cold start is built at the run's keep ratio, the pair SFT'd from the base model and
evaluated against it on ``--eval`` dev problems (``scorer_ablation.run_arm``: the pair SFT's eval source). Prints a table and writes
``RUN_DIR-judges/results.json``. About 8.5 minutes of base-model scoring on 2 CPU cores (or 2 + 3.5 for the judge
pair and its scoring) plus 2 minutes per arm for the tiny default.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scorer_ablation import run_arm, se  # noqa: E402

JUDGES = ("base", "pair")


def longshort(stage: str, config: Path, out: Path, name: str, overrides: list[str]) -> float:
    """Run one stage command into ``out/name`` (its log beside it); seconds taken."""
    t0 = time.perf_counter()
    with (out / f"{name}.log").open("a") as log:
        subprocess.run([sys.executable, "-m", "longshort", stage, str(config), f"output_dir={out}", f"name={name}",
                        "tracking.mode=disabled", *overrides], check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def score_with(judge: str, run: Path, config: Path, out: Path) -> dict:
    """``RUN_DIR-judges/<judge>``: the run's CoTs scored by ``judge``; its score summary and the judge's seconds."""
    d = out / judge
    d.mkdir(parents=True, exist_ok=True)
    for stage in ("bootstrap", "chunk") + (("judge",) if judge == "pair" and (run / "judge/sft").is_dir() else ()):
        if not (d / stage).exists():
            (d / stage).symlink_to((run / stage).resolve(), target_is_directory=True)
    common = [f"score.judge={judge}", f"score.cache_dir={(run / 'score/cache').resolve()}"]
    seconds = longshort("judge", config, out, judge, common) if judge == "pair" and not (d / "judge").exists() else 0.0
    seconds += longshort("score", config, out, judge, common)
    summary = json.loads((d / "score/summary.json").read_text())
    if summary["cached_cots"] == summary["cots"]:  # the run's own judge: its time is the run's
        summary = json.loads((run / "score/summary.json").read_text())
        seconds = summary["seconds"] + _judge_stage_seconds(run)
    return {**summary, "judge_seconds": seconds}


def _judge_stage_seconds(run: Path) -> float:
    state = run / "pipeline.json"
    if not state.exists():
        return 0.0
    return float(json.loads(state.read_text())["stages"].get("judge", {}).get("seconds") or 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--config", help="the run's config (default: RUN_DIR/config.yaml, as `longshort run` saved it)")
    ap.add_argument("--eval", type=int, default=500, help="problems per evaluation (of sft.eval.source: dev)")
    args = ap.parse_args()
    run = Path(args.run_dir).resolve()
    config = Path(args.config).resolve() if args.config else run / "config.yaml"
    missing = [str(p) for p in (run / "bootstrap/base_model", run / "chunk", run / "score/cache", config)
               if not p.exists()]
    if missing:
        sys.exit(f"judge_ablation: {run} lacks {missing}; run `longshort run` (or through `longshort score`) first")
    out = run.with_name(run.name + "-judges")
    out.mkdir(exist_ok=True)
    rows = []
    for judge in JUDGES:
        summary = score_with(judge, run, config, out)
        arm = run_arm(judge, ["coldstart.rank_by=importance"], out / judge, config, out / "arms", args.eval)
        rows.append({**arm, "judge": judge, "judge_seconds": summary["judge_seconds"], "auc": summary.get("auc"),
                     "gen_tokens": summary["gen_tokens"]})
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    n = rows[0]["problems"]
    print(f"\njudges on {run} ({n} dev problems, greedy; base {100 * rows[0]['base_accuracy']:.1f}% at "
          f"{rows[0]['base_tokens']:.0f} tokens)\n")
    print("| judge | scoring (s) | generated tokens | AUC vs tags | SFT'd pair accuracy (%) | pair tokens | tokens vs base |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        auc = f"{r['auc']:.3f}" if r["auc"] is not None else "-"
        print(f"| {r['judge']} | {r['judge_seconds']:.0f} | {r['gen_tokens']} | {auc} | "
              f"{100 * r['pair_accuracy']:.1f} ± {100 * se(r['pair_accuracy'], n):.1f} | {r['pair_tokens']:.1f} | "
              f"{r['token_ratio']:.2f} |")


if __name__ == "__main__":
    main()
