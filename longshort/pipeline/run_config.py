"""The whole run's configuration: one tree of the stage modules' own config sections.

The embedded default run is ``longshort/configs/tiny.yaml`` (``ray_configs/tiny.yaml`` links to it): commands given
no config file load it. A YAML file and dotted overrides change the code's defaults, and everything is checked
before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from longshort.cluster.topology import TopologyConfig
from longshort.core.config import load
from longshort.data.verify import VerifyConfig
from longshort.eval.runner import EvalConfig
from longshort.pipeline.runner import PipelineConfig
from longshort.recipes.longshort.chunking.thoughts import ChunkConfig
from longshort.recipes.longshort.coldstart.dialogues import ColdstartConfig
from longshort.recipes.longshort.export import ExportConfig
from longshort.recipes.longshort.pair_sft import PairSFTConfig
from longshort.recipes.longshort.scoring.rollouts import ScoreConfig
from longshort.rl.loop import RLConfig
from longshort.toy.bootstrap import BootstrapConfig
from longshort.tracking.tracker import TrackingConfig


@dataclass
class RunConfig:
    name: str = "tiny"  # the run directory is <output_dir>/<name>
    output_dir: str = "runs"
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # stages `longshort run` runs
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    coldstart: ColdstartConfig = field(default_factory=ColdstartConfig)
    sft: PairSFTConfig = field(default_factory=PairSFTConfig)  # SFT of the long/short pair on the cold-start dialogues
    topology: TopologyConfig = field(default_factory=TopologyConfig)  # Ray actors per role (ranks, engines, resources)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # benchmark table of models and pairs (`longshort eval`)
    export: ExportConfig = field(default_factory=ExportConfig)  # the shipped pair (longshort export)

    def validate(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name: {self.name!r} is not a usable directory name; accepted: e.g. 'tiny' or 'qwen7b-pair'")


# The embedded default run: shipped inside the package, and what ``ray_configs/tiny.yaml`` links to.
TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """``path`` None: the code's defaults alone (tests); the CLI passes ``TINY_CONFIG`` when no file is given."""
    return load(RunConfig, path, overrides)
