"""The one error type users see: it says where (file, line, key) and how to fix it."""

from __future__ import annotations


class LongshortError(ValueError):
    """A user-facing error about bad input or configuration.

    Raise it with a message that names the file/line/key at fault and the fix; the CLI prints
    it without a traceback and exits with status 2.
    """


def where(path: str | None = None, line: int | None = None, key: str | None = None) -> str:
    """Format a location such as ``data.jsonl:12`` or ``cfg.yaml:4 (key sft.lr)``."""
    parts = []
    if path:
        parts.append(f"{path}:{line}" if line is not None else str(path))
    if key:
        parts.append(f"key '{key}'")
    return ", ".join(parts) if parts else "<input>"
