"""``runs/<name>/report.html``: one static page to look at a run. Rewritten after every stage (``pipeline/runner``),
it shows what the run has so far: the results table (± one standard error, the 95% interval beside it) and the
accuracy-vs-tokens plot of ``eval/results.json``, the stage checks, the time of every stage, a few evaluated
dialogues and cold-start dialogues with each turn coloured by its author (the long role's thoughts marked as the
kept ones, with their importance where the scores hold it), and links to the thought-importance report and the raw
files. Self-contained (inline CSS and SVG, no script, nothing fetched), and it reflows to a phone's width."""

from __future__ import annotations

import html
import json
import logging
import os
import time
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.eval import report as tables

log = logging.getLogger("longshort")
PAGE = "report.html"
DIALOGUES_PER_SYSTEM = 3  # evaluated dialogues shown per multi-role system: right ones first, then a wrong one
COLDSTART_SHOWN = 2
# Role -> colour of its turns; a role not named here takes the next of _SPARE.
ROLE_COLOURS = {"user": "#eceff1", "long": "#dbe9ff", "short": "#ffe7cc", "planner": "#e9ddff",
                "responder": "#d9f2df", "model": "#e0f4f4", "assistant": "#e9ddff", "llm": "#ffe7cc"}
_SPARE = ("#f6e0ec", "#f2f2c8", "#dde6d0")
LINKS = (("thought-importance report", "score/report.html"), ("results table (CSV)", "eval/table.csv"),
         ("results (JSON)", rd.EVAL_RESULTS), ("metrics", "metrics.jsonl"), ("log", "log.txt"),
         ("config", rd.CONFIG), ("pipeline state", rd.PIPELINE_STATE))

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,sans-serif;max-width:980px;margin:0 auto;padding:12px;color:#1d1d1f;
line-height:1.45;font-size:15px}
h1{font-size:1.45em;margin:.4em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;
white-space:nowrap}th:first-child,td:first-child{text-align:left}
.plot svg{width:100%;height:auto;max-width:720px}
.muted{color:#666;font-size:13px}.failed{color:#b00020;font-weight:600}.passed{color:#1b7f3b}
.dialogue{border:1px solid #ddd;border-radius:8px;padding:8px;margin:12px 0}
.turn{border-radius:6px;padding:6px 8px;margin:6px 0;white-space:pre-wrap;overflow-wrap:anywhere;
font-family:ui-monospace,monospace;font-size:13px}
.who{font-family:system-ui,sans-serif;font-weight:600;font-size:12px;display:block;margin-bottom:2px}
.kept{display:block;border-left:4px solid #2f6fdf;padding-left:6px;margin:3px 0}
.badge{font-family:system-ui,sans-serif;font-size:11px;background:#2f6fdf;color:#fff;border-radius:3px;
padding:0 4px;margin-right:4px}
.legend span{display:inline-block;padding:1px 8px;border-radius:4px;margin:2px 4px 2px 0;font-size:13px}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _rows(path: Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` records of a JSONL file (all with None); a line that does not parse ends the read (the page
    shows what it can, it never stops a run)."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(out) >= limit:
                break
            try:
                out.append(json.loads(line))
            except ValueError:
                break
    return out


def _colour(role: str, seen: dict[str, str]) -> str:
    if role not in seen:
        seen[role] = ROLE_COLOURS.get(role) or _SPARE[len([r for r in seen if r not in ROLE_COLOURS]) % len(_SPARE)]
    return seen[role]


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table in a horizontally scrolling box (cells are given as HTML)."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _acc_cell(m: dict) -> str:
    acc, se = 100 * m["accuracy"], 100 * m.get("accuracy_se", 0.0)
    low, high = max(0.0, acc - 1.96 * se), min(100.0, acc + 1.96 * se)
    return f"{acc:.1f} ± {se:.1f} <span class='muted'>[{low:.0f}, {high:.0f}]</span>"


def results_section(summary: dict) -> str:
    """The results table (the Markdown table's columns), the run's stage checks, and the plot as inline SVG."""
    benches = list(summary["benchmarks"])
    head = ["System", "Kind"] + [f"{b} {c}" for b in benches for c in ("Acc %", "Tokens", "n")] + ["Tokens by role"]
    rows = []
    for system, per in summary["results"].items():
        row = [_e(system), _e(summary["systems"].get(system, {}).get("kind", ""))]
        for b in benches:
            m = per.get(b)
            row += [_acc_cell(m), f"{m['mean_tokens']:.0f}", str(m.get("n", ""))] if m else ["", "", ""]
        row.append(_e(tables.by_role(per, [b for b in benches if b in per])) if per else "")
        rows.append(row)
    s = summary["settings"]
    note = (f"Acc: pass@1 in %, mean over k={s['k']} sample(s) per problem at temperature {s['temperature']}, ± one "
            "standard error over problems, [95% interval]. Tokens: mean generated tokens per answer (a team: all "
            "roles together; by role: each role's share).")
    skipped = "".join(f"<p class='muted'>Skipped {_e(k)}: {_e(v)}.</p>" for k, v in summary.get("skipped", {}).items())
    return (_table(head, rows, "results") + f"<p class='muted'>{_e(note)}</p>" + skipped
            + checks_section(summary.get("checks", [])) + f'<div class="plot">{_svg(tables.figure(summary))}</div>')


def checks_section(checks: list[dict]) -> str:
    if not checks:
        return ""
    rows = []
    for c in checks:
        op = ">=" if c.get("direction") == "min" else "<="
        verdict = "<span class='passed'>passed</span>" if c.get("passed") else "<span class='failed'>FAILED</span>"
        rows.append([_e(c["stage"]), _e(c["what"]), f"{c['value']:.4g}", f"{op} {c['threshold']:.4g}",
                     f"<code>{_e(c['setting'])}</code>", str(c.get("n", "")), verdict])
    return "<h3>Stage checks</h3>" + _table(["Stage", "Check", "Value", "Threshold", "Setting", "n", "Result"], rows,
                                            "checks")


def _svg(fig) -> str:
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG sits inside the HTML


def stages_section(run_dir: Path, stages: list[str], not_needed: frozenset[str] = frozenset()) -> str:
    """Each stage's last run: what the pipeline did (ran, skipped), its time and when it finished."""
    state = (_read_json(run_dir / rd.PIPELINE_STATE) or {}).get("stages", {})
    rows, total = [], 0.0
    for name in stages:
        done = _read_json(run_dir / name / rd.STAGE_DONE)
        rec = state.get(name, {})
        seconds = (done or {}).get("seconds")
        total += seconds or 0.0
        status = ("not needed" if name in not_needed else "finished" if done else "started, not finished"
                  if (run_dir / name / rd.STAGE_STARTED).exists() else rec.get("status", "not run"))
        checks = rec.get("checks", [])
        failed = [c["what"] for c in checks if not c.get("passed")]
        verdict = (f"<span class='failed'>FAILED: {_e('; '.join(failed))}</span>" if failed
                   else f"<span class='passed'>{len(checks)} passed</span>" if checks else "")
        rows.append([_e(name), _e(status), f"{seconds:.1f}" if seconds is not None else "",
                     _e((done or {}).get("finished", "").replace("T", " ")), verdict])
    rows.append(["<b>total</b>", "", f"<b>{total:.1f}</b>", "", ""])
    return _table(["Stage", "Status", "Seconds", "Finished", "Checks"], rows, "stages")


def _importances(run_dir: Path, ids: set[str]) -> dict[str, dict[str, float]]:
    """CoT id -> thought text (stripped) -> its importance, for the CoTs ``ids``, from the score stage's output."""
    path = run_dir / rd.SCORES
    if not path.exists():
        return {}
    return {rec["id"]: {t["text"].strip(): t["importance"] for t in rec.get("thoughts", [])}
            for rec in _rows(path) if rec.get("id") in ids}


def _turn(role: str, text: str, colours: dict[str, str], note: str = "", scores: dict[str, float] | None = None) -> str:
    """One turn, coloured by its author; the long role's paragraphs (its thoughts) each marked as kept."""
    if role == "long" and text.strip():
        parts = []
        for thought in (t for t in text.split("\n\n") if t.strip()):
            imp = (scores or {}).get(thought.strip())
            badge = "kept" + (f" · importance {imp:.2f}" if imp is not None else "")
            parts.append(f'<span class="kept"><span class="badge">{_e(badge)}</span>{_e(thought)}</span>')
        body = "".join(parts)
    else:
        body = _e(text) if text else "<span class='muted'>(empty)</span>"
    label = role + (f" · {note}" if note else "")
    return (f'<div class="turn" data-role="{_e(role)}" style="background:{_colour(role, colours)}">'
            f'<span class="who">{_e(label)}</span>{body}</div>')


def _pick(rows: list[dict], n: int) -> list[dict]:
    """Up to ``n`` answers: the right ones first (what the team does when it works), then one wrong one."""
    right = [r for r in rows if r.get("correct")]
    wrong = [r for r in rows if not r.get("correct")]
    shown = right[: n - 1] if wrong else right[:n]
    return shown + wrong[: n - len(shown)]


def eval_dialogues_section(run_dir: Path, summary: dict, colours: dict[str, str]) -> str:
    """A few answers of every multi-role system on its first benchmark, from ``eval/samples``."""
    out = []
    for system, info in summary.get("systems", {}).items():
        if info.get("kind") == "single" or system not in summary.get("results", {}):
            continue
        bench = next(iter(summary["results"][system]), None)
        path = run_dir / rd.EVAL / "samples" / system / f"{bench}.jsonl"
        if bench is None or not path.exists():
            continue
        for row in _pick(_rows(path), DIALOGUES_PER_SYSTEM):
            tokens = row.get("tokens", {})
            verdict = ("right" if row.get("correct") else "wrong") + f" (gold {row.get('gold')}, answered " \
                f"{row.get('predicted')}, {row.get('status')})"
            spent = ", ".join(f"{r} {t}" for r, t in tokens.items()) if isinstance(tokens, dict) else str(tokens)
            turns = "".join(_turn(role, text, colours) for role, text in row.get("turns", []))
            out.append(f'<div class="dialogue eval"><div class="muted">{_e(system)} on {_e(bench)}, problem '
                       f'{_e(row.get("id"))}: {_e(verdict)}; tokens {_e(spent)}</div>{turns}</div>')
    return "".join(out) or "<p class='muted'>No dialogues to show: no system of this evaluation has several roles.</p>"


def coldstart_section(run_dir: Path, colours: dict[str, str]) -> str:
    """The first cold-start dialogues: the long role's turns are CoT thoughts kept verbatim (with their importance);
    the short role's turns compress the stretches between them."""
    path = run_dir / rd.DIALOGUES
    if not path.exists():
        return ""
    shown = _rows(path, COLDSTART_SHOWN)
    scores, out = _importances(run_dir, {rec.get("id") for rec in shown}), []
    for rec in shown:
        turns = "".join(_turn(m["role"], m["content"], colours, scores=scores.get(rec.get("id"), {}))
                        for m in rec["messages"])
        out.append(f'<div class="dialogue coldstart"><div class="muted">cold start {_e(rec.get("id"))}</div>{turns}'
                   "</div>")
    return "<h2>Cold-start dialogues</h2>" + "".join(out)


def _legend(colours: dict[str, str]) -> str:
    spans = "".join(f'<span style="background:{c}">{_e(r)}</span>' for r, c in colours.items())
    kept = ('<span class="kept" style="display:inline-block"><span class="badge">kept</span>a thought of the long '
            "role</span>") if "long" in colours else ""
    return f'<p class="legend">Turn colours: {spans}{kept}</p>'


def render(run_dir: Path, title: str, stages: list[str], not_needed: frozenset[str] = frozenset()) -> str:
    """The page's HTML from what ``run_dir`` holds now."""
    summary = _read_json(run_dir / rd.EVAL_RESULTS)
    colours: dict[str, str] = {}
    parts = [f"<h1>{_e(title)}</h1><p class='muted'>Written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))} from "
             f"<code>{_e(run_dir)}</code>; rewritten after every stage.</p>", "<h2>Results</h2>"]
    if summary:
        parts.append(results_section(summary))
    else:
        parts.append("<p class='muted'>No results yet: the eval stage has not run.</p>")
    parts += ["<h2>Stages</h2>", stages_section(run_dir, stages, not_needed)]
    dialogues = ["<h2>Evaluated dialogues</h2>", eval_dialogues_section(run_dir, summary, colours)] if summary else []
    dialogues.append(coldstart_section(run_dir, colours))
    if colours:
        parts.append(_legend(colours))
    parts += dialogues
    links = "".join(f'<li><a href="{_e(href)}">{_e(label)}</a></li>' for label, href in LINKS
                    if (run_dir / href).exists())
    parts.append(f"<h2>Files</h2><ul>{links}</ul>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def write_page(run_dir: Path, title: str, stages: list[str], not_needed: frozenset[str] = frozenset()) -> Path:
    """Write ``run_dir/report.html`` (whole or not at all: a reader never sees half a page). ``stages``: the run's,
    in order; ``not_needed``: those this config skips (e.g. Long⊗Short's judge under ``score.judge: base``)."""
    path = Path(run_dir) / PAGE
    tmp = path.with_name(PAGE + ".tmp")
    tmp.write_text(render(Path(run_dir), title, stages, not_needed), encoding="utf-8")
    os.replace(tmp, path)
    return path
