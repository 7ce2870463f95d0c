"""The files of ``longshort eval`` made from ``results.json``: the paper's table (Markdown), a long-format CSV, and an
accuracy-vs-tokens plot. Kept apart from ``evaluation`` so the report can be remade from a results file alone.
``results.json`` also carries the run's stage checks (``core/checks.py``): a table that rests on a stage that did not
learn says so under it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from longshort.core import checks as outcome

CSV_COLUMNS = ["system", "kind", "benchmark", "n", "k", "accuracy", "accuracy_se", "accuracy_std", "mean_tokens", "median_tokens",
               "tokens_long", "tokens_short", "tokens_planner", "tokens_responder", "mean_turns", "truncated", "seconds"]
_MARKERS = "osD^vP*Xph"


def _acc(m: dict) -> str:
    """Accuracy ± its standard error over problems (older results files without it: the accuracy alone)."""
    text = f"{100 * m['accuracy']:.1f}"
    return text + (f" ± {100 * m['accuracy_se']:.1f}" if "accuracy_se" in m else "")


def by_role(per: dict, benches: list[str]) -> str:
    """A team's mean tokens per role over the benchmarks (``long 30 / short 50``); "" for a single model."""
    roles = [k[len("tokens_"):] for k in per[benches[0]] if k.startswith("tokens_")]
    return " / ".join(f"{r} {sum(per[b].get(f'tokens_{r}', 0) for b in benches) / len(benches):.0f}" for r in roles)


def table_md(summary: dict) -> str:
    """One row per system; per benchmark an Acc (pass@1, %) and a Tokens (mean per answer) column; then averages."""
    benches = list(summary["benchmarks"])
    head = ["System"] + [f"{b} {c}" for b in benches for c in ("Acc", "Tokens")] + ["Avg Acc", "Avg Tokens", "Avg Tokens by role"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for system, per in summary["results"].items():
        cells = [system]
        for b in benches:
            cells += [_acc(per[b]), f"{per[b]['mean_tokens']:.0f}"]
        accs, toks = [per[b]["accuracy"] for b in benches], [per[b]["mean_tokens"] for b in benches]
        cells += [f"{100 * sum(accs) / len(accs):.1f}", f"{sum(toks) / len(toks):.0f}", by_role(per, benches)]
        lines.append("| " + " | ".join(cells) + " |")
    s = summary["settings"]
    lines += ["", f"Acc: pass@1 in %, mean over k={s['k']} sample(s) per problem (temperature {s['temperature']}), "
                  "± one standard error over problems (a 95% interval is about ± 2 SE). Tokens: mean generated "
                  "tokens per answer (a pair: both roles; by role: each role's share). Avg: unweighted mean over the benchmarks."]
    for system, why in summary.get("skipped", {}).items():
        lines.append(f"Skipped {system}: {why}.")
    return "\n".join(lines + checks_md(summary.get("checks", []))) + "\n"


def checks_md(checks: list[dict]) -> list[str]:
    """The "Stage checks" section: each recorded check of the run, passed or FAILED, with its threshold's setting."""
    if not checks:
        return []
    lines = ["", "## Stage checks", "", "| Stage | Check | Value | Threshold | Setting | n | Result |",
             "|---|---|---:|---:|---|---:|---|"]
    for data in checks:
        c = outcome.Check.from_json(data)
        op = ">=" if c.direction == "min" else "<="
        lines.append(f"| {c.stage} | {c.what} | {c.value:.4g} | {op} {c.threshold:.4g} | `{c.setting}` | {c.n} | "
                     f"{'passed' if c.passed else '**FAILED**'} |")
    failed = [data["stage"] for data in checks if not outcome.Check.from_json(data).passed]
    if failed:
        lines += ["", f"FAILED checks: {', '.join(dict.fromkeys(failed))} learned less than later stages need; the rows "
                      "above rest on them."]
    return lines


def csv_rows(summary: dict) -> list[dict]:
    rows = []
    for system, per in summary["results"].items():
        for bench, m in per.items():
            rows.append({"system": system, "kind": summary["systems"][system]["kind"], "benchmark": bench,
                         **{c: m.get(c, "") for c in CSV_COLUMNS[3:]}})
    return rows


def figure(summary: dict):
    """A point per system x benchmark: x = mean tokens, y = accuracy ± one standard error (the table's); colour =
    system, marker = benchmark. A matplotlib ``Figure`` (no pyplot: no global backend or figure state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    palette = [f"C{i % 10}" for i in range(len(summary["results"]))]
    benches = list(summary["benchmarks"])
    for color, (system, per) in zip(palette, summary["results"].items(), strict=True):
        for bench, m in per.items():
            marker = _MARKERS[benches.index(bench) % len(_MARKERS)]
            x, y = m["mean_tokens"], 100 * m["accuracy"]
            ax.errorbar(x, y, yerr=100 * m.get("accuracy_se", 0.0), color=color, marker=marker, markersize=7,
                        capsize=3, linestyle="none", label=system if bench == next(iter(per)) else None)
            ax.annotate(f"{system} · {bench}", (x, y), textcoords="offset points",
                        xytext=(5, 4 - 10 * (benches.index(bench) % 4)), fontsize=8)  # equal points stay readable
    ax.set_ylim(-3, 103)  # accuracy is a share: the whole range, so plots of different runs compare at a glance
    ax.margins(x=0.2)  # room for the labels of the outermost points
    ax.set_xlabel("mean generated tokens per answer")
    ax.set_ylabel("accuracy (pass@1, %; bars: ± 1 SE)")
    ax.set_title("accuracy vs tokens")
    ax.grid(alpha=0.3)
    if summary["results"]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot(summary: dict, path: Path) -> None:
    figure(summary).savefig(path)


def write_report(summary: dict, out_dir: Path) -> dict[str, Path]:
    """``table.md``, ``table.csv`` and ``accuracy_vs_tokens.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"table": out_dir / "table.md", "csv": out_dir / "table.csv", "plot": out_dir / "accuracy_vs_tokens.png"}
    paths["table"].write_text(table_md(summary), encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(summary))
    plot(summary, paths["plot"])
    return paths


def write_results(summary: dict, out_dir: Path, tracker=None) -> dict[str, Path]:
    """``results.json`` and the report made from it in ``out_dir``; each system's scalar metrics to ``tracker``. The
    stage checks of the run that ``out_dir`` (``<run>/eval``) belongs to join the summary, unless it has its own."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if "checks" not in summary:
        summary["checks"] = [c.to_json() for c in outcome.read(out_dir.parent)]
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    paths = write_report(summary, out_dir)
    if tracker is not None:
        tracker.log({f"eval/{s}/{b}/{k}": v for s, per in summary["results"].items() for b, m in per.items()
                     for k, v in m.items() if isinstance(v, int | float)}, step=0)
    return paths
