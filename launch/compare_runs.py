"""Compare two runs' metrics.jsonl value by value, leaving out timings: the check that a change of code left every
result the same (same seeds, same machine).

    python launch/compare_runs.py runs/before/metrics.jsonl runs/after/metrics.jsonl

Exits 1 when a row count or any non-timing number differs, printing the first differences.
"""

from __future__ import annotations

import json
import math
import sys


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _timing(key: str) -> bool:
    leaf = key.lower().rsplit("/", 1)[-1]
    return (key == "time" or key.startswith(("time/", "throughput/")) or leaf.endswith("_s") or "second" in leaf
            or "per_s" in leaf or "time" in leaf)


def compare(a_path: str, b_path: str) -> tuple[int, int, int, list[str]]:
    """(values compared, timing values left out, values that differ, the first differences)."""
    rows = [[_flat(json.loads(line)) for line in open(p, encoding="utf-8") if line.strip()] for p in (a_path, b_path)]
    n = skipped = 0
    diffs: list[str] = []
    if len(rows[0]) != len(rows[1]):
        diffs.append(f"row count {len(rows[0])} vs {len(rows[1])}")
    for x, y in zip(*rows, strict=False):
        for k, v in x.items():
            if not isinstance(v, int | float) or isinstance(v, bool):
                continue
            if _timing(k):
                skipped += 1
                continue
            n += 1
            w = y.get(k)
            same = w is not None and (v == w or (isinstance(v, float) and math.isnan(v) and math.isnan(w)))
            if not same:
                diffs.append(f"step {x.get('step')}: {k} {v!r} vs {w!r}")
    return n, skipped, len(diffs), diffs


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    n, skipped, bad, diffs = compare(*argv)
    print(f"compared {n} numeric values (left out {skipped} timing values): {bad} differ")
    for d in diffs[:20]:
        print("  " + d)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
