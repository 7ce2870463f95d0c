"""Hawkeye's pipeline as stage declarations: bootstrap (the embedded long-CoT base model, shared machinery),
responder (a smaller frozen model that answers from a CoT), warmup (SFT of the planner on concise CoTs), rl (GRPO on
the planner with the responder inside the episode), eval, export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.core.stage import Stage
from longshort.data.verify import shared_verifier
from longshort.recipes.hawkeye.checks import check_responder, check_warmup
from longshort.recipes.hawkeye.config import RESPONDER_MODEL, WARMUP_MODEL
from longshort.toy.stage import bootstrap_stage

log = logging.getLogger("longshort")


def _problems(src, run_dir: Path, stage: str) -> list:
    """The stage's problems (``path: ""``: the bootstrap's training problems), each with a reference solution."""
    from dataclasses import replace

    from longshort.data.problems import load_problems

    path = rd.resolve(run_dir, src.path or None, rd.TRAIN_DATA)
    if not src.path and not path.exists():
        raise LongshortError(f"{stage}: {path} does not exist; run `longshort bootstrap` first, or set "
                             f"hawkeye.{stage}.data.path")
    problems, report = load_problems(replace(src, path=str(path)))
    if report.n_skipped:  # on_bad_record: skip
        log.warning("%s: %s", stage, report.summary())
    usable = [p for p in problems if p.solution]
    if len(usable) < len(problems):
        log.warning("%s: %d of %d problems have no solution and are left out", stage, len(problems) - len(usable),
                    len(problems))
    if not usable:
        raise LongshortError(f"{stage}: no problem in {path} has a solution; map the data's solution field "
                             f"(hawkeye.{stage}.data.fields.solution)")
    return usable


def _uses_embedded(cfg) -> bool:
    h = cfg.hawkeye
    return (h.planner_model is None or h.responder_model is None or cfg.rl.train.path == "" or cfg.rl.eval.path == ""
            or any(b.source.path == "" for b in cfg.eval.benchmarks))


def _responder(cfg, run_dir: Path, tracker, resume: bool) -> None:
    """A fresh smaller tiny model (the bootstrap's tokenizer) taught to answer from problem + CoT, then frozen."""
    from longshort.cluster.sft_job import run_sft
    from longshort.recipes.hawkeye.data import responder_examples
    from longshort.toy.tiny import fresh_model_dir, truncated_model_dir
    from longshort.training.sft import publish

    rc = cfg.hawkeye.responder
    out = run_dir / "responder"
    init = Path(rc.init) if rc.init else out / "init_model"
    if not rc.init:
        base = run_dir / rd.BASE_MODEL
        init, size = (truncated_model_dir(base, rc.base_layers, init) if rc.base_layers
                      else fresh_model_dir(rc.model, base, init))
        if size:
            how = f"the base model's first {rc.base_layers} layers" if rc.base_layers else f"a fresh {rc.model.arch}"
            log.info("responder: %s, %.2fM parameters", how, size / 1e6)
    examples = responder_examples(_problems(rc.data, run_dir, "responder"), rc.examples, rc.seed)
    result = run_sft(rc.sft, examples, init, out / "sft", tracker=tracker, metric_prefix="responder/sft/",
                     key="hawkeye.responder.sft")
    publish(result, out / "model", "responder")
    check_responder(cfg, run_dir, rd.resolve(run_dir, cfg.hawkeye.planner_model, rd.BASE_MODEL),
                    run_dir / RESPONDER_MODEL, shared_verifier(cfg.verify))


def _warmup(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.cluster.sft_job import run_sft
    from longshort.recipes.hawkeye.data import warmup_examples
    from longshort.training.sft import publish

    wc = cfg.hawkeye.warmup
    start = rd.resolve(run_dir, cfg.hawkeye.planner_model, rd.BASE_MODEL)
    result = run_sft(wc.sft, warmup_examples(_problems(wc.data, run_dir, "warmup"), wc.examples, wc.seed, tuple(wc.styles)), start,
                     run_dir / "warmup" / "sft",
                     tracker=tracker, metric_prefix="warmup/sft/",
                     key="hawkeye.warmup.sft")
    publish(result, run_dir / WARMUP_MODEL, "warmup")
    responder = rd.resolve(run_dir, cfg.rl.responder_model or cfg.hawkeye.responder_model, RESPONDER_MODEL)
    check_warmup(cfg, run_dir, run_dir / WARMUP_MODEL, responder, shared_verifier(cfg.verify))


def _rl(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from dataclasses import replace

    from longshort.rl import checkpoint
    from longshort.rl.loop import run_rl

    h = cfg.hawkeye  # the hawkeye section's model keys stand in for rl's unset ones (a warm-up replaces the planner)
    planner = cfg.rl.planner_model or (None if h.warmup.enabled else h.planner_model)
    rl = replace(cfg.rl, planner_model=planner, responder_model=cfg.rl.responder_model or h.responder_model)
    if h.forgive_responder_failures:
        rl = replace(rl, rewards=_forgiving(rl, run_dir, shared_verifier(cfg.verify)))
    resume = resume and bool(checkpoint.checkpoints(run_dir / rd.RL_CHECKPOINTS))
    result = run_rl(rl, run_dir, cfg.topology, tracker, shared_verifier(cfg.verify), resume=resume)
    if result.eval is not None:
        tracker.summary({f"rl_eval/{k}": v for k, v in result.eval.items() if not isinstance(v, list)})


def _forgiving(rl, run_dir: Path, verifier) -> list:
    """``rl.rewards`` with ``correctness`` replaced by ``forgive.forgiven_correctness`` over the RL training
    problems the responder alone gets wrong (computed once into ``rl/responder_alone_wrong.json``)."""
    from dataclasses import replace

    from longshort.data.problems import load_problems
    from longshort.recipes.hawkeye.forgive import responder_alone_wrong

    out = run_dir / rd.RL / "responder_alone_wrong.json"
    if not out.exists():
        src = replace(rl.train, path=str(rd.resolve(run_dir, rl.train.path or None, rd.TRAIN_DATA)))
        problems, _ = load_problems(src)
        responder_alone_wrong(rl.model_dir(run_dir, "responder"), problems, verifier, out)
        log.info("rl: the responder alone gets %d of %d training problems wrong; they count as answered",
                 len(json.loads(out.read_text())), len(problems))
    fn = "longshort.recipes.hawkeye.forgive:forgiven_correctness"
    return [replace(t, name=fn, kwargs={"wrong_ids_file": str(out)}) if t.name == "correctness" else t
            for t in rl.rewards]


def _rl_report(cfg, run_dir: Path) -> str:
    path = run_dir / rd.RL_EVAL
    ev = json.loads(path.read_text()) if path.exists() else {}
    keys = ("accuracy", "tokens_planner", "tokens_responder", "base_accuracy", "base_tokens")
    return f"RL done: {cfg.rl.steps} steps\n" + "\n".join(f"  {k}  {ev[k]:.4g}" for k in keys if k in ev)


def _eval(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.eval.runner import run_eval

    run_eval(cfg.eval, run_dir, tracker, shared_verifier(cfg.verify))


def _eval_report(cfg, run_dir: Path) -> str:
    return (run_dir / rd.EVAL_TABLE).read_text(encoding="utf-8")


def _export(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.hawkeye.export import run_export

    run_export(cfg.export, run_dir, cfg.hawkeye)


STAGES = (
    bootstrap_stage(_uses_embedded, "generate the synthetic task, build tokenizer + tiny model, SFT the long-CoT base "
                    "model (the planner's start), evaluate it"),
    Stage("responder", "train the small responder to answer from a problem and a CoT of any completeness (frozen "
          "afterwards) → runs/<name>/responder/", ("hawkeye.responder", "hawkeye.responder_model"), (f"{RESPONDER_MODEL}/config.json",), _responder,
          needed=lambda cfg: cfg.hawkeye.responder_model is None),
    Stage("warmup", "SFT the planner on the data's concise CoTs → runs/<name>/warmup/",
          ("hawkeye.warmup", "hawkeye.planner_model"),
          (f"{WARMUP_MODEL}/config.json",), _warmup, needed=lambda cfg: cfg.hawkeye.warmup.enabled),
    Stage("rl", "GRPO on the planner with a length penalty; the frozen responder answers inside each episode",
          ("rl",), (f"{rd.role_model('rl', 'planner')}/config.json",), _rl, report=_rl_report, resumable=True),
    Stage("eval", "evaluate the base model and planner/responder pairs on benchmarks → runs/<name>/eval/",
          ("eval",), (rd.EVAL_RESULTS,), _eval, report=_eval_report),
    Stage("export", "write the planner and the responder as HF model dirs + manifest → runs/<name>/export/",
          ("export",), ("{export.out}/manifest.json",), _export),
)
