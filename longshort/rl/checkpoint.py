"""RL run state: the problem stream's cursor and the controller state, and checkpoints of both policies.

A checkpoint ``rl/checkpoints/step-000010/`` holds ``long/`` and ``short/`` (each policy's trainer state: weights,
optimizer, scheduler, every rank's RNG) and ``controller.json`` (step, data cursor, the controller's RNG, the
schedule). It is assembled in ``.tmp-step-000010/`` and renamed into place only when complete, so a crash while
saving leaves the previous checkpoint as the latest; a directory without ``controller.json`` is never resumed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from longshort.core import manifest
from longshort.core.checkpoint_io import replace_dir
from longshort.core.errors import LongshortError
from longshort.rl.episodes import PromptItem
from longshort.training.checkpoint_prune import DROPPED, prune

log = logging.getLogger("longshort")
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
CONTROLLER = "controller.json"


class ProblemStream:
    """Training prompts in a seeded order, reshuffled each epoch; the position is one integer (``cursor``)."""

    def __init__(self, problems: list[PromptItem], seed: int, cursor: int = 0):
        if not problems:
            raise LongshortError("rl: the training problem set is empty; check rl.train.path")
        self.problems, self.seed, self.cursor = problems, seed, cursor
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.problems)))
            random.Random(f"longshort-rl/{self.seed}/epoch{epoch}").shuffle(order)
            self._orders = {epoch: order}  # one epoch is live at a time
        return self._orders[epoch]

    def take(self, k: int) -> list[PromptItem]:
        out = []
        for _ in range(k):
            epoch, pos = divmod(self.cursor, len(self.problems))
            out.append(self.problems[self._order(epoch)[pos]])
            self.cursor += 1
        return out

    @property
    def epoch(self) -> float:
        return self.cursor / len(self.problems)


@dataclass
class ControllerState:
    step: int = 0  # RL steps completed
    cursor: int = 0  # training prompts consumed
    rng: list = field(default_factory=list)  # random.Random state of the controller (sample picks)
    seed: int = 0
    evals: list[dict] = field(default_factory=list)  # held-out results so far (step, accuracy, tokens, ...)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> ControllerState:
        return cls(**obj)


def rng_to_json(rng: random.Random) -> list:
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]


def rng_from_json(obj: list) -> random.Random:
    rng = random.Random()
    if obj:
        rng.setstate((obj[0], tuple(obj[1]), obj[2]))
    return rng


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / CONTROLLER).exists()]
    return [p for _, p in sorted(found)]


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def save(policies, root: Path, state: ControllerState, roles: tuple[str, ...], keep: int) -> Path:
    """Checkpoint every role's group and the controller as ``root/step-<state.step>``; keep the last ``keep``."""
    final = root / f"step-{state.step:06d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for role in roles:
        policies[role].save_checkpoint(tmp / role, {"step": state.step})
    _write_json(tmp / CONTROLLER, state.to_json())
    manifest.seal(tmp)  # a resume takes the newest checkpoint that still matches its seal
    replace_dir(tmp, final)
    for role in roles:
        policies[role].last_checkpoint = str(final)  # failure messages name the published path
    prune(checkpoints(root), keep)
    return final


def load(policies, path: Path, roles: tuple[str, ...]) -> ControllerState:
    """Restore both policies (engines re-synced to the checkpoint's weights) and the controller state."""
    state = ControllerState.from_json(json.loads((path / CONTROLLER).read_text()))
    for role in roles:
        if not (path / role).is_dir():
            raise LongshortError(f"checkpoint {path} has no {role}/ directory; it is not an RL checkpoint of a pair "
                                 "(delete it to resume from the one before)")
        if (path / role / DROPPED).exists():  # the rank says so in its actor's log; the run's log needs it too
            log.warning("%s: resuming with fresh optimizer moments (only the newest checkpoint keeps them)", path / role)
        policies[role].load_checkpoint(path / role)
    return state
