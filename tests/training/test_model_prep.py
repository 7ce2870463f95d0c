"""`longshort prepare-model`: a plain checkpoint (no protocol tokens) becomes one the pair stages accept."""

from __future__ import annotations

import json

import pytest
import torch
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
