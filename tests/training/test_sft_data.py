"""SFT data: validation errors, role masks from spans, over-long handling, batch plans and collation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builders import build_tokenizer, toy_examples, write_jsonl

from longshort.core.errors import LongshortError
from longshort.data.protocol import END_TURN, EOS, Message
from longshort.training.sft_data import (
    SFTExample,
    collate,
    load_sft_jsonl,
    plan_epoch,
    plan_steps,
    tokenize_examples,
    validate_examples,
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


GOOD = {"id": "a", "messages": [{"role": "user", "content": "what is two plus two ?"},
                                {"role": "assistant", "content": "it is four ."}], "train_roles": ["assistant"]}


def test_load_valid_file_with_defaults(tmp_path):
    no_id = {"messages": GOOD["messages"]}
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, "", no_id])
    exs = load_sft_jsonl(path)
    assert [e.id for e in exs] == ["a", f"{path}:3"]
    assert exs[1].train_roles == ("assistant",)
    assert exs[0].messages[1] == Message("assistant", "it is four .")


def _msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


BAD = [
    ("{not json", "not valid JSON"),
    (json.dumps([1, 2]), "must be a JSON object"),
    (json.dumps({"id": "x"}), "'messages' is missing"),
    (json.dumps({"messages": []}), "'messages' is empty"),
    (json.dumps({"messages": [{"content": "hi"}]}), "needs both 'role' and 'content'"),
    (json.dumps({"messages": _msgs(("user", "hi"), ("robot", "beep"))}), "'robot' is not a protocol role"),
    (json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "   "))}), "has empty content"),
    (json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "yo")), "train_roles": ["short"]}),
     "train role 'short' never appears"),
    (json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "yo")), "train_roles": []}), "'train_roles' is empty"),
    (json.dumps({"messages": _msgs(("user", "hi"), ("assistant", "yo")), "train_role": ["assistant"]}),
     "unknown key(s) ['train_role']"),
]


@pytest.mark.parametrize("line,expected", BAD, ids=[b[1][:24] for b in BAD])
def test_malformed_line_names_file_line_and_problem(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, line])
    with pytest.raises(LongshortError) as e:
        load_sft_jsonl(path)
    assert f"{path}:2" in str(e.value)
    assert expected in str(e.value)


def test_all_problems_reported_together(tmp_path):
    rows = [GOOD, GOOD] + ["{bad"] * 12
    with pytest.raises(LongshortError) as e:
        load_sft_jsonl(write_jsonl(tmp_path / "d.jsonl", rows))
    msg = str(e.value)
    assert msg.startswith("13 problem(s)") and "already used on line 1" in msg and "and 3 more" in msg


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(LongshortError, match="does not exist"):
        load_sft_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(LongshortError, match="has no examples"):
        load_sft_jsonl(write_jsonl(tmp_path / "e.jsonl", ["", ""]))


def test_in_memory_examples_validated():
    ok = toy_examples(2)
    validate_examples(ok)
    bad = SFTExample("z", [Message("user", "hi"), Message("long", "hmm")], ("short",))
    with pytest.raises(LongshortError, match="example 'z': train role 'short' never appears"):
        validate_examples([*ok, bad])
    with pytest.raises(LongshortError, match="duplicate id"):
        validate_examples([ok[0], ok[0]])


def test_mask_covers_exactly_the_trained_roles_spans(tok):
    ex = SFTExample("m", [Message("user", "what is 6 times 7 ?"), Message("long", "think step by step : six sevens"),
                          Message("short", "the answer is 42 ."), Message("long", "first add the tens"),
                          Message("short", "it is 42 .")], ("short",))
    data, stats = tokenize_examples([ex], tok, max_len=512, overlong="drop")
    ids, mask = data.example(0)
    assert stats.targets == int(mask.sum()) > 0
    trained = tok.decode(ids[mask == 1].tolist(), skip_special_tokens=False)
    assert trained == f"the answer is 42 .{END_TURN}it is 42 .{EOS}"
    # the header tokens and the other roles' content and terminators are never trained
    untrained = tok.decode(ids[mask == 0].tolist(), skip_special_tokens=False)
    assert "six sevens" in untrained and "<|short|>" in untrained and "42" not in untrained
    both, _ = tokenize_examples([SFTExample("b", ex.messages, ("short", "long"))], tok, 512, "drop")
    assert both.example(0)[1].sum() > mask.sum()


def test_tokenizer_without_protocol_tokens_is_rejected():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "hi": 1}, "<unk>")),
                                    unk_token="<unk>")
    with pytest.raises(LongshortError, match="add_protocol_tokens"):
        tokenize_examples(toy_examples(1), plain, 64, "drop")


def test_overlong_drop_and_truncate_are_counted(tok):
    exs = toy_examples(30)
    lengths = tokenize_examples(exs, tok, 10_000, "drop")[0].lengths
    limit = int(np.median(lengths))
    n_over = int((lengths > limit).sum())
    dropped, st = tokenize_examples(exs, tok, limit, "drop")
    assert st.dropped_overlong == n_over and st.examples == len(dropped) == 30 - n_over and st.truncated == 0
    cut, st2 = tokenize_examples(exs, tok, limit, "truncate")
    assert st2.truncated == n_over and st2.dropped_overlong == 0
    # a truncation that cuts away every trained token drops the example, counted separately
    full, _ = tokenize_examples(exs, tok, 10_000, "drop")
    no_targets = sum(1 for i in range(30) if lengths[i] > limit and full.example(i)[1][:limit].sum() == 0)
    assert 0 < no_targets < n_over
    assert st2.dropped_no_targets == no_targets and len(cut) == st2.examples == 30 - no_targets
    assert max(cut.lengths) == limit and st2.targets < full.mask.sum()
    short_limit = 6
    tiny = SFTExample("t", [Message("user", "hi"), Message("assistant", "the cat sat on the mat")], ("assistant",))
    kept, st3 = tokenize_examples([tiny], tok, short_limit, "truncate")
    assert st3.truncated == 1 and len(kept.example(0)[0]) == short_limit and kept.example(0)[1].sum() > 0
    with pytest.raises(LongshortError, match="no SFT example is left"):
        tokenize_examples(exs, tok, 3, "drop")


@pytest.mark.parametrize("batching", ["bucket", "pack"])
def test_plan_uses_every_example_once_per_epoch(batching):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=101)
    for epoch in range(2):
        mbs = plan_epoch(lengths, epoch, 7, batching, 4, 128)
        flat = sorted(i for mb in mbs for i in mb)
        assert flat == list(range(101))
        if batching == "pack":
            assert all(lengths[mb].sum() <= 128 for mb in mbs)
            assert len(mbs) < 101 / 2  # rows really hold several sequences
        else:
            assert all(1 <= len(mb) <= 4 for mb in mbs)
    assert plan_epoch(lengths, 0, 7, batching, 4, 128) == plan_epoch(lengths, 0, 7, batching, 4, 128)
    assert plan_epoch(lengths, 0, 7, batching, 4, 128) != plan_epoch(lengths, 1, 7, batching, 4, 128)


def test_bucketing_reduces_padding():
    lengths = np.random.default_rng(1).integers(5, 200, size=512)
    mbs = plan_epoch(lengths, 0, 0, "bucket", 8, 0)
    padded = sum(len(mb) * lengths[mb].max() for mb in mbs)
    assert padded < 1.15 * lengths.sum()


def test_step_plan_pads_last_step_and_splits_by_rank():
    mbs = [[i] for i in range(5)]
    one = plan_steps(mbs, world_size=1, grad_accum=2)
    two = plan_steps(mbs, world_size=2, grad_accum=1)
    assert len(one) == len(two) == 3
    assert [sum(r, []) for r in one] == [sum(r, []) for r in two]  # same micro-batches in each global step
    assert two[2] == [[[4]], [[]]]  # rank 1 gets an empty (dummy) micro-batch
    assert one[0] == [[[0], [1]]]


def test_collate_bucket_and_pack(tok):
    data, _ = tokenize_examples(toy_examples(3), tok, 512, "drop")
    lens = data.lengths.tolist()
    padded = collate(data, [0, 1, 2], tok.pad_token_id, packed=False)
    assert padded.input_ids.shape == (3, max(lens)) and padded.attention_mask.sum().item() == sum(lens)
    assert padded.num_targets == float(data.mask.sum())
    packed = collate(data, [0, 1, 2], tok.pad_token_id, packed=True)
    assert packed.input_ids.shape == (1, sum(lens)) and packed.attention_mask is None
    starts = np.cumsum([0] + lens[:-1])
    assert packed.position_ids[0, starts].tolist() == [0, 0, 0]
    assert packed.position_ids[0, -1].item() == lens[-1] - 1
    assert packed.num_targets == padded.num_targets
    dummy = collate(data, [], tok.pad_token_id, packed=False)
    assert dummy.num_targets == 0 and dummy.input_ids.shape == (1, 1)
    assert torch.equal(padded.input_ids[1, : lens[1]], torch.from_numpy(data.example(1)[0]).long())
