"""SoftCoT's results table: the frozen LLM alone (zero-shot CoT, no thoughts), SoftCoT with the projection as it
was before training (control: any gain must come from training), SoftCoT trained but with the assistant reading
another problem (control: does the gain come from what the assistant read, or is the projection a learned soft
prompt?), and SoftCoT trained. Each system answers every held-out problem once per sampling seed; pass@1 is the mean
over seeds, ± one standard error over problems (``eval.runner.accuracy_se``). Written as the shared report
(``eval/results.json``, ``table.md``, CSV, plot)."""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.eval.report import write_results
from longshort.eval.runner import accuracy_metrics
from longshort.recipes.softcot.config import INIT_MODEL, TRAINED_MODEL

log = logging.getLogger("longshort")


def load_system(model_dir: str | Path, device: str = "auto", dtype: str = "auto"):
    """The composite model in eval mode on ``device``, with the LLM's and the assistant's tokenizers."""
    from transformers import AutoTokenizer

    from longshort.recipes.softcot.model import place, resolve_ref, softcot_model

    dev, dt = place(device, dtype)
    model = softcot_model(model_dir, dtype=dt).to(dev).eval()
    root = Path(model_dir)
    toks = [AutoTokenizer.from_pretrained(resolve_ref(root, model.spec[r])) for r in ("llm", "assistant")]
    return model, toks[0], toks[1]


def evaluate(model, llm_tok, assistant_tok, prompts, problems: list, n_thoughts: int, cfg, verifier,
             samples_path: Path | None = None, other_problem: bool = False) -> dict:
    """``other_problem``: the assistant reads the next problem's text (the last reads the first), the LLM its own."""
    from longshort.recipes.softcot.infer import generate

    seeds = cfg.seeds if cfg.temperature > 0 else cfg.seeds[:1]
    texts = [p.problem for p in problems]
    t0 = time.perf_counter()
    answers = generate(model, llm_tok, assistant_tok, prompts, texts, n_thoughts, temperature=cfg.temperature,
                       top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seeds=seeds, batch_size=cfg.batch_size,
                       assistant_reads=texts[1:] + texts[:1] if other_problem else None)
    verdicts = verifier.judge_many([a.text for a in answers], [p.gold for p in problems] * len(seeds),
                                   finished=[a.finished for a in answers])
    if samples_path is not None:
        rows = [{"id": p.id, "seed": seed, "answer": v.answer, "correct": v.correct, "tokens": a.tokens,
                 "text": a.text} for (seed, p), a, v in zip(((s, p) for s in seeds for p in problems), answers,
                                                             verdicts, strict=True)]
        samples_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    m = accuracy_metrics([v.correct for v in verdicts], [a.tokens for a in answers], len(problems), len(seeds))
    return {**m, "truncated": 1 - statistics.fmean(a.finished for a in answers), "seconds": time.perf_counter() - t0}


def run_softcot_eval(cfg, run_dir: Path, tracker, verifier) -> dict:
    """The four systems of the table on ``eval.data`` (the bootstrap's held-out problems by default)."""
    from dataclasses import replace

    from longshort.data.problems import load_problems

    ev, sc = cfg.eval, cfg.softcot
    problems, report = load_problems(replace(ev.data, path=str(rd.resolve(run_dir, ev.data.path or None,
                                                                           rd.EVAL_DATA))))
    if report.n_skipped:
        log.warning("eval: %s", report.summary())
    n = sc.thoughts_eval
    systems = {"llm": ("single", INIT_MODEL, 0, False), "softcot-untrained": ("softcot", INIT_MODEL, n, False),
               "softcot-other-problem": ("softcot", TRAINED_MODEL, n, True),
               "softcot": ("softcot", TRAINED_MODEL, n, False)}
    out = run_dir / rd.EVAL
    out.mkdir(parents=True, exist_ok=True)
    results, loaded = {}, {}
    for name, (_, model_dir, thoughts, other) in systems.items():
        if model_dir not in loaded:  # each composite once (two rows read each)
            loaded = {model_dir: load_system(run_dir / model_dir, ev.device, ev.dtype)}
        model, llm_tok, assistant_tok = loaded[model_dir]
        m = evaluate(model, llm_tok, assistant_tok, sc.prompts, problems, thoughts, ev, verifier,
                     out / f"samples-{name}.jsonl", other_problem=other)
        results[name] = {ev.name: m}
        log.info("eval %s: accuracy %.1f ± %.1f%% (seeds %s), %.0f tokens, %.0f s", name, 100 * m["accuracy"],
                 100 * m["accuracy_se"], " ".join(f"{100 * r:.1f}" for r in m["accuracy_runs"]), m["mean_tokens"],
                 m["seconds"])
    k = len(ev.seeds) if ev.temperature > 0 else 1
    summary = {
        "settings": {"k": k, "seeds": ev.seeds[:k], "temperature": ev.temperature, "top_p": ev.top_p,
                     "max_tokens": ev.max_new_tokens, "thoughts": sc.thoughts_eval},
        "benchmarks": {ev.name: {"path": str(ev.data.path or rd.EVAL_DATA), "n": len(problems)}},
        "systems": {name: {"kind": kind, "models": {"softcot": model_dir}, "thoughts": thoughts, "assistant_reads":
                           "another problem" if other else "the problem"}
                    for name, (kind, model_dir, thoughts, other) in systems.items()},
        "results": results,
    }
    write_results(summary, out, tracker)
    return summary
