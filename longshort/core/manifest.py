"""What a finished stage wrote, recorded in its ``.complete.json`` and checked before the stage is skipped.

Each file gets its size and a cheap checksum (BLAKE2b of its first and last 64 KiB plus the size): a truncated,
emptied or overwritten file is caught without reading multi-gigabyte checkpoints whole. A file that went missing,
changed size or checksum makes the stage rerun, and the log names the file. Checkpoints carry the same record
(``files.json``, written by ``seal`` before the checkpoint is renamed into place); a resume takes the newest one
that still matches it (``newest_intact``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

EDGE = 64 * 1024


def sha256(path: Path) -> str:
    """The whole file's SHA-256 (what a published checkpoint's manifest states; ``checksum`` is the cheap one)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def checksum(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as f:
        h.update(f.read(EDGE))
        if size > EDGE:
            f.seek(max(EDGE, size - EDGE))
            h.update(f.read(EDGE))
    return h.hexdigest()


def _files(root: Path, skip: set[str]) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip]
        out += [Path(dirpath) / f for f in filenames if not (rel == Path(".") and f in skip)]
    return sorted(out)


def record(roots: list[Path], skip: set[str], base: Path) -> dict[str, list]:
    """``{path: [size, checksum]}`` of every file under ``roots`` (paths relative to ``base`` when inside it),
    leaving out the top-level entries named in ``skip`` of each root."""
    out: dict[str, list] = {}
    for root in roots:
        if not root.exists():
            continue
        for f in _files(root, skip):
            key = str(f.relative_to(base)) if f.is_relative_to(base) else str(f)
            out[key] = [f.stat().st_size, checksum(f)]
    return out


def problems(files: dict[str, list], base: Path) -> list[str]:
    """What no longer matches ``files`` (as ``record`` wrote them), one line per file."""
    out = []
    for key, (size, digest) in files.items():
        path = Path(key) if Path(key).is_absolute() else base / key
        if not path.is_file():
            out.append(f"{path} is missing")
            continue
        now = path.stat().st_size
        if now != size:
            out.append(f"{path} changed size ({size} -> {now} bytes)")
        elif checksum(path) != digest:
            out.append(f"{path} changed content")
    return out


# ------------------------------------------------------------------------------------------- checkpoints
SEAL = "files.json"


def seal(folder: Path) -> None:
    """Record every file of a checkpoint being assembled in ``folder`` (call it last, before the rename)."""
    files = record([folder], {SEAL}, folder)
    tmp = folder / (SEAL + ".tmp")
    tmp.write_text(json.dumps(files))
    tmp.replace(folder / SEAL)


def check_sealed(folder: Path) -> list[str]:
    """What in a sealed checkpoint no longer matches its seal (a checkpoint from before seals: nothing to check)."""
    seal_file = folder / SEAL
    if not seal_file.exists():
        return []
    try:
        files = json.loads(seal_file.read_text())
    except ValueError:
        return [f"{seal_file} is unreadable"]
    return problems(files, folder)


def newest_intact(candidates: list[Path], check=check_sealed) -> tuple[Path | None, list[str]]:
    """The newest of ``candidates`` (oldest first) that ``check`` finds nothing wrong with, and why each newer one
    was passed over."""
    skipped = []
    for path in reversed(candidates):
        found = check(path)
        if not found:
            return path, skipped
        skipped.append(f"{path.name}: {found[0]}" + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
    return None, skipped
