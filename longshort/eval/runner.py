"""Benchmark evaluation of single models, long/short pairs and Hawkeye planner/responder pairs (``longshort eval``):
the paper's results table.

Every system (a single model answering alone, or a pair through the protocol) answers every benchmark ``k`` times;
answers are checked with the project's verifier (a pair's answer is the short role's last turn, and only a finished
dialogue can be right). ``<run>/eval/`` gets ``results.json`` (accuracy, tokens, turns, truncation per system and
benchmark), ``samples/<system>/<benchmark>.jsonl`` (every answer), and the table/CSV/plot of ``eval_report``.
The per-sample generation here (``run_single``, ``run_pair``: both the one dialogue driver, ``rl.episodes.rollout``)
is also what the SFT stage's pair eval and ``longshort solve`` use.
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.core.jsonl import write_jsonl
from longshort.data.problems import Problem, ProblemSource, load_problems
from longshort.data.protocol import MAX_TURNS, PAIR_RULES, PLANNER_RESPONDER_RULES, SINGLE_RULES, TurnRules
from longshort.rl.episodes import Episode, EpisodeConfig, PromptItem, rollout

log = logging.getLogger("longshort")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # names become file names and metric keys
# The stage that writes a model directory, by the first part of its path in the run directory.
_MAKERS = {"bootstrap": "longshort bootstrap", "sft": "longshort sft", "rl": "longshort rl"}


def _check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"name: {name!r} is not a usable {what} name (it labels columns, files and metrics); "
                         "accepted: letters, digits, '.', '_', '+', '-', e.g. MATH500 or sft-pair")


@dataclass
class BenchmarkSpec:
    """One benchmark column: ``name`` labels it, ``source`` loads it (path "" means the run's held-out problems)."""

    name: str = ""
    source: ProblemSource = field(default_factory=ProblemSource)

    def validate(self) -> None:
        _check_name(self.name, "benchmark")


# System kind -> the dialogue its models hold (its roles are the SystemSpec keys that name their models).
KIND_RULES: dict[str, TurnRules] = {"pair": PAIR_RULES, "hawkeye": PLANNER_RESPONDER_RULES}
_EXAMPLES = {"single": "model: bootstrap/base_model", "pair": "long: sft/long/model, short: sft/short/model",
             "hawkeye": "planner: rl/planner/model, responder: responder/model"}


@dataclass
class SystemSpec:
    """One table row: a single model (``model``), a Long⊗Short pair (``long`` + ``short``) or a Hawkeye pair
    (``planner`` + ``responder``); paths relative to the run dir."""

    name: str = ""
    kind: Literal["single", "pair", "hawkeye"] = "single"
    model: str | None = None
    long: str | None = None
    short: str | None = None
    planner: str | None = None
    responder: str | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        """The keys that name this kind's models (``model`` for a single model)."""
        return tuple(dict.fromkeys(KIND_RULES[self.kind].order)) if self.kind in KIND_RULES else ("model",)

    def validate(self) -> None:
        _check_name(self.name, "system")
        given = {k for k in ("model", "long", "short", "planner", "responder") if getattr(self, k)}
        if given != set(self.roles):
            raise ValueError(f"{self.roles[0]}: a {self.kind} system needs {', '.join(self.roles)} (and no other "
                             f"model key; given: {', '.join(sorted(given)) or 'none'}); accepted: model directories, "
                             f"e.g. {_EXAMPLES[self.kind]}")

    @property
    def model_paths(self) -> dict[str, str]:
        """Role -> configured path (``model`` for a single model)."""
        return {role: str(getattr(self, role)) for role in self.roles}


def _default_systems() -> list[SystemSpec]:
    return [SystemSpec("base", "single", model=rd.BASE_MODEL),
            SystemSpec("sft-pair", "pair", long=rd.role_model("sft", "long"), short=rd.role_model("sft", "short")),
            SystemSpec("rl-pair", "pair", long=rd.role_model("rl", "long"), short=rd.role_model("rl", "short"))]


@dataclass
class EvalConfig:
    """Benchmark evaluation (config section ``eval``)."""

    RENAMED_KEYS = {"rollout": "engines"}  # old configs still load (with a warning)

    benchmarks: list[BenchmarkSpec] = field(
        default_factory=lambda: [BenchmarkSpec("tiny", ProblemSource(path="", limit=100))])
    systems: list[SystemSpec] = field(default_factory=_default_systems)
    missing: Literal["skip", "fail"] = "skip"  # a system whose model directories do not exist
    k: int = field(default=1, metadata={"ge": 1})  # samples per problem; accuracy is pass@1 averaged over them
    temperature: float = field(default=0.0, metadata={"ge": 0})
    top_p: float = field(default=1.0, metadata={"gt": 0, "le": 1})
    seed: int = 0
    max_tokens: int = field(default=512, metadata={"ge": 1})  # a single model's whole answer
    max_turn_tokens: int = field(default=256, metadata={"ge": 1})  # one pair turn
    max_turns: int = field(default=MAX_TURNS, metadata={"ge": 2})  # pair turns (long and short together)
    engines: EnginePoolConfig = field(default_factory=EnginePoolConfig)

    def validate(self) -> None:
        if self.k > 1 and self.temperature == 0:
            raise ValueError(f"k: k={self.k} samples at temperature 0 are all the same answer; accepted: k: 1, or "
                             "temperature > 0 (e.g. 0.6)")
        for what, names in (("benchmarks", [b.name for b in self.benchmarks]),
                            ("systems", [s.name for s in self.systems])):
            if not names:
                raise ValueError(f"{what}: the list is empty; accepted: at least one entry")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what}: the name {dup[0]!r} is used twice; accepted: a unique name per entry")


# ------------------------------------------------------------------------------------------- generation


@dataclass
class Answer:
    """One answer of a system: its turns (a single model has one ``assistant`` turn), how it ended, and the text
    the verifier checks (a pair's: the short role's last turn, "" unless the dialogue finished)."""

    turns: list[tuple[str, list[int]]]  # (role, generated ids incl. terminator)
    status: str  # finished | length (a single answer hit max_tokens) | cut (a pair turn hit its limit) | max_turns
    answer_text: str

    roles: tuple[str, ...] = ()  # every role of the system's dialogue (a role that never spoke counts 0 tokens)

    @property
    def tokens(self) -> dict[str, int]:
        out: dict[str, int] = {r: 0 for r in self.roles}
        for role, ids in self.turns:
            out[role] = out.get(role, 0) + len(ids)
        return out

    @property
    def total(self) -> int:
        return sum(len(ids) for _, ids in self.turns)


def _pair_answer(e: Episode, roles: tuple[str, ...] = ("long", "short")) -> Answer:
    """Only a finished dialogue has an answer; a budget stop counts as a cut turn."""
    status = e.status if e.status in ("finished", "max_turns") else "cut"
    return Answer(e.turn_ids(), status, e.answer_text if status == "finished" else "", roles)


def run_team(generators: dict, rules: TurnRules, tokenizer, problems: list[str], *, max_turns: int = MAX_TURNS,
             max_turn_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> list[Answer]:
    """Models holding ``rules``' dialogue on every problem (``max_turns`` capped by the rules'), batched per turn;
    every request of problem ``i`` is seeded ``seed + i``."""
    turns = min(max_turns, rules.max_turns)
    limits = EpisodeConfig(max_turns=turns, max_turn_tokens_long=max_turn_tokens, max_turn_tokens_short=max_turn_tokens,
                           max_episode_tokens=max(2, turns * max_turn_tokens), temperature=temperature, top_p=top_p)
    episodes, _ = rollout(_prompts(problems), generators, tokenizer, limits, group_size=1, logprobs=False, rules=rules,
                          seed_fn=lambda e, turn: seed + e.group)
    roles = tuple(dict.fromkeys(rules.order))
    return [_pair_answer(e, roles) for e in episodes]


def _single_answer(e: Episode, tokenizer) -> Answer:
    """The one turn's text, kept even when cut (``length``: then ``judge`` counts it wrong); either terminator
    finishes it."""
    ((role, ids),) = e.turn_ids()
    status = "length" if e.turns[0].end_kind == "cut" else "finished"
    return Answer([(role, ids)], status, tokenizer.decode(ids, skip_special_tokens=True))


def run_pair(long_gen, short_gen, tokenizer, problems: list[str], **limits) -> list[Answer]:
    """Alternate the two models through the pair protocol on every problem (``run_team`` with the pair's rules)."""
    return run_team({"long": long_gen, "short": short_gen}, PAIR_RULES, tokenizer, problems, **limits)


def run_single(gen, tokenizer, problems: list[str], *, max_tokens: int = 512, temperature: float = 0.0,
               top_p: float = 1.0, seed: int = 0) -> list[Answer]:
    """A model answering alone (one ``assistant`` turn, through the same driver); request ``i`` is seeded
    ``seed + i``. The turn ends at either protocol terminator (EOS or END_TURN)."""
    limits = EpisodeConfig(max_turns=1, max_turn_tokens_long=max_tokens, max_turn_tokens_short=max_tokens,
                           max_episode_tokens=max(2, max_tokens), temperature=temperature, top_p=top_p)
    episodes, _ = rollout(_prompts(problems), {"assistant": gen}, tokenizer, limits, group_size=1, logprobs=False,
                          rules=SINGLE_RULES, seed_fn=lambda e, turn: seed + e.group)
    return [_single_answer(e, tokenizer) for e in episodes]


def _prompts(problems: list[str]) -> list[PromptItem]:
    return [PromptItem(str(i), p, "") for i, p in enumerate(problems)]


def judge(answers: list[Answer], golds: list, verifier) -> list:
    """The verifier's verdict on each answer: one that did not finish (cut at a length limit, out of turns) is wrong,
    for a single model as for a team (``Verifier.judge_many``'s one rule)."""
    return verifier.judge_many([a.answer_text or "" for a in answers], golds,
                               finished=[a.status == "finished" for a in answers])


# -------------------------------------------------------------------------------------------- the stage


class _Engines:
    """One backend per model directory, opened on first use and closed once no later system needs it."""

    def __init__(self, cfg: EvalConfig):
        self.cfg, self.open, self.tokenizers = cfg, {}, {}

    def get(self, path: Path):
        key = path.resolve()
        if key not in self.open:
            self.open[key] = open_engine_pool(self.cfg.engines, path, self.cfg.seed)
        return self.open[key]

    def tokenizer(self, path: Path):
        from transformers import AutoTokenizer

        key = path.resolve()
        if key not in self.tokenizers:
            self.tokenizers[key] = AutoTokenizer.from_pretrained(str(path))
        return self.tokenizers[key]

    def keep_only(self, paths: set[Path]) -> None:
        for key in [k for k in self.open if k not in {p.resolve() for p in paths}]:
            self.open.pop(key).close()


def _model_dir(run_dir: Path, path: str) -> Path:
    return rd.model_path(run_dir, path)


def _missing(system: SystemSpec, run_dir: Path) -> str | None:
    """Why ``system`` cannot run (a model directory without config.json, and the stage that makes it), or None."""
    for role, path in system.model_paths.items():
        full = _model_dir(run_dir, path)
        if not (full / "config.json").exists():
            maker = _MAKERS.get(Path(path).parts[0]) if not Path(path).is_absolute() else None
            how = f"it is made by `{maker}`" if maker else "point it at a Hugging Face model directory"
            return f"its {'' if role == 'model' else role + ' '}model {full} does not exist ({how})"
    return None


def _benchmark(spec: BenchmarkSpec, run_dir: Path) -> tuple[list[Problem], dict]:
    """The benchmark's problems, and what its load left out (counted in results.json, not only in a warning)."""
    src = replace(spec.source, path=spec.source.path or str(run_dir / rd.EVAL_DATA))
    try:
        problems, report = load_problems(src)
    except LongshortError as exc:
        hint = " (run `longshort bootstrap` first, or set source.path)" if not spec.source.path else ""
        raise LongshortError(f"eval benchmark {spec.name!r}: {exc}{hint}") from exc
    return problems, {"source": src.path, "n": len(problems), "records_read": report.records,
                      "bad_records_skipped": dict(report.skipped), "left_out_by_limit": report.not_read}


def _generate(system: SystemSpec, engines: _Engines, run_dir: Path, texts: list[str], cfg: EvalConfig) -> list[Answer]:
    """``k`` answers per problem in one batch: answer ``j * n + i`` is sample ``j`` of problem ``i``."""
    dirs = {role: _model_dir(run_dir, p) for role, p in system.model_paths.items()}
    tok = engines.tokenizer(next(iter(dirs.values())))
    many = texts * cfg.k
    common = {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed}
    if system.kind == "single":
        return run_single(engines.get(dirs["model"]), tok, many, max_tokens=cfg.max_tokens, **common)
    return run_team({r: engines.get(d) for r, d in dirs.items()}, KIND_RULES[system.kind], tok, many,
                    max_turns=cfg.max_turns, max_turn_tokens=cfg.max_turn_tokens, **common)


def accuracy_se(correct: list[bool], n: int, k: int) -> float:
    """Standard error of pass@1 over problems: the spread of each problem's mean correctness (over its k samples)
    divided by sqrt(n). Problems are the unit that varies between benchmark draws; with k = 1 this is the binomial
    sqrt(p (1 - p) / (n - 1))."""
    if n < 2:
        return 0.0
    per_problem = [sum(correct[j * n + i] for j in range(k)) / k for i in range(n)]
    return statistics.stdev(per_problem) / n**0.5


def accuracy_metrics(correct: list[bool], tokens: list[int], n: int, k: int) -> dict:
    """pass@1 over ``k`` samples of ``n`` problems (sample-major: sample j's answers at ``j * n .. j * n + n``),
    ± its standard error over problems, each sample's accuracy, and tokens per answer."""
    runs = [sum(correct[j * n : (j + 1) * n]) / n for j in range(k)]
    return {"n": n, "k": k, "accuracy": sum(runs) / k, "accuracy_se": accuracy_se(correct, n, k),
            "accuracy_std": statistics.pstdev(runs), "accuracy_runs": runs,
            "mean_tokens": statistics.fmean(tokens), "median_tokens": float(statistics.median(tokens))}


def _metrics(answers: list[Answer], correct: list[bool], n: int, k: int, roles: tuple[str, ...]) -> dict:
    m = accuracy_metrics(correct, [a.total for a in answers], n, k)
    for role in roles:  # a team's tokens per role (a single model's are mean_tokens)
        m[f"tokens_{role}"] = statistics.fmean(a.tokens[role] for a in answers)
    m["mean_turns"] = statistics.fmean(len(a.turns) for a in answers)
    m["truncated"] = statistics.fmean(a.status != "finished" for a in answers)
    return m


def _sample_rows(problems: list[Problem], answers: list[Answer], verdicts, tokenizer) -> list[dict]:
    n = len(problems)
    rows = []
    for idx, (a, v) in enumerate(zip(answers, verdicts, strict=True)):
        p = problems[idx % n]
        rows.append({"id": p.id, "sample": idx // n, "gold": p.answer, "predicted": v.answer, "correct": v.correct,
                     "status": a.status, "tokens": a.tokens, "answer_text": a.answer_text,
                     "turns": [[role, tokenizer.decode(ids, skip_special_tokens=True)] for role, ids in a.turns]})
    return rows


def run_eval(cfg: EvalConfig, run_dir: str | Path, tracker=None, verifier=None) -> dict:
    """Evaluate every system on every benchmark; write ``<run>/eval/`` and return what ``results.json`` holds."""
    from longshort.core.config import to_dict
    from longshort.data.tokenizers import check_shared_tokenizer
    from longshort.data.verify import shared_verifier
    from longshort.eval.report import write_results

    run_dir = Path(run_dir)
    out = run_dir / rd.EVAL
    loaded = {b.name: _benchmark(b, run_dir) for b in cfg.benchmarks}  # bad sources fail before any model work
    benchmarks = {name: problems for name, (problems, _) in loaded.items()}
    skipped, systems = {}, []
    for s in cfg.systems:
        why = _missing(s, run_dir)
        if why is None:
            systems.append(s)
        elif cfg.missing == "fail":
            raise LongshortError(f"eval system {s.name!r}: {why}; run that stage first, or set eval.missing=skip")
        else:
            log.warning("eval: skipping system %s: %s", s.name, why)
            skipped[s.name] = why
    if not systems:
        raise LongshortError("eval: none of the systems can run (" + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                             + "); run the stages that make them first, or list existing models in eval.systems")
    for s in systems:  # a pair whose roles cannot read each other's tokens fails before any generation
        if s.kind != "single":
            check_shared_tokenizer({r: _model_dir(run_dir, p) for r, p in s.model_paths.items()},
                                   f"eval system {s.name!r}")
    verifier = verifier or shared_verifier()
    results: dict[str, dict[str, dict]] = {}
    engines = _Engines(cfg)
    try:
        for pos, s in enumerate(systems):
            results[s.name] = {}
            for bname, problems in benchmarks.items():
                t0 = time.perf_counter()
                answers = _generate(s, engines, run_dir, [p.problem for p in problems], cfg)
                verdicts = judge(answers, [p.gold for p in problems] * cfg.k, verifier)
                m = _metrics(answers, [v.correct for v in verdicts], len(problems), cfg.k,
                             s.roles if s.kind != "single" else ())
                m["seconds"] = time.perf_counter() - t0
                results[s.name][bname] = m
                tok = engines.tokenizer(_model_dir(run_dir, next(iter(s.model_paths.values()))))
                write_jsonl(_sample_rows(problems, answers, verdicts, tok), out / "samples" / s.name / f"{bname}.jsonl")
                log.info("eval %s on %s: accuracy %.3f (k=%d), %.1f tokens per answer, %.0f%% truncated (%.0fs)",
                         s.name, bname, m["accuracy"], cfg.k, m["mean_tokens"], 100 * m["truncated"], m["seconds"])
            engines.keep_only({_model_dir(run_dir, p) for later in systems[pos + 1 :] for p in
                               later.model_paths.values()})
    finally:
        engines.keep_only(set())
    summary = {
        "settings": {k: to_dict(getattr(cfg, k)) for k in ("k", "temperature", "top_p", "seed", "max_tokens",
                                                            "max_turn_tokens", "max_turns")},
        "benchmarks": {name: info for name, (_, info) in loaded.items()},
        "systems": {s.name: {"kind": s.kind, "models": s.model_paths} for s in systems},
        "results": results,
        "skipped": skipped,
    }
    write_results(summary, out, tracker)
    return summary
