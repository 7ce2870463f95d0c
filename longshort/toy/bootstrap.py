"""``longshort bootstrap``: the embedded default's base model, built from nothing in minutes on a laptop.

Generates the synthetic task (``longshort.toy.task``), trains a tokenizer and builds a tiny model
(``longshort.toy.tiny``) or, with ``init``, starts from a pretrained checkpoint instead, SFTs it on the teacher's long CoTs (it stands in for
DeepSeek-R1-Distill in the paper), then evaluates it on held-out problems. Layout of ``run_dir``::

    data/train.jsonl, data/eval.jsonl   task records (Problem fields + tagged thoughts)
    data/dev.jsonl                      the dev split every stage checks its outcome on (``core/checks.py``)
    tokenizer/                          HF fast tokenizer with the protocol tokens and chat template
    init_model/                         the model SFT starts from: random tiny, or ``init`` with the protocol tokens
    sft/                                SFT checkpoints (a re-run resumes from them)
    base_model/                         the trained model + tokenizer (HF format, safetensors)
    eval.json, eval_samples.jsonl       held-out metrics and every generation
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from longshort.cluster.sft_job import run_sft
from longshort.core import checks as outcome
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.data.protocol import THINK_CLOSE, THINK_OPEN, Message
from longshort.data.verify import VerifyConfig, shared_verifier
from longshort.eval.runner import run_single
from longshort.toy.task import CORRECTION_RE, TaskConfig, dev_split, generate, read_jsonl, write_jsonl
from longshort.toy.tiny import TinyModelConfig, TokenizerConfig, build_model, n_params, task_texts, train_tokenizer
from longshort.training.sft import SFTConfig, SFTResult
from longshort.training.sft_data import SFTExample

log = logging.getLogger("longshort")


def _default_sft() -> SFTConfig:
    # Tuned for the tiny default: a from-scratch 1M-parameter model wants a large learning rate.
    return SFTConfig(lr=3e-3, min_lr=3e-4, warmup_ratio=0.015, betas=[0.9, 0.98], micro_batch_size=8,
                     max_len=512, overlong="drop", log_every=10)


@dataclass
class BootstrapEvalConfig:
    n: int | None = field(default=None, metadata={"ge": 1})  # held-out problems to evaluate (None: all of them)
    batch_size: int = field(default=100, metadata={"ge": 1})
    max_new_tokens: int = field(default=448, metadata={"ge": 1})
    samples_logged: int = field(default=8, metadata={"ge": 0})  # generations sent to the tracker as a table


@dataclass
class BootstrapCheckConfig:
    """The base model's outcome check (``core/checks.py``): greedy accuracy on the first ``n`` dev problems, the
    bootstrap eval's limits. Every later stage starts from this model or reads its CoTs."""

    n: int = field(default=200, metadata={"ge": 1})
    # the tiny default's base model: 95.5% on 200 dev problems; half its training (2000 steps) left it at 15.5% and
    # 39.5% on eval for seeds 0 and 1 (docs/bootstrap.md)
    min_accuracy: float = field(default=0.7, metadata={"ge": 0.0, "le": 1.0})


@dataclass
class BootstrapConfig:
    # "" builds a tokenizer and a tiny model from nothing (``tokenizer`` and ``model`` below); otherwise the base model
    # is this checkpoint fine-tuned on the teacher's long CoTs: a hub name, a directory or a GGUF file
    # (``pkg:file.gguf`` too), given the protocol tokens by ``prepare-model`` into ``init_model/``.
    init: str = ""
    task: TaskConfig = field(default_factory=TaskConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    sft: SFTConfig = field(default_factory=_default_sft)
    eval: BootstrapEvalConfig = field(default_factory=BootstrapEvalConfig)
    check: BootstrapCheckConfig = outcome.check_field(BootstrapCheckConfig)

    def validate(self) -> None:
        for name in ("task", "model", "sft"):
            section = getattr(self, name)
            try:
                section.validate()
            except ValueError as e:
                raise ValueError(f"{name}.{e}") from None


@dataclass
class BootstrapResult:
    run_dir: Path
    model_dir: Path  # the trained base model (HF format + tokenizer): run_dir/base_model
    tokenizer: Path
    train_path: Path
    eval_path: Path
    metrics: dict[str, Any]  # what eval.json holds
    n_params: int
    sft: SFTResult
    timings: dict[str, float]


_BOXED = re.compile(r"\\boxed\{[^{}]+\}")


def is_well_formed(text: str, finished: bool) -> bool:
    """R1 format: ``<think>`` ... ``</think>`` then a ``\\boxed{}`` answer, and the model stopped by itself."""
    if not finished or not text.startswith(THINK_OPEN) or text.count(THINK_CLOSE) != 1:
        return False
    return _BOXED.search(text.split(THINK_CLOSE, 1)[1]) is not None


def generate_greedy(engine, tokenizer, problems: list[str], batch_size: int, max_new_tokens: int,
                    progress=None) -> list[tuple[str, int, bool]]:
    """(text, generated tokens incl. the terminator, finished) per problem: greedy single-model answers through the
    engine and the one dialogue driver (``eval.runner.run_single``), ``batch_size`` problems per call."""
    out: list[tuple[str, int, bool]] = []
    for start in range(0, len(problems), batch_size):
        answers = run_single(engine.generate, tokenizer, problems[start : start + batch_size],
                             max_tokens=max_new_tokens, temperature=0.0)
        out += [(a.answer_text, a.total, a.status == "finished") for a in answers]
        if progress is not None:
            progress(len(out))
    return out


def evaluate(model_dir: str | Path, records: list[dict], cfg: BootstrapEvalConfig,
             verify: VerifyConfig | None = None) -> tuple[dict, list[dict]]:
    """Held-out metrics of the model in ``model_dir`` and one row per problem."""
    from longshort.core.progress import bar
    from longshort.engines.registry import make_engine

    engine = make_engine("hf", model=str(model_dir), max_batch_size=cfg.batch_size, seed=0)
    tokenizer = engine.tokenizer
    records = records[: cfg.n] if cfg.n else records
    with bar("base eval", len(records)) as row:
        gens = generate_greedy(engine, tokenizer, [r["problem"] for r in records], cfg.batch_size, cfg.max_new_tokens,
                               progress=lambda n: row.update(completed=n))
    verdicts = shared_verifier(verify).judge_many([g[0] for g in gens], [r["answer"] for r in records],
                                                  finished=[g[2] for g in gens])
    rows = []
    for rec, (text, n_tok, finished), v in zip(records, gens, verdicts, strict=True):
        rows.append({"id": rec["id"], "steps": rec["meta"]["steps"], "answer": rec["answer"], "predicted": v.answer,
                     "correct": v.correct, "well_formed": is_well_formed(text, finished), "tokens": n_tok,
                     "finished": finished, "output": text})
    n = max(len(rows), 1)
    teacher = [len(tokenizer.encode(r["long_cot"], add_special_tokens=False)) + 1 for r in records]
    by_steps: dict[str, list[int]] = {}
    for r in rows:
        by_steps.setdefault(str(r["steps"]), []).append(int(r["correct"]))
    metrics = {
        "n": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / n,
        "well_formed": sum(r["well_formed"] for r in rows) / n,
        "mean_tokens": sum(r["tokens"] for r in rows) / n,
        "teacher_mean_tokens": sum(teacher) / max(len(teacher), 1),
        "unfinished": sum(not r["finished"] for r in rows) / n,
        "self_corrections": sum(bool(CORRECTION_RE.search(r["output"])) for r in rows) / n,
        "accuracy_by_steps": {k: sum(v) / len(v) for k, v in sorted(by_steps.items())},
    }
    return metrics, rows


def _sft_examples(records: list[dict]) -> list[SFTExample]:
    return [SFTExample(r["id"], [Message("user", r["problem"]), Message("assistant", r["long_cot"])])
            for r in records]


def _tiny_init(cfg: BootstrapConfig, train: list[dict], init_dir: Path, tok_dir: Path) -> int:
    """A tokenizer trained on the task and a randomly initialised tiny model; returns its parameter count."""
    tokenizer = train_tokenizer(task_texts(train, cfg.tokenizer.n_texts), cfg.tokenizer)
    tokenizer.save_pretrained(tok_dir)
    model = build_model(cfg.model, tokenizer)
    size = n_params(model)
    model.save_pretrained(init_dir)
    tokenizer.save_pretrained(init_dir)
    log.info("bootstrap: tokenizer of %d tokens, %s model with %.2fM parameters", len(tokenizer), cfg.model.arch,
             size / 1e6)
    return size


def _pretrained_init(source: str, init_dir: Path, tok_dir: Path) -> int:
    """``source`` with the protocol tokens in ``init_dir`` (kept when an earlier attempt prepared the same source)."""
    from transformers import AutoTokenizer

    from longshort.training.model_prep import MANIFEST, prepare_model

    manifest = init_dir / MANIFEST
    done = json.loads(manifest.read_text()) if manifest.exists() else {}
    if done.get("source") != source:
        if init_dir.exists():
            shutil.rmtree(init_dir)
        done = prepare_model(source, init_dir)
    AutoTokenizer.from_pretrained(init_dir).save_pretrained(tok_dir)
    log.info("bootstrap: base model from %s (%s, %.1fM parameters, vocab %d)", source, done["architecture"],
             done["n_params"] / 1e6, done["vocab_after"])
    return done["n_params"]


def run_bootstrap(cfg: BootstrapConfig, run_dir: str | Path, tracker=None,
                  verify: VerifyConfig | None = None) -> BootstrapResult:
    """Build the tiny long-CoT base model in ``run_dir`` (see the module docstring for the layout).

    ``tracker`` is a ``longshort.tracking.tracker.Tracker`` or None; ``verify`` configures the answer checker. Re-running on the same ``run_dir`` with the same
    config resumes the SFT from its last checkpoint (data, tokenizer and initial weights are deterministic).
    """
    try:
        cfg.validate()
    except ValueError as e:
        raise LongshortError(f"bootstrap config: {e}") from None
    run = Path(run_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    try:
        train, held_out = generate(cfg.task)
    except ValueError as e:
        raise LongshortError(f"bootstrap config: task.{e}") from None
    train_path = write_jsonl(train, run / "data" / "train.jsonl")
    eval_path = write_jsonl(held_out, run / "data" / "eval.jsonl")
    dev = dev_split(cfg.task, train, held_out)
    write_jsonl(dev, run / "data" / "dev.jsonl")
    if len(dev) < cfg.task.n_dev:
        log.warning("bootstrap: only %d of task.n_dev=%d dev problems are distinct from the train and eval ones at "
                    "this difficulty; the stages' checks read what there is", len(dev), cfg.task.n_dev)
    (run / "data" / "task.json").write_text(json.dumps(asdict(cfg.task), indent=2) + "\n")
    timings["data_s"] = time.perf_counter() - t0
    log.info("bootstrap: %d train / %d eval / %d dev problems -> %s", len(train), len(held_out), len(dev),
             train_path.parent)

    t = time.perf_counter()
    init_dir, tok_dir = run / "init_model", run / "tokenizer"
    size = _pretrained_init(cfg.init, init_dir, tok_dir) if cfg.init else _tiny_init(cfg, train, init_dir, tok_dir)
    timings["build_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sft = run_sft(cfg.sft, _sft_examples(train), init_dir, run / "sft", tracker=tracker,
                  metric_prefix="bootstrap/sft/", key="bootstrap.sft")
    timings["sft_s"] = time.perf_counter() - t
    if sft.model_dir is None:
        raise LongshortError(f"bootstrap: SFT stopped before its last step; re-run to resume from {run / 'sft'}")
    base = run / "base_model"
    if base.exists():
        shutil.rmtree(base)
    shutil.copytree(sft.model_dir, base)

    t = time.perf_counter()
    metrics, rows = evaluate(base, held_out, cfg.eval, verify)
    timings["eval_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    trained_tokens = sft.stats.targets if sft.stats else None
    metrics.update(n_params=size, sft_steps=sft.steps, sft_examples=len(train), sft_trained_tokens=trained_tokens,
                   sft_tokens=sft.stats.tokens if sft.stats else None,
                   sft_tokens_per_s=sft.tokens_per_s, timings=timings)
    (run / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_jsonl(rows, run / "eval_samples.jsonl")
    log.info("bootstrap eval: accuracy %.3f, well-formed %.3f, %.0f tokens per answer (teacher %.0f); %.0fs total",
             metrics["accuracy"], metrics["well_formed"], metrics["mean_tokens"], metrics["teacher_mean_tokens"],
             timings["total_s"])
    if tracker is not None:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
        tracker.log({f"bootstrap/eval/{k}": v for k, v in scalars.items()}, step=sft.steps)
        tracker.log({f"bootstrap/eval/accuracy_steps_{k}": v for k, v in metrics["accuracy_by_steps"].items()},
                    step=sft.steps)
        if cfg.eval.samples_logged:
            cols = ["id", "answer", "predicted", "correct", "tokens", "output"]
            tracker.log_table("bootstrap/eval_samples", cols,
                              [[r[c] for c in cols] for r in rows[: cfg.eval.samples_logged]], step=sft.steps)
        tracker.log_artifact(base, "base_model", "model")
        tracker.summary({f"bootstrap/{k}": v for k, v in scalars.items()})
    return BootstrapResult(run, base, tok_dir, train_path, eval_path, metrics, size, sft, timings)


def check_base_model(cfg: BootstrapConfig, run_dir: str | Path,
                     verify: VerifyConfig | None = None) -> list[outcome.Check]:
    """``bootstrap.check``: the base model's greedy accuracy on the run's dev problems, recorded in
    ``bootstrap/checks.json`` (``core/checks.py``); no dev split (a bootstrap made before there was one): skipped."""
    path = Path(run_dir) / rd.DEV_DATA
    records = read_jsonl(path)[: cfg.check.n] if path.exists() else []
    if not records:
        outcome.skip("bootstrap", f"{path} holds no dev problems")
        return []
    metrics, rows = evaluate(Path(run_dir) / rd.BASE_MODEL, records, replace(cfg.eval, n=None), verify)
    write_jsonl(rows, Path(run_dir) / rd.BOOTSTRAP_CHECK_SAMPLES)  # what RL's progress eval sets its pair beside
    return outcome.record(run_dir, [outcome.Check(
        "bootstrap", "greedy accuracy of the base model", metrics["accuracy"], cfg.check.min_accuracy,
        "bootstrap.check.min_accuracy", n=metrics["n"],
        fix="train longer (bootstrap.task.n_train: one SFT epoch) or a larger model (bootstrap.model); "
            "docs/bootstrap.md has the measured ones",
        details={"well_formed": metrics["well_formed"], "mean_tokens": metrics["mean_tokens"],
                 "unfinished": metrics["unfinished"]})])
