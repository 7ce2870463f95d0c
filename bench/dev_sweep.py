"""Re-check shipped settings on the dev split: each variant's stages rerun from a finished run, scored by the stages'
own dev evals (never the test split).

    python bench/dev_sweep.py RUN_DIR [--until sft|rl] [--out DIR] "coldstart.ratio=0.1" "sft.long.epochs=4 sft.short.epochs=4"

Each quoted argument is one variant (its overrides together). The variant's run directory starts as a copy of
RUN_DIR's stage folders; ``longshort run`` with RUN_DIR's config, the overrides and ``pipeline.stages`` ending at
``--until`` then reruns exactly the stages the overrides change (their fingerprints) and skips the rest, so the eval
and export stages (the test split) never run. Reported per variant: the pair SFT's dev eval (``sft/eval.json``: pair
against base on the dev problems) and, with ``--until rl``, RL's last progress eval (``rl/eval.json``, dev), beside
RUN_DIR's own (the shipped setting) and, with ``--spread RUN ...``, the shipped setting's runs at other seeds (e.g.
``bench/seed_spread.py``'s ``pair-1``, ``pair-2``). Writes ``OUT/results.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ORDER = ("bootstrap", "chunk", "judge", "score", "coldstart", "sft", "rl")


def dev_numbers(run: Path) -> dict:
    out = {}
    sft = run / "sft" / "eval.json"
    if sft.exists():
        e = json.loads(sft.read_text())
        out |= {"sft_pair": e["pair_accuracy"], "sft_tokens": e["pair_tokens"], "sft_ratio": e["token_ratio"],
                "sft_base": e["base_accuracy"], "sft_n": e["problems"]}
    rl = run / "rl" / "eval.json"
    if rl.exists():
        e = json.loads(rl.read_text())
        out |= {"rl_pair": e["accuracy"], "rl_tokens": e["tokens"], "rl_n": e["problems"],
                "rl_minus_base": e.get("accuracy_minus_base"), "rl_ratio": e.get("token_ratio_vs_base")}
    return out


def run_variant(src: Path, overrides: list[str], out: Path, until: str) -> dict:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(o.replace("=", "-") for o in overrides)).strip("-")[:150]
    dst = out / name
    if not (dst / "done.json").exists():
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        stages = ORDER[: ORDER.index(until) + 1]
        for stage in stages:  # the stages the overrides leave alone are skipped as complete
            if (src / stage).is_dir():
                shutil.copytree(src / stage, dst / stage, symlinks=True)
        t0 = time.perf_counter()
        with (out / f"{name}.log").open("w") as log:
            done = subprocess.run([sys.executable, "-m", "longshort", "run", str(src / "config.yaml"),
                                   f"output_dir={out}", f"name={name}", "tracking.mode=disabled",
                                   f"pipeline.stages=[{','.join(stages)}]", *overrides],
                                  stdout=log, stderr=subprocess.STDOUT)
        if done.returncode:
            raise SystemExit(f"variant {overrides} failed (exit {done.returncode}); its output: {out / (name + '.log')}")
        ran = [s for s, rec in json.loads((dst / "pipeline.json").read_text())["stages"].items()
               if rec["action"] == "ran"]
        (dst / "done.json").write_text(json.dumps({"seconds": time.perf_counter() - t0, "ran": ran}) + "\n")
    return {"variant": " ".join(overrides), **json.loads((dst / "done.json").read_text()), **dev_numbers(dst)}


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("variants", nargs="+", help="one quoted argument per variant: its dotted overrides")
    p.add_argument("--until", choices=("sft", "rl"), default="sft")
    p.add_argument("--spread", type=Path, nargs="*", default=[], help="the shipped setting at other seeds")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    out = a.out or a.run.parent / f"{a.run.name}-dev"
    out.mkdir(parents=True, exist_ok=True)
    shipped = [{"variant": f"shipped ({r.name})", **dev_numbers(r)} for r in [a.run, *a.spread]]
    rows = [run_variant(a.run, v.split(), out, a.until) for v in a.variants]
    (out / "results.json").write_text(json.dumps({"until": a.until, "shipped": shipped, "variants": rows},
                                                 indent=2) + "\n")
    print("| variant | SFT'd pair, dev | tokens (vs base) | RL'd pair, dev | tokens (vs base) | stages rerun, min |")
    print("|---|---:|---:|---:|---:|---|")
    for r in shipped + rows:
        rl = f"{pct(r.get('rl_pair'))} | {r['rl_tokens']:.0f} ({pct(r.get('rl_ratio'))}%)" if "rl_pair" in r else " | "
        ran = f"{', '.join(r['ran'])}, {r['seconds'] / 60:.1f}" if "ran" in r else ""
        print(f"| {r['variant']} | {pct(r.get('sft_pair'))} | {r.get('sft_tokens', 0):.0f} ({pct(r.get('sft_ratio'))}%) "
              f"| {rl} | {ran} |")
    if len(shipped) > 1:
        for key in ("sft_pair", "rl_pair"):
            vals = [100 * s[key] for s in shipped if key in s]
            if len(vals) > 1:
                print(f"\nshipped {key}: {statistics.fmean(vals):.1f} ± {statistics.stdev(vals):.1f} over "
                      f"{len(vals)} seeds")


if __name__ == "__main__":
    main()
