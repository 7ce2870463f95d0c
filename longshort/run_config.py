"""The whole run's configuration: one tree of the stage modules' own config sections.

Defaults are the tiny embedded run (`ray_configs/tiny.yaml` spells them out); a YAML file and dotted
overrides change them, and everything is checked before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from longshort.bootstrap import BootstrapConfig
from longshort.config import load
from longshort.rl import RLConfig
from longshort.topology import TopologyConfig
from longshort.tracking import TrackingConfig
from longshort.verify import VerifyConfig


@dataclass
class RunConfig:
    name: str = "tiny"  # the run directory is <output_dir>/<name>
    output_dir: str = "runs"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)  # Ray actors per role (ranks, engines, resources)
    rl: RLConfig = field(default_factory=RLConfig)

    def validate(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name: {self.name!r} is not a usable directory name; accepted: e.g. 'tiny' or 'qwen7b-pair'")


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    return load(RunConfig, path, overrides)
