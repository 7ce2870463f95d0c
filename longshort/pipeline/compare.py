"""``longshort compare RUN[:SYSTEM,...] ...``: the systems of several finished runs (any recipe, any seed) in one
table and one plot (``eval/compare.py``). Each run gives its ``eval/results.json`` and ``config.yaml``; its recipe
says which systems learned from oracle data (``Recipe.oracle``); the problem files the runs' evals read are hashed,
and runs that did not read the same problems are refused (a table that mixes test sets compares nothing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from longshort.core.errors import LongshortError
from longshort.core.registry import import_target
from longshort.eval.compare import Entry, group, write

RESULTS = Path("eval") / "results.json"


def _split(arg: str) -> tuple[Path, dict[str, str] | None]:
    """``runs/x``, or ``runs/x:base,rl-pair`` (only those systems of that run), or ``runs/x:rl-pair=my-label`` (a
    system under another name in the table, e.g. one trained another way): {system: label}."""
    path, sep, names = arg.rpartition(":") if ":" in arg and not Path(arg).exists() else (arg, "", "")
    if not sep:
        return Path(path), None
    pairs = [n.partition("=") for n in names.split(",") if n]
    return Path(path), {name: label or name for name, _, label in pairs}


def _problems_id(run_dir: Path, bench: dict) -> tuple[str | None, str]:
    """A hash of the first ``n`` records of the benchmark's problem file, and the file (or why there is none)."""
    src = bench.get("source") or bench.get("path") or ""
    parts = Path(src).parts  # a path from where the run was started (runs/<name>/...) or from the run directory
    inside = run_dir.joinpath(*parts[len(parts) - parts[::-1].index(run_dir.name):]) if run_dir.name in parts else None
    for cand in (*([inside] if inside else []), run_dir / src, Path(src)):  # the run's own copy first
        if src and cand.is_file():
            lines = [ln for ln in cand.read_text(encoding="utf-8").splitlines() if ln.strip()][: int(bench["n"])]
            return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16], str(cand)
    return None, f"{src!r} not found beside {run_dir}"


def load(args: list[str]) -> tuple[list[Entry], list[str]]:
    """Every chosen system of every run, and notes for the table (problem files that could not be checked)."""
    import json

    from longshort.pipeline.run_config import load_run_config
    from longshort.recipes import RECIPES

    entries: list[Entry] = []
    notes: list[str] = []
    ids: dict[str, dict[str, list[str]]] = {}  # benchmark -> problems hash -> runs
    for arg in args:
        path, only = _split(arg)
        run_dir = path.parent.parent if path.name == "results.json" else path
        results_path = path if path.name == "results.json" else path / RESULTS
        if not results_path.is_file():
            raise LongshortError(f"{arg}: no {results_path}; give a finished run's directory (its eval stage wrote "
                                 f"eval/results.json: run `longshort eval {run_dir / 'config.yaml'}`) or a results.json")
        summary = json.loads(results_path.read_text(encoding="utf-8"))
        if not (run_dir / "config.yaml").is_file():
            raise LongshortError(f"{arg}: no {run_dir / 'config.yaml'} beside {results_path}; compare reads the run's "
                                 "config for its recipe and oracle data")
        cfg = load_run_config(str(run_dir / "config.yaml"))
        recipe = RECIPES.get(cfg.recipe)
        oracle = import_target(recipe.oracle) if recipe.oracle else (lambda cfg, models: "")
        unknown = [s for s in (only or {}) if s not in summary["results"]]
        if unknown:
            raise LongshortError(f"{arg}: system(s) {unknown} are not in {results_path}; it has "
                                 f"{', '.join(summary['results'])}")
        for bench, info in summary["benchmarks"].items():
            digest, where = _problems_id(run_dir, info)
            if digest is None:
                notes.append(f"{run_dir.name} / {bench}: problems not checked against the other runs ({where})")
            else:
                ids.setdefault(bench, {}).setdefault(digest, []).append(f"{run_dir} ({where})")
        for system, per in summary["results"].items():
            if only is not None and system not in only:
                continue
            note = oracle(cfg, summary["systems"].get(system, {}).get("models", {}))
            for bench, m in per.items():
                entries.append(Entry(
                    run=run_dir.name, recipe=cfg.recipe, system=(only or {}).get(system, system), benchmark=bench, accuracy=m["accuracy"],
                    accuracy_se=m.get("accuracy_se", 0.0), tokens=m["mean_tokens"], n=m["n"],
                    tokens_by_role={k[len("tokens_"):]: v for k, v in m.items() if k.startswith("tokens_")},
                    truncated=m.get("truncated", 0.0), oracle=note))
    for bench, by_id in ids.items():
        if len(by_id) > 1:
            sets = "; ".join(f"set {i + 1}: {', '.join(runs)}" for i, runs in enumerate(by_id.values()))
            raise LongshortError(f"benchmark {bench!r}: the runs did not evaluate the same problems ({sets}); compare "
                                 "runs whose eval read the same problem file (the same task and split, the same "
                                 "eval.benchmarks limit)")
    return entries, notes


def compare(args: list[str], out: Path, base: str = "base") -> dict[str, Path]:
    entries, notes = load(args)
    if not entries:
        raise LongshortError("compare: no systems chosen; name runs (and optionally RUN:system,system)")
    paths = write(group(entries), out, base, notes)
    print(paths["table"].read_text(encoding="utf-8"))
    print(f"wrote {paths['table']}, {paths['json']}, {paths['plot']}")
    return paths
