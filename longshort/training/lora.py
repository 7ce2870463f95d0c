"""LoRA adapters through ``peft``: what trains is the adapter, what leaves the trainer is the effective model.

A role's ``lora`` section wraps the trainer's causal LM in a ``peft`` LoRA model: the base weights are frozen, so only
the adapter's parameters get gradients and optimizer state, and DeepSpeed's checkpoints hold only them
(``exclude_frozen_parameters``; the base comes from the model directory again on resume). Everything downstream of
the trainer sees a plain model: ``effective_params`` yields ``W + scale * B @ A`` under the base model's own
parameter names, which is what weight sync sends to the engines and what an export writes (the merged model); the
adapter itself is saved beside it (``ADAPTER_DIR``), for users who ship adapters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from longshort.core.config import CONFIG_KEY
from longshort.core.errors import LongshortError

ADAPTER_DIR = "adapter"  # inside an exported model directory: the peft adapter (adapter_config.json + weights)
_PREFIX = "base_model.model."


@dataclass
class LoraSettings:
    """A role's LoRA (config ``sft.<role>.lora``, ``bootstrap.sft.lora``, ``rl.lora.<role>``); peft's names."""

    rank: int = field(default=16, metadata={"ge": 1})
    alpha: float = field(default=32.0, metadata={"gt": 0})
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})
    # module names (suffixes) to adapt, or "all-linear": every linear layer but the output head
    target_modules: list[str] | str = "all-linear"
    # the embedding (and tied head) rows of the protocol's tokens also train (peft's trainable tokens): prepare-model
    # adds them to a pretrained vocabulary untrained, and an adapter on the linear layers alone cannot learn to write
    # them (measured: SmolLM2 bootstrap, 69% correct answers, 0% well formed without)
    train_tokens: Literal["protocol", "none"] = "protocol"
    seed: int = 0  # of the A matrices' random init (B starts at 0)
    key: str = field(default="", repr=False, compare=False, metadata={CONFIG_KEY: True})  # "sft.long.lora": messages

    def validate(self) -> None:
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            raise ValueError(f"target_modules: {self.target_modules!r}; accepted: all-linear or a list of module "
                             "names, e.g. [q_proj, v_proj]")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules: empty; accepted: all-linear or a list of module names")


def protocol_token_ids(model_dir: str | Path) -> list[int]:
    """Ids of the protocol's tokens in ``model_dir``'s tokenizer (those it has)."""
    from transformers import AutoTokenizer

    from longshort.data.protocol import ADDED_TOKENS, SPECIAL_TOKENS

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = {tok.convert_tokens_to_ids(t) for t in [*SPECIAL_TOKENS, *ADDED_TOKENS] if t in tok.get_vocab()}
    return sorted(i for i in ids if i is not None)


def apply(model: torch.nn.Module, cfg: LoraSettings, token_ids: list[int] | None = None) -> torch.nn.Module:
    """``model`` wrapped in a fresh LoRA adapter (B = 0: the effective weights equal the base's at start); the
    embedding rows of ``token_ids`` train too (``train_tokens``)."""
    from peft import LoraConfig, get_peft_model

    key = cfg.key or "lora"
    if not hasattr(model, "config") or not hasattr(model, "get_input_embeddings"):
        raise LongshortError(f"{key}: LoRA needs a Hugging Face model (model_factory causal_lm), got "
                             f"{type(model).__name__}; remove {key} for this role")
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if isinstance(cfg.target_modules, list) and (missing := sorted(set(cfg.target_modules) - names)):
        raise LongshortError(f"{key}.target_modules: {', '.join(missing)} not in this model ({type(model).__name__}); "
                             f"its linear layers: {', '.join(sorted(names))}; or use all-linear")
    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                          target_modules=cfg.target_modules, task_type="CAUSAL_LM",
                          trainable_token_indices=token_ids or None)
    import deepspeed

    # Under ZeRO-3 the embeddings are partitioned: gathered while peft copies the trained tokens' rows out of them.
    emb = [m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    sharded = [w for w in emb if hasattr(w, "ds_id")] if token_ids else []
    with (deepspeed.zero.GatheredParameters(sharded, modifier_rank=None) if sharded else nullcontext(),
          torch.random.fork_rng(devices=[])):  # A's random init: the same on every run and rank, RNG untouched
        torch.manual_seed(cfg.seed)
        return get_peft_model(model, peft_cfg)


def is_lora(module: torch.nn.Module) -> bool:
    return hasattr(module, "peft_config")


def _layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Adapted layers by the plain name of the module that owns the weight."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    return {name.removesuffix(".token_adapter"): m for name, m in module.get_base_model().named_modules()
            if isinstance(m, LoraLayer | TrainableTokensLayer)}


def _merged(layer: torch.nn.Module, weight: torch.Tensor) -> torch.Tensor:
    from peft.tuners.lora import LoraLayer

    if isinstance(layer, LoraLayer):
        return weight + sum(layer.get_delta_weight(a) for a in layer.active_adapters).to(weight.dtype)
    return layer.get_merged_weights(layer.active_adapters)  # trainable tokens: their rows replaced


def plain_name(name: str) -> str:
    return name.removeprefix(_PREFIX).replace(".token_adapter.", ".").replace(".base_layer.", ".")


def is_adapter_param(name: str) -> bool:
    return ".lora_" in name or ".trainable_tokens_delta." in name


def effective_specs(module: torch.nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """``(name, dtype, shape)`` of the effective parameters, in ``effective_params``' order (no gathering)."""
    return [(plain_name(n), p.dtype, tuple(getattr(p, "ds_shape", p.shape))) for n, p in module.named_parameters()
            if not is_adapter_param(n)]


def effective_params(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(base name, tensor)`` of the model the adapter makes: each adapted weight merged (``W + scale * B @ A``, a
    new tensor: the trainer's base weight is never touched), the rest as they are. Collective under ZeRO-3 (each
    layer's base weight and factors are gathered together)."""
    import deepspeed

    layers = _layers(module)
    for name, p in module.named_parameters():
        if is_adapter_param(name):
            continue
        plain = plain_name(name)
        owner = plain.rsplit(".", 1)[0]
        layer = layers.get(owner) if name.endswith(".base_layer.weight") else None
        group = [p] if layer is None else [q for q in layer.parameters()]
        gathered = [q for q in group if hasattr(q, "ds_id")]
        ctx = deepspeed.zero.GatheredParameters(gathered, modifier_rank=None) if gathered else nullcontext()
        with ctx, torch.no_grad():
            yield plain, p.data if layer is None else _merged(layer, p.data)


@contextmanager
def adapter_state_only(module: torch.nn.Module) -> Iterator[None]:
    """Inside: ``module.state_dict()`` holds only the adapter's parameters. DeepSpeed's ``exclude_frozen_parameters``
    leaves out frozen parameters by their ``named_parameters`` name, which misses a tied head's second name (113 MB
    of SmolLM2's embedding in every checkpoint)."""

    def drop_frozen(_module, state, _prefix, _meta):
        for key in [k for k in state if not is_adapter_param(k)]:
            del state[key]

    handle = module.register_state_dict_post_hook(drop_frozen)
    try:
        yield
    finally:
        handle.remove()


def save_adapter(module: torch.nn.Module, out_dir: Path, state: dict[str, torch.Tensor], base: str) -> None:
    """The adapter as peft writes it (``adapter_config.json`` + ``adapter_model.safetensors``), from the gathered
    trainable ``state``; ``base`` is recorded as the model it adapts (the directory the trainer loaded)."""
    module.save_pretrained(str(out_dir), state_dict=state)
    cfg_path = out_dir / "adapter_config.json"
    meta = json.loads(cfg_path.read_text())
    meta["base_model_name_or_path"] = base
    cfg_path.write_text(json.dumps(meta, indent=2))


def load_merged(model_dir: Path, **kwargs) -> torch.nn.Module:
    """A model from an adapter directory (``adapter_config.json``): its base, the adapter merged in."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base or not Path(base).exists():
        raise LongshortError(f"{model_dir}: the adapter's base model {base!r} (adapter_config.json: "
                             "base_model_name_or_path) is not here; point it at the base model's directory, or use "
                             "the merged model exported beside the adapter")
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    return PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()


def trainable_count(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    total = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())
    train = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters() if p.requires_grad)
    return train, total
