"""The pair shares one tokenizer: token ids written by one role are read by the other, so a pair whose vocabularies
differ is refused before any work, with both checkpoints named."""

from __future__ import annotations

from pathlib import Path

from longshort.core.errors import LongshortError


def vocabulary_difference(a: dict[str, int], b: dict[str, int]) -> str:
    """What first differs between two vocabularies (token -> id), in words; "" when they are equal."""
    if a == b:
        return ""
    only_a = sorted(set(a) - set(b), key=a.get)[:3]
    only_b = sorted(set(b) - set(a), key=b.get)[:3]
    moved = sorted((t for t in set(a) & set(b) if a[t] != b[t]), key=a.get)[:3]
    parts = [f"{len(a)} vs {len(b)} tokens"]
    if only_a or only_b:
        parts.append(f"only in the first: {only_a}, only in the second: {only_b}")
    if moved:
        parts.append("different ids: " + ", ".join(f"{t!r} {a[t]} vs {b[t]}" for t in moved))
    return "; ".join(parts)


def check_shared_tokenizer(models: dict[str, str | Path], where: str) -> None:
    """Raise unless every model directory in ``models`` (role -> dir) has the same vocabulary as the first."""
    from transformers import AutoTokenizer

    vocabs = {role: AutoTokenizer.from_pretrained(str(path)).get_vocab() for role, path in models.items()}
    (first, ref), *rest = vocabs.items()
    for role, vocab in rest:
        if diff := vocabulary_difference(ref, vocab):
            raise LongshortError(
                f"{where}: the {first} model {models[first]} and the {role} model {models[role]} have different "
                f"tokenizers ({diff}); the pair must share one vocabulary: start both roles from checkpoints of one "
                "family, each prepared with `longshort prepare-model`; when they share the base vocabulary but not the "
                f"added tokens (e.g. R1-Distill-Qwen and Qwen2.5-Instruct), prepare the {role} model with "
                f"`longshort prepare-model SOURCE OUT --vocab-of {models[first]}`")
