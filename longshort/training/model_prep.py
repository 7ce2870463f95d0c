"""``longshort prepare-model``: give any Hugging Face causal LM the pair protocol's tokens, once, before training.

The protocol's role markers and turn terminator are special tokens (``protocol.SPECIAL_TOKENS``); a hub checkpoint
lacks them, so they are added to its tokenizer, the embeddings are resized (new rows get the mean of the old ones,
transformers' default, so the first steps do not start from noise), and the chat template becomes the protocol's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longshort.core.errors import LongshortError

log = logging.getLogger("longshort")
DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def prepare_model(source: str, out: str | Path, dtype: str = "auto") -> dict:
    """Load ``source`` (a hub name or a directory), add the protocol tokens, save to ``out``; returns a summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longshort.data.protocol import add_protocol_tokens, special_ids

    if dtype not in DTYPES:
        raise LongshortError(f"--dtype {dtype}: accepted: {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LongshortError(f"{out} exists and is not empty; choose a new directory or remove it")
    try:
        tok = AutoTokenizer.from_pretrained(source)
        torch_dtype = DTYPES[dtype] if dtype == "auto" else getattr(torch, DTYPES[dtype])
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as e:
        raise LongshortError(f"cannot load {source!r} as a causal LM: {e}; give a local model directory or a hub "
                             "name reachable from this machine (HF_HOME / HF_TOKEN)") from None
    before = model.get_input_embeddings().weight.shape[0]
    added = add_protocol_tokens(tok, model)
    model.config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    summary = {"source": source, "added_tokens": added, "vocab_before": before,
               "vocab_after": model.get_input_embeddings().weight.shape[0], "protocol_ids": special_ids(tok)}
    (out / "longshort_prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("prepared %s -> %s: %d protocol tokens added (vocab %d -> %d)", source, out, added, before,
             summary["vocab_after"])
    return summary
