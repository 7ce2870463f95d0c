"""The ``chunk`` config section and the counts a chunking run reports (shared by the rules and the model grouping)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from longshort.cluster.engine_pool import EnginePoolConfig
from longshort.data.problems import LongCoTSource
from longshort.data.protocol import THINK_CLOSE, THINK_OPEN

# Cue regexes, matched at the start of a step (after markdown markers). Three kinds, because they mean different
# things for where a reasoning move ends (rules "moves", see rules.py): an opener starts a new thought, a check
# also keeps the step after it (its recomputation), a conclusion continues the thought before it.
_EN_OPENERS = [
    r"Wait\b", r"But wait\b", r"Hold on\b", r"Alternatively\b", r"Another (?:way|approach|method)\b", r"Hmm+\b",
    r"Let me (?:re-?\w+|reconsider|think|try|see|go|be|slow|restate|compute)\b", r"Let's\b", r"Actually\b",
    r"But\b", r"However\b", r"Okay\b", r"OK\b", r"Alright\b", r"Now\b", r"Next\b", r"First\b", r"Step \d+",
    r"Maybe\b", r"Perhaps\b", r"Oh\b",
]
_EN_CHECKS = [
    r"(?:(?:But|Hmm+|Okay|Wait),? )?[Ll]et me (?:double[- ]check|check|verify|re-?check|confirm|make sure)\b",
    r"To (?:verify|check|confirm)\b", r"Double[- ]check", r"Let's (?:double[- ]check|check|verify)\b",
]
_EN_CONCLUSIONS = [r"So\b", r"Therefore\b", r"Thus\b", r"Hence\b", r"Then\b", r"Finally\b"]
DEFAULT_CUES: dict[str, list[str]] = {
    "en": _EN_OPENERS,
    "zh": [r"等等", r"等一下", r"或者", r"嗯", r"让我(?:再)?(?:想想|算)", r"不过", r"但是", r"首先"],
}
DEFAULT_CHECK_CUES: dict[str, list[str]] = {"en": _EN_CHECKS, "zh": [r"让我(?:再)?(?:检查|验证)"]}
DEFAULT_CONCLUSION_CUES: dict[str, list[str]] = {"en": _EN_CONCLUSIONS, "zh": [r"所以", r"因此", r"然后", r"最后"]}


def _copy(cues: dict[str, list[str]]):
    return lambda: {k: list(v) for k, v in cues.items()}


@dataclass
class GroupingConfig:
    """Model-based grouping: how the engine is asked (``chunk.mode: model``)."""

    max_tokens: int = field(default=128, metadata={"ge": 1})
    temperature: float = field(default=0.0, metadata={"ge": 0})
    max_step_chars: int = field(default=400, metadata={"ge": 20})  # each step is shown cut to this many characters
    max_steps: int = field(default=200, metadata={"ge": 2})  # more steps than this: rules, counted as too_many_steps
    max_prompt_tokens: int = field(default=4096, metadata={"ge": 16})  # longer prompts: rules, counted


@dataclass
class ChunkConfig:
    """How long CoTs become thoughts (config section ``chunk``)."""

    RENAMED_KEYS = {"rollout": "engines"}  # old configs still load (with a warning)

    mode: Literal["rules", "model"] = "rules"
    # moves: a thought is one reasoning move (rules.py); cues: every cue-led paragraph is a thought (the synthetic
    # teacher writes one thought per paragraph, each opened by a cue)
    rules: Literal["moves", "cues"] = "moves"
    language: str = "en"
    # Cue regexes per language (see above): openers, checks, conclusions. With rules "cues" all three open thoughts.
    cues: dict[str, list[str]] = field(default_factory=_copy(DEFAULT_CUES))
    check_cues: dict[str, list[str]] = field(default_factory=_copy(DEFAULT_CHECK_CUES))
    conclusion_cues: dict[str, list[str]] = field(default_factory=_copy(DEFAULT_CONCLUSION_CUES))
    max_thought_chars: int = field(default=3000, metadata={"ge": 0})  # 0: no limit
    min_thought_chars: int = field(default=60, metadata={"ge": 0})  # moves: a shorter thought joins the one before
    think_open: str = THINK_OPEN
    think_close: str = THINK_CLOSE
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    # CoTs to chunk: any problem source whose records have a long CoT; path "" = the bootstrap task data.
    source: LongCoTSource = field(default_factory=lambda: LongCoTSource(path="", limit=64))
    model: str | None = None  # grouping model (mode: model); None: the bootstrap base model
    engines: EnginePoolConfig = field(default_factory=EnginePoolConfig)

    def validate(self) -> None:
        if self.language not in self.cues:
            raise ValueError(f"language: {self.language!r} has no cue list; accepted: {', '.join(sorted(self.cues))} "
                             "(or add chunk.cues.<language>)")
        for key in ("cues", "check_cues", "conclusion_cues"):
            for lang, pats in getattr(self, key).items():
                for p in pats:
                    try:
                        re.compile(p)
                    except re.error as e:
                        raise ValueError(f"{key}: pattern {p!r} for {lang!r} is not a valid regex ({e})") from None


@dataclass
class ChunkStats:
    cots: int = 0
    thoughts: int = 0
    steps: int = 0
    by_model: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)  # reason -> count (model mode only)

    def summary(self) -> dict:
        return {"cots": self.cots, "thoughts": self.thoughts, "steps": self.steps,
                "thoughts_per_cot": self.thoughts / max(self.cots, 1), "by_model": self.by_model,
                "fallbacks": sum(self.fallbacks.values()), **{f"fallback_{k}": v for k, v in self.fallbacks.items()}}
