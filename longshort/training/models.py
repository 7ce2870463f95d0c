"""Which ``nn.Module`` a trainer (and its frozen reference) builds: a model factory chosen by name.

``TrainerConfig.model_factory`` names an entry of ``MODEL_FACTORIES`` or any ``"package.module:function"``; the
function gets the model directory and ``from_pretrained``-style keyword arguments (``dtype``, ...) and returns the
module to train. The default is a Hugging Face causal LM; a composite model (a frozen LLM plus a trainable
projection, say) is a factory that builds one and freezes what should not train. The trainer passes
``Batch.model_inputs`` to its forward, so such a model can take inputs beyond token ids.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from longshort.core.checkpoint_io import load_error
from longshort.core.errors import LongshortError
from longshort.core.registry import Registry, import_target

ModelFactory = Callable[..., "torch.nn.Module"]  # noqa: F821 - (model_dir, **kwargs) -> module


def causal_lm(model_dir: str | Path, **kwargs):
    """A Hugging Face causal LM from its directory (the default)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except Exception as e:  # safetensors' SafetensorError is no OSError
        if (err := load_error(model_dir, e)) is None:
            raise
        raise err from e


MODEL_FACTORIES: Registry[ModelFactory] = Registry("model factory", {"causal_lm": causal_lm}, check=callable)


def model_factory(name: str) -> ModelFactory:
    if name in MODEL_FACTORIES:
        return MODEL_FACTORIES.get(name)
    if ":" in name:
        try:
            fn = import_target(name)
        except (ImportError, AttributeError, ValueError) as e:
            raise LongshortError(f"model_factory {name!r} cannot be imported ({e}); accepted: "
                                 f"{', '.join(MODEL_FACTORIES.names())} or package.module:function") from e
        if callable(fn):
            return fn
    raise LongshortError(f"model_factory {name!r} is unknown; accepted: {', '.join(MODEL_FACTORIES.names())} or "
                         "package.module:function")


def load_model(name: str, model_dir: str | Path, zero3_config: dict | None = None, **kwargs):
    """The factory's module. With ``zero3_config`` it is built under ``zero.Init`` (transformers' HfDeepSpeedConfig,
    which needs accelerate) so no rank holds the full weights; without accelerate the full model is loaded and
    ``deepspeed.initialize`` partitions it."""
    build = model_factory(name)
    if zero3_config is None:
        return build(model_dir, **kwargs)
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    try:
        hf_ds = HfDeepSpeedConfig(zero3_config)
    except ImportError as e:
        import logging

        logging.getLogger(__name__).warning("ZeRO-3 loads the full model on every rank first (%s); install "
                                            "accelerate to avoid it", e)
        return build(model_dir, **kwargs)
    try:
        return build(model_dir, **kwargs)
    finally:
        unset_hf_deepspeed_config()  # later from_pretrained calls in this process load normally
        del hf_ds
