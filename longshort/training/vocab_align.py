"""``prepare-model --vocab-of REF``: give a checkpoint the exact vocabulary of another prepared model.

A pair is token-in, token-out: the ids one role writes are the ids the other reads, so both roles need one
vocabulary. Two models of one family often share the base vocabulary (the BPE tokens and merges) but not their added
tokens: DeepSeek-R1-Distill-Qwen-7B has ``<think>`` at 151648 where Qwen2.5-0.5B-Instruct has ``<|box_start|>``.
Adding the protocol's tokens to each separately leaves them at different ids. Here the source takes the reference's
tokenizer whole, and its embedding rows (and an untied head's) are re-indexed by token text: a token the source
has keeps its own row at the reference's id; a token it lacks starts as the mean of the rows of the text that spells
it; a token only the source had is dropped (listed in the manifest). Base vocabularies that differ are refused: their
text splits differently, and no re-indexing makes one role's ids mean the same to the other.
"""

from __future__ import annotations

import json
from pathlib import Path

from longshort.core.errors import LongshortError

# The parts of tokenizer.json that decide how text becomes base-vocabulary ids.
_SPLITTING = ("model", "normalizer", "pre_tokenizer")


def _base_vocab(tok) -> dict[str, int]:
    added = tok.get_added_vocab()
    return {t: i for t, i in tok.get_vocab().items() if t not in added}


def check_same_base(source_tok, ref_tok, source: str, ref: str) -> None:
    """Refuse two tokenizers that split text differently, naming what first differs."""
    from longshort.data.tokenizers import vocabulary_difference

    if diff := vocabulary_difference(_base_vocab(ref_tok), _base_vocab(source_tok)):
        raise LongshortError(
            f"--vocab-of {ref}: {source} has another base vocabulary (reference first: {diff}); only models that "
            "split text alike (one family's tokenizer) can share a vocabulary; pick a responder/short model of the "
            "reference's family")
    a, b = (json.loads(t.backend_tokenizer.to_str()) for t in (ref_tok, source_tok))
    if differs := [k for k in _SPLITTING if a.get(k) != b.get(k)]:
        raise LongshortError(
            f"--vocab-of {ref}: {source} has the same base tokens but another tokenizer {', '.join(differs)} (the "
            "same text would become other ids); only one family's tokenizer can be shared")


def align_to(model, tok, ref: str | Path, source: str):
    """(tokenizer, report): ``model`` re-indexed in place to the prepared reference ``ref``'s tokenizer, which is
    returned (with the protocol's chat template). ``tok`` is the source's own tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from longshort.data.protocol import ADDED_TOKENS, SPECIAL_TOKENS

    ref = Path(ref)
    try:
        new_tok = AutoTokenizer.from_pretrained(str(ref))
    except (OSError, ValueError) as e:
        raise LongshortError(f"--vocab-of {ref}: cannot load its tokenizer ({e}); give a directory written by "
                             "`longshort prepare-model`") from None
    if missing := [t for t in [*SPECIAL_TOKENS, *ADDED_TOKENS] if t not in new_tok.get_vocab()]:
        raise LongshortError(f"--vocab-of {ref}: it lacks the protocol tokens {missing}; prepare it first "
                             f"(`longshort prepare-model {ref} {ref}-ls`) and give that directory")
    check_same_base(tok, new_tok, source, str(ref))
    old_vocab, new_vocab = tok.get_vocab(), new_tok.get_vocab()
    rows = max(len(new_tok), _config_vocab_size(ref))  # a padded reference embedding (Qwen's 151936) keeps its size
    emb = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    old_head = head.weight.detach().clone() if untied else None
    kept, moved, spelled = 0, {}, []
    new_emb = emb.new_empty(rows, emb.shape[1]).copy_(emb.mean(0, keepdim=True).expand(rows, -1))
    new_head = old_head.mean(0, keepdim=True).expand(rows, -1).clone() if untied else None
    for text, j in new_vocab.items():
        if text in old_vocab:
            src_ids = [old_vocab[text]]
            kept += 1
            if old_vocab[text] != j:
                moved[text] = [old_vocab[text], j]
        else:
            src_ids = tok.encode(text, add_special_tokens=False) or [tok.unk_token_id or 0]
            spelled.append(text)
        new_emb[j] = emb[src_ids].mean(0)
        if untied:
            new_head[j] = old_head[src_ids].mean(0)
    model.resize_token_embeddings(rows, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(new_emb)
        if untied:
            model.get_output_embeddings().weight.copy_(new_head)
    dropped = sorted((t for t in old_vocab if t not in new_vocab), key=old_vocab.get)
    return new_tok, {"vocab_of": str(ref), "kept_rows": kept, "moved_ids": moved, "spelled_rows": spelled,
                     "dropped_tokens": dropped}


def _config_vocab_size(ref: Path) -> int:
    try:
        return int(json.loads((ref / "config.json").read_text()).get("vocab_size", 0))
    except (OSError, ValueError, TypeError):
        return 0
