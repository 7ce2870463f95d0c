"""Engine backends by name. Entries are lazy import paths, so choosing "hf" never imports vLLM."""

from __future__ import annotations

from longshort.core.registry import Registry
from longshort.engines.base import Engine

BACKENDS: Registry[type[Engine]] = Registry(
    "engine backend",
    {"hf": "longshort.engines.hf.engine:HFEngine", "vllm": "longshort.engines.vllm.engine:VLLMEngine"},
    check=lambda c: isinstance(c, type) and issubclass(c, Engine),
    install_hints={"vllm": "pip install 'longshort[vllm]' (needs a CUDA GPU; see docs/vllm.md), or choose backend 'hf'"},
)


def register_engine(name: str, target: str | type[Engine]) -> None:
    """Add a backend: an Engine subclass or a lazy "package.module:ClassName" path."""
    BACKENDS.register(name, target)


def backends() -> list[str]:
    return BACKENDS.names()


def engine_class(backend: str) -> type[Engine]:
    return BACKENDS.get(backend)


def make_engine(backend: str, **kwargs) -> Engine:
    """Build the engine registered as ``backend`` with its constructor's keyword arguments."""
    return engine_class(backend)(**kwargs)
