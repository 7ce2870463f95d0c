"""Engine backends by name. Entries are import paths, so choosing "hf" never imports vLLM."""

from __future__ import annotations

import importlib

from longshort.core.errors import LongshortError
from longshort.engines.base import Engine

_BACKENDS: dict[str, str | type[Engine]] = {
    "hf": "longshort.engines.hf.engine:HFEngine",
    "vllm": "longshort.engines.vllm.engine:VLLMEngine",
}
_EXTRAS = {"vllm": "pip install 'longshort[vllm]' (needs a CUDA GPU)"}


def register_engine(name: str, target: str | type[Engine]) -> None:
    """Add a backend: an Engine subclass or a lazy "package.module:ClassName" path."""
    _BACKENDS[name] = target


def backends() -> list[str]:
    return sorted(_BACKENDS)


def engine_class(backend: str) -> type[Engine]:
    if backend not in _BACKENDS:
        raise LongshortError(f"engine backend {backend!r} is unknown; accepted: {', '.join(backends())}")
    target = _BACKENDS[backend]
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        fix = _EXTRAS.get(backend, "install its dependencies")
        raise LongshortError(f"engine backend {backend!r} cannot be imported ({e}); fix: {fix}, "
                             "or choose backend 'hf'") from e
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise LongshortError(f"engine backend {backend!r}: {target} is not an Engine subclass")
    _BACKENDS[backend] = cls
    return cls


def make_engine(backend: str, **kwargs) -> Engine:
    """Build the engine registered as ``backend`` with its constructor's keyword arguments."""
    return engine_class(backend)(**kwargs)
