"""Hawkeye's config sections: ``hawkeye`` (the responder it trains on the embedded task, the planner's warm-up)
and ``rl`` (the shared RL loop with Hawkeye's roles: a trainable planner, a frozen responder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from longshort.core import run_dir as rd
from longshort.core.checks import check_field
from longshort.core.stage import RoleSpec
from longshort.data.problems import ProblemSource
from longshort.data.protocol import PLANNER_RESPONDER_RULES
from longshort.recipes.hawkeye.checks import ResponderCheckConfig, WarmupCheckConfig
from longshort.rl.episodes import EpisodeConfig
from longshort.rl.loop import RLSettings
from longshort.rl.rewards import RewardTerm
from longshort.rl.update import RLOptimConfig
from longshort.toy.tiny import TinyModelConfig
from longshort.training.sft import SFTConfig

ROLE_SPECS = {
    "planner": RoleSpec(trainable=True, help="writes a concise CoT for the responder (R1-Distill-Qwen-7B in the paper)"),
    "responder": RoleSpec(trainable=False, help="reads the problem and the CoT and answers, frozen (Qwen2.5-0.5B)"),
}
RESPONDER_MODEL = "responder/model"
WARMUP_MODEL = "warmup/model"


def _responder_model() -> TinyModelConfig:
    return TinyModelConfig(layers=2)  # smaller than the 4-layer planner: it should need the planner's steps


def _responder_sft() -> SFTConfig:
    # lr 3e-3 stalled at the marginal answer (loss 0.42); at 1e-3 copying the CoT's result forms after ~1000 steps
    return SFTConfig(lr=1e-3, min_lr=1e-4, warmup_ratio=0.02, betas=[0.9, 0.98], micro_batch_size=16, max_len=512,
                     log_every=10)


def _warmup_sft() -> SFTConfig:
    return SFTConfig(lr=5e-4, min_lr=5e-5, warmup_ratio=0.02, betas=[0.9, 0.98], micro_batch_size=16, max_len=256,
                     log_every=10)


@dataclass
class ResponderConfig:
    """The responder, taught to answer from the problem and a CoT of any completeness (the data's long CoT, its
    concise solution, a prefix of either, or none): a fresh smaller tiny model, or ``init`` fine-tuned."""

    init: str = ""  # "": a tiny model built from ``model``; else a prepared HF dir (`longshort prepare-model`)
    data: ProblemSource = field(default_factory=ProblemSource)  # path "": <run>/bootstrap/data/train.jsonl
    model: TinyModelConfig = field(default_factory=_responder_model)
    # > 0: start from the base model's first this many layers instead of a fresh ``model`` (see docs/recipes/hawkeye.md)
    base_layers: int = field(default=0, metadata={"ge": 0})
    sft: SFTConfig = field(default_factory=_responder_sft)
    examples: int = field(default=48000, metadata={"ge": 1})  # problems reused in order past the data's size
    seed: int = 0
    check: ResponderCheckConfig = check_field(ResponderCheckConfig)  # its outcome on dev (recipes/hawkeye/checks.py)

    def validate(self) -> None:
        if self.base_layers and self.init:
            raise ValueError(f"base_layers: {self.base_layers} together with init {self.init!r}; accepted: one of "
                             "them (init: a prepared checkpoint; base_layers: the base model's first layers)")


@dataclass
class WarmupConfig:
    """SFT of the planner on the data's concise CoTs before RL (the paper starts RL from R1-Distill directly; a
    1M-parameter model never samples a concise CoT it was not shown)."""

    enabled: bool = True
    data: ProblemSource = field(default_factory=ProblemSource)  # path "": <run>/bootstrap/data/train.jsonl
    examples: int = field(default=4000, metadata={"ge": 1})
    # CoT styles mixed in the warm-up (recipes/hawkeye/data.planner_cot), for RL's length penalty to pick among.
    # essential alone is the default: on the embedded task a mix lowered the warmed-up planner's accuracy (200
    # held-out, greedy: essential 97.5% at 62 tokens; essential+plain+compact 88.0% at 60; all four 79.5% at 57)
    styles: list[str] = field(default_factory=lambda: ["essential"])
    sft: SFTConfig = field(default_factory=_warmup_sft)
    seed: int = 0
    check: WarmupCheckConfig = check_field(WarmupCheckConfig)  # its outcome on dev (recipes/hawkeye/checks.py)

    def validate(self) -> None:
        from longshort.recipes.hawkeye.data import PLANNER_STYLES

        bad = [s for s in self.styles if s not in PLANNER_STYLES]
        if bad or not self.styles:
            raise ValueError(f"styles: {self.styles!r}; accepted: a non-empty list of {', '.join(PLANNER_STYLES)}")


@dataclass
class HawkeyeConfig:
    """Config section ``hawkeye``: where the two models come from."""

    planner_model: str | None = None  # None: the run's bootstrap/base_model (then warmed up when warmup.enabled)
    responder_model: str | None = None  # None: trained by the `responder` stage on the embedded task
    responder: ResponderConfig = field(default_factory=ResponderConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    # The paper's code counts a problem as answered when the responder alone already fails it (recipes/hawkeye/
    # forgive.py says why it exists and why it is off): the rl stage then swaps `correctness` for that variant.
    forgive_responder_failures: bool = False


def _hawkeye_rewards() -> list[RewardTerm]:
    # The paper's reward: the responder's correctness minus a quadratic penalty past 0.3 x the reference CoT length.
    return [RewardTerm("correctness", 1.0),
            RewardTerm("length", 1.0, {"kind": "target", "ratio": 0.3, "coef": 0.01, "unit": "tokens",
                                       "reference": "long_cot"}, roles=["planner"])]


def _hawkeye_episode() -> EpisodeConfig:
    return EpisodeConfig(max_turns=2, temperature=0.9, max_episode_tokens=512,
                         max_turn_tokens={"planner": 256, "responder": 32})


@dataclass
class HawkeyeRLConfig(RLSettings):
    """``rl`` for Hawkeye: GRPO on the planner only; the responder generates its turn inside the episode and its
    answer is what ``correctness`` checks. Defaults are the paper's (lr 1e-5, KL 0.04, temperature 0.9, group 8)."""

    ROLES: ClassVar[dict[str, RoleSpec]] = ROLE_SPECS
    RULES: ClassVar = PLANNER_RESPONDER_RULES

    episode: EpisodeConfig = field(default_factory=_hawkeye_episode)
    rewards: list[RewardTerm] = field(default_factory=_hawkeye_rewards)
    optim: RLOptimConfig = field(default_factory=lambda: RLOptimConfig(lr=1e-5))
    kl_coef: float = field(default=0.04, metadata={"ge": 0})
    planner_model: str | None = None  # None: warmup/model (or bootstrap/base_model without a warm-up)
    responder_model: str | None = None  # None: responder/model

    def model_default(self, role: str) -> str:
        return RESPONDER_MODEL if role == "responder" else WARMUP_MODEL

    def model_dir(self, run_dir: Path, role: str) -> Path:
        given = getattr(self, f"{role}_model")
        if given is None and role == "planner" and not (Path(run_dir) / WARMUP_MODEL / "config.json").exists():
            return Path(run_dir) / rd.BASE_MODEL  # no warm-up in this run: RL starts from the base model
        return rd.resolve(run_dir, given, self.model_default(role))
