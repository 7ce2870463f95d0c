"""A pair shares one tokenizer: differing vocabularies are refused, naming both checkpoints and what differs."""

from __future__ import annotations

import pytest
from builders import build_tokenizer

from longshort.core.errors import LongshortError
from longshort.data.protocol import EOS, special_ids
from longshort.data.tokenizers import check_shared_tokenizer, vocabulary_difference


def test_vocabulary_difference_names_what_differs():
    assert vocabulary_difference({"a": 0, "b": 1}, {"a": 0, "b": 1}) == ""
    diff = vocabulary_difference({"a": 0, "b": 1, "c": 2}, {"a": 0, "c": 1, "d": 2})
    assert "3 vs 3 tokens" in diff and "only in the first: ['b']" in diff and "only in the second: ['d']" in diff
    assert "'c' 2 vs 1" in diff


def test_check_shared_tokenizer_refuses_a_mixed_pair(tmp_path):
    same, other = build_tokenizer(), build_tokenizer()
    other.add_tokens(["<extra>"])
    for name, tok in {"a": same, "b": build_tokenizer(), "c": other}.items():
        tok.save_pretrained(tmp_path / name)
    check_shared_tokenizer({"long": tmp_path / "a", "short": tmp_path / "b"}, "sft")  # same vocabulary: fine
    with pytest.raises(LongshortError, match=r"sft: the long model .*/a and the short model .*/c have different "
                                             r"tokenizers .*only in the second: \['<extra>'\]"):
        check_shared_tokenizer({"long": tmp_path / "a", "short": tmp_path / "c"}, "sft")


def test_a_protocol_token_that_is_the_unk_token_still_counts():
    """SmolLM2's unk token is <|endoftext|>, the protocol's EOS: it is in the vocabulary, not unknown."""
    tok = build_tokenizer()
    eos = special_ids(tok)[EOS]
    tok.unk_token = EOS
    assert tok.unk_token_id == eos and special_ids(tok)[EOS] == eos
