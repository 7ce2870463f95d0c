"""What ``longshort solve`` reads besides the export: the problems (text, ``--file`` lines or JSONL, stdin) and
``--engine-arg KEY=VALUE`` items. Shared by every recipe's solve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from longshort.core.errors import LongshortError, where


def read_problems(problem: str | None, file: str | None, stdin: TextIO) -> list[str]:
    """The problems to solve: PROBLEM text, ``--file`` (lines or JSONL), or all of stdin as one problem."""
    if file is not None:
        if problem is not None:
            raise LongshortError("give the problem text or --file, not both")
        return _read_file(Path(file))
    if problem is not None and problem != "-":
        if not problem.strip():
            raise LongshortError("PROBLEM is empty; pass the problem text, '-' to read stdin, or --file F")
        return [problem.strip()]
    text = stdin.read()
    if not text.strip():
        raise LongshortError("no problem: stdin was empty; pass the problem text as an argument, pipe it on stdin, "
                             "or use --file F (one problem per line, or JSONL with a \"problem\" key)")
    return [text.strip()]


def _read_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LongshortError(f"--file {path}: cannot read it ({e})") from e
    numbered = [(i, ln.strip()) for i, ln in enumerate(lines, 1) if ln.strip()]
    if not numbered:
        raise LongshortError(f"--file {path}: no problems in it (empty file)")
    if path.suffix != ".jsonl" and not numbered[0][1].startswith("{"):
        return [ln for _, ln in numbered]
    out = []
    for i, ln in numbered:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            raise LongshortError(f"{where(str(path), i)}: not valid JSON ({e.msg}); write one object per line") from e
        if not isinstance(rec, dict) or not isinstance(rec.get("problem"), str) or not rec["problem"].strip():
            raise LongshortError(f"{where(str(path), i, 'problem')}: each line needs a non-empty \"problem\" string")
        out.append(rec["problem"].strip())
    return out


def engine_args(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LongshortError(f"--engine-arg {item!r}: write KEY=VALUE, e.g. max_model_len=4096")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
