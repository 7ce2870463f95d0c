"""How the chunker's rules split long CoTs: thoughts per CoT and their lengths, ``cues`` vs ``moves`` side by side.

Default input: the R1-style CoTs in ``coldstart_data/r1_style/cots.jsonl`` (written for this project). Any problem
file whose records hold a long CoT works (``--file``, ``--preset``, e.g. an OpenR1-Math Parquet file with
``--preset openr1``).

    python bench/chunk_rules.py [--file PATH] [--preset NAME] [--limit N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from longshort.data.problems import ProblemSource, load_problems  # noqa: E402
from longshort.recipes.longshort.chunking.config import ChunkConfig  # noqa: E402
from longshort.recipes.longshort.chunking.rules import cues_of  # noqa: E402
from longshort.recipes.longshort.chunking.thoughts import chunk_many, split_head_tail, split_steps  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=str(ROOT / "coldstart_data" / "r1_style" / "cots.jsonl"))
    p.add_argument("--preset", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--short", type=int, default=60, help="a thought under this many characters counts as short")
    args = p.parse_args()
    problems, _ = load_problems(ProblemSource(path=args.file, preset=args.preset, limit=args.limit))
    cots = [q.long_cot for q in problems if q.long_cot]
    steps = sum(len(split_steps(split_head_tail(c)[1])) for c in cots)
    print(f"{len(cots)} CoTs from {args.file}: {steps} paragraphs (steps), "
          f"{statistics.mean(len(c) for c in cots):.0f} characters per CoT\n")
    print(f"{'rules':<7}{'thoughts':>9}{'per CoT':>9}{'median ch':>11}{'p10 ch':>8}{'p90 ch':>8}"
          f"{'short':>7}{'open w/ conclusion':>20}{'ms':>7}")
    conclusion = cues_of(ChunkConfig()).conclusion
    for rules in ("cues", "moves"):
        cfg = ChunkConfig(rules=rules)
        t0 = time.perf_counter()
        chunked = chunk_many(cots, cfg)
        ms = (time.perf_counter() - t0) * 1000
        thoughts = [t.strip() for c in chunked for t in c.thoughts]
        lengths = sorted(len(t) for t in thoughts)
        deciles = statistics.quantiles(lengths, n=10) if len(lengths) > 1 else lengths * 9
        opened = sum(bool(conclusion.match(t)) for t in thoughts)
        print(f"{rules:<7}{len(thoughts):>9}{len(thoughts) / len(cots):>9.1f}{statistics.median(lengths):>11.0f}"
              f"{deciles[0]:>8.0f}{deciles[-1]:>8.0f}{sum(n < args.short for n in lengths):>7}{opened:>20}{ms:>7.1f}")


if __name__ == "__main__":
    main()
