"""`longshort prepare-model`: a plain checkpoint (no protocol tokens) becomes one the pair stages accept."""

from __future__ import annotations

import json

import pytest
import torch
from builders import aligned_partner
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from longshort.cli import main
from longshort.data.protocol import SPECIAL_TOKENS, Message, render


@pytest.fixture()
def plain(tmp_path):
    """A stock Llama with an ordinary byte-level BPE tokenizer that knows nothing of the protocol."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["What is 3 + 4? The answer is 7."] * 20, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>")
    tok.add_tokens(["</s>"], special_tokens=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=1, num_attention_heads=1, head_dim=64))
    src = tmp_path / "plain"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    return src, model


def test_prepare_model_adds_tokens_and_keeps_old_weights(plain, tmp_path, capsys):
    src, model = plain
    out = tmp_path / "prepared"
    assert main(["prepare-model", str(src), str(out)]) == 0
    tok = AutoTokenizer.from_pretrained(out)
    new = AutoModelForCausalLM.from_pretrained(out)
    assert all(t in tok.get_vocab() for t in SPECIAL_TOKENS)
    emb = new.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) == model.config.vocab_size + len(SPECIAL_TOKENS) + 2  # + <think>, </think>
    assert torch.equal(emb[: model.config.vocab_size], model.get_input_embeddings().weight)
    ids = render([Message("user", "What is 3 + 4?"), Message("long", "7")], tok).ids
    assert tok.convert_tokens_to_ids("<|long|>") in ids  # the protocol renders with the new tokens
    summary = json.loads((out / "longshort_prepare.json").read_text())
    assert summary["added_tokens"] == len(SPECIAL_TOKENS) + 2 and "protocol tokens added" in capsys.readouterr().out
    # a second preparation of the prepared model adds nothing; a non-empty target is refused
    assert main(["prepare-model", str(out), str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "longshort_prepare.json").read_text())["added_tokens"] == 0
    assert main(["prepare-model", str(src), str(out)]) == 2
    assert main(["prepare-model", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "cannot load" in capsys.readouterr().err


def _llama(vocab: int, seed: int):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                        num_attention_heads=1, head_dim=64, tie_word_embeddings=False))


def test_vocab_of_gives_the_second_role_the_first_ones_ids(plain, tmp_path, capsys):
    """Same base vocabulary, other added tokens at other ids (as Qwen2.5-Instruct's against R1-Distill-Qwen's):
    prepared on its own the second model is refused as a partner; with --vocab-of it takes the first one's exact
    vocabulary, every token it had keeps its own rows at the new id, and it computes what it computed before."""
    src, _ = plain
    first = tmp_path / "first"
    assert main(["prepare-model", str(src), str(first)]) == 0
    # <think> where the first has <|pad|>
    model, tok, second = aligned_partner(AutoTokenizer.from_pretrained(src), ["<|box_start|>", "<think>"], first,
                                         tmp_path, tie=False, seed=1)
    ref, old = AutoTokenizer.from_pretrained(first).get_vocab(), tok.get_vocab()
    aligned = AutoModelForCausalLM.from_pretrained(second)
    kept = [t for t in old if t in ref]
    assert old["<think>"] != ref["<think>"] and len(kept) == len(old) - 1
    ids = tok("What is 3 + 4? <think>", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(ids).logits[..., [old[t] for t in kept]]
        after = aligned(torch.tensor([[ref[tok.convert_ids_to_tokens(i)] for i in ids[0].tolist()]])).logits
    assert torch.allclose(after[..., [ref[t] for t in kept]], before, atol=1e-5)
    manifest = json.loads((second / "longshort_prepare.json").read_text())["vocab_alignment"]
    assert manifest["dropped_tokens"] == ["<|box_start|>"] and "<think>" in manifest["moved_ids"]
    msgs = [Message("user", "What is 3 + 4?"), Message("long", "<think>add</think>"), Message("short", "7")]
    assert render(msgs, AutoTokenizer.from_pretrained(first)).ids == render(msgs, AutoTokenizer.from_pretrained(
        second)).ids
    # another base vocabulary is refused, naming the reference and the fix
    other = Tokenizer(models.BPE())
    other.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    other.train_from_iterator(["Completely different words here."] * 20, trainers.BpeTrainer(
        vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    alien_tok = PreTrainedTokenizerFast(tokenizer_object=other, eos_token="</s>")
    alien_tok.add_tokens(["</s>"], special_tokens=True)
    alien = tmp_path / "alien"
    _llama(len(alien_tok), seed=2).save_pretrained(alien)
    alien_tok.save_pretrained(alien)
    capsys.readouterr()
    assert main(["prepare-model", str(alien), str(tmp_path / "x"), "--vocab-of", str(first)]) == 2
    err = capsys.readouterr().err
    assert f"--vocab-of {first}" in err and "another base vocabulary" in err and not (tmp_path / "x").exists()
