"""Run tracking and logging against real W&B offline runs, read back from W&B's own transaction log."""

from __future__ import annotations

import json
import logging
import math
import struct
import zlib
from pathlib import Path

import pytest
import wandb

from longshort.core.errors import LongshortError
from longshort.core.logs import close_log_file, get_logger, setup_logging
from longshort.core.redact import MASK, is_secret_key, scrub, scrub_text
from longshort.tracking.tracker import Tracker, TrackingConfig, read_metrics
from longshort.tracking.wandb import RUN_ID_FILE, resolve_mode, wandb_credentials

SECRETS = {
    "config_api_key": "cfgkey-1111aaaa2222bbbb",
    "hf_token": "hf_" + "Q" * 34,
    "url_password": "urlpass-3333cccc",
    "env_api_key": "envkey-" + "9" * 33,
}


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Offline W&B confined to tmp_path: no real credentials, no writes to the home directory."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    wandb_dir = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var, sub in (("WANDB_CONFIG_DIR", "cfg"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    wandb.teardown()  # W&B reads its environment once per process; start each test from a fresh service
    yield wandb_dir
    wandb.teardown()
    close_log_file()


def wandb_records(path: Path):
    """Records of a ``.wandb`` file. wandb 0.31 ships no Python reader (its core is Go), so this decodes the
    documented LevelDB-style log: a 7-byte header, 32 KiB blocks, chunks with a CRC32 over type byte + data."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if (crc, length, kind) == (0, 0, 0):
            break
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"corrupt chunk at byte {pos}"
        pos, buf = pos + 7 + length, buf + chunk
        if kind in (1, 4):  # FULL or LAST chunk completes a record
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def read_run(wandb_dir: Path, run_id: str) -> dict:
    """History rows by step, final config and summary, run ids and exit code of every offline run with ``run_id``."""
    wandb.teardown()  # finish() returns before W&B's service has closed the transaction log; teardown waits for it
    out: dict = {"history": {}, "config": {}, "summary": {}, "run_ids": [], "exit_codes": [], "artifacts": {}}
    files = sorted(wandb_dir.glob(f"wandb/offline-run-*/run-{run_id}.wandb"))
    out["files"] = files
    for path in files:
        for rec in wandb_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out["run_ids"].append(rec.run.run_id)
                out["config"].update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
            elif kind == "config":
                out["config"].update({u.key: json.loads(u.value_json) for u in rec.config.update})
            elif kind == "history":
                row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
                out["history"].setdefault(row["_step"], {}).update(row)
            elif kind == "summary":
                out["summary"].update(
                    {"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in rec.summary.update}
                )
            elif kind == "artifact":
                entries = {e.path: e.ref or e.digest for e in rec.artifact.manifest.contents}
                out["artifacts"][rec.artifact.name] = (rec.artifact.type, entries)
            elif kind == "exit":
                out["exit_codes"].append(rec.exit.exit_code)
    return out


def all_text(*roots: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for r in roots for p in r.rglob("*") if p.is_file())


def test_jsonl_content_is_exact(tmp_path, wandb_env):
    import numpy as np
    import torch

    run = tmp_path / "run"
    art = tmp_path / "ckpt"
    art.mkdir()
    (art / "a.bin").write_bytes(b"x" * 10)
    (art / "b.bin").write_bytes(b"y" * 5)
    with Tracker(TrackingConfig(backends=["jsonl"]), run) as tr:
        tr.log(
            {"loss": 0.5, "n": 3, "ok": True, "long": {"reward": np.float32(0.25), "len": torch.tensor(7.0)}}, step=0
        )
        tr.log({"loss": float("nan"), "grad": float("inf")}, step=1)
        tr.log({"lr": -math.inf}, step=1)
        tr.log_table("rl/samples", ["problem", "reward"], [["1+1", 1.0], ["2+2", None]], step=1)
        tr.log_artifact(art, "ckpt-1", "model")
        tr.summary({"best": 0.9})
        tr.summary({"best": 0.95, "steps": 2})
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    times = [r.pop("time") for r in records]
    assert all(isinstance(t, float) for t in times) and times == sorted(times)
    assert [list(json.loads(line))[:2] for line in lines] == [["step", "time"]] * 3
    assert records == [
        {"step": 0, "attempt": 1, "loss": 0.5, "n": 3, "ok": 1, "long/reward": 0.25, "long/len": 7.0},
        {"step": 1, "attempt": 1, "loss": "NaN", "grad": "Infinity"},
        {"step": 1, "attempt": 1, "lr": "-Infinity"},
    ]
    back = read_metrics(run / "metrics.jsonl")
    assert math.isnan(back[1]["loss"]) and back[1]["grad"] == math.inf and back[2]["lr"] == -math.inf
    rows = [json.loads(line) for line in (run / "tables" / "rl" / "samples.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "time"} for r in rows] == [
        {"step": 1, "attempt": 1, "problem": "1+1", "reward": 1.0},
        {"step": 1, "attempt": 1, "problem": "2+2", "reward": None},
    ]
    (artifact,) = [json.loads(line) for line in (run / "artifacts.jsonl").read_text().splitlines()]
    artifact.pop("time")
    assert artifact == {"name": "ckpt-1", "type": "model", "path": str(art.resolve()), "bytes": 15, "files": 2}
    assert json.loads((run / "summary.json").read_text()) == {"best": 0.95, "steps": 2}
    assert not (run / RUN_ID_FILE).exists() and not wandb_env.exists()

    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # a crash mid-line; the resumed run must not glue onto it
    with Tracker(TrackingConfig(backends=["jsonl"]), run) as tr:
        tr.log({"loss": 0.125}, step=2)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 1, 2]
    # the second command is attempt 2 (counted past the cut line), so a step it redoes is told from the first's
    assert [r["attempt"] for r in read_metrics(run / "metrics.jsonl")] == [1, 1, 1, 2]
    assert "skipped 1 unreadable line(s) [4]" in (run / "log.txt").read_text()
    (run / "summary.json").write_text("{oops")
    with pytest.raises(LongshortError, match=r"summary.json:1: not valid JSON.*delete the file"):
        Tracker(TrackingConfig(backends=["jsonl"]), run)


def test_wandb_offline_run_has_metrics_config_and_no_secrets(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRETS["env_api_key"])  # would mean "online" in auto mode
    run = tmp_path / "run"
    config = {
        "sft": {"lr": 0.001, "pad_token": "<|pad|>"},
        "wandb": {"api_key": SECRETS["config_api_key"]},
        "hf_token": SECRETS["hf_token"],
        "data": {"url": f"https://user:{SECRETS['url_password']}@example.org/x.jsonl"},
        "cmd": f"train --wandb-api-key {SECRETS['env_api_key']}",
    }
    ckpt = tmp_path / "model.bin"
    ckpt.write_bytes(b"weights")
    cfg = TrackingConfig(mode="offline", tags=["test"], console_interval_s=0)
    with Tracker(cfg, run, config) as tr:
        assert tr.wandb_mode == "offline"
        tr.log({"loss": 2.0}, step=0)
        tr.log({"loss": 1.5}, step=1)
        tr.log({"long": {"reward": 0.25}}, step=1)  # merged into the step-1 row
        tr.log({"loss": 1.25}, step=2)
        tr.log({"loss": 9.0}, step=1)  # backwards: ignored by W&B, kept in jsonl
        tr.log_table("samples", ["q", "a"], [["1+1", "2"]], step=2)
        tr.log_artifact(ckpt, "model", "checkpoint")
        tr.summary({"best_loss": 1.25})
        get_logger("test").info("connecting with %s", SECRETS["env_api_key"])
        run_id = tr.wandb_run_id
    assert (run / RUN_ID_FILE).read_text().strip() == run_id

    got = read_run(wandb_env, run_id)
    assert len(got["files"]) == 1 and got["run_ids"] == [run_id] and got["exit_codes"] == [0]
    assert {s: got["history"][s].get("loss") for s in got["history"]} == {0: 2.0, 1: 1.5, 2: 1.25}
    assert got["history"][1]["long/reward"] == 0.25
    assert got["history"][2]["samples/_type"] == "table-file"
    assert got["summary"]["best_loss"] == 1.25
    assert got["artifacts"]["model"] == ("checkpoint", {"model.bin": ckpt.resolve().as_uri()})  # a reference
    config_back = {k: v for k, v in got["config"].items() if k != "_wandb"}
    assert config_back == {
        "sft": {"lr": 0.001, "pad_token": "<|pad|>"},
        "wandb": {"api_key": MASK},
        "hf_token": MASK,
        "data": {"url": f"https://user:{MASK}@example.org/x.jsonl"},
        "cmd": f"train --wandb-api-key {MASK}",
    }
    assert [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [2.0, 1.5, 1.25, 9.0]
    log_txt = (run / "log.txt").read_text()
    assert f"connecting with {MASK}" in log_txt and "W&B ignored 1 log calls" in log_txt
    text = all_text(run, wandb_env, tmp_path / "cache", tmp_path / "data")
    assert "0.001" in text and MASK in text  # the config did reach the files searched below
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name} leaked"


def test_resume_continues_the_same_wandb_run(tmp_path, wandb_env):
    run = tmp_path / "run"
    with Tracker(TrackingConfig(backends=["wandb"]), run, {"seed": 1}) as tr:
        tr.log({"loss": 1.0}, step=0)
        tr.summary({"first": 1})
        first_id = tr.wandb_run_id
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "w.bin").write_bytes(b"w" * 100)
    with Tracker(TrackingConfig(backends=["wandb"], artifacts="upload"), run, {"seed": 1}) as tr:
        assert tr.wandb_run_id == first_id
        tr.log({"loss": 0.5}, step=1)
        tr.summary({"second": 2})
        tr.log_artifact(ckpt, "ckpt-1", "model")
    got = read_run(wandb_env, first_id)
    assert len(got["files"]) == 2 and got["run_ids"] == [first_id, first_id]
    assert {s: row["loss"] for s, row in got["history"].items()} == {0: 1.0, 1: 0.5}
    assert got["summary"]["attempt"] == 2  # the resumed W&B run says which attempt wrote it last
    ((kind, entries),) = [got["artifacts"]["ckpt-1"]]
    assert kind == "model" and list(entries) == ["w.bin"] and not entries["w.bin"].startswith("file:")  # uploaded
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1]
    assert json.loads((run / "summary.json").read_text()) == {"first": 1, "second": 2}

    (run / RUN_ID_FILE).write_text("not/an id\n")
    with pytest.raises(LongshortError, match=r"wandb_run_id.txt:1.*delete the file"):
        Tracker(TrackingConfig(backends=["wandb"]), run)


def test_crash_marks_run_failed_and_closes(tmp_path, wandb_env):
    run = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):
        with Tracker(TrackingConfig(backends=["jsonl", "wandb"]), run) as tr:
            tr.log({"loss": 1.0}, step=0)
            1 / 0  # noqa: B018
    assert read_run(wandb_env, tr.wandb_run_id)["exit_codes"] == [1]
    tr.finish()  # idempotent
    with pytest.raises(RuntimeError, match="after finish"):
        tr.log({"loss": 1.0}, step=1)


def test_auto_mode_falls_back_offline_when_server_unreachable(tmp_path, wandb_env, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    with Tracker(TrackingConfig(backends=["wandb"], wandb_init_timeout_s=2), tmp_path / "run") as tr:
        assert tr.wandb_mode == "offline"
        tr.log({"x": 1.0}, step=0)
    assert read_run(wandb_env, tr.wandb_run_id)["history"][0]["x"] == 1.0
    with pytest.raises(LongshortError, match=r"(?s)tracking.mode.*online init failed.*'offline'"):
        Tracker(TrackingConfig(backends=["wandb"], mode="online", wandb_init_timeout_s=1), tmp_path / "run2")


def test_disabled_mode_writes_no_wandb_files(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # honoured in auto mode
    with Tracker(TrackingConfig(), tmp_path / "a") as tr:
        assert tr.wandb_mode == "disabled" and tr.wandb_run_id is None
        tr.log({"x": 1.0}, step=0)
    with Tracker(TrackingConfig(mode="disabled"), tmp_path / "b"):
        pass
    assert not wandb_env.exists() and not (tmp_path / "a" / RUN_ID_FILE).exists()
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(LongshortError, match="WANDB_MODE.*accepted: online"):
        Tracker(TrackingConfig(), tmp_path / "c")
    assert (tmp_path / "c" / "metrics.jsonl").read_text() == "" and not (tmp_path / "c" / RUN_ID_FILE).exists()


def test_resolve_mode_from_credentials(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine other.host login user password p1\nmachine api.wandb.ai\n  login user\n  password k2\n")
    empty = {"NETRC": str(tmp_path / "missing")}
    assert resolve_mode("auto", empty)[0] == "offline"
    assert resolve_mode("auto", {**empty, "WANDB_API_KEY": "k"}) == ("online", "credentials from WANDB_API_KEY")
    assert resolve_mode("auto", {"NETRC": str(netrc)})[0] == "online"
    assert wandb_credentials({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.corp.example"}) is None
    assert "other.host" in wandb_credentials({"NETRC": str(netrc), "WANDB_BASE_URL": "http://other.host:8080"})
    assert resolve_mode("auto", {**empty, "WANDB_MODE": "dryrun"})[0] == "offline"
    assert resolve_mode("offline", {**empty, "WANDB_API_KEY": "k", "WANDB_MODE": "online"})[0] == "offline"
    assert resolve_mode("online", {**empty, "WANDB_API_KEY": "k"})[0] == "online"
    with pytest.raises(LongshortError, match=r"tracking.mode.*no W&B credentials.*wandb login"):
        resolve_mode("online", empty)


def test_scrub_masks_secrets_but_keeps_tokenizer_settings():
    env = {"HF_TOKEN": "hf-env-secret-123", "TOKENIZERS_PARALLELISM": "falsefalse", "WANDB_API_KEY": "short"}
    cfg = {
        "model": {"pad_token": "<|pad|>", "eos_token_id": 2, "max_new_tokens": 64, "tokenizer": "tok"},
        "creds": {"apiKey": "x", "password": 123, "hf_token": None, "secret_file": "/etc/s", "api_key_env": "K"},
        "list": [{"access_token": "abc"}, "see hf-env-secret-123", ("token=zz",)],
        "ok": "falsefalse",
    }
    before = json.dumps(cfg, default=list)
    assert scrub(cfg, env) == {
        "model": {"pad_token": "<|pad|>", "eos_token_id": 2, "max_new_tokens": 64, "tokenizer": "tok"},
        "creds": {"apiKey": MASK, "password": MASK, "hf_token": None, "secret_file": "/etc/s", "api_key_env": "K"},
        "list": [{"access_token": MASK}, f"see {MASK}", (f"token={MASK}",)],
        "ok": "falsefalse",
    }
    assert json.dumps(cfg, default=list) == before  # input untouched
    assert [
        k for k in ("WANDB_API_KEY", "clientSecret", "bos_token", "num_tokens", "token_id") if is_secret_key(k)
    ] == [
        "WANDB_API_KEY",
        "clientSecret",
    ]
    assert scrub_text('{"api_key": "abc", "lr": 3} ghp_' + "a" * 36, {}) == f'{{"api_key": "{MASK}", "lr": 3}} {MASK}'


def test_setup_logging_is_idempotent_and_moves_file(tmp_path, capfd):
    logger = setup_logging(tmp_path / "a", "debug")
    setup_logging(tmp_path / "a", None)
    ours = [h for h in logger.handlers if getattr(h, "_longshort_role", None)]  # pytest adds its own capture handlers
    assert logger.level == logging.DEBUG and len(ours) == 2 and not logger.propagate
    get_logger("longshort.x").debug("first [not markup] %d", 1)
    setup_logging(tmp_path / "b", "WARNING")
    get_logger("y").info("hidden")
    get_logger("y").warning("second")
    close_log_file()
    a, b = (tmp_path / "a" / "log.txt").read_text(), (tmp_path / "b" / "log.txt").read_text()
    assert a.endswith("DEBUG   longshort.x: first [not markup] 1\n") and "second" not in a
    assert "WARNING longshort.y: second" in b and "hidden" not in b and "\x1b[" not in a + b
    err = capfd.readouterr().err
    assert "first [not markup] 1" in err and "second" in err and "hidden" not in err
    with pytest.raises(LongshortError, match="accepted: DEBUG, INFO"):
        setup_logging(None, "verbose")
    setup_logging(None, "INFO")


def test_metric_lines_reach_the_console_only_when_verbose(tmp_path, capfd):
    from longshort.core.logs import set_verbose

    setup_logging(tmp_path, "INFO")
    capfd.readouterr()
    try:
        get_logger("longshort.metrics").info("step 1 | loss 0.5")
        get_logger("longshort").info("sft step 1: loss 0.5")
        quiet = capfd.readouterr().err
        set_verbose(True)
        get_logger("longshort.metrics").info("step 2 | loss 0.4")
        loud = capfd.readouterr().err
    finally:
        set_verbose(False)
        close_log_file()
    assert "sft step 1" in quiet and "step 1 | loss" not in quiet  # one line per step on the console
    assert "step 2 | loss 0.4" in loud
    assert "step 1 | loss 0.5" in (tmp_path / "log.txt").read_text()  # the file has everything


def test_console_is_throttled(tmp_path, wandb_env):
    cfg = TrackingConfig(backends=["console"], console_every=3, console_interval_s=0, console_max_keys=2)
    with Tracker(cfg, tmp_path / "run") as tr:
        for step in range(8):
            tr.log({"loss": 1.0 / (step + 1), "reward": 0.5, "len": 100}, step=step)
            tr.log({"extra": 1e-5}, step=step)
    lines = [
        line.split("longshort.metrics: ")[1]
        for line in (tmp_path / "run" / "log.txt").read_text().splitlines()
        if "metrics:" in line
    ]
    assert lines == [
        "step 0 | loss 1 | reward 0.5 | +1 more",
        "step 0 | extra 1.000e-05",
        "step 3 | loss 0.25 | reward 0.5 | +1 more",
        "step 3 | extra 1.000e-05",
        "step 6 | loss 0.1429 | reward 0.5 | +1 more",
        "step 6 | extra 1.000e-05",
        "step 7 | loss 0.125 | reward 0.5 | +2 more",  # the skipped last step, merged, at finish
    ]


def test_bad_input_is_rejected_with_the_fix(tmp_path, wandb_env):
    with pytest.raises(
        ValueError, match=r"backends: unknown \['tensorboard'\]; accepted: \['console', 'jsonl', 'wandb'\]"
    ):
        TrackingConfig(backends=["tensorboard"]).validate()
    with Tracker(TrackingConfig(backends=["jsonl"]), tmp_path / "run") as tr:
        with pytest.raises(TypeError, match="metric 'a/b': str"):
            tr.log({"a": {"b": "high"}}, step=0)
        with pytest.raises(ValueError, match="step must be an int >= 0"):
            tr.log({"x": 1.0}, step=-1)
        with pytest.raises(ValueError, match="reserved"):
            tr.log({"step": 1.0}, step=0)
        with pytest.raises(ValueError, match="row 1: 1 cells for 2 columns"):
            tr.log_table("t", ["a", "b"], [[1, 2], [3]], step=0)
        with pytest.raises(ValueError, match="table name '../x'"):
            tr.log_table("../x", ["a"], [[1]], step=0)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            tr.log_artifact(tmp_path / "missing", "m", "model")
        with pytest.raises(ValueError, match="artifact name 'my model'"):
            tr.log_artifact(tmp_path, "my model", "model")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == ""  # nothing half-logged


def test_metrics_on_a_full_disk_stop_with_enospc_and_a_resumed_run_loses_no_complete_row(small_disk):
    """metrics.jsonl is appended and flushed row by row: a full disk raises ENOSPC at the row that did not fit; every
    row before it stays readable, and after space is freed the resumed run appends on a fresh line."""
    import errno

    mnt, resize = small_disk
    written = 0
    with pytest.raises(OSError) as err, Tracker(TrackingConfig(backends=["jsonl"], mode="disabled"), mnt) as t:
        for step in range(100_000):
            t.log({f"loss/{k}": 1.0 / (step + k + 1) for k in range(16)}, step=step)
            written = step + 1
    assert err.value.errno == errno.ENOSPC and written > 10
    resize(4 << 20)
    with Tracker(TrackingConfig(backends=["jsonl"], mode="disabled"), mnt) as t:
        t.log({"loss": 0.0}, step=written)
    rows = read_metrics(mnt / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps[:written - 1] == list(range(written - 1)) and steps[-1] == written  # at most the cut row is lost
    assert {r["attempt"] for r in rows} == {1, 2}
