"""The config loader: YAML + overrides → dataclasses; every mistake names file, line, key and the accepted values."""

from dataclasses import dataclass, field
from typing import Literal

import pytest
from builders import ROOT

from longshort.core.config import build, dump_yaml, load
from longshort.core.errors import LongshortError


@dataclass
class Opt:
    lr: float = field(default=1e-3, metadata={"gt": 0})
    zero_stage: int = field(default=0, metadata={"ge": 0, "le": 3})
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass
class Sec:
    name: str = "tiny"
    steps: int = 10
    tags: list[str] = field(default_factory=list)
    limit: int | None = None
    opt: Opt = field(default_factory=Opt)

    def validate(self) -> None:
        if self.limit is not None and self.limit > self.steps:
            raise ValueError(f"limit: {self.limit} exceeds steps={self.steps}; lower it or raise steps")


def write(tmp_path, text, name="run.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_file_and_overrides(tmp_path):
    p = write(tmp_path, "name: demo\nopt:\n  lr: 1e-4\n  schedule: constant\n")
    cfg = load(Sec, p, ["steps=20", "opt.zero_stage=3", "tags=[a, b]"])
    assert cfg.name == "demo" and cfg.steps == 20 and cfg.tags == ["a", "b"]
    assert cfg.opt.lr == 1e-4 and cfg.opt.zero_stage == 3 and cfg.opt.schedule == "constant"
    assert load(Sec, p, ["opt.lr=0.5"]).opt.lr == 0.5  # the command line wins over the file
    assert "zero_stage: 3" in dump_yaml(cfg)


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    p = write(tmp_path, "name: demo\nopt:\n  lrr: 1e-4\n")
    with pytest.raises(LongshortError) as e:
        load(Sec, p)
    msg = str(e.value)
    assert f"{p}:3" in msg and "opt.lrr" in msg and "did you mean 'lr'" in msg and "schedule" in msg


def test_wrong_type_and_choice_and_range(tmp_path):
    p = write(tmp_path, "steps: ten\n")
    with pytest.raises(LongshortError, match=rf"{p}:1: key 'steps' is 'ten', expected an integer"):
        load(Sec, p)
    p = write(tmp_path, "opt:\n  schedule: linear\n")
    with pytest.raises(LongshortError, match=r":2: key 'opt.schedule' is 'linear', expected one of 'cosine', 'constant'"):
        load(Sec, p)
    with pytest.raises(LongshortError, match=r"command line \(opt.zero_stage=4\).*must be <= 3"):
        load(Sec, None, ["opt.zero_stage=4"])
    with pytest.raises(LongshortError, match=r"key 'opt.lr' is -1.0, must be > 0"):
        load(Sec, None, ["opt.lr=-1"])
    # a faulty override is named, not the file line it replaced or nested into
    p = write(tmp_path, "steps: 5\nopt:\n  lr: 0.1\n")
    with pytest.raises(LongshortError, match=rf"{p}:1, changed by the command line \(steps.x=1\): key 'steps' is"):
        load(Sec, p, ["steps.x=1"])
    with pytest.raises(LongshortError, match=r"^command line \(opt={lr: 1, stage: 2}\): unknown key 'opt.stage'"):
        load(Sec, p, ["opt={lr: 1, stage: 2}"])
    with pytest.raises(LongshortError, match=r"expected true/false|expected an integer"):
        load(Sec, None, ["steps=true"])


def test_validate_method_and_bad_override_syntax(tmp_path):
    with pytest.raises(LongshortError, match=r"key 'limit': 50 exceeds steps=10"):
        load(Sec, None, ["limit=50"])
    with pytest.raises(LongshortError, match="not of the form key.path=value"):
        load(Sec, None, ["steps"])
    with pytest.raises(LongshortError, match="unknown key 'nope'"):
        build(Sec, {"nope": 1})


def test_base_file_inheritance_and_bad_yaml(tmp_path):
    write(tmp_path, "name: parent\nsteps: 5\nopt:\n  lr: 0.1\n", "parent.yaml")
    child = write(tmp_path, "base: parent.yaml\nsteps: 7\n", "child.yaml")
    cfg = load(Sec, child)
    assert (cfg.name, cfg.steps, cfg.opt.lr) == ("parent", 7, 0.1)
    bad = write(tmp_path, "name: [unclosed\n", "bad.yaml")
    with pytest.raises(LongshortError, match="invalid YAML"):
        load(Sec, bad)
    with pytest.raises(LongshortError, match="does not exist"):
        load(Sec, tmp_path / "missing.yaml")
    empty = write(tmp_path, "# nothing yet\n", "empty.yaml")
    with pytest.raises(LongshortError, match=r"empty.yaml: the config file is empty"):
        load(Sec, empty)
    twice = write(tmp_path, "name: a\nopt:\n  lr: 0.1\n  lr: 0.2\nname: b\n", "twice.yaml")
    with pytest.raises(LongshortError, match=r"twice.yaml:4: key 'opt.lr' is given twice \(lines 3 and 4\)"):
        load(Sec, twice)
    write(tmp_path, "opt:\n  lr: 0.1\nstepz: 1\n", "parent2.yaml")
    child2 = write(tmp_path, "base: parent2.yaml\n", "child2.yaml")
    with pytest.raises(LongshortError, match=r"parent2.yaml:3: unknown key 'stepz'"):
        load(Sec, child2)


@dataclass
class Owner:
    opt: Opt = field(default_factory=lambda: Opt(lr=3e-3, schedule="constant"))  # the owner's tuned defaults


def test_partial_section_keeps_the_owners_defaults(tmp_path):
    """`opt: {zero_stage: 2}` changes one key; lr and schedule stay the owner's, not the Opt class's."""
    cfg = load(Owner, write(tmp_path, "opt:\n  zero_stage: 2\n"), ["opt.lr=1e-2"])
    assert (cfg.opt.lr, cfg.opt.schedule, cfg.opt.zero_stage) == (1e-2, "constant", 2)
    assert load(Owner, None, ["opt.zero_stage=1"]).opt.lr == 3e-3
    with pytest.raises(LongshortError, match=r"run.yaml:2.*zero_stage"):
        load(Owner, write(tmp_path, "opt:\n  zero_stage: 9\n"))


def test_tiny_config_keeps_the_bootstrap_sft_defaults():

    from longshort.pipeline.run_config import load_run_config
    from longshort.toy.bootstrap import BootstrapConfig

    tiny = load_run_config(ROOT / "ray_configs" / "tiny.yaml")
    assert tiny.bootstrap.sft.lr == BootstrapConfig().sft.lr


def test_renamed_engine_pool_key_still_loads_with_a_warning(tmp_path, caplog):
    """`rollout:` (engine placement) is now `engines:`; old configs load, merged with a file's new key, and say so."""
    from longshort.pipeline.run_config import load_run_config

    path = tmp_path / "old.yaml"
    path.write_text(f"base: {ROOT / 'ray_configs' / 'tiny.yaml'}\neval:\n  rollout: {{max_batch_size: 5}}\n")
    with caplog.at_level("WARNING", logger="longshort"):
        cfg = load_run_config(path, ["score.rollout.workers=3"])
    assert cfg.eval.engines.max_batch_size == 5
    assert cfg.score.engines.workers == 3 and cfg.score.engines.max_batch_size == 256  # tiny.yaml's engines kept
    assert f"{path}:3: key 'eval.rollout' is now called 'eval.engines'" in caplog.text
    assert "command line (score.rollout.workers=3): key 'score.rollout' is now called 'score.engines'" in caplog.text
