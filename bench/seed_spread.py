"""The main job's results table with its seed spread: the numbers the README states, from one command.

    python bench/seed_spread.py [CONFIG] [--seeds 0 1 2] [--out runs/seed-spread] [key=value ...]

Runs, under ``--out`` (tracking off):

* ``boot-S``: the bootstrap stage (``longshort run`` with ``pipeline.stages=[bootstrap] pipeline.bootstrap=always``) with the base model's init and SFT seeded ``S`` (the task, and so the train,
  dev and test problems, stays the config's): the bootstrap's own spread;
* ``pair-S``: a copy of ``boot-<first seed>/bootstrap`` and ``longshort run`` of every later stage with the seed of
  each stage after the bootstrap set to ``S`` (scoring, cold start, the pair SFT, RL): the method's spread on one
  base model.

* ``tags-S``: ``pair-S``'s scores, the cold start ranked by the teacher's tags instead (``coldstart.rank_by=tags``,
  an oracle only the synthetic task has), the pair SFT at seed ``S``, evaluated alone (system ``tags-pair``): the
  oracle row the learned importance is measured against.

``--reuse DIR`` starts from an earlier spread's runs (its ``boot-S`` and ``pair-S`` folders copied in): stages whose
fingerprint the new config leaves unchanged (the bootstrap, the scores) are then skipped, and the results say so.
``--with RUN[:SYSTEM,...]`` adds other finished runs on the same test problems (e.g. Hawkeye's, SoftCoT's) to the
one table ``longshort compare`` makes of every run (``compare/``).

Then writes ``results.json`` and ``results.md`` (mean ± sample sd over seeds of every system's test-split accuracy
and tokens, the per-seed values, the bootstrap's spread, stage times, the stages' own dev checks) naming the commit,
the CPU, the kernel settings and the command, and prints the markdown. Finished runs are skipped when rerun, as
``longshort run`` skips finished stages. About 70 minutes on 2 CPU cores for the tiny default and three seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# every seed of a stage after the bootstrap (the data sources' own seeds only order multiple-choice options)
PAIR_SEEDS = ("score.seed", "coldstart.rank_seed", "coldstart.rewrite.seed", "sft.long.seed", "sft.short.seed",
              "rl.seed")
BOOT_SEEDS = ("bootstrap.model.seed", "bootstrap.sft.seed")
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def longshort(args: list[str], log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run([sys.executable, "-m", "longshort", *args], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"longshort {args[0]} failed (exit {done.returncode}); its output: {log}")


def stage_seconds(run: Path) -> dict[str, float]:
    """Each stage's time, from its completion record (a stage kept from ``--reuse``: the earlier run's time)."""
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    out = {}
    for name, rec in stages.items():
        done = run / name / ".complete.json"
        if rec.get("action") == "ran" or done.exists():
            out[name] = rec["seconds"] if rec.get("action") == "ran" else json.loads(done.read_text())["seconds"]
    return out


def stage_checks(run: Path) -> dict[str, float]:
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    return {c["setting"]: c["value"] for rec in stages.values() for c in rec.get("checks", [])}


def eval_rows(run: Path) -> dict[str, dict]:
    with (run / "eval" / "table.csv").open() as f:
        return {row["system"]: row for row in csv.DictReader(f)}


def finished(run: Path) -> dict[str, str]:
    """Each stage's completion time (its ``.complete.json``): unchanged after a rerun means the stage was kept."""
    out = {}
    for done in run.glob("*/.complete.json"):
        out[done.parent.name] = json.loads(done.read_text()).get("finished", "")
    return out


def reuse(src: Path, out: Path, seeds: list[int]) -> dict[str, dict]:
    """Copy ``src``'s runs into ``out`` (once), noting when each copied stage finished."""
    copied = {}
    for name in [f"boot-{s}" for s in seeds] + [f"pair-{s}" for s in seeds]:
        if (src / name).is_dir() and not (out / name).exists():
            shutil.copytree(src / name, out / name, symlinks=True)
            copied[name] = {"from": str(src / name), "finished": finished(out / name)}
    return copied


def kept_stages(run: Path, before: dict[str, str]) -> list[str]:
    after = finished(run)
    return [name for name, when in before.items() if after.get(name) == when]


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=str(ROOT / "ray_configs" / "tiny.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/seed-spread"))
    p.add_argument("--reuse", type=Path, help="an earlier spread's --out: its runs are copied in first")
    p.add_argument("--with", dest="others", nargs="*", default=[], metavar="RUN[:SYSTEM,...]",
                   help="other finished runs on the same test problems for the compare table")
    p.add_argument("overrides", nargs="*", help="dotted overrides for every run")
    a, extra = p.parse_known_args()  # overrides may also follow the options
    if any("=" not in x for x in extra):
        p.error(f"unrecognized arguments: {' '.join(x for x in extra if '=' not in x)}")
    a.overrides += extra
    a.out.mkdir(parents=True, exist_ok=True)
    reused = reuse(a.reuse, a.out, a.seeds) if a.reuse else {}
    common = [a.config, f"output_dir={a.out}", "tracking.mode=disabled", *a.overrides]
    log, t_start = a.out / "log.txt", time.time()

    boot: dict[int, dict] = {}
    first = a.seeds[0]
    for s in [first, *a.seeds[1:]]:
        name = f"boot-{s}"
        longshort(["run", *common, f"name={name}", "pipeline.stages=[bootstrap]", "pipeline.bootstrap=always", *(f"{k}={s}" for k in BOOT_SEEDS)],
                  log)
        ev = json.loads((a.out / name / "bootstrap" / "eval.json").read_text())
        boot[s] = {"accuracy": ev["accuracy"], "tokens": ev["mean_tokens"], "unfinished": ev["unfinished"],
                   "minutes": stage_seconds(a.out / name)["bootstrap"] / 60, "dev_checks": stage_checks(a.out / name)}
        if s == first:  # the method's runs share this one base model
            for t in a.seeds:
                dst = a.out / f"pair-{t}" / "bootstrap"
                if not dst.exists():
                    shutil.copytree(a.out / name / "bootstrap", dst, symlinks=True)
            for t in a.seeds:
                longshort(["run", *common, f"name=pair-{t}", *(f"{k}={t}" for k in PAIR_SEEDS)], log)

    for t in a.seeds:  # the oracle row: the same scores, the cold start ranked by the teacher's tags
        tags = a.out / f"tags-{t}"
        for stage in ("bootstrap", "chunk", "judge", "score"):
            if (a.out / f"pair-{t}" / stage).is_dir() and not (tags / stage).exists():
                shutil.copytree(a.out / f"pair-{t}" / stage, tags / stage, symlinks=True)
        longshort(["run", *common, f"name=tags-{t}", *(f"{k}={t}" for k in PAIR_SEEDS), "coldstart.rank_by=tags",
                   "pipeline.stages=[bootstrap,chunk,judge,score,coldstart,sft,eval]",
                   "eval.systems=[{name: tags-pair, kind: pair, long: sft/long/model, short: sft/short/model}]"], log)

    runs = {s: a.out / f"pair-{s}" for s in a.seeds}
    rows = {s: eval_rows(r) for s, r in runs.items()}
    for s in a.seeds:
        rows[s] |= eval_rows(a.out / f"tags-{s}")
    longshort(["compare", *map(str, runs.values()), *(str(a.out / f"tags-{s}") for s in a.seeds), *a.others,
               "--out", str(a.out / "compare")], log)
    systems = list(rows[first])
    table = {}
    for sysname in systems:
        acc = [100 * float(rows[s][sysname]["accuracy"]) for s in a.seeds]
        tok = [float(rows[s][sysname]["mean_tokens"]) for s in a.seeds]
        cut = [float(rows[s][sysname]["truncated"]) for s in a.seeds]
        table[sysname] = {"accuracy": acc, "tokens": tok, "truncated": cut, "n": int(rows[first][sysname]["n"])}
    result = {
        "command": " ".join(["python", "bench/seed_spread.py", *sys.argv[1:]]), "commit": commit(), "cpu": cpu_name(),
        "cores": os.cpu_count(), "kernels": {k: os.environ.get(k, "native") for k in KERNEL_ENV},
        "seeds": a.seeds, "pair_seed_keys": PAIR_SEEDS, "bootstrap_seed_keys": BOOT_SEEDS, "systems": table,
        "bootstrap": boot, "stage_seconds": {s: stage_seconds(r) for s, r in runs.items()},
        "dev_checks": {s: stage_checks(r) for s, r in runs.items()}, "minutes": (time.time() - t_start) / 60,
        "reused": {name: {"from": rec["from"], "kept": kept_stages(a.out / name, rec["finished"])}
                   for name, rec in reused.items()}, "compare": (a.out / "compare" / "compare.md").read_text(),
    }
    (a.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (a.out / "results.md").write_text(md)
    print(md)


def markdown(r: dict) -> str:
    seeds, base = r["seeds"], r["systems"].get("base")
    head = (f"Commit `{r['commit']}`, {r['cpu']} ({r['cores']} cores), kernels "
            f"{', '.join(f'{k}={v}' for k, v in r['kernels'].items())}; `{r['command']}`; seeds "
            f"{' / '.join(map(str, seeds))}.\n\n")
    lines = ["| system | accuracy, mean ± sd | per seed | tokens per answer | cut at the limit |",
             "|---|---:|---|---:|---:|"]
    for name, s in r["systems"].items():
        m, sd = spread(s["accuracy"])
        tm, tsd = spread(s["tokens"])
        share = f" ({100 * tm / statistics.fmean(base['tokens']):.0f}% of base)" if base and name != "base" else ""
        lines.append(f"| {name} | {m:.1f} ± {sd:.1f}% | {' / '.join(f'{v:.1f}' for v in s['accuracy'])} | "
                     f"{tm:.0f} ± {tsd:.0f}{share} | {100 * statistics.fmean(s['truncated']):.1f}% |")
    b = r["bootstrap"]
    bm, bsd = spread([100 * v["accuracy"] for v in b.values()])
    accs = " / ".join(f"{100 * v['accuracy']:.1f}" for v in b.values())
    toks = " / ".join(f"{v['tokens']:.0f}" for v in b.values())
    mins = " / ".join(f"{v['minutes']:.1f}" for v in b.values())
    dev = " / ".join(" ".join(f"{k} {x:.3f}" for k, x in v["dev_checks"].items()) for v in b.values())
    lines += ["", f"Bootstrap seeds {' / '.join(map(str, b))} (the base model alone): {bm:.1f} ± {bsd:.1f}% "
              f"({accs}) at {toks} tokens, on the test split; dev checks: {dev}; {mins} minutes each."]
    stages = sorted({k for t in r["stage_seconds"].values() for k in t})
    lines += ["", "| stage minutes | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---:|" * len(seeds)]
    for st in stages:
        vals = [r["stage_seconds"][s].get(st) for s in seeds]
        lines.append(f"| {st} | " + " | ".join("" if v is None else f"{v / 60:.1f}" for v in vals) + " |")
    checks = sorted({k for c in r["dev_checks"].values() for k in c})
    lines += ["", "| dev check | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
    for c in checks:
        vals = [r["dev_checks"][s].get(c) for s in seeds]
        lines.append(f"| {c} | " + " | ".join("" if v is None else f"{v:.3f}" for v in vals) + " |")
    for name, rec in r.get("reused", {}).items():
        lines += ["", f"Reused from `{rec['from']}` (fingerprints unchanged, not rerun): {name}: "
                      f"{', '.join(rec['kept']) or 'nothing'}."]
    if r.get("compare"):
        lines += ["", "Every run in one table (`longshort compare`):", "", r["compare"].strip()]
    return head + "\n".join(lines) + f"\n\n{r['minutes']:.0f} minutes in all.\n"


if __name__ == "__main__":
    main()
