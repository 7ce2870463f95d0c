"""The whole run's configuration: the sections every run has, plus the sections of its recipe.

``recipe: NAME`` (default ``longshort``) picks the recipe; its ``Recipe.sections`` are added after the common
ones, so ``RunConfig`` is assembled per recipe (``run_config_class``). The embedded default run is the recipe's
packaged YAML (``longshort/configs/tiny.yaml`` for Long⊗Short; ``ray_configs/tiny.yaml`` links to it): commands
given no config file load it. A YAML file and dotted overrides change the code's defaults, and everything is
checked before any work starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Literal

from longshort.core.config import load
from longshort.core.errors import LongshortError
from longshort.core.registry import import_target
from longshort.core.stage import Recipe
from longshort.data.verify import VerifyConfig
from longshort.pipeline.runner import PipelineConfig
from longshort.recipes import DEFAULT_RECIPE, RECIPES
from longshort.tracking.tracker import TrackingConfig

PACKAGE = Path(__file__).resolve().parents[1]


@dataclass
class CommonConfig:
    """Sections every recipe's run has."""

    name: str = "tiny"  # the run directory is <output_dir>/<name>
    output_dir: str = "runs"
    recipe: str = DEFAULT_RECIPE  # the training method (longshort.recipes); decides the sections below
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # stages `longshort run` runs
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    # what `auto` precision means on a CPU, for every stage's trainers and engines: bf16 where the CPU has fast bf16
    # (AMX or AVX512-BF16, confirmed by a probe), else fp32 (core/precision.py); fp32 or bf16 pins it
    cpu_precision: Literal["auto", "fp32", "bf16"] = "auto"

    def validate(self, where: Callable[[str], str] = lambda key: "<config>") -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name: {self.name!r} is not a usable directory name; accepted: e.g. 'tiny' or 'qwen7b-pair'")
        recipe = RECIPES.get(self.recipe)
        if self.pipeline.stages is None:
            self.pipeline.stages = list(recipe.stage_names)
        order = [s for s in recipe.stage_names if s in self.pipeline.stages]
        if order != list(self.pipeline.stages):
            raise LongshortError(f"{where('pipeline.stages')}: key 'pipeline.stages' is {self.pipeline.stages}, out of "
                                 f"order, repeated or unknown; accepted: a subsequence of the {recipe.name} recipe's "
                                 f"stages {recipe.stage_names}")


@functools.cache
def run_config_class(recipe_name: str) -> type:
    """``CommonConfig`` plus the recipe's sections, as one dataclass named after the recipe."""
    recipe: Recipe = RECIPES.get(recipe_name)
    classes = {name: import_target(c) if isinstance(c, str) else c for name, c in recipe.sections.items()}
    fields = [(name, cls, field(default_factory=cls)) for name, cls in classes.items()]
    cls = make_dataclass(f"{recipe_name.title().replace('_', '')}RunConfig", fields, bases=(CommonConfig,))
    cls.__doc__ = f"A run of the {recipe_name} recipe: the common sections plus {', '.join(recipe.sections)}."
    return cls


# The Long⊗Short recipe's run config: what ``load_run_config`` returns for the default recipe (tests, type hints).
RunConfig = run_config_class(DEFAULT_RECIPE)


def default_config(recipe_name: str | None = None) -> Path | None:
    """The recipe's packaged YAML, what a command given no config file runs."""
    rel = RECIPES.get(recipe_name or DEFAULT_RECIPE).default_config
    return PACKAGE / rel if rel else None


def _pick_class(data: dict, where) -> type:
    name = data.get("recipe", DEFAULT_RECIPE)
    if not isinstance(name, str) or name not in RECIPES:
        raise LongshortError(f"{where('recipe')}: key 'recipe' is {name!r}; accepted: {', '.join(RECIPES.names())}")
    return run_config_class(name)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None):
    """``path`` None: the code's defaults alone (tests); the CLI passes the recipe's default file when none is given."""
    return load(_pick_class, path, overrides)
