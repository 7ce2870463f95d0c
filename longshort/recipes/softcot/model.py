"""The SoftCoT composite model: a frozen assistant, a trainable projection, a frozen LLM.

The assistant reads its prompt with N placeholder tokens; its hidden states (``layer``, the last by default) at those
placeholders are the soft thoughts. ``projection`` (``Linear(d_assistant, d_llm)`` with bias, as in the paper) maps
them into the LLM's input-embedding space, where they replace the embeddings of the N placeholders of the LLM's
prompt. Only the projection has ``requires_grad``; both models stay in eval mode and are never written.

A model directory (what the trainer loads and exports) holds ``softcot.json`` (where the two models are and which
tokens are placeholders), ``projection.safetensors`` and the LLM's tokenizer and ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from longshort.core.errors import LongshortError

SPEC = "softcot.json"
WEIGHTS = "projection.safetensors"


class SoftCoTModel(nn.Module):
    def __init__(self, assistant: nn.Module, llm: nn.Module, *, assistant_slot_id: int, llm_slot_id: int,
                 layer: int = -1, spec: dict | None = None, seed: int = 0):
        super().__init__()
        self.assistant = assistant.requires_grad_(False).eval()
        self.llm = llm.requires_grad_(False).eval()
        d_a, d_l = assistant.config.get_text_config().hidden_size, llm.config.get_text_config().hidden_size
        with torch.random.fork_rng():  # the same initial projection whatever the caller's RNG state or dtype
            torch.manual_seed(seed)
            self.projection = nn.Linear(d_a, d_l).to(llm.get_input_embeddings().weight.dtype)
        self.assistant_slot_id, self.llm_slot_id, self.layer = assistant_slot_id, llm_slot_id, layer
        self.spec = dict(spec or {})
        # the state is the projection alone: checkpoints and exports never carry the frozen models (which come
        # from their own files), tied output heads included
        self._register_state_dict_hook(_projection_only)

    def train(self, mode: bool = True) -> SoftCoTModel:
        """Only the projection changes mode: the frozen models keep dropout off while the projection trains."""
        self.training = mode
        self.projection.train(mode)
        return self

    def soft_thoughts(self, assistant_ids: torch.Tensor, assistant_mask: torch.Tensor) -> torch.Tensor:
        """``[B, N, d_llm]``: the projected assistant states at each row's N placeholders (in order)."""
        slots = (assistant_ids == self.assistant_slot_id) & assistant_mask.bool()
        n = _same_count(slots, "assistant")
        with torch.no_grad():  # padding may hold ids of the LLM's vocabulary: any in-range id will do there
            out = self.assistant(input_ids=assistant_ids.masked_fill(~assistant_mask.bool(), 0), attention_mask=assistant_mask, output_hidden_states=True,
                                 use_cache=False)
        states = out.hidden_states[self.layer][slots].view(len(assistant_ids), n, -1)
        return self.projection(states.to(self.projection.weight.dtype))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              assistant_ids: torch.Tensor | None = None, assistant_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The LLM's input embeddings with its placeholders replaced by the soft thoughts (none given: unchanged)."""
        emb = self.llm.get_input_embeddings()(input_ids)
        if assistant_ids is None:
            return emb
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if assistant_mask is None:
            assistant_mask = torch.ones_like(assistant_ids)
        thoughts = self.soft_thoughts(assistant_ids, assistant_mask)
        slots = (input_ids == self.llm_slot_id) & mask.bool()
        n = _same_count(slots, "LLM")
        if n != thoughts.shape[1]:
            raise LongshortError(f"softcot: the LLM prompt has {n} placeholders but the assistant's has "
                                 f"{thoughts.shape[1]}; build both with the same number of thoughts")
        return emb.masked_scatter(slots[..., None].expand_as(emb), thoughts.to(emb.dtype))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, assistant_ids=None,
                assistant_ids_mask=None, **kwargs):
        """The LLM's output; ``assistant_ids``/``assistant_ids_mask`` are the side input of ``data.projection_set``
        as ``sft_data.collate`` pads it (none: the LLM alone)."""
        embeds = self.embed(input_ids, attention_mask, assistant_ids, assistant_ids_mask)
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=use_cache, **kwargs)

    def save_pretrained(self, out_dir: str | Path, state_dict: dict | None = None, **_) -> None:
        """``softcot.json``, the projection's weights and the LLM's ``config.json``: never the frozen models."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        save_file({k[len("projection."):]: v.detach().to("cpu").contiguous() for k, v in sd.items()
                   if k.startswith("projection.")}, str(out / WEIGHTS))
        (out / SPEC).write_text(json.dumps(self.spec, indent=1) + "\n", encoding="utf-8")
        self.llm.config.save_pretrained(out)


def _projection_only(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and not k[len(prefix):].startswith("projection.")]:
        del state_dict[key]


def _same_count(slots: torch.Tensor, which: str) -> int:
    counts = slots.sum(1)
    if len(counts) and bool((counts != counts[0]).any()):
        bad = int((counts != counts[0]).nonzero()[0])
        raise LongshortError(f"softcot: {which} prompt row {bad} has {int(counts[bad])} placeholders, row 0 has "
                             f"{int(counts[0])}; every row of a batch needs the same number of thoughts")
    return int(counts[0]) if len(counts) else 0


def resolve_ref(model_dir: Path, ref: str) -> str:
    """A model reference of ``softcot.json``: a path relative to its directory, an absolute path or a hub id."""
    local = Path(model_dir) / ref
    return str(local.resolve()) if local.exists() else ref


def write_spec(out_dir: str | Path, *, assistant: str, llm: str, assistant_slot: str, llm_slot: str,
               layer: int = -1, seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"assistant": assistant, "llm": llm, "assistant_slot": assistant_slot, "llm_slot": llm_slot,
            "layer": layer, "seed": seed}
    (out / SPEC).write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    return out / SPEC


def token_id(tokenizer, token: str, where: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise LongshortError(f"{where}: the tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no single "
                             f"token {token!r}; choose a token it has (the paper: <|endoftext|> for Qwen)")
    return tid


def softcot_model(model_dir: str | Path, dtype=None, **kwargs) -> SoftCoTModel:
    """The model factory (``sft.model_factory``): the two models from ``softcot.json``'s references, the projection
    from ``projection.safetensors`` (absent: a fresh one from the spec's ``seed``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / SPEC).exists():
        raise LongshortError(f"{model_dir} has no {SPEC}; a SoftCoT model dir comes from `longshort train` of the "
                             "softcot recipe (or its export)")
    spec = json.loads((model_dir / SPEC).read_text(encoding="utf-8"))
    loaded = {}
    for role in ("assistant", "llm"):
        ref = spec[role] = resolve_ref(model_dir, spec[role])  # a copy saved elsewhere still finds them
        loaded[role] = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **kwargs)
        loaded[f"{role}_tok"] = AutoTokenizer.from_pretrained(ref)
    model = SoftCoTModel(
        loaded["assistant"], loaded["llm"], layer=spec.get("layer", -1), spec=spec, seed=spec.get("seed", 0),
        assistant_slot_id=token_id(loaded["assistant_tok"], spec["assistant_slot"], f"{SPEC} assistant_slot"),
        llm_slot_id=token_id(loaded["llm_tok"], spec["llm_slot"], f"{SPEC} llm_slot"))
    if (model_dir / WEIGHTS).exists():
        from safetensors.torch import load_file

        model.projection.load_state_dict({k: v.to(model.projection.weight.dtype)
                                          for k, v in load_file(str(model_dir / WEIGHTS)).items()})
    return model


def place(device: str = "auto", dtype: str = "auto"):
    """(device, dtype) as ``eval.device``/``eval.dtype`` say: cuda when there is one; auto dtype: bf16 there, on a CPU
    what ``core/precision.py`` decides."""
    import torch

    from longshort.core.precision import auto_dtype

    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    named = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return dev, named[dtype] if dtype in named else auto_dtype(dev)
