"""One table for systems from several runs (``longshort compare``): each run's ``eval/results.json`` read as it is,
the same system across runs (seeds) grouped into mean ± sd, an oracle column, one accuracy-vs-tokens plot.

Pure presentation: ``pipeline/compare.py`` reads the runs (their configs, their recipes' oracle notes, the problem
files' identity) and hands this module ``Entry`` rows."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Entry:
    """One system of one run on one benchmark, as its ``eval/results.json`` has it."""

    run: str
    recipe: str
    system: str
    benchmark: str
    accuracy: float
    accuracy_se: float
    tokens: float
    n: int
    tokens_by_role: dict[str, float] = field(default_factory=dict)
    truncated: float = 0.0
    oracle: str = ""  # what oracle data (only a synthetic task has) the system's training used; "" none


@dataclass
class Group:
    """The same system (recipe, name, oracle note) on one benchmark over one or more runs."""

    recipe: str
    system: str
    benchmark: str
    oracle: str
    entries: list[Entry]

    @property
    def accuracy(self) -> float:
        return statistics.fmean(e.accuracy for e in self.entries)

    @property
    def spread(self) -> float:
        """Over runs the standard deviation; a single run its standard error over problems."""
        accs = [e.accuracy for e in self.entries]
        return statistics.stdev(accs) if len(accs) > 1 else self.entries[0].accuracy_se

    @property
    def tokens(self) -> float:
        return statistics.fmean(e.tokens for e in self.entries)

    def role_tokens(self) -> dict[str, float]:
        roles = dict.fromkeys(r for e in self.entries for r in e.tokens_by_role)
        return {r: statistics.fmean(e.tokens_by_role.get(r, 0.0) for e in self.entries) for r in roles}


def group(entries: list[Entry]) -> list[Group]:
    """Entries grouped by (recipe, system, benchmark, oracle), in the order first seen."""
    out: dict[tuple, Group] = {}
    for e in entries:
        key = (e.recipe, e.system, e.benchmark, e.oracle)
        out.setdefault(key, Group(e.recipe, e.system, e.benchmark, e.oracle, [])).entries.append(e)
    return list(out.values())


def _base_tokens(groups: list[Group], base: str) -> dict[str, float]:
    """Per benchmark the mean tokens of the first group named ``base`` (the share column's reference)."""
    out: dict[str, float] = {}
    for g in groups:
        if g.system == base and g.benchmark not in out:
            out[g.benchmark] = g.tokens
    return out


def table_md(groups: list[Group], base: str = "base", notes: list[str] | None = None) -> str:
    """The grouped table, then one row per run and system."""
    ref = _base_tokens(groups, base)
    many = len({g.benchmark for g in groups}) > 1
    head = ["system", "recipe", *(["benchmark"] if many else []), "oracle data", "runs", "accuracy",
            "tokens per answer", "tokens by role", "cut"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + ("---|" if many else "") + "---|---:|---:|---:|---|---:|"]
    for g in groups:
        share = f" ({100 * g.tokens / ref[g.benchmark]:.0f}% of {base})" if ref.get(g.benchmark) else ""
        per = " / ".join(f"{100 * e.accuracy:.1f}" for e in g.entries)
        acc = f"{100 * g.accuracy:.1f} ± {100 * g.spread:.1f}%" + (f" ({per})" if len(g.entries) > 1 else "")
        roles = " / ".join(f"{r} {t:.0f}" for r, t in g.role_tokens().items())
        cut = statistics.fmean(e.truncated for e in g.entries)
        lines.append("| " + " | ".join([g.system, g.recipe, *([g.benchmark] if many else []), g.oracle or "no",
                                         str(len(g.entries)), acc, f"{g.tokens:.0f}{share}", roles,
                                         f"{100 * cut:.1f}%"]) + " |")
    lines += ["", "accuracy: pass@1 as each run's eval measured it; ± is the standard deviation over the runs "
                  "(their seeds) when a system has several, else one standard error over problems. tokens: mean "
                  "generated tokens per answer (a team: every role's), and each role's share. cut: answers that ran "
                  "into their length limit (wrong). oracle data: what the system learned from that only a synthetic "
                  "task has (the recipe says)."]
    lines += ["", "| run | system | accuracy ± SE | tokens | n |", "|---|---|---:|---:|---:|"]
    for g in groups:
        for e in g.entries:
            lines.append(f"| {e.run} | {e.system} | {100 * e.accuracy:.1f} ± {100 * e.accuracy_se:.1f}% | "
                         f"{e.tokens:.0f} | {e.n} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes or []]) + "\n"


def plot(groups: list[Group], path: Path) -> None:
    """A point per group: x = mean tokens, y = accuracy with its spread as an error bar; hollow = oracle data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend or figure state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, g in enumerate(groups):
        color = f"C{i % 10}"
        ax.errorbar(g.tokens, 100 * g.accuracy, yerr=100 * g.spread, fmt="o", color=color, capsize=3,
                    markerfacecolor="none" if g.oracle else color, markersize=7,
                    label=f"{g.recipe}: {g.system}" + (" (oracle)" if g.oracle else ""))
    lo = min((100 * (g.accuracy - g.spread) for g in groups), default=0.0)
    ax.set_ylim(max(0.0, lo - 3), 101)
    ax.margins(x=0.15)
    ax.set_xlabel("mean generated tokens per answer")
    ax.set_ylabel("accuracy (pass@1, %)")
    ax.set_title("accuracy vs tokens (hollow: trained with oracle data)")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def write(groups: list[Group], out_dir: Path, base: str = "base", notes: list[str] | None = None) -> dict[str, Path]:
    """``compare.md``, ``compare.json`` and ``compare.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"table": out_dir / "compare.md", "json": out_dir / "compare.json", "plot": out_dir / "compare.png"}
    paths["table"].write_text(table_md(groups, base, notes), encoding="utf-8")
    rows = [{"recipe": g.recipe, "system": g.system, "benchmark": g.benchmark, "oracle": g.oracle,
             "accuracy": g.accuracy, "spread": g.spread, "tokens": g.tokens, "tokens_by_role": g.role_tokens(),
             "runs": [asdict(e) for e in g.entries]} for g in groups]
    paths["json"].write_text(json.dumps({"groups": rows, "notes": notes or []}, indent=2) + "\n", encoding="utf-8")
    plot(groups, paths["plot"])
    return paths
