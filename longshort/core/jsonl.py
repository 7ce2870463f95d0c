"""JSON Lines files: one record a line, UTF-8, parent folders made on write."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def json_error_text(exc: json.JSONDecodeError, column: int | None = None) -> str:
    """``exc``'s message with its column, read once: json's own messages may end in "at" ("Unterminated string
    starting at"), so "at column N" would repeat the word."""
    col = exc.colno if column is None else column
    return f"{exc.msg} column {col}" if exc.msg.endswith(" at") else f"{exc.msg} at column {col}"
