"""Answer checking on MATH-500: acceptance rates and throughput of longshort.data.verify.

    python bench/verify_math500.py [--path ../shared/data/benchmarks/math500.jsonl] [--workers 1 2]

Rows: gold solutions against their own answers (should be ~100%), the same answers straight through
math-verify (no exact-string shortcut), shuffled solution/answer pairs (false accepts, should be ~0%),
and checks per second with 1..N worker processes next to math-verify called in-process.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longshort.data.problems import ProblemSource, load_problems  # noqa: E402
from longshort.data.verify import Verifier, VerifyConfig, _equivalent, extract_answer  # noqa: E402


def _timed(fn, items):
    start, lat = time.perf_counter(), []
    out = []
    for item in items:
        t = time.perf_counter()
        out.append(fn(item))
        lat.append(time.perf_counter() - t)
    return out, time.perf_counter() - start, lat


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks" / "math500.jsonl"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=str(default))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    problems, _ = load_problems(ProblemSource(path=args.path))
    answers = [extract_answer(p.solution) for p in problems]
    perm = list(range(len(problems)))
    random.Random(0).shuffle(perm)
    shuffled = [(problems[i].solution, problems[j].answer) for i, j in enumerate(perm)
                if problems[i].answer != problems[j].answer]

    rows = []
    for n in args.workers:
        with Verifier(VerifyConfig(workers=n)) as v:
            v.judge("1", "2")  # start one worker outside the timing
            t = time.perf_counter()
            own = v.judge_many([p.solution for p in problems], [p.answer for p in problems])
            t_own = time.perf_counter() - t
            t = time.perf_counter()
            false = v.judge_many([s for s, _ in shuffled], [a for _, a in shuffled])
            t_false = time.perf_counter() - t
            raw, _, lat = _timed(lambda pa: v._check(pa[0], pa[1].answer, 5.0), list(zip(answers, problems, strict=True)))
            rows.append((f"pool, {n} worker(s)", own, false, raw, t_own, t_false, lat, dict(v.counts)))

    inproc, _, lat_in = _timed(lambda pa: _equivalent(pa[0], pa[1].answer), list(zip(answers, problems, strict=True)))
    print(f"MATH-500 ({len(problems)} problems, {len(shuffled)} shuffled pairs with different gold answers)\n")
    print(f"{'checker':<22}{'gold ok':>9}{'reparsed':>10}{'false acc':>11}{'gold/s':>9}{'shuffled/s':>12}"
          f"{'p50 ms':>8}{'p95 ms':>8}  timeouts")
    for name, own, false, raw, t_own, t_false, lat, counts in rows:
        q = statistics.quantiles(lat, n=20)
        print(f"{name:<22}{sum(v.correct for v in own) / len(own):>9.1%}{sum(v.correct for v in raw) / len(raw):>10.1%}"
              f"{sum(v.correct for v in false) / len(false):>11.1%}{len(own) / t_own:>9.0f}"
              f"{len(false) / t_false:>12.1f}{q[9] * 1e3:>8.1f}{q[18] * 1e3:>8.1f}  {counts.get('timeout', 0)}")
    q = statistics.quantiles(lat_in, n=20)
    print(f"{'in-process math-verify':<22}{'':>9}{sum(inproc) / len(inproc):>10.1%}{'':>11}{'':>9}{'':>12}"
          f"{q[9] * 1e3:>8.1f}{q[18] * 1e3:>8.1f}  (no time limit)")


if __name__ == "__main__":
    main()
