"""Offline tiny tokenizer and tiny causal LMs for the embedded default run.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on task text, digits always split into single
tokens (so arithmetic is done digit by digit), saved as a Hugging Face fast tokenizer carrying the
collaboration protocol's tokens and chat template. Its normalizer and pre-tokenizer are exactly Qwen2's:
``AutoTokenizer`` rebuilds a ``qwen2`` model's tokenizer with those, so this keeps encodings identical
whichever class loads it (transformers, vLLM). Models come from a stock transformers config (Qwen2 or
Llama), so every later stage runs unchanged on real checkpoints; head_dim >= 64 keeps the vLLM CPU build happy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from longshort.data.protocol import ADDED_TOKENS, CHAT_TEMPLATE, END_TURN, EOS, PAD, SPECIAL_TOKENS, add_protocol_tokens

# Qwen2's pre-tokenizer split: contractions, words with one leading non-letter, single digits, punctuation runs.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class TokenizerConfig:
    vocab_size: int = field(default=640, metadata={"ge": 300})  # 256 bytes + protocol tokens + merges
    min_frequency: int = field(default=2, metadata={"ge": 1})
    n_texts: int = field(default=4000, metadata={"ge": 1})  # training texts drawn from the task data


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig | None = None):
    """A ``PreTrainedTokenizerFast`` trained on ``texts`` with the protocol's tokens and chat template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    cfg = cfg or TokenizerConfig()
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),  # \p{N}: one digit per piece
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    # Protocol tokens take the first ids; the full byte alphabet means any text encodes (no <unk>).
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *ADDED_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    markers = [*SPECIAL_TOKENS, *ADDED_TOKENS]

    def strip_markers(it: Iterable[str]) -> Iterable[str]:
        for text in it:
            for m in markers:  # markers are single tokens: keep them out of the merges
                text = text.replace(m, " ")
            yield text

    tok.train_from_iterator(strip_markers(texts), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False, padding_side="left"
    )
    add_protocol_tokens(fast)  # registers the markers as special tokens and sets CHAT_TEMPLATE
    fast.chat_template = CHAT_TEMPLATE
    # Saved as an explicit null: Qwen2Tokenizer otherwise defaults unk to <|endoftext|> (then EOS reads as unknown).
    fast.init_kwargs["unk_token"] = None
    return fast


def task_texts(records: list[dict], n: int) -> list[str]:
    """Texts to train the tokenizer on: problems, long and concise CoTs of the first ``n`` records."""
    out: list[str] = []
    for rec in records[:n]:
        out += [rec["problem"], rec["long_cot"], rec["solution"]]
    return out


@dataclass
class TinyModelConfig:
    """A stock transformers decoder; hidden size is ``heads * head_dim``."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    layers: int = field(default=4, metadata={"ge": 1})
    heads: int = field(default=2, metadata={"ge": 1})
    kv_heads: int = field(default=2, metadata={"ge": 1})
    head_dim: int = field(default=64, metadata={"ge": 64})  # vLLM's CPU attention needs >= 64
    intermediate: int = field(default=512, metadata={"ge": 1})
    max_positions: int = field(default=1024, metadata={"ge": 64})
    tie_word_embeddings: bool = True
    rope_theta: float = field(default=10000.0, metadata={"gt": 0})
    seed: int = 0

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim

    def validate(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads: {self.kv_heads} must divide heads ({self.heads})")


_CONFIGS = {"qwen2": "Qwen2Config", "llama": "LlamaConfig"}


def build_model(cfg: TinyModelConfig, tokenizer):
    """A randomly initialised ``AutoModelForCausalLM`` sized for ``tokenizer`` (float32)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    cfg.validate()
    pad, eos, end_turn = (tokenizer.convert_tokens_to_ids(t) for t in (PAD, EOS, END_TURN))
    config = getattr(transformers, _CONFIGS[cfg.arch])(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=cfg.tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        pad_token_id=pad,
        bos_token_id=None,
        eos_token_id=eos,
    )
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # A turn ends at EOS (dialogue finished) or END_TURN (hand over): generation stops at either.
    model.generation_config = GenerationConfig(eos_token_id=[eos, end_turn], pad_token_id=pad)
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_pretrained(model, tokenizer, out_dir: str | Path) -> Path:
    """Model (safetensors) and tokenizer side by side, loadable with ``from_pretrained(out_dir)``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def fresh_model_dir(cfg: TinyModelConfig, tokenizer_dir: str | Path, out_dir: str | Path) -> tuple[Path, int | None]:
    """A randomly initialised tiny model with the tokenizer of ``tokenizer_dir``, saved to ``out_dir`` (a recipe's
    smaller helper model before its SFT); an existing one is reused. Returns the dir and the new model's size (None
    when reused)."""
    from transformers import AutoTokenizer

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out, None
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = build_model(cfg, tok)
    save_pretrained(model, tok, out)
    return out, n_params(model)


def truncated_model_dir(src_dir: str | Path, layers: int, out_dir: str | Path) -> tuple[Path, int | None]:
    """The model of ``src_dir`` cut to its first ``layers`` decoder layers (embeddings, final norm and head kept),
    saved to ``out_dir`` with its tokenizer; an existing one is reused. A smaller helper model that starts from
    what the larger one learned (token embeddings, attention that reads back earlier tokens) instead of from
    nothing, the way a distilled student starts from its teacher's layers. Returns the dir and the size (None when
    reused)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out, None
    model = AutoModelForCausalLM.from_pretrained(str(src_dir))
    have = model.config.num_hidden_layers
    if not 1 <= layers <= have:
        raise ValueError(f"layers: {layers}; accepted: 1 to {have} (the layers of {src_dir})")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    save_pretrained(model, AutoTokenizer.from_pretrained(str(src_dir)), out)
    return out, n_params(model)
