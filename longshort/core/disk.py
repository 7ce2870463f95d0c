"""A full disk, said plainly: where, how much is free, what the write needed, and that nothing finished is lost.

Checkpoints are written to a temporary folder and renamed when complete, stages record their files when they
finish, and ``metrics.jsonl`` is appended line by line, so a write that fails for space leaves every earlier
checkpoint and finished stage as it was; freeing space and running the same command again resumes."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

NO_SPACE = "[Errno 28]"  # how an OSError(ENOSPC) reads once it has crossed a Ray actor boundary as text


# torch.save reports a short write as "[enforce fail at inline_container.cc:...] . unexpected pos 576 vs 534"
TORCH_SHORT_WRITE = "unexpected pos"


_output_dir: Path | None = None  # the command's run directory, where a write that names no file went


def writing_under(path: Path) -> None:
    """Record the command's run directory (``prepare_run``) for a full disk reported without a file name."""
    global _output_dir
    _output_dir = Path(path)


def where_written(err: BaseException) -> Path:
    """The file a failed write names, else the command's run directory, else the working directory."""
    return Path(err.filename) if getattr(err, "filename", None) else _output_dir or Path.cwd()


def is_disk_full(err: BaseException | str, path: str | Path | None = None, need: int | None = None) -> bool:
    """Did ``err`` come from a write that ran out of space? An ENOSPC says so; torch's short-write error does when
    ``path``'s filesystem has less than ``need`` bytes free."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    text = str(err)
    if NO_SPACE in text or "No space left on device" in text:
        return True
    if TORCH_SHORT_WRITE in text and path is not None:
        return shutil.disk_usage(_existing(path)).free < max(need or 0, 1 << 20)
    return False


def _existing(path: str | Path) -> Path:
    """``path`` or its nearest parent that exists (a write may fail before its folder is made)."""
    return next((p for p in [Path(path), *Path(path).parents] if p.exists()), Path("/"))


def size_of(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder; 0 when it is not there)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def full_disk_message(path: str | Path, need: int | None = None, what: str = "") -> str:
    """``path`` (where the write went) ran out of space: the free space there now, ``need`` (bytes the write takes,
    when known), and the fix."""
    usage = shutil.disk_usage(_existing(path))
    needs = f"; it needs about {_gb(need)}" if need else ""
    return (f"no space left on the device holding {path}{f' while writing {what}' if what else ''} "
            f"({_gb(usage.free)} free of {_gb(usage.total)}{needs}). Every finished stage and the newest complete "
            "checkpoint are kept: free space there (or point output_dir at a larger disk) and run the same command "
            "again to resume")
