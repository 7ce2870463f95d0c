"""`longshort check`: each fault a run would meet hours in is found in seconds, named by its key, before any work."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from builders import ROOT, build_model_dir

from longshort.cli import main
from longshort.pipeline.check import run_checks
from longshort.pipeline.commands import run_dir_of
from longshort.pipeline.run_config import load_run_config

TINY = str(ROOT / "ray_configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A real tiny model whose config allows 64 positions."""
    path = build_model_dir(tmp_path_factory.mktemp("model") / "m")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    return path


def findings(tmp_path, *overrides, config=TINY):
    cfg = load_run_config(config, [f"output_dir={tmp_path / 'runs'}", *overrides])
    return [(name, f) for name, found in run_checks(cfg, run_dir_of(cfg)).items() for f in found]


def errors(tmp_path, *overrides, config=TINY):
    return [f for _, f in findings(tmp_path, *overrides, config=config) if f.severity == "error"]


def test_a_mistyped_model_path_names_its_key(tmp_path, model_dir):
    [f] = errors(tmp_path, f"sft.long_model={model_dir}", f"sft.short_model={model_dir.parent / 'modle'}")
    assert f.key == "sft.short_model" and str(model_dir.parent / "modle") in f.message and "does not exist" in f.message


def test_an_eval_system_whose_model_is_missing_is_listed(tmp_path):
    found = findings(tmp_path, "eval.systems=[{name: ext, kind: single, model: /nowhere/model}, "
                               "{name: later, kind: pair, long: sft/long/model, short: sft/short/model}]")
    ext = [f for name, f in found if name == "eval systems" and "'ext'" in f.message]
    later = [f for name, f in found if name == "eval systems" and "'later'" in f.message]
    assert [(f.key, f.severity) for f in ext] == [("eval.systems[0].model", "error")]
    assert [(f.key, f.severity) for f in later] == [("eval.systems[1].long", "note")]  # stage sft makes it
    assert "stage sft makes it" in later[0].message


def test_topology_asking_more_gpus_than_there_are_names_keys_and_totals(tmp_path):
    import torch

    have = torch.cuda.device_count()
    [f] = errors(tmp_path, f"topology.long.gpus_per_rank={have + 1}", "topology.short.gpus_per_rank=1")
    assert f.key == "topology" and f"ask {have + 2} GPU together" in f.message and f"has {have}" in f.message
    assert "topology.long (1 ranks x gpus_per_rank" in f.message and "topology.short" in f.message


def test_an_sft_asking_more_gpus_than_there_are_names_its_key(tmp_path):
    import torch

    have = torch.cuda.device_count()
    [f] = errors(tmp_path, "sft.short.num_ranks=2", f"sft.short.gpus_per_rank={have + 1}")
    assert f.key == "sft.short" and f"num_ranks 2 x gpus_per_rank {have + 1} asks {2 * have + 2} GPU" in f.message
    assert "num_ranks / gpus_per_rank" in f.fix
    assert not errors(tmp_path, "sft.short.num_ranks=2")  # gpus_per_rank unset: one a rank where there are any


def test_tensor_parallel_over_gpus_per_engine_is_refused(tmp_path):
    found = errors(tmp_path, "topology.long.colocate=false", "topology.long.gpus_per_engine=1",
                   "topology.long.engine_kwargs={tensor_parallel_size: 2}", "topology.long.gpus_per_rank=0")
    [tp] = [f for f in found if "tensor_parallel_size" in f.key]
    assert tp.key == "topology.long.engine_kwargs.tensor_parallel_size" and "topology.long.gpus_per_engine" in tp.message


def test_max_model_len_over_the_models_limit(tmp_path, model_dir):
    [f] = errors(tmp_path, f"score.model={model_dir}", "score.engines.engine_kwargs={max_model_len: 128}")
    assert f.key == "score.engines.engine_kwargs.max_model_len"
    assert "128 is over" in f.message and "max_position_embeddings 64" in f.message and "at most 64" in f.fix
    assert not errors(tmp_path, f"score.model={model_dir}", "score.engines.engine_kwargs={max_model_len: 64}")


def test_the_qwen_configs_eval_max_model_len_is_caught_once_its_models_are_there(tmp_path, model_dir):
    """ray_configs/qwen2.5-7b-pair.yaml asked 36864 of eval engines serving Qwen2.5-7B-Instruct (32768; it asks
    32768 now): the pair systems are stage outputs, traced to the keys they start from."""
    dirs = {}
    for name, limit in (("long", 131072), ("short", 32768)):
        dirs[name] = shutil.copytree(model_dir, tmp_path / name)
        cfg = json.loads((dirs[name] / "config.json").read_text())
        (dirs[name] / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": limit}))
    overrides = [f"sft.long_model={dirs['long']}", f"sft.short_model={dirs['short']}",
                 f"score.model={dirs['long']}", f"coldstart.rewrite.model={dirs['short']}",
                 f"eval.systems=[{{name: r1, kind: single, model: {dirs['long']}}}, "
                 "{name: sft-pair, kind: pair, long: sft/long/model, short: sft/short/model}]", "chunk.source.path=",
                 "sft.eval.source.path=", "rl.train.path=", "rl.eval.path=",
                 "eval.benchmarks=[{name: t, source: {path: ''}}]"]
    config = str(ROOT / "ray_configs" / "qwen2.5-7b-pair.yaml")
    assert not [f for f in errors(tmp_path, *overrides, config=config) if "max_model_len" in f.key]
    found = errors(tmp_path, *overrides, "eval.engines.engine_kwargs={max_model_len: 36864}", config=config)
    [f] = [f for f in found if "max_model_len" in f.key]
    assert f.key == "eval.engines.engine_kwargs.max_model_len" and "36864 is over" in f.message
    assert "max_position_embeddings 32768" in f.message and "sft.short_model" in f.message


def test_missing_data_and_a_record_without_a_field(tmp_path):
    [f] = errors(tmp_path, f"rl.train.path={tmp_path / 'nope.jsonl'}")
    assert f.key == "rl.train.path" and "file not found" in f.message
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "What is 1 + 1?"}) + "\n")
    [f] = errors(tmp_path, f"rl.eval.path={bad}")
    assert f.key == "rl.eval.path" and "missing field 'answer'" in f.message
    [f] = errors(tmp_path, f"sft.data={tmp_path / 'dialogues.jsonl'}")
    assert f.key == "sft.data" and "does not exist" in f.message


def test_an_unwritable_output_dir(tmp_path):
    (tmp_path / "file").write_text("")
    cfg = load_run_config(TINY, [f"output_dir={tmp_path / 'file' / 'runs'}"])
    [f] = run_checks(cfg, run_dir_of(cfg))["output_dir"]
    assert f.key == "output_dir" and "not writable" in f.message


def test_auto_tracking_on_a_remote_cluster_needs_wandb_credentials(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    [f] = errors(tmp_path, "topology.ray_address=ray://10.1.2.3:10001", "tracking.mode=auto")
    assert f.key == "tracking.mode" and "launch/submit.sh --env WANDB_API_KEY" in f.fix and "offline" in f.fix
    assert not errors(tmp_path, "topology.ray_address=ray://10.1.2.3:10001", "tracking.mode=offline")
    assert not errors(tmp_path, "tracking.mode=auto")  # locally auto stays as it is


LACKS = re.compile(r"/shared/models/\S+ does not exist|is not on this machine and not in its Hugging Face cache"
                   r"|asks? \d+ GPUs?.*has \d")


def test_check_every_shipped_config(capsys, monkeypatch, tmp_path):
    """Every file in ray_configs/ is ok here, or says only what this machine lacks (models, data, GPUs)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for path in sorted((ROOT / "ray_configs").glob("*.yaml")):
        rc = main(["check", str(path), f"output_dir={tmp_path}"])
        lines = capsys.readouterr().out.splitlines()
        errs = [line for line in lines if ": error: " in line]
        assert all(LACKS.search(line) for line in errs), (path.name, errs)
        assert rc == (2 if errs else 0) and len(lines) >= 8
        if path.name in ("tiny.yaml", "smoke.yaml", "hawkeye-tiny.yaml", "hawkeye-smoke.yaml", "softcot-tiny.yaml",
                         "softcot-smoke.yaml", "smollm2-135m-pair.yaml"):
            assert rc == 0, lines


def test_run_with_a_bad_model_stops_before_the_first_stage(tmp_path, capsys):
    rc = main(["run", TINY, f"output_dir={tmp_path / 'runs'}", "tracking.mode=disabled",
               f"sft.long_model={tmp_path / 'typo'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "sft.long_model" in err and str(tmp_path / "typo") in err and "nothing was run" in err
    assert not (tmp_path / "runs").exists()
