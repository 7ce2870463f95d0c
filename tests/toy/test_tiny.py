"""Tiny tokenizer and models: trained offline, protocol tokens, chat template == protocol.render, HF save/load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longshort.data import protocol as P
from longshort.toy.task import TaskConfig, generate
from longshort.toy.tiny import (
    TinyModelConfig,
    TokenizerConfig,
    build_model,
    n_params,
    save_pretrained,
    task_texts,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    train, held_out = generate(TaskConfig(seed=0, n_train=300, n_eval=20))
    return train + held_out


@pytest.fixture(scope="module")
def tokenizer(records):
    return train_tokenizer(task_texts(records, 300), TokenizerConfig(vocab_size=400))


def test_tokenizer_round_trips_task_text(tokenizer, records):
    for r in records[-20:]:  # held-out text, not only what it was trained on
        for text in (r["problem"], r["long_cot"], r["solution"]):
            assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    odd = "Unseen: Ünïcödé ✓ 12345 \t tabs\n\nand {braces} \\boxed{-7}"
    assert tokenizer.decode(tokenizer.encode(odd, add_special_tokens=False)) == odd  # byte-level: nothing is <unk>


def test_digits_are_single_tokens_and_protocol_tokens_present(tokenizer):
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("x 1234567890 = 42", add_special_tokens=False))
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("1234567890") + ["4", "2"]
    ids = P.special_ids(tokenizer)  # raises if any protocol token is missing
    assert len(set(ids.values())) == len(P.SPECIAL_TOKENS) + len(P.ADDED_TOKENS)
    for tok in [*P.SPECIAL_TOKENS, *P.ADDED_TOKENS]:
        assert tokenizer.encode(f"a{tok}b", add_special_tokens=False)[1:-1] == [ids[tok]]
    assert tokenizer.eos_token == P.EOS and tokenizer.pad_token == P.PAD
    assert tokenizer.chat_template == P.CHAT_TEMPLATE
    # Markers are special (dropped when decoding for display); <think> tags are text.
    text = tokenizer.decode([ids[P.ROLE_TOKENS["long"]], ids[P.THINK_OPEN], ids[P.EOS]], skip_special_tokens=True)
    assert text == P.THINK_OPEN


def test_chat_template_equals_protocol_render(tokenizer, records, tmp_path):
    r = records[0]
    dialogue = [P.Message("user", r["problem"]), P.Message("long", r["thoughts"][0]["text"]),
                P.Message("short", "12 + 3 = 15"), P.Message("long", "Step 2, carefully."),
                P.Message("short", r["solution"])]
    tokenizer.save_pretrained(tmp_path)
    for tok in (tokenizer, AutoTokenizer.from_pretrained(tmp_path)):
        for msgs in (dialogue, [P.Message("user", r["problem"]), P.Message("assistant", r["long_cot"])]):
            as_dicts = [{"role": m.role, "content": m.content} for m in msgs]
            got = tok.apply_chat_template(as_dicts, tokenize=True, return_dict=False)
            assert got == P.render(msgs, tok).ids
        prompt = tok.apply_chat_template([{"role": "user", "content": r["problem"]}], tokenize=True,
                                         add_generation_prompt=True, return_dict=False)
        assert prompt == P.prompt_ids([P.Message("user", r["problem"])], tok, "assistant")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_tiny_model_saves_and_loads(tokenizer, tmp_path, arch):
    cfg = TinyModelConfig(arch=arch, layers=2, heads=2, kv_heads=1, head_dim=64, intermediate=128)
    model = build_model(cfg, tokenizer)
    assert model.config.model_type == arch and model.config.head_dim >= 64
    assert model.config.vocab_size == len(tokenizer) and model.config.hidden_size == 128
    assert 100_000 < n_params(model) < 500_000
    out = save_pretrained(model, tokenizer, tmp_path / arch)
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([P.prompt_ids([P.Message("user", "Start with 3. Then add 4.")], tok, "assistant")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits)
    # AutoTokenizer picks Qwen2Tokenizer for a qwen2 directory and rebuilds its pipeline: it must come out identical.
    assert json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"] == json.loads(
        tokenizer.backend_tokenizer.to_str())["pre_tokenizer"]
    assert tok.unk_token is None and P.special_ids(tok) == P.special_ids(tokenizer)
    text = "Start with 36. First take away 8, then double it.\n\n<think>\nStep 1: 36 - 8 = 28.\n</think>"
    assert tok.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    stops = set(loaded.generation_config.eos_token_id)
    assert stops == {tok.convert_tokens_to_ids(P.EOS), tok.convert_tokens_to_ids(P.END_TURN)}
    assert loaded.generation_config.pad_token_id == tok.pad_token_id


def test_model_config_validation():
    with pytest.raises(ValueError, match="kv_heads"):
        TinyModelConfig(heads=4, kv_heads=3).validate()
    assert TinyModelConfig(heads=3).hidden == 192


def test_a_truncated_model_keeps_the_first_layers_embeddings_and_head(tmp_path):
    """The Hawkeye responder's start (``hawkeye.responder.base_layers``): the base model's first layers, nothing new."""
    from builders import build_model_dir

    from longshort.toy.tiny import truncated_model_dir

    src = build_model_dir(tmp_path / "base", seed=3)
    base = AutoModelForCausalLM.from_pretrained(src)
    out, size = truncated_model_dir(src, 1, tmp_path / "cut")
    cut = AutoModelForCausalLM.from_pretrained(out)
    assert cut.config.num_hidden_layers == 1 and len(cut.model.layers) == 1 and size < sum(
        p.numel() for p in base.parameters())
    kept = cut.state_dict()
    for k, v in base.state_dict().items():
        if ".layers." not in k or ".layers.0." in k:
            assert torch.equal(kept[k], v), k
        else:
            assert k not in kept, k
    assert truncated_model_dir(src, 1, tmp_path / "cut") == (out, None)  # an existing one is reused
    with pytest.raises(ValueError, match="layers: 9; accepted: 1 to"):
        truncated_model_dir(src, 9, tmp_path / "too-deep")
