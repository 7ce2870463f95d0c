"""The one registry type: names -> objects, where an entry may be a lazy ``"package.module:attr"`` path.

Engines, weight-sync strategies, rewards and recipes each keep one ``Registry``. Lazy entries mean that naming
"hf" never imports vLLM, and that a user's own class or function plugs in by its import path alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from longshort.core.errors import LongshortError

T = TypeVar("T")


def import_target(target: str) -> Any:
    """``"package.module:attr"`` -> the object (ImportError/AttributeError propagate for the caller to explain)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not of the form package.module:name")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Named entries of one ``kind`` ("engine backend", "recipe", ...); ``get`` imports a lazy one once."""

    def __init__(self, kind: str, entries: dict[str, T | str] | None = None,
                 check: Callable[[Any], bool] | None = None, install_hints: dict[str, str] | None = None):
        self.kind, self._entries = kind, dict(entries or {})
        self._check, self._hints = check, dict(install_hints or {})

    def register(self, name: str, target: T | str) -> None:
        """Add (or replace) ``name``: the object itself or its lazy ``"package.module:attr"`` path."""
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in that is done, or a test's temporary entry); unknown names are ignored."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise LongshortError(f"{self.kind} {name!r} is unknown; accepted: {', '.join(self.names())}")
        target = self._entries[name]
        if not isinstance(target, str):
            return target
        try:
            obj = import_target(target)
        except ImportError as e:
            fix = self._hints.get(name, "install its dependencies")
            raise LongshortError(f"{self.kind} {name!r} cannot be imported ({e}); fix: {fix}") from e
        except AttributeError as e:
            raise LongshortError(f"{self.kind} {name!r}: {target} does not exist ({e})") from e
        if self._check is not None and not self._check(obj):
            raise LongshortError(f"{self.kind} {name!r}: {target} is not a valid {self.kind}")
        self._entries[name] = obj
        return obj
