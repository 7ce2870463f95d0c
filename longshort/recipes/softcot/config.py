"""SoftCoT's config sections: ``softcot`` (the two frozen models, the number of thoughts, the prompts, the assistant
the embedded run trains, the projection's training) and ``eval`` (the three-system table over sampling seeds).
Defaults are the paper's public code (lr 2e-5, batch 4, 10 epochs, 32 thoughts in training and 4 at evaluation,
temperature 1.0, seeds 41-45); ``configs/softcot-tiny.yaml`` sets the embedded run's sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from longshort.core.checks import check_field
from longshort.core.stage import RoleSpec
from longshort.data.problems import ProblemSource
from longshort.recipes.softcot.checks import AssistantCheckConfig, TrainCheckConfig
from longshort.recipes.softcot.prompts import PromptConfig
from longshort.toy.tiny import TinyModelConfig
from longshort.training.sft import SFTConfig

ROLE_SPECS = {
    "assistant": RoleSpec(trainable=False, help="small model whose hidden states at N placeholders are the soft "
                                                "thoughts (Qwen2.5-1.5B-Instruct in the paper), frozen"),
    "llm": RoleSpec(trainable=False, help="the model that reads the projected thoughts and answers "
                                          "(Qwen2.5-7B-Instruct), frozen; only the projection between them trains"),
}
ASSISTANT_MODEL = "assistant/model"
INIT_MODEL = "softcot/init"  # the composite before training (the untrained-projection control)
TRAINED_MODEL = "softcot/model"
FACTORY = "longshort.recipes.softcot.model:softcot_model"


def _assistant_model() -> TinyModelConfig:
    return TinyModelConfig(layers=2, heads=1, kv_heads=1)  # hidden 64 against the base model's 128: a different width


def _assistant_sft() -> SFTConfig:
    return SFTConfig(lr=1e-3, min_lr=1e-4, warmup_ratio=0.02, betas=[0.9, 0.98], micro_batch_size=16, max_len=256,
                     log_every=10)


@dataclass
class AssistantConfig:
    """The embedded run's assistant: a fresh smaller tiny model (the bootstrap's tokenizer) taught to write the
    problems' concise solutions, so its states carry the steps; ``init`` fine-tunes a prepared HF dir instead."""

    init: str = ""
    data: ProblemSource = field(default_factory=ProblemSource)  # path "": <run>/bootstrap/data/train.jsonl
    model: TinyModelConfig = field(default_factory=_assistant_model)
    sft: SFTConfig = field(default_factory=_assistant_sft)
    examples: int = field(default=16000, metadata={"ge": 1})  # problems reused in order past the data's size
    seed: int = 0
    check: AssistantCheckConfig = check_field(AssistantCheckConfig)  # its outcome on dev (recipes/softcot/checks.py)


def _projection_sft() -> SFTConfig:
    return SFTConfig(lr=2e-5, min_lr=0.0, schedule="linear", warmup_ratio=0.0, epochs=10, micro_batch_size=4,
                     max_len=2048, overlong="drop")


@dataclass
class TrainConfig:
    """The projection's training: cross-entropy of the LLM's target given the problem and the soft thoughts."""

    data: ProblemSource = field(default_factory=ProblemSource)  # path "": <run>/bootstrap/data/train.jsonl
    # what the LLM is taught to write after the thoughts: the data's long CoT, its solution, or the solution's lines
    # as "## Step k:" plus the boxed answer (the public code's GSM8K layout)
    target: Literal["steps", "solution", "long_cot"] = "steps"
    examples: int | None = field(default=None, metadata={"ge": 1})  # None: every problem once per epoch
    # leave out problems whose CoT has a planted wrong step (data that tags them, as the embedded task does): a
    # target with a slip in it teaches the LLM, through the thoughts, to slip (docs/recipes/softcot.md)
    skip_planted_errors: bool = True
    sft: SFTConfig = field(default_factory=_projection_sft)
    init_seed: int = 0  # the projection's initial weights (also the untrained control's)
    check: TrainCheckConfig = check_field(TrainCheckConfig)  # its outcome on dev (recipes/softcot/checks.py)

    def validate(self) -> None:
        if self.sft.lora is not None:
            raise ValueError("sft.lora: SoftCoT trains only its projection (the assistant and the LLM stay frozen), "
                             "so there is nothing for an adapter to adapt; remove it")


@dataclass
class SoftCoTConfig:
    """Config section ``softcot``."""

    llm_model: str | None = None  # None: the run's bootstrap/base_model; else an HF dir or hub id
    assistant_model: str | None = None  # None: trained by the `assistant` stage on the embedded task
    thoughts_train: int = field(default=32, metadata={"ge": 1})  # N placeholders while training (the paper: 32)
    thoughts_eval: int = field(default=4, metadata={"ge": 1})  # N at evaluation and in `solve` (the paper: 4)
    layer: int = -1  # the assistant's hidden_states index (-1: last layer, after the final norm)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    assistant: AssistantConfig = field(default_factory=AssistantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class SoftCoTEvalConfig:
    """Config section ``eval``: the LLM alone (zero-shot CoT), SoftCoT with the untrained projection (the control)
    and SoftCoT trained, each sampled once per seed on the same held-out problems; pass@1 is the mean over seeds."""

    data: ProblemSource = field(default_factory=lambda: ProblemSource(limit=1000))  # "": bootstrap/data/eval.jsonl
    name: str = "tiny"  # the benchmark's name in the table
    seeds: list[int] = field(default_factory=lambda: [41, 42, 43, 44, 45])
    temperature: float = field(default=1.0, metadata={"ge": 0})  # 0: greedy (then one seed is enough)
    top_p: float = field(default=1.0, metadata={"gt": 0, "le": 1})
    max_new_tokens: int = field(default=1024, metadata={"ge": 1})
    batch_size: int = field(default=64, metadata={"ge": 1})
    device: str = "auto"  # auto: cuda when there is one
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("seeds: empty; accepted: e.g. [41, 42, 43, 44, 45]")
