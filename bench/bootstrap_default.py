"""Bootstrap on the default tiny config: wall time per phase, throughput and held-out quality.

Targets (issue 3): total <= 10 minutes on 2 CPU cores; held-out accuracy >= 60%; answers in the teacher's
style and length (mean tokens per answer close to the teacher's). Runs exactly what ``longshort bootstrap``
runs (``run_bootstrap`` on ``ray_configs/tiny.yaml``'s bootstrap section), with the jsonl tracker only.

    python bench/bootstrap_default.py [--out /tmp/bench_bootstrap] [dotted run-config overrides, e.g. bootstrap.sft.num_ranks=1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

TARGET_S, TARGET_ACC = 600.0, 0.60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/bench_bootstrap")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "ray_configs" / "tiny.yaml"),
                    help="run config whose bootstrap section is measured (default: the README's tiny config)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from longshort.pipeline.run_config import load_run_config
    from longshort.toy.bootstrap import run_bootstrap
    from longshort.tracking.tracker import Tracker, TrackingConfig

    cfg = load_run_config(args.config, args.overrides).bootstrap  # the run config + dotted overrides (bootstrap.*)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with Tracker(TrackingConfig(backends=["jsonl"]), out) as tracker:
        res = run_bootstrap(cfg, out / "bootstrap", tracker)
    wall = time.perf_counter() - t0
    m, t = res.metrics, res.timings
    rows = [
        ("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY")),
        ("cores / load avg at start / at end", f"{os.cpu_count()} / {load0:.1f} / {os.getloadavg()[0]:.1f}"),
        ("model parameters", f"{res.n_params / 1e6:.2f}M ({cfg.model.arch}, {cfg.model.layers} layers, "
                             f"hidden {cfg.model.hidden})"),
        ("train examples / SFT steps", f"{m['sft_examples']} / {m['sft_steps']}"),
        ("SFT tokens (all / trained)", f"{m['sft_tokens']} / {m['sft_trained_tokens']}"),
        ("data + tokenizer + init (s)", f"{t['data_s'] + t['build_s']:.1f}"),
        ("SFT wall (s)", f"{t['sft_s']:.1f}"),
        ("SFT tokens/s", f"{m['sft_tokens_per_s']:.0f}"),
        ("eval wall (s)", f"{t['eval_s']:.1f}"),
        ("total wall (s)", f"{wall:.1f}   target <= {TARGET_S:.0f}: {'PASS' if wall <= TARGET_S else 'FAIL'}"),
        ("held-out accuracy", f"{m['accuracy']:.3f} (n={m['n']})   target >= {TARGET_ACC}: "
                              f"{'PASS' if m['accuracy'] >= TARGET_ACC else 'FAIL'}"),
        ("accuracy by steps", ", ".join(f"{k}: {v:.2f}" for k, v in m["accuracy_by_steps"].items())),
        ("well-formed share", f"{m['well_formed']:.3f}"),
        ("mean tokens per answer / teacher", f"{m['mean_tokens']:.1f} / {m['teacher_mean_tokens']:.1f}"),
        ("unfinished (hit max_new_tokens)", f"{m['unfinished']:.3f}"),
        ("answers with a self-correction", f"{m['self_corrections']:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nbootstrap on the default tiny config")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
