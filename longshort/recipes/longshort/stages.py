"""The Long⊗Short pipeline as stage declarations: what each stage reads from the run config, what it writes,
and what its standalone command prints. ``longshort run`` and every ``longshort <stage>`` come from this list."""

from __future__ import annotations

import json
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.core.stage import Stage
from longshort.data.verify import shared_verifier
from longshort.toy.stage import bootstrap_stage


def _bootstrap_report(cfg, run_dir: Path) -> str:
    summary = json.loads((run_dir / rd.BOOTSTRAP_EVAL).read_text())
    return f"Base model: {run_dir / rd.BASE_MODEL}\n" + format_table(summary)


def _uses_embedded(cfg) -> bool:
    """Whether a stage of this config reads the embedded base model or its task data (a path left unset)."""
    reads = {
        "chunk": lambda: cfg.chunk.source.path == "",
        "judge": lambda: cfg.sft.long_model is None or cfg.sft.short_model is None,
        "score": lambda: cfg.score.model is None and cfg.score.judge == "base",
        "sft": lambda: cfg.sft.long_model is None or cfg.sft.short_model is None or cfg.sft.eval.source.path == "",
        "rl": lambda: cfg.rl.train.path == "" or cfg.rl.eval.path == "",
        "eval": lambda: any(b.source.path == "" for b in cfg.eval.benchmarks)
        or any(str(p).startswith(rd.BOOTSTRAP + "/") for s in cfg.eval.systems for p in (s.model, s.long, s.short)
               if p),
    }
    return any(reads[k]() for k in (cfg.pipeline.stages or reads) if k in reads)


def _chunk(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.longshort.chunking.thoughts import run_chunk

    run_chunk(cfg.chunk, run_dir, tracker)


def _judge(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.longshort.scoring.judge_stage import train_judge_pair

    train_judge_pair(cfg, run_dir, tracker, shared_verifier(cfg.verify))


def _score(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.longshort.scoring.score_stage import run_score

    run_score(cfg.score, run_dir, tracker, shared_verifier(cfg.verify))


def _coldstart(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from dataclasses import replace

    from longshort.recipes.longshort.coldstart.dialogues import run_coldstart

    # Token counts in the long role's vocabulary: without a bootstrap that is sft.long_model's, not the toy's.
    tokenizer = cfg.coldstart.tokenizer or cfg.sft.long_model
    run_coldstart(replace(cfg.coldstart, tokenizer=tokenizer), run_dir, tracker, shared_verifier(cfg.verify))


def _coldstart_tokenizer(cfg) -> dict:
    """The tokenizer that counts the cold start's tokens, when it is sft.long_model's (coldstart.tokenizer unset)."""
    return {"sft.long_model": cfg.sft.long_model} if cfg.coldstart.tokenizer is None and cfg.sft.long_model else {}


def _sft(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.longshort.pair_sft import check_pair, run_pair_sft

    run_pair_sft(cfg.sft, run_dir, tracker, shared_verifier(cfg.verify))
    check_pair(cfg.sft, run_dir, shared_verifier(cfg.verify), trained_on=cfg.chunk.source.path)


def _rl(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.rl import checkpoint
    from longshort.rl.loop import run_rl

    resume = resume and bool(checkpoint.checkpoints(run_dir / rd.RL_CHECKPOINTS))
    result = run_rl(cfg.rl, run_dir, cfg.topology, tracker, shared_verifier(cfg.verify), resume=resume)
    if result.eval is not None:
        tracker.summary({f"rl_eval/{k}": v for k, v in result.eval.items() if not isinstance(v, list)})


def _rl_report(cfg, run_dir: Path) -> str:
    from longshort.rl import checkpoint

    done = checkpoint.checkpoints(run_dir / rd.RL_CHECKPOINTS)
    text = f"RL done: {cfg.rl.steps} steps; checkpoint {done[-1] if done else None}"
    path = run_dir / rd.RL_EVAL
    if path.exists():
        ev = json.loads(path.read_text())
        text += "\n" + format_table({k: v for k, v in ev.items() if k != "history"})
    return text


def _eval(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.eval.runner import run_eval

    run_eval(cfg.eval, run_dir, tracker, shared_verifier(cfg.verify))


def _eval_report(cfg, run_dir: Path) -> str:
    return (run_dir / rd.EVAL_TABLE).read_text(encoding="utf-8")


def _export(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.longshort.export import run_export

    run_export(cfg.export, run_dir, tracker)


def _export_report(cfg, run_dir: Path) -> str:
    from longshort.recipes.longshort.export import MANIFEST

    out = Path(cfg.export.out) if cfg.export.out else run_dir / rd.EXPORT
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    return (f"Exported the {manifest['source_stage']} pair of run {manifest['run']!r} to {out}\n"
            f"  try it: longshort solve {out} \"What is 12 + 7?\"")


def _own_cots(cfg) -> bool:
    """Whether ``chunk.source`` is a user's long CoTs (set, and not the embedded task's own problems)."""
    from longshort.toy.task import SOURCE

    local = Path(cfg.chunk.source.path)
    if not cfg.chunk.source.path:
        return False
    if local.is_file() and local.suffix == ".jsonl":
        with open(local, encoding="utf-8") as f:
            first = f.readline()
        try:
            return json.loads(first).get("source") != SOURCE  # coldstart_data/sample.jsonl, a bootstrap's train split
        except (json.JSONDecodeError, AttributeError):
            return True  # the data check names a bad record
    return True


def _check_own_cots(cfg) -> None:
    """A user's long CoTs are never scored and trained with the embedded toy's model (1M parameters, taught synthetic
    arithmetic), nor compressed with the synthetic teacher's step lines they do not have."""
    stages = cfg.pipeline.stages or ("score", "coldstart", "sft")
    if not _own_cots(cfg):
        return
    toy = [k for k, unset in (("score.model", cfg.score.model is None and cfg.score.judge == "base"),
                              ("sft.long_model", cfg.sft.long_model is None),
                              ("sft.short_model", cfg.sft.short_model is None)) if unset]
    if (toy and not cfg.bootstrap.init and not cfg.pipeline.toy_model_on_own_data
            and any(s in stages for s in ("score", "sft"))):
        raise LongshortError(
            f"chunk.source.path is your own data ({cfg.chunk.source.path}), but {', '.join(toy)} "
            f"{'is' if len(toy) == 1 else 'are'} unset, so the embedded toy's model (1M parameters, trained on "
            "synthetic arithmetic) would score and learn it. Name your models (ray_configs/byo-longcot.yaml is a "
            "template for your own CoTs and models), or set bootstrap.init to a checkpoint to start from, or set "
            "pipeline.toy_model_on_own_data: true to do it anyway")
    if cfg.coldstart.compression == "teacher" and "coldstart" in stages:
        raise LongshortError(
            f"coldstart.compression: teacher writes the short turns from the synthetic task's teacher step lines, "
            f"which your CoTs ({cfg.chunk.source.path}) do not have; set coldstart.compression: engine and "
            "coldstart.rewrite.model to the instruct model that rewrites them concisely (ray_configs/byo-longcot.yaml)")


def preflight(cfg, run_dir: Path) -> None:
    """Before the first stage: the toy's model is not about to learn a user's data, and the checkpoints the pair's SFT
    starts from share one tokenizer (when both exist)."""
    from longshort.data.tokenizers import check_shared_tokenizer

    _check_own_cots(cfg)

    starts = {r: rd.resolve(run_dir, getattr(cfg.sft, f"{r}_model"), rd.BASE_MODEL) for r in ("long", "short")}
    if all((p / "config.json").exists() for p in starts.values()):
        check_shared_tokenizer(starts, "sft.long_model / sft.short_model")


def format_table(metrics: dict) -> str:
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in metrics.items() if not isinstance(v, dict)]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


STAGES = (
    bootstrap_stage(_uses_embedded, report=_bootstrap_report),
    Stage("chunk", "split long CoTs into thoughts (rules, or an engine's grouping validated) → runs/<name>/chunk/",
          ("chunk",), (rd.THOUGHTS,), _chunk),
    Stage("judge", "under score.judge: pair, the pair that judges thoughts: SFT'd on a cold start of thoughts "
          "chosen at random (or by the base model's importance) → runs/<name>/judge/", ("score", "coldstart", "sft"),
          tuple(f"judge/sft/{r}/model/config.json" for r in ("long", "short")), _judge,
          needed=lambda cfg: cfg.score.judge == "pair" and not cfg.score.pair_judge.pair),
    Stage("score", "Monte Carlo importance of each thought from prefix rollouts (cached, resumable) → "
          "runs/<name>/score/", ("score",), (rd.SCORES,), _score, keep=("cache",)),
    Stage("coldstart", "turn scored CoTs into long/short dialogues that verify → runs/<name>/coldstart/",
          ("coldstart",), (rd.DIALOGUES,), _coldstart, also=_coldstart_tokenizer),
    Stage("sft", "SFT the long and the short model on their own turns of the dialogues, then evaluate the pair",
          ("sft",), tuple(f"{rd.role_model('sft', r)}/config.json" for r in ("long", "short")), _sft),
    Stage("rl", "multi-turn RL of the long/short pair on Ray: both policies roll out together and both update",
          ("rl",), tuple(f"{rd.role_model('rl', r)}/config.json" for r in ("long", "short")), _rl,
          report=_rl_report, resumable=True),
    Stage("eval", "evaluate models and pairs on benchmarks (eval.systems x eval.benchmarks) → runs/<name>/eval/",
          ("eval",), (rd.EVAL_RESULTS,), _eval, report=_eval_report),
    Stage("export", "write the trained pair as two HF model dirs + manifest + model card → runs/<name>/export/",
          ("export",), ("{export.out}/manifest.json",), _export, report=_export_report),
)
