"""Hawkeye's outcome checks (``core/checks.py``), each run right after its stage on dev problems, greedy, through the
eval's own dialogue driver (``eval.runner.run_team``: the system kind ``hawkeye``):

* ``responder``: the base model's greedy CoT handed to the just-trained responder. RL only pays the planner for
  steps the responder can read; a responder that cannot answer from a good CoT makes every reward noise.
* ``warmup``: the warmed-up planner with the responder: accuracy, and the share of planner turns that hand over
  (end with the hand-over token instead of being cut at the turn limit). RL samples around this planner; one that
  rambles past its limit or answers wrong gives the length penalty nothing to shorten.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from longshort.core import checks as outcome
from longshort.data.problems import ProblemSource


@dataclass
class ResponderCheckConfig:
    """``hawkeye.responder.check``: the responder's accuracy on the base model's greedy CoTs of ``n`` dev problems."""

    n: int = field(default=200, metadata={"ge": 1})
    # hawkeye-tiny, 200 dev problems: a responder that learned gets 95.5% (the base model's own answers: 95.5%), one
    # that did not 74% (77% after a right CoT)
    min_accuracy: float = field(default=0.9, metadata={"ge": 0.0, "le": 1.0})
    max_turn_tokens: int | None = field(default=None, metadata={"ge": 1})  # per turn; None: eval.max_turn_tokens
    dev: ProblemSource = field(default_factory=ProblemSource)  # path "": the run's bootstrap/data/dev.jsonl


@dataclass
class WarmupCheckConfig:
    """``hawkeye.warmup.check``: the warmed-up planner with the responder on ``n`` dev problems."""

    n: int = field(default=200, metadata={"ge": 1})
    # hawkeye-tiny, 200 dev problems: the shipped warm-up (4000 examples) 97.5% at 68 planner tokens, all handed
    # over; one of 160 examples 52.5% at 115 tokens
    min_accuracy: float = field(default=0.9, metadata={"ge": 0.0, "le": 1.0})
    min_handover: float = field(default=0.95, metadata={"ge": 0.0, "le": 1.0})  # planner turns that hand over
    # per turn; None: the planner's limit in the RL episodes that build on it (rl.episode). A tighter one asks for
    # concision: at 128 tokens the shipped warm-up still hands over every turn, the base model's long CoT 18%
    max_turn_tokens: int | None = field(default=None, metadata={"ge": 1})
    dev: ProblemSource = field(default_factory=ProblemSource)  # path "": the run's bootstrap/data/dev.jsonl


def _team(cfg, planner: Path, responder: Path, problems: list, max_turn_tokens: int, verifier):
    """Greedy planner/responder answers on ``problems``, whether each is right, and whether each planner turn holds
    the right answer itself (a long CoT ends on one; engines: ``eval.engines``)."""
    from transformers import AutoTokenizer

    from longshort.cluster.engine_pool import open_engine_pool
    from longshort.data.protocol import PLANNER_RESPONDER_RULES
    from longshort.eval.runner import judge, run_team

    tok = AutoTokenizer.from_pretrained(str(planner))
    engines = {}
    try:
        for role, path in (("planner", planner), ("responder", responder)):
            engines[role] = open_engine_pool(cfg.eval.engines, path, 0)
        answers = run_team(engines, PLANNER_RESPONDER_RULES, tok, [p.problem for p in problems],
                           max_turn_tokens=max_turn_tokens, temperature=0.0)
    finally:
        for engine in engines.values():
            engine.close()
    golds = [p.gold for p in problems]
    planner_texts = [tok.decode(a.turns[0][1], skip_special_tokens=True) for a in answers]
    return (answers, [v.correct for v in judge(answers, golds, verifier)],
            [v.correct for v in verifier.judge_many(planner_texts, golds)])


def _handed_over(answers) -> list[bool]:
    """Whether the planner's turn ended with a terminator: a cut planner turn ends the dialogue before the responder."""
    return [any(role == "responder" for role, _ in a.turns) for a in answers]


def _missing(stage: str, **models: Path) -> bool:
    for role, path in models.items():
        if not (Path(path) / "config.json").exists():
            outcome.skip(stage, f"the {role} {path} is not a local model directory")
            return True
    return False


def check_responder(cfg, run_dir: Path, planner: Path, responder: Path, verifier) -> list[outcome.Check]:
    """``planner``: the base model (whose long CoTs the responder learned to read); recorded in responder/checks.json."""
    from longshort.toy.stage import dev_problems

    rc = cfg.hawkeye.responder
    problems = dev_problems(run_dir, rc.check.dev, rc.check.n, "responder", "hawkeye.responder.check.dev",
                            rc.data.path)
    if problems is None or _missing("responder", planner=planner, responder=responder):
        return []
    limit = rc.check.max_turn_tokens or cfg.eval.max_turn_tokens
    answers, correct, base_right = _team(cfg, planner, responder, problems, limit, verifier)
    after_right = [c for c, b in zip(correct, base_right, strict=True) if b]
    return outcome.record(run_dir, [outcome.Check(
        "responder", "accuracy of the responder on the base model's greedy CoTs", statistics.fmean(correct),
        rc.check.min_accuracy, "hawkeye.responder.check.min_accuracy", n=len(problems),
        fix="train the responder on more examples (hawkeye.responder.examples) or at another rate "
            "(hawkeye.responder.sft.lr)",
        # the base model's own answer bounds this accuracy: which of the two fell short
        details={"base_cot_right": statistics.fmean(base_right),
                 "right_after_a_right_cot": statistics.fmean(after_right) if after_right else 0.0,
                 "base_cot_cut": 1 - statistics.fmean(_handed_over(answers))})])


def check_warmup(cfg, run_dir: Path, planner: Path, responder: Path, verifier) -> list[outcome.Check]:
    """``planner``: the warmed-up one; recorded in warmup/checks.json."""
    from longshort.toy.stage import dev_problems

    wc = cfg.hawkeye.warmup
    problems = dev_problems(run_dir, wc.check.dev, wc.check.n, "warmup", "hawkeye.warmup.check.dev", wc.data.path)
    if problems is None or _missing("warmup", planner=planner, responder=responder):
        return []
    limit = wc.check.max_turn_tokens or cfg.rl.episode.turn_limit("planner")
    answers, correct, _ = _team(cfg, planner, responder, problems, limit, verifier)
    tokens = statistics.fmean(a.tokens["planner"] for a in answers)
    fix = "warm up on more examples (hawkeye.warmup.examples) or with the essential style alone (hawkeye.warmup.styles)"
    return outcome.record(run_dir, [
        outcome.Check("warmup", "accuracy of the warmed-up planner with the responder", statistics.fmean(correct),
                      wc.check.min_accuracy, "hawkeye.warmup.check.min_accuracy", n=len(problems), fix=fix,
                      details={"planner_mean_tokens": tokens}),
        outcome.Check("warmup", f"share of the planner's turns that hand over within {limit} tokens",
                      statistics.fmean(_handed_over(answers)), wc.check.min_handover,
                      "hawkeye.warmup.check.min_handover", n=len(problems), fix=fix,
                      details={"planner_mean_tokens": tokens})])
