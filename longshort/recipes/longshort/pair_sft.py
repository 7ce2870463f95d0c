"""SFT of the long/short pair from cold-start dialogues (``longshort sft``), and the pair-vs-base evaluation.

Both models start from the base model (or the checkpoints named in ``sft.long_model`` / ``sft.short_model``) and
learn from the same dialogues: the long model the tokens of the long role's turns, the short model the short
role's. The evaluation runs the pair through the protocol (``protocol.PAIR_RULES``: long opens, the
short role hands back with END_TURN or finishes with EOS) on held-out problems, next to the base model answering
alone, and reports accuracy and generated tokens of both.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
from longshort.cluster.sft_job import run_sft
from longshort.cluster.topology import ensure_ray
from longshort.core import checks as outcome
from longshort.core import run_dir as rd
from longshort.core.config import PLACEMENT
from longshort.core.errors import LongshortError
from longshort.data.problems import ProblemSource, load_problems
from longshort.data.protocol import MAX_TURNS
from longshort.data.tokenizers import check_shared_tokenizer
from longshort.eval.runner import judge, run_pair, run_single  # shared with `longshort eval`
from longshort.tracking.tracker import OffsetTracker
from longshort.training.sft import SFTConfig
from longshort.training.sft_data import SFTExample, load_sft_jsonl

log = logging.getLogger("longshort")


@dataclass
class PairEvalConfig:
    """The pair against the base model on dev problems (the test split is the eval stage's)."""

    RENAMED_KEYS = {"rollout": "engines"}  # old configs still load (with a warning)

    source: ProblemSource = field(default_factory=lambda: ProblemSource(path="", limit=100))  # "": bootstrap dev
    temperature: float = field(default=0.0, metadata={"ge": 0})
    max_turn_tokens: int = field(default=256, metadata={"ge": 1})  # per pair turn
    max_tokens: int = field(default=512, metadata={"ge": 1})  # the base model's whole answer
    max_turns: int = field(default=MAX_TURNS, metadata={"ge": 2})
    seed: int = 0
    engines: EnginePoolConfig = field(default_factory=EnginePoolConfig)


@dataclass
class PairCheckConfig:
    """``sft.check`` (``core/checks.py``): the SFT'd pair's greedy accuracy on ``n`` dev problems, under the pair
    eval's limits and engines. RL samples around this pair: one that cannot finish a dialogue right gives the group
    advantages nothing to compare."""

    n: int = field(default=200, metadata={"ge": 1})
    # tiny.yaml with a 320-CoT cold start, 200 dev problems: the pair after its 8 epochs 86%, after 1 epoch 12.5%
    min_accuracy: float = field(default=0.6, metadata={"ge": 0.0, "le": 1.0})
    dev: ProblemSource = field(default_factory=ProblemSource)  # path "": the run's bootstrap/data/dev.jsonl


def _pair_sft_default() -> SFTConfig:
    return SFTConfig(lr=3e-4, min_lr=3e-5, epochs=3, micro_batch_size=8, max_len=512, progress=False)


@dataclass
class PairSFTConfig:
    """SFT of the pair (config section ``sft``)."""

    long_model: str | None = None  # None: the bootstrap base model
    short_model: str | None = None
    data: str | None = None  # dialogues JSONL; None: run_dir/coldstart/dialogues.jsonl
    long: SFTConfig = field(default_factory=_pair_sft_default)
    short: SFTConfig = field(default_factory=_pair_sft_default)
    eval: PairEvalConfig = field(default_factory=PairEvalConfig)
    run_eval: bool = True
    # train both models at the same time, each in its own process with its share of the CPU threads (a tiny model
    # on few cores gains more from two trainings than from threads); the short model's metrics are logged after
    # the long model's. On GPUs both use the same devices, so it only suits models that fit twice.
    parallel: bool = field(default=False, metadata={PLACEMENT: True})  # same weights either way
    check: PairCheckConfig = outcome.check_field(PairCheckConfig)  # the `sft` stage's outcome on dev


# ------------------------------------------------------------------------------------------------- eval


def _pair_answers(cfg: PairEvalConfig, long_dir: Path, short_dir: Path, tok, texts: list[str],
                  temperature: float | None = None) -> list:
    """The pair's dialogues on ``texts`` under the eval's limits and engines (``temperature`` None: the eval's)."""
    long_b, short_b = open_engine_pool(cfg.engines, long_dir, cfg.seed), open_engine_pool(cfg.engines, short_dir, cfg.seed)
    try:
        return run_pair(long_b, short_b, tok, texts, max_turns=cfg.max_turns, max_turn_tokens=cfg.max_turn_tokens,
                        temperature=cfg.temperature if temperature is None else temperature, seed=cfg.seed)
    finally:
        long_b.close()
        short_b.close()


def evaluate_pair(cfg: PairEvalConfig, base_dir: Path, long_dir: Path, short_dir: Path, problems, verifier) -> dict:
    """Accuracy and mean generated tokens of the base model alone and of the pair, on ``problems``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    texts, golds = [p.problem for p in problems], [p.answer for p in problems]
    t0 = time.perf_counter()
    base = open_engine_pool(cfg.engines, base_dir, cfg.seed)
    try:
        single = run_single(base, tok, texts, max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)
    finally:
        base.close()
    t1 = time.perf_counter()
    pair = _pair_answers(cfg, long_dir, short_dir, tok, texts)
    t2 = time.perf_counter()
    base_ok = [v.correct for v in judge(single, golds, verifier)]
    pair_ok = [v.correct for v in judge(pair, golds, verifier)]
    n = len(problems)
    base_acc, pair_acc = sum(base_ok) / n, sum(pair_ok) / n
    base_tok = sum(a.total for a in single) / n
    pair_tok = sum(o.total for o in pair) / n
    return {"problems": n, "base_accuracy": base_acc, "pair_accuracy": pair_acc,
            "accuracy_kept": pair_acc / base_acc if base_acc else None,
            "base_tokens": base_tok, "pair_tokens": pair_tok, "token_ratio": pair_tok / base_tok if base_tok else 0.0,
            "pair_long_tokens": sum(o.tokens["long"] for o in pair) / n,
            "pair_short_tokens": sum(o.tokens["short"] for o in pair) / n,
            "pair_turns": sum(len(o.turns) for o in pair) / n,
            "pair_finished": sum(o.status == "finished" for o in pair) / n,
            "pair_cut": sum(o.status == "cut" for o in pair) / n,
            "pair_max_turns": sum(o.status == "max_turns" for o in pair) / n,
            "seconds_base": t1 - t0, "seconds_pair": t2 - t1}


# ------------------------------------------------------------------------------------------------- stage


@dataclass
class PairSFTResult:
    long_model: Path
    short_model: Path
    eval: dict | None
    seconds: dict


def role_examples(path: Path, role: str) -> list[SFTExample]:
    """The dialogues of ``path`` with only ``role``'s turns trained."""
    return [replace(ex, train_roles=(role,)) for ex in load_sft_jsonl(path)]


class BufferedTracker:
    """Holds ``log``/``log_table`` calls until ``replay(tracker)``: a training that runs at the same time as another
    logs after it, so the run's step counter only ever increases (W&B drops a step lower than one it has seen)."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.calls.append(("log", (dict(metrics),), {"step": step}))

    def log_table(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], step: int) -> None:
        self.calls.append(("log_table", (name, list(columns), [list(r) for r in rows]), {"step": step}))

    def replay(self, tracker) -> None:
        for method, args, kwargs in self.calls:
            getattr(tracker, method)(*args, **kwargs)
        self.calls = []


def run_pair_sft(cfg: PairSFTConfig, run_dir: str | Path, tracker=None, verifier=None) -> PairSFTResult:
    """Train ``run_dir/sft/long/model`` and ``run_dir/sft/short/model``; evaluate the pair (``sft/eval.json``)."""
    run_dir = Path(run_dir)
    data = rd.resolve(run_dir, cfg.data, rd.DIALOGUES)
    if not data.exists():
        raise LongshortError(f"sft: {data} does not exist; run `longshort coldstart` first or set sft.data")
    jobs = {"long": (cfg.long, cfg.long_model), "short": (cfg.short, cfg.short_model)}
    check_shared_tokenizer({role: rd.resolve(run_dir, start, rd.BASE_MODEL) for role, (_, start) in jobs.items()},
                           "sft")
    seconds: dict[str, float] = {}
    models: dict[str, Path] = {}

    def train(role: str, view) -> None:
        sft_cfg, start = jobs[role]
        if cfg.parallel and sft_cfg.threads_per_rank is None:
            ranks = cfg.long.num_ranks + cfg.short.num_ranks
            sft_cfg = replace(sft_cfg, threads_per_rank=max(1, (os.cpu_count() or 1) // ranks))
        t0 = time.perf_counter()
        start_dir = rd.resolve(run_dir, start, rd.BASE_MODEL)
        res = run_sft(sft_cfg, role_examples(data, role), start_dir, run_dir / rd.role_dir("sft", role), tracker=view,
                      metric_prefix=f"sft_{role}/", key=f"sft.{role}")
        models[role] = res.model_dir
        seconds[f"sft_{role}"] = time.perf_counter() - t0
        log.info("sft %s: %d steps from %s -> %s (%.0fs)", role, res.steps, start_dir, res.model_dir,
                 seconds[f"sft_{role}"])

    if tracker is None:
        tracker = BufferedTracker()  # nothing is replayed: a stand-in so the step bookkeeping below is unconditional
    # One step counter for the run: the short model's steps follow the long model's, the eval's follow both.
    long_view = OffsetTracker(tracker, 0)
    if cfg.parallel:
        from concurrent.futures import ThreadPoolExecutor

        import transformers  # resolve its lazy names here: two threads importing them at once can fail

        transformers.AutoConfig, transformers.AutoTokenizer  # noqa: B018
        ensure_ray()  # here: a Ray instance started in a thread dies when the thread ends
        buffer = BufferedTracker()
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(train, "long", long_view), pool.submit(train, "short", buffer)]
        for f in futures:
            f.result()  # a failed training raises here, after the other one has finished
        short_view = OffsetTracker(tracker, long_view.top + 1)
        buffer.replay(short_view)
    else:
        train("long", long_view)
        short_view = OffsetTracker(tracker, long_view.top + 1)
        train("short", short_view)
    result = run_pair_eval(cfg, run_dir, OffsetTracker(tracker, short_view.top + 1), verifier) if cfg.run_eval else None
    return PairSFTResult(models["long"], models["short"], result, seconds)


def run_pair_eval(cfg: PairSFTConfig, run_dir: str | Path, tracker=None, verifier=None) -> dict:
    """Evaluate the trained pair (``run_dir/sft/{long,short}/model``) against the base model; ``sft/eval.json``."""
    from longshort.data.verify import shared_verifier

    run_dir = Path(run_dir)
    models = {role: run_dir / rd.role_model("sft", role) for role in ("long", "short")}
    for path in models.values():
        if not (path / "config.json").exists():
            raise LongshortError(f"sft eval: {path} does not exist; train the pair first (`longshort sft`)")
    ev = cfg.eval
    src = replace(ev.source, path=str(rd.resolve(run_dir, ev.source.path, rd.DEV_DATA)))  # dev: test is eval's
    problems, _ = load_problems(src)
    base = rd.resolve(run_dir, cfg.long_model, rd.BASE_MODEL)  # what the long role started from
    result = evaluate_pair(ev, base, models["long"], models["short"], problems, verifier or shared_verifier())
    (run_dir / rd.SFT_EVAL).write_text(json.dumps(result, indent=2))
    log.info("pair vs base on %d dev problems: accuracy %.3f vs %.3f (%.0f%% kept), tokens %.1f vs %.1f "
             "(%.0f%%)", result["problems"], result["pair_accuracy"], result["base_accuracy"],
             100 * (result["accuracy_kept"] or 0.0), result["pair_tokens"], result["base_tokens"],
             100 * result["token_ratio"])
    if tracker is not None:
        tracker.log({f"pair_eval/{k}": v for k, v in result.items() if v is not None}, step=0)
    return result


def check_pair(cfg: PairSFTConfig, run_dir: str | Path, verifier, trained_on: str = "") -> list[outcome.Check]:
    """``sft.check``: the SFT'd pair's greedy accuracy on the run's dev problems (``sft/checks.json``); skipped without
    dev problems, or when the pair learned from data of its own (``trained_on``) and ``sft.check.dev`` is unset."""
    from transformers import AutoTokenizer

    from longshort.toy.stage import dev_problems

    run_dir = Path(run_dir)
    problems = dev_problems(run_dir, cfg.check.dev, cfg.check.n, "sft", "sft.check.dev", trained_on)
    if problems is None:
        return []
    models = [run_dir / rd.role_model("sft", role) for role in ("long", "short")]
    tok = AutoTokenizer.from_pretrained(str(models[0]))
    pair = _pair_answers(cfg.eval, *models, tok, [p.problem for p in problems], temperature=0.0)
    correct = [v.correct for v in judge(pair, [p.gold for p in problems], verifier)]
    n = len(problems)
    return outcome.record(run_dir, [outcome.Check(
        "sft", "greedy accuracy of the SFT'd pair", sum(correct) / n, cfg.check.min_accuracy, "sft.check.min_accuracy",
        n=n, fix="a larger cold start (chunk.source.limit) or more SFT epochs (sft.long.epochs, sft.short.epochs)",
        details={"pair_tokens": sum(a.total for a in pair) / n,
                 "finished": sum(a.status == "finished" for a in pair) / n})])
