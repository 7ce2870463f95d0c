"""SoftCoT's training data: the assistant's examples (embedded run) and the projection's tokenized set, whose side
input ``assistant_ids`` is each example's assistant prompt (the composite model's forward reads it)."""

from __future__ import annotations

import logging

import numpy as np

from longshort.core.errors import LongshortError
from longshort.data.protocol import Message
from longshort.recipes.softcot.prompts import PromptConfig, assistant_prompt, llm_prompt
from longshort.training.sft_data import SFTExample, TokenizedSet

log = logging.getLogger("longshort")


def assistant_examples(problems: list, n: int) -> list[SFTExample]:
    """Problem → concise solution, ``n`` examples (the problems reused in order)."""
    return [SFTExample(f"a{i}", [Message("user", p.problem), Message("assistant", p.solution)])
            for i, p in ((i, problems[i % len(problems)]) for i in range(n))]


def target_text(problem, target: str) -> str:
    """``long_cot``/``solution``: that field as it is; ``steps``: the solution's lines as ``## Step k: ...`` and
    the boxed answer (the public code's layout for GSM8K)."""
    text = problem.long_cot if target == "long_cot" else problem.solution
    if not text:
        field = "long_cot" if target == "long_cot" else "solution"
        raise LongshortError(f"softcot.train.target: problem {problem.id!r} has no {field}; map the data's "
                             f"{field} field or choose another target")
    if target == "steps":
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = "".join(f"## Step {k}: {ln}\n" for k, ln in enumerate(lines, 1))
        text += f"Therefore, the final answer is: $\\boxed{{{problem.answer}}}$."
    return text


def projection_set(problems: list, llm_tok, assistant_tok, prompts: PromptConfig, n: int, target: str,
                   max_len: int, slot_ids: tuple[int, int]) -> TokenizedSet:
    """The LLM's prompt (N placeholders) + target + end-of-sequence, loss on the target and its end; the side input
    ``assistant_ids`` is the assistant's prompt. Over-long examples are left out and counted."""
    a_slot, l_slot = slot_ids
    eos = llm_tok.eos_token_id
    ids, masks, names, side = [], [], [], {}
    dropped = 0
    for p in problems:
        prompt = llm_prompt(llm_tok, prompts, p.problem, n, l_slot)
        tgt = llm_tok.encode(target_text(p, target), add_special_tokens=False) + ([eos] if eos is not None else [])
        if len(prompt) + len(tgt) > max_len:
            dropped += 1
            continue
        ids.append(np.asarray(prompt + tgt, dtype=np.int32))
        masks.append(np.asarray([0] * len(prompt) + [1] * len(tgt), dtype=np.uint8))
        names.append(p.id)
        side[p.id] = assistant_prompt(assistant_tok, prompts, p.problem, n, a_slot)
    if dropped:
        log.warning("softcot train: %d of %d examples are longer than sft.max_len=%d and left out", dropped,
                    len(problems), max_len)
    if not ids:
        raise LongshortError(f"softcot train: no example fits sft.max_len={max_len}; raise softcot.train.sft.max_len")
    offsets = np.cumsum([0] + [len(x) for x in ids], dtype=np.int64)
    data = TokenizedSet(np.concatenate(ids), np.concatenate(masks), offsets, names)
    return data.with_side("assistant_ids", side)
