"""Does the importance scorer's choice matter? The same cold start built four ways, each pair SFT'd and evaluated.

    python bench/scorer_ablation.py RUN_DIR [--config RUN_DIR/config.yaml] [--eval 500] [--random-seeds 0 1 2]

RUN_DIR is a finished run through ``longshort score`` (e.g. ``runs/tiny`` after ``longshort run``). For each arm the
long role keeps the same number of each CoT's thoughts (``coldstart.ratio`` of the run's config, or with ``select:
threshold`` as many as the threshold keeps by importance), chosen

* by the scorer's importance (the method),
* at random, once per seed (the floor a scorer must beat),
* by the synthetic teacher's tags (correction > essential > error > redundant),

then ``longshort coldstart`` and ``longshort sft`` run with the run's own config in ``RUN_DIR-ablation/<arm>`` (the
bootstrap, chunk and score outputs are linked, not copied) and the SFT'd pair is evaluated against the base model
on ``--eval`` problems of the pair SFT's eval source (``sft.eval.source``: the dev split, 500 problems, by default;
the numbers in ``docs/importance.md`` were measured when it read the test split). Prints a table (accuracy ± one standard error over problems) and writes
``RUN_DIR-ablation/results.json``. Each arm costs one pair SFT plus one evaluation (about 2 minutes on 2 CPU cores for
the tiny default; 11 minutes for the five arms).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

LINKED = ("bootstrap", "chunk", "score")


def arms(random_seeds: list[int]) -> list[tuple[str, list[str]]]:
    return [("importance", ["coldstart.rank_by=importance"]),
            *[(f"random-{s}", ["coldstart.rank_by=random", f"coldstart.rank_seed={s}"]) for s in random_seeds],
            ("tags", ["coldstart.rank_by=tags"])]


def se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n - 1, 1))


def run_arm(name: str, overrides: list[str], run: Path, config: Path, out: Path, n_eval: int) -> dict:
    arm = out / name
    arm.mkdir(parents=True, exist_ok=True)
    for stage in LINKED:
        link = arm / stage
        if not link.exists():
            link.symlink_to((run / stage).resolve(), target_is_directory=True)
    common = [str(config), f"output_dir={out}", f"name={name}", "tracking.mode=disabled",
              f"sft.eval.source.limit={n_eval}", *overrides]
    t0 = time.perf_counter()
    for stage in ("coldstart", "sft"):
        with (out / f"{name}.log").open("a") as log:
            subprocess.run([sys.executable, "-m", "longshort", stage, *common], check=True, stdout=log,
                           stderr=subprocess.STDOUT)
    cold = json.loads((arm / "coldstart" / "summary.json").read_text())
    ev = json.loads((arm / "sft" / "eval.json").read_text())
    return {"arm": name, "overrides": overrides, "dialogues": cold["kept"], "cold_token_ratio": cold["token_ratio"],
            "seconds": time.perf_counter() - t0, **ev}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--config", help="the run's config (default: RUN_DIR/config.yaml, as `longshort run` saved it)")
    ap.add_argument("--eval", type=int, default=500, help="problems per evaluation (of sft.eval.source: dev)")
    ap.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    run = Path(args.run_dir).resolve()
    config = Path(args.config) if args.config else run / "config.yaml"
    missing = [s for s in LINKED if not (run / s).is_dir()]
    if missing or not config.exists():
        sys.exit(f"scorer_ablation: {run} lacks {missing or config}; run `longshort run` (or through `longshort "
                 "score`) first, and pass --config if the run's config.yaml is elsewhere")
    out = run.with_name(run.name + "-ablation")
    rows = [run_arm(name, ov, run, config, out, args.eval) for name, ov in arms(args.random_seeds)]
    (out / "results.json").write_text(json.dumps(rows, indent=2))

    n = rows[0]["problems"]
    print(f"\nscorer ablation on {run} ({n} held-out problems, greedy; base {100 * rows[0]['base_accuracy']:.1f}% at "
          f"{rows[0]['base_tokens']:.0f} tokens)\n")
    print("| arm | dialogues | pair accuracy (%) | pair tokens | tokens vs base | SFT+eval (s) |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {r['dialogues']} | {100 * r['pair_accuracy']:.1f} ± {100 * se(r['pair_accuracy'], n):.1f}"
              f" | {r['pair_tokens']:.1f} | {r['token_ratio']:.2f} | {r['seconds']:.0f} |")
    rand = [r["pair_accuracy"] for r in rows if r["arm"].startswith("random-")]
    imp = rows[0]["pair_accuracy"]
    if rand:
        mean = sum(rand) / len(rand)
        spread = math.sqrt(sum((x - mean) ** 2 for x in rand) / max(len(rand) - 1, 1))
        print(f"\nimportance - random: {100 * (imp - mean):+.1f} points (random: mean {100 * mean:.1f}%, std over "
              f"{len(rand)} seeds {100 * spread:.1f}); target >= +5")


if __name__ == "__main__":
    main()
