"""Where an export goes next: the Hugging Face Hub commands that publish its model directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def upload_commands(out: Path, roles: Iterable[str], run: str) -> str:
    """One ``hf upload`` per role directory of the export ``out`` (huggingface_hub's ``hf``, which replaced
    ``huggingface-cli``), each to a repository named after the run and the role."""
    lines = [f"  hf upload <your-namespace>/{run}-{role} {out / role} ." for role in roles]
    return "to publish on the Hugging Face Hub (after `hf auth login`):\n" + "\n".join(lines)
