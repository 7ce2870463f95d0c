"""The generation-engine interface every rollout, scoring and evaluation stage talks to.

Token-in, token-out: requests carry prompt token ids, results carry the generated ids and the
engine's own per-token logprobs, so training never re-tokenizes generated text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)  # stop strings (the matched string is kept in text and ids)
    stop_token_ids: list[int] = field(default_factory=list)  # generation ends after emitting one of these
    seed: int | None = None  # per-request seed: the same request and seed give the same samples
    logprobs: bool = True
    # Coupled sampling (HF engine): each step's random number is a hash of the sample's seed and the last
    # ``couple_context`` tokens, so two requests with the same seed whose samples reach the same context continue
    # identically from there (common random numbers that survive different prompts: low-variance differences
    # between rollouts from neighbouring prefixes). Each token is still an exact sample. 0: off.
    couple_context: int = 0


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    # ``[len(prompt_ids), hidden]``: the prompt's input embeddings, used instead of looking the ids up (soft tokens
    # a composite model computed; HF engine). The ids still count as the prompt (length, positions, stop windows).
    prompt_embeds: torch.Tensor | None = None


@dataclass
class Sample:
    token_ids: list[int]
    text: str
    # log-softmax(logits / temperature) of each generated token (top-p truncation not applied; temperature 0,
    # greedy, gives log-softmax(logits)); equals the trainer's own logprob at temperature 1, the RL default.
    logprobs: list[float] | None
    finish_reason: Literal["stop", "length"]


@dataclass
class GenerationResult:
    request_id: str
    prompt_ids: list[int]
    samples: list[Sample]  # len == params.n


class Engine(ABC):
    """A generator for one policy. Implementations: HF (CPU/GPU, the embedded default) and vLLM."""

    weight_version: int = 0

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate for all requests as one batch; results in request order."""

    @abstractmethod
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Load new parameters (HF names, full tensors) in place; may be called once per bucket."""

    def sleep(self) -> None:  # free memory while the colocated trainer runs; no-op where unsupported
        return None

    def wake(self) -> None:
        return None
