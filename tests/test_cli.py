"""The command line: help everywhere, version, config show, and clear failures on bad configs."""

import subprocess
import sys

import pytest
import yaml
from builders import ROOT

from longshort import __version__
from longshort.cli import build_parser, commands, main


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "longshort.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_version_and_help_on_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    parser = build_parser()
    for name in commands():
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0
        assert name in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["config", "show", "--help"])
    assert "overrides" in capsys.readouterr().out


def test_the_help_examples_are_real_keys(capsys):
    """The overrides every subcommand's --help shows are accepted by every recipe's config."""
    from longshort.cli import OVERRIDES_HELP
    from longshort.recipes import RECIPES

    examples = [w for w in OVERRIDES_HELP.split() if "=" in w]
    assert examples
    for recipe in RECIPES.names():
        assert main(["config", "show", f"recipe={recipe}", *examples]) == 0, recipe
        capsys.readouterr()


def test_config_show_resolves_file_and_overrides(capsys):
    assert main(["config", "show", str(ROOT / "ray_configs/tiny.yaml"), "bootstrap.sft.lr=0.01", "name=demo"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["name"] == "demo" and shown["bootstrap"]["sft"]["lr"] == 0.01
    assert shown["bootstrap"]["model"]["head_dim"] >= 64
    # overrides alone, no file: the embedded default, which is exactly ray_configs/tiny.yaml
    assert main(["config", "show", "tracking.mode=disabled"]) == 0
    embedded = yaml.safe_load(capsys.readouterr().out)
    assert embedded["tracking"]["mode"] == "disabled"
    assert main(["config", "show", str(ROOT / "ray_configs/tiny.yaml"), "tracking.mode=disabled"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == embedded
    assert embedded["score"]["n_rollouts"] == 4  # a value tiny.yaml sets (the code's own default differs)


def test_config_show_diff_and_section(capsys):
    """--diff: only what differs from the recipe's embedded default; --section: one section or key, dotted."""
    assert main(["config", "show", str(ROOT / "ray_configs/smoke.yaml"), "rl.optim.lr=3e-6", "--diff"]) == 0
    diff = yaml.safe_load(capsys.readouterr().out)
    assert diff["name"] == "smoke" and diff["rl"]["optim"] == {"lr": 3e-6} and diff["bootstrap"]["task"]["n_eval"] == 20
    assert "tracking" not in diff and "seed" not in diff["rl"]  # smoke leaves them as tiny.yaml has them
    assert main(["config", "show", "--diff"]) == 0 and capsys.readouterr().out == "{}\n"  # the default itself
    assert main(["config", "show", "--section", "rl.optim"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["micro_batch_logits_mb"] == 1024.0
    assert main(["config", "show", "--section", "rl.optim.lr"]) == 0 and capsys.readouterr().out == "0.0001\n"
    assert main(["config", "show", "--section", "rl.nope"]) == 2
    assert "--section rl.nope: no key 'nope' there; accepted: steps, prompts_per_step" in capsys.readouterr().err


def test_every_shipped_config_loads():
    from longshort.pipeline.run_config import load_run_config

    configs = sorted((ROOT / "ray_configs").glob("*.yaml"))
    assert configs, "ray_configs/ has no YAML files"
    for path in configs:
        load_run_config(path)


def test_typo_and_wrong_type_fail_before_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbootstrap:\n  sft:\n    lrate: 0.1\n")
    r = run_cli("config", "show", str(bad))
    assert r.returncode == 2
    assert f"{bad}:4" in r.stderr and "bootstrap.sft.lrate" in r.stderr and "did you mean 'lr'" in r.stderr
    r = run_cli("bootstrap", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and not (tmp_path / "runs").exists()  # nothing ran, nothing written
    r = run_cli("config", "show", "bootstrap.model.layers=four")
    assert r.returncode == 2 and "bootstrap.model.layers" in r.stderr and "expected an integer" in r.stderr
    assert "Traceback" not in r.stderr


def test_chunk_command_on_the_shipped_sample(tmp_path):
    import json

    r = run_cli("chunk", f"chunk.source.path={ROOT / 'coldstart_data/sample.jsonl'}", f"output_dir={tmp_path}",
                "name=s", "tracking.mode=disabled")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "s/chunk/thoughts.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (ROOT / "coldstart_data/sample.jsonl").read_text().splitlines()]
    assert len(rows) == len(samples) == 20
    for row, sample in zip(rows, samples, strict=True):  # lossless: head + thoughts + tail is the CoT
        assert row["head"] + "".join(row["thoughts"]) + row["tail"] == sample["long_cot"]
    assert (tmp_path / "s/config.yaml").is_file()


def test_a_full_disk_under_a_stage_is_named_and_the_same_command_then_finishes(small_disk, tmp_path):
    """A stage's own outputs (here the bootstrap's task files, written by the command itself) hit a full disk: the
    command stops with exit 2, naming the file, the free space and the fix; after space is freed the same command
    completes the stage."""
    import subprocess
    import sys

    mnt, resize = small_disk
    cmd = [sys.executable, "-m", "longshort", "bootstrap", str(ROOT / "ray_configs" / "smoke.yaml"),
           f"output_dir={mnt}", "tracking.mode=disabled"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr
    assert f"longshort: error: no space left on the device holding {mnt}/smoke" in err, err[-2000:]
    assert "free of" in err and "run the same command again to resume" in err and "Traceback" not in err
    resize(256 << 20)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (mnt / "smoke" / "bootstrap" / ".complete.json").is_file()
