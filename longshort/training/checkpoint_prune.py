"""Only the newest checkpoint keeps its optimizer state: resuming needs it there, and the older ones kept as a fallback
(``keep_last``) then hold weights, scheduler and RNG only. Adam's two moments are twice the fp32 weights (SmolLM2-135M:
1.1 GB of a 1.6 GB checkpoint), so this bounds a run's disk to about one full checkpoint plus the weights of the rest.

Under ZeRO-0 DeepSpeed keeps the optimizer state inside the model-states file: it is rewritten without it. Under
ZeRO-1/2 the optimizer files (master weights + moments, 6x a bf16 model) are deleted: the model-states file still
holds the whole module, and DeepSpeed rebuilds the fp32 master weights from it on load (exact in fp32, rounded to
bf16 under bf16). ZeRO-3 partitions the weights into those files: its checkpoints stay whole. A fallback to a pruned
checkpoint resumes with fresh optimizer moments and says so (``Trainer.load_checkpoint``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from longshort.core import manifest

log = logging.getLogger("longshort")
DROPPED = "optimizer_dropped.txt"  # beside a pruned DeepSpeed ``engine/`` folder


def drop_optimizer(ckpt: Path) -> int:
    """Remove the optimizer state from every DeepSpeed checkpoint under ``ckpt`` (RL: one per role) and re-seal it;
    the bytes freed. Idempotent."""
    freed = 0
    for engine in sorted(p for p in ckpt.rglob("engine") if p.is_dir()):
        holder = engine.parent
        if (holder / DROPPED).exists() or not (holder / "state.json").exists():
            continue
        stage = json.loads((holder / "state.json").read_text()).get("zero_stage", 0)
        if stage == 0:
            n = _drop_from_model_states(engine)
        elif stage in (1, 2):
            n = _delete_optimizer_files(engine)
        else:
            continue  # ZeRO-3: the weights live in the optimizer files
        if n:  # a checkpoint that had no optimizer state is left unmarked, as it was
            (holder / DROPPED).write_text("optimizer state dropped: only the newest checkpoint keeps it; resuming "
                                          "from here restarts the optimizer's moments\n")
            freed += n
    if freed:
        manifest.seal(ckpt)
    return freed


def _delete_optimizer_files(engine: Path) -> int:
    freed = 0
    for f in sorted(engine.glob("*optim_states.pt")):
        freed += f.stat().st_size
        f.unlink()
    return freed


def _drop_from_model_states(engine: Path) -> int:
    freed = 0
    for states in sorted(engine.glob("mp_rank_*_model_states.pt")):
        sd = torch.load(states, map_location="cpu", weights_only=False)
        if sd.get("optimizer") is None:
            continue
        before = states.stat().st_size
        sd["optimizer"] = None
        tmp = states.with_name(states.name + ".tmp")
        torch.save(sd, tmp)
        tmp.replace(states)
        freed += before - states.stat().st_size
    return freed


def prune(checkpoints: list[Path], keep: int) -> None:
    """Of ``checkpoints`` (oldest first), delete all but the newest ``keep`` and drop the optimizer state of the kept
    ones but the newest."""
    for old in checkpoints[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for older in checkpoints[-keep:-1] if keep > 1 else []:
        if freed := drop_optimizer(older):
            log.debug("%s: optimizer state dropped (%.1f MB freed)", older, freed / 1e6)
