"""Per-call cost of run tracking, so logging never shows up in a training step's time.

    python bench/bench_tracking.py [--calls 2000] [--keys 20]

Prints one row per backend set: microseconds per `Tracker.log` call (``--keys`` metrics each), per 8-row
`log_table`, and the cost of masking secrets in one log line. W&B runs offline in a temporary directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from longshort.core.logs import close_log_file, setup_logging
from longshort.core.redact import scrub_text
from longshort.tracking.tracker import Tracker, TrackingConfig


def bench(backends: list[str], calls: int, keys: int, root: Path) -> tuple[float, float, float]:
    cfg = TrackingConfig(backends=backends, mode="offline")
    metrics = {f"group{i % 4}/metric{i}": 0.1 * i for i in range(keys)}
    rows = [[f"problem {i}", "long thought " * 20, "short answer", 0.5] for i in range(8)]
    t0 = time.perf_counter()
    tracker = Tracker(cfg, root / "_".join(backends), {"bench": True})
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    for step in range(calls):
        tracker.log(metrics, step=step)
    t_log = (time.perf_counter() - t0) / calls
    t0 = time.perf_counter()
    for step in range(calls, calls + 20):
        tracker.log_table("samples", ["problem", "long", "short", "reward"], rows, step=step)
    t_table = (time.perf_counter() - t0) / 20
    tracker.finish()
    return t_init, t_log, t_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.update(WANDB_SILENT="true", WANDB_DIR=str(root / "wandb"), WANDB_CACHE_DIR=str(root / "cache"))
        os.environ.update(WANDB_DATA_DIR=str(root / "data"), WANDB_CONFIG_DIR=str(root / "cfg"))
        setup_logging(root, "WARNING")  # console lines are throttled anyway; keep the table readable
        print(f"{'backends':<24}{'init s':>8}{'log us/call':>13}{'table ms/call':>15}")
        for backends in (["jsonl"], ["console", "jsonl"], ["console", "jsonl", "wandb"]):
            t_init, t_log, t_table = bench(backends, args.calls, args.keys, root)
            print(f"{'+'.join(backends):<24}{t_init:>8.2f}{t_log * 1e6:>13.1f}{t_table * 1e3:>15.2f}")
        line = "step 12 | loss 0.532 | reward 0.41 | long/len 312 | short/len 40 | lr 1.000e-05 | kl 0.012"
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            scrub_text(line)
        print(f"scrub_text on one log line: {(time.perf_counter() - t0) / n * 1e6:.1f} us")
        close_log_file()
        logging.shutdown()


if __name__ == "__main__":
    main()
