"""What a scoring run found: how well the scores separate the teacher's tags (evaluation only), and the summary."""

from __future__ import annotations

from longshort.recipes.longshort.scoring.importance import roc_auc

POSITIVE_TAGS = frozenset({"essential", "correction"})  # what a good scorer ranks above "redundant"


def thought_tags(rec: dict) -> list[frozenset[str]] | None:
    """Teacher tags covered by each thought (evaluation only), or None without teacher data."""
    teacher = rec.get("teacher")
    if not teacher or teacher.get("cover") is None:
        return None
    return [frozenset(teacher["thoughts"][i]["tag"] for i in cov) for cov in teacher["cover"]]


def separation(scored: list[dict], key: str = "importance") -> dict:
    """How well ``key`` ranks essential/correction thoughts above redundant ones (ROC AUC), plus per-tag means.

    A thought covering several teacher thoughts counts as positive if any is essential/correction, negative if
    all are redundant; thoughts with error steps and no positive tag are left out of the AUC.
    """
    scores, labels, by_tag = [], [], {}
    for rec in scored:
        tags = thought_tags(rec)
        if tags is None:
            continue
        for t, tg in zip(rec["thoughts"], tags, strict=True):
            for tag in tg:
                by_tag.setdefault(tag, []).append(t[key])
            if tg & POSITIVE_TAGS:
                scores.append(t[key])
                labels.append(True)
            elif tg == {"redundant"}:
                scores.append(t[key])
                labels.append(False)
    out = {"auc": roc_auc(scores, labels) if scores else float("nan"), "positives": sum(labels),
           "negatives": len(labels) - sum(labels)}
    out.update({f"mean_{tag}": sum(v) / len(v) for tag, v in sorted(by_tag.items())})
    return out


def summarize(scored: list[dict], stats, seconds: float) -> dict:
    """Counts, times and accuracies of a scoring run (``stats``: its ``ScoreStats``), and the tag separation."""
    thoughts = [t for r in scored for t in r["thoughts"]]
    out = {"cots": stats.cots, "cached_cots": stats.cached, "thoughts": len(thoughts), "rollouts": stats.rollouts,
           "gen_tokens": stats.gen_tokens, "seconds": seconds, "seconds_generate": stats.seconds_generate,
           "seconds_verify": stats.seconds_verify,
           "tokens_per_s": stats.gen_tokens / stats.seconds_generate if stats.seconds_generate else None,
           "acc_no_thought": sum(r["acc0"] for r in scored) / max(len(scored), 1),
           "acc_all_thoughts": sum(r["thoughts"][-1]["acc_after"] if r["thoughts"] else r["acc0"]
                                   for r in scored) / max(len(scored), 1),
           "mean_importance": sum(t["importance"] for t in thoughts) / max(len(thoughts), 1)}
    if any(thought_tags(r) is not None for r in scored):
        sep = separation(scored)
        out.update(sep)
        out["auc_effect_only"] = separation(scored, "effect")["auc"]
        out["auc_cost_only"] = 1.0 - separation(scored, "cost")["auc"]  # cheap ranked first
    return out
