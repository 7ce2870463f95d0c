"""The defaults the docs state are the code's: each phrase below is found in its doc, and the value it states is the
resolved config's (the recipe's embedded default file, as `longshort config show` prints it). A default changed in
the code without its doc, or a doc reworded away from the phrase, fails here and names both."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
import yaml
from builders import ROOT

from longshort.pipeline.run_config import load_run_config

# (doc, a regex whose group 1 is the stated default, the config file, the dotted key)
STATED = [
    ("docs/importance.md", r"`effect: (\w+)` \(default\)", "tiny.yaml", "score.importance.effect"),
    ("docs/importance.md", r"`combine: (\w+)` \(default\)", "tiny.yaml", "score.importance.combine"),
    ("docs/importance.md", r"`score\.importance\.w_effect`, `w_cost` \(defaults (\d+), \d+", "tiny.yaml",
     "score.importance.w_effect"),
    ("docs/importance.md", r"`score\.importance\.w_effect`, `w_cost` \(defaults \d+, (\d+)", "tiny.yaml",
     "score.importance.w_cost"),
    ("docs/architecture.md", r"not the embedded default, `(\w+)`", "tiny.yaml", "score.judge"),
    ("README.md", r"the embedded default scores with `(\w+)`", "tiny.yaml", "score.judge"),
    ("docs/cluster.md", r"`topology\.accelerator` \(default `(\w+)`\)", "tiny.yaml", "topology.accelerator"),
    ("README.md", r"`topology\.accelerator` \(default `(\w+)`\)", "tiny.yaml", "topology.accelerator"),
    ("docs/bootstrap.md", r"`bootstrap\.task\.checks_per_step` \(default (\d+)", "tiny.yaml",
     "bootstrap.task.checks_per_step"),
    ("docs/recipes/softcot.md", r"`softcot\.train\.skip_planted_errors` \(default (\w+)\)", "softcot-tiny.yaml",
     "softcot.train.skip_planted_errors"),
]


def _resolved(config: str) -> dict:
    return asdict(load_run_config(ROOT / "ray_configs" / config))


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


@pytest.mark.parametrize(("doc", "phrase", "config", "key"), STATED, ids=[f"{d}:{k}" for d, _, _, k in STATED])
def test_a_stated_default_is_the_codes(doc, phrase, config, key):
    text = (ROOT / doc).read_text()
    found = re.search(phrase, text)
    assert found, f"{doc} no longer states the default of {key} as /{phrase}/: update the phrase here or the doc"
    stated = yaml.safe_load(found.group(1))
    actual = _get(_resolved(config), key)
    assert stated == actual, f"{doc} says {key} defaults to {stated!r}; the code ({config}) has {actual!r}"
