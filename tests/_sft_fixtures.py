"""Tiny local tokenizer + Qwen2 model (hidden 128, 2 heads x 64, 2 layers) and toy SFT data for the SFT tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from longshort.protocol import Message, add_protocol_tokens
from longshort.sft_data import SFTExample

CORPUS = [
    "what is two plus two ? it is four .",
    "the cat sat on the mat and the dog sat on the log .",
    "think step by step : first add the tens , then add the ones .",
    "the answer is 42 because six times seven is forty two .",
    "long thoughts explore ; short thoughts conclude quickly .",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    add_protocol_tokens(fast)
    return fast


def build_model_dir(path: Path, seed: int = 0) -> Path:
    """Save a tiny random Qwen2 model + protocol tokenizer to ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=128, num_attention_heads=2, num_key_value_heads=2, head_dim=64,
        intermediate_size=256, num_hidden_layers=2, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def toy_examples(n: int, seed: int = 0) -> list[SFTExample]:
    """Arithmetic chats of varied length: a user question, then an assistant answer (trained)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        pad = " ".join(rng.choice(["the", "cat", "sat", "on", "mat"]) for _ in range(rng.randint(0, 12)))
        out.append(SFTExample(f"ex{i}", [Message("user", f"what is {a} plus {b} ? {pad}"),
                                          Message("assistant", f"it is {a + b} .")], ("assistant",)))
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path
