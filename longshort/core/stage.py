"""What a recipe declares: its roles, its config sections and its stages. The pipeline and the CLI are built
from these declarations alone (``longshort.pipeline``), so a recipe adds no wiring of its own elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (run config, run dir, tracker, resume) -> None. ``resume``: an interrupted attempt under the same config left
# checkpoints or caches behind; continue from them.
StageFn = Callable[[Any, Path, Any, bool], None]


@dataclass(frozen=True)
class Stage:
    """One step of a recipe's pipeline, also its own subcommand (``longshort <name>``)."""

    name: str
    help: str  # one line for ``longshort --help``
    sections: tuple[str, ...]  # config sections (or dotted keys in one) whose values decide the outputs (fingerprint)
    outputs: tuple[str, ...]  # files a complete stage has, relative to the run dir; "{export.out}/x": that key's dir
    run: StageFn
    keep: tuple[str, ...] = ()  # content-addressed entries of the stage folder kept when its config changed
    report: Callable[[Any, Path], str] | None = None  # what the standalone command prints when the stage is done
    needed: Callable[[Any], bool] | None = None  # None: always; else whether this config needs the stage at all
    resumable: bool = False  # the standalone command takes --resume (the stage keeps exact checkpoints)
    # settings outside its sections that decide the outputs under this config (a default taken from another
    # section's key); an empty dict adds nothing, so fingerprints of configs it does not concern stay as they were
    also: Callable[[Any], dict] | None = None


@dataclass(frozen=True)
class RoleSpec:
    """A model role of a recipe. A trainable role gets trainer ranks (optimizer, reference) and engines that are
    synced after each update; a frozen role gets engines only and is never synced."""

    trainable: bool = True
    help: str = ""


@dataclass(frozen=True)
class Recipe:
    """A training method: its roles, the config sections it adds to the run config, and its stages in order."""

    name: str
    help: str
    roles: dict[str, RoleSpec]
    # config section name -> dataclass (with defaults) added to the run config, or its lazy "module:Class" path
    # (so that listing a recipe's stages for the CLI imports no torch)
    sections: dict[str, type | str]
    stages: tuple[Stage, ...]
    default_config: str | None = None  # packaged YAML (relative to the longshort package) loaded when no file is given
    # (cfg, run_dir) -> None: checks that need files (e.g. the roles' checkpoints share a tokenizer), run by
    # ``longshort check`` (so before ``longshort run`` and every stage command) so a bad pair fails before any work
    preflight: Callable[[Any, Path], None] | None = None
    # ``longshort solve DIR`` on this recipe's exports: the ``format`` its export manifest states, and the
    # "module:function" (argparse namespace -> exit code) that runs one
    export_format: str | None = None
    solve: str | None = None
    # ``longshort compare``: "module:function" (cfg, models: the eval system's {role: path}) -> what oracle data (only
    # a synthetic task has, e.g. the teacher's tags) that system learned from, "" for none
    oracle: str | None = None

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]
