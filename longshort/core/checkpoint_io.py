"""Checkpoint file helpers: publish a directory atomically (or stage one to publish), capture and restore every RNG, name a damaged weights file."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from longshort.core.errors import LongshortError


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    return {**state, "cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: Path, final: Path) -> None:
    """Atomically publish ``tmp`` as ``final`` (an older ``final`` is moved aside first, then deleted)."""
    old = final.parent / f".old-{final.name}"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A fresh ``.tmp-<name>`` beside ``final`` to write into (not created: fill it with ``copytree`` or ``mkdir``);
    published as ``final`` with ``replace_dir`` when the block ends, deleted if it raises. A full disk (an OSError, or
    a library's own error such as safetensors') is said naming ``final`` and the space the staged copy had taken."""
    from longshort.core.disk import full_disk_message, is_disk_full, size_of

    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException as e:
        partial = size_of(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and is_disk_full(e):
            raise LongshortError(full_disk_message(final, what=f"{final.name} ({partial / 1e6:.0f} MB written "
                                                               "before it ran out)")) from e
        raise


def damaged_weights(model_dir: str | Path) -> str | None:
    """The first ``*.safetensors`` file in ``model_dir`` whose header does not read, with the reason (None: all read).
    A load error inside a worker then names the file instead of only "incomplete metadata"."""
    from safetensors import safe_open

    for path in sorted(Path(model_dir).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - any failure to read the header is the answer
            return f"{path} ({type(e).__name__}: {e})"
    return None


def load_error(model_dir: str | Path, exc: BaseException) -> LongshortError | None:
    """What to tell a user whose model directory failed to load (None: not a problem of the files; re-raise)."""
    bad = damaged_weights(model_dir) if Path(model_dir).is_dir() else None
    if bad:
        return LongshortError(f"cannot load model {model_dir}: weights file {bad} is damaged; rerun the stage that "
                              "wrote it (`longshort run` finds damaged outputs and rebuilds them)")
    if isinstance(exc, OSError):
        return LongshortError(f"cannot load model {model_dir}: {exc}; give a directory with config.json and weights "
                              "(e.g. one written by save_pretrained)")
    return None
