"""A self-contained HTML page per scoring run: look at it before trusting the cold-start data.

It holds the summary numbers, the accuracy-after-thought curves, the distribution of importance by position
(and by teacher tag on the synthetic task), and each CoT with its thoughts shaded by importance (green: keep in
the long role, red: costs more than it helps), with each CoT's own accuracy curve. Figures are PNGs embedded as
data URIs, so the one file can be copied anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.cot{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:14px 0}
.t{white-space:pre-wrap;border-radius:3px;font-family:ui-monospace,monospace;font-size:13px}
.ht{white-space:pre-wrap;color:#888;font-family:ui-monospace,monospace;font-size:13px}
.meta{color:#555;font-size:13px}.legend span{padding:2px 6px;margin-right:4px}
"""


def _color(v: float) -> str:
    """Importance in [-1, 1] -> a diverging background (red - white - green)."""
    v = max(-1.0, min(1.0, v if math.isfinite(v) else 0.0))
    a = min(1.0, abs(v) * 2.5)  # most scores are small: saturate early so differences show
    return f"rgba(30,160,60,{a:.2f})" if v >= 0 else f"rgba(220,50,40,{a:.2f})"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figures(scored: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    bins: dict[int, list[float]] = {}
    for rec in scored:
        k_max = len(rec["thoughts"])
        acc = [rec["acc0"]] + [t["acc_after"] for t in rec["thoughts"]]
        xs = [k / max(k_max, 1) for k in range(k_max + 1)]
        axes[0].plot(xs, acc, color="#4477aa", alpha=0.12, lw=0.8)
        for x, a in zip(xs, acc, strict=True):
            bins.setdefault(min(int(x * 10), 10), []).append(a)
    centers = sorted(bins)
    axes[0].plot([c / 10 for c in centers], [sum(bins[c]) / len(bins[c]) for c in centers], color="k", lw=2,
                 label="mean")
    axes[0].set(xlabel="share of thoughts in the prefix", ylabel="accuracy after prefix", ylim=(0, 1),
                title="accuracy after each thought")
    axes[0].legend()
    by_pos: list[list[float]] = [[] for _ in range(10)]
    for rec in scored:
        k_max = len(rec["thoughts"])
        for k, t in enumerate(rec["thoughts"]):
            by_pos[min(int(10 * (k + 0.5) / k_max), 9)].append(t["importance"])  # bin by the thought's centre
    axes[1].boxplot([b or [0.0] for b in by_pos], showfliers=False)
    axes[1].set_xticks(range(1, 11), [f"{i / 10:.1f}" for i in range(10)])
    axes[1].axhline(0, color="#999", lw=0.8)
    axes[1].set(xlabel="relative position of the thought", ylabel="importance", title="importance by position")
    out.append(_png(fig))
    plt.close(fig)
    tagged: dict[str, list[float]] = {}
    for rec in scored:
        teacher = rec.get("teacher")
        if not teacher or teacher.get("cover") is None:
            continue
        for t, cov in zip(rec["thoughts"], teacher["cover"], strict=True):
            for tag in {teacher["thoughts"][i]["tag"] for i in cov}:
                tagged.setdefault(tag, []).append(t["importance"])
    if tagged:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for tag, vals in sorted(tagged.items()):
            ax.hist(vals, bins=30, range=(-1, 1), alpha=0.5, label=f"{tag} ({len(vals)})", density=True)
        ax.set(xlabel="importance", title="importance by teacher tag (evaluation only)")
        ax.legend()
        out.append(_png(fig))
        plt.close(fig)
    return out


def _sparkline(acc: list[float], w: int = 160, h: int = 36) -> str:
    if len(acc) < 2:
        return ""
    pts = " ".join(f"{i * w / (len(acc) - 1):.1f},{h - a * h:.1f}" for i, a in enumerate(acc))
    return (f'<svg width="{w}" height="{h}" style="background:#f6f6f6;vertical-align:middle">'
            f'<polyline fill="none" stroke="#4477aa" stroke-width="1.5" points="{pts}"/></svg>')


def _cot_html(rec: dict) -> str:
    acc = [rec["acc0"]] + [t["acc_after"] for t in rec["thoughts"]]
    tags = None
    teacher = rec.get("teacher")
    if teacher and teacher.get("cover") is not None:
        tags = [",".join(sorted({teacher["thoughts"][i]["tag"] for i in cov})) for cov in teacher["cover"]]
    parts = [f'<span class="ht">{html.escape(rec["head"])}</span>']
    for k, t in enumerate(rec["thoughts"]):
        tip = (f"thought {k + 1}: importance {t['importance']:+.3f}, effect {t['effect']:+.3f}, "
               f"acc after {t['acc_after']:.2f}, tokens {t['tokens']} (cost {t['cost']:.3f})")
        if tags:
            tip += f", teacher: {tags[k]}"
        parts.append(f'<span class="t" style="background:{_color(t["importance"])}" title="{html.escape(tip)}">'
                     f"{html.escape(t['text'])}</span>")
    parts.append(f'<span class="ht">{html.escape(rec["tail"])}</span>')
    return (f'<div class="cot"><div class="meta"><b>{html.escape(str(rec["id"]))}</b> gold {html.escape(str(rec["answer"]))}'
            f" &middot; accuracy from {acc[0]:.2f} to {acc[-1]:.2f} over {len(rec['thoughts'])} thoughts "
            f"{_sparkline(acc)}</div><p>{html.escape(rec['problem'])}</p><div>{''.join(parts)}</div></div>")


def write_report(scored: list[dict], summary: dict, path: str | Path, max_cots: int = 30) -> Path:
    """Write the HTML report for ``scored`` records (the lines of ``scores.jsonl``) to ``path``."""
    path = Path(path)
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{v:.4g}</td></tr>" if isinstance(v, float) else
                   f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items() if not isinstance(v, dict))
    legend = ('<p class="legend">shading: <span style="background:rgba(30,160,60,.8)">important</span>'
              '<span style="background:rgba(220,50,40,.8)">costs more than it helps</span> '
              "(hover a thought for its numbers)</p>")
    figures = "".join(f"<p>{f}</p>" for f in _figures(scored)) if scored else "<p>no scored CoTs</p>"
    cots = "".join(_cot_html(r) for r in scored[:max_cots])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>longshort importance report</title>"
            f"<style>{_STYLE}</style></head><body><h1>Thought importance</h1><table>{rows}</table>{figures}"
            f"<h2>CoTs (first {min(max_cots, len(scored))} of {len(scored)})</h2>{legend}{cots}</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
