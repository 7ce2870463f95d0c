"""Generation with soft thoughts: each batch's prompts become input embeddings (the LLM's own, the placeholders
replaced by the projected thoughts), which the shared HF engine prefills from (``GenerationRequest.prompt_embeds``)
before decoding tokens as usual. N = 0 runs the LLM alone through the same code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from longshort.recipes.softcot.model import SoftCoTModel
from longshort.recipes.softcot.prompts import PromptConfig, assistant_prompt, llm_prompt


@dataclass
class Generated:
    text: str
    tokens: int  # generated tokens, the end-of-sequence included
    finished: bool  # ended by end-of-sequence (not by max_new_tokens)


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding for the embedding pass (the assistant's positions then count from 0 in every row, as in
    training)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


@torch.no_grad()
def generate(model: SoftCoTModel, llm_tok, assistant_tok, prompts: PromptConfig, problems: list[str], n: int, *,
             temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 1024, seeds: Sequence[int] = (0,),
             batch_size: int = 64, assistant_reads: list[str] | None = None) -> list[Generated]:
    """One answer per problem and seed with ``n`` soft thoughts (0: the LLM alone), seed-major (seed j's answers at
    ``j * len(problems) ...``). The prompts' embeddings are computed once for all seeds. Problem ``i`` samples under
    its own seed (``seed * 1000003 + i``), so an answer does not depend on the batch it shares. ``assistant_reads``:
    what the assistant reads in place of each problem (a control: the thoughts of another problem)."""
    from longshort.engines.base import GenerationRequest, SamplingParams
    from longshort.engines.hf.engine import HFEngine

    device = model.projection.weight.device
    pad = llm_tok.pad_token_id if llm_tok.pad_token_id is not None else 0
    reads = problems if assistant_reads is None else assistant_reads
    rows = [llm_prompt(llm_tok, prompts, p, n, model.llm_slot_id) for p in problems]
    embeds: list[torch.Tensor | None] = [None] * len(rows)
    for b in range(0, len(problems) if n else 0, batch_size):
        part = rows[b:b + batch_size]
        ids, mask = _pad(part, pad)
        a_ids, a_mask = _pad([assistant_prompt(assistant_tok, prompts, p, n, model.assistant_slot_id)
                              for p in reads[b:b + batch_size]], pad)
        full = model.embed(ids.to(device), mask.to(device), a_ids.to(device), a_mask.to(device))
        embeds[b:b + batch_size] = [full[i, :len(r)] for i, r in enumerate(part)]
    requests = [GenerationRequest(r, SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                                    seed=seed * 1000003 + i, logprobs=False),
                                  f"s{seed}-p{i}", prompt_embeds=e)
                for seed in seeds for i, (r, e) in enumerate(zip(rows, embeds, strict=True))]
    results = HFEngine(model.llm, llm_tok, max_batch_size=batch_size).generate(requests)
    return [Generated(s.text, len(s.token_ids), s.finish_reason == "stop")
            for s in (res.samples[0] for res in results)]
