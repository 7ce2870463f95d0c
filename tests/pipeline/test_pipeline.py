"""`longshort run` end to end on the smoke config (every real stage, tiny sizes): an interrupted stage resumes from
its checkpoint, a finished pipeline is skipped whole, and a config change reruns exactly the stages it affects."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import ray
import torch
from builders import ROOT, listening_addresses, loopback

from longshort.cli import main
from longshort.core import run_dir as rd
from longshort.pipeline.commands import open_tracker, prepare_run
from longshort.pipeline.run_config import load_run_config
from longshort.pipeline.runner import MARKER, fingerprints, outputs, plan, run_pipeline
from longshort.recipes.longshort.recipe import RECIPE
from longshort.tracking.tracker import read_metrics

SMOKE = str(ROOT / "ray_configs" / "smoke.yaml")
RL_STEPS = "rl.steps=6"  # room for a kill mid-RL (its checkpoint step-000002 appears before the stage ends)
STAGES = RECIPE.stage_names


class InterruptAt:
    """The run's real tracker, plus a Ctrl-C right after the long model's SFT logs step ``step``."""

    def __init__(self, tracker, step: int):
        self.tracker, self.step = tracker, step

    def log(self, metrics, step):
        self.tracker.log(metrics, step)
        if "sft_long/loss" in metrics and metrics.get("sft/stage_step") == self.step:
            raise KeyboardInterrupt

    def __getattr__(self, name):
        return getattr(self.tracker, name)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    # RL's steps as the side-by-side runs': their evaluations are compared with this run's, which ran alone
    overrides = [f"output_dir={out}", "tracking.backends=[jsonl, wandb]", "tracking.mode=offline", RL_STEPS]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        cfg = load_run_config(SMOKE, overrides)
        run_dir = prepare_run(cfg)
        with pytest.raises(KeyboardInterrupt), open_tracker(cfg, run_dir) as tracker:
            run_pipeline(cfg, run_dir, InterruptAt(tracker, 3))
        interrupted = dict(plan(cfg, run_dir))
        page_at_interrupt = (run_dir / "report.html").read_text(encoding="utf-8")
        # The ranks are actors that run on while the driver reads their reports: the newest checkpoint at the
        # Ctrl-C may be past the step that raised it.
        saved = sorted(int(p.name.split("-")[1]) for p in (run_dir / "sft/long/checkpoints").glob("step-*"))
        assert main(["run", SMOKE, *overrides]) == 0
        marks = {s: (run_dir / s / MARKER).stat().st_mtime for s in STAGES}
        with contextlib.redirect_stdout(io.StringIO()) as again:
            assert main(["run", SMOKE, *overrides]) == 0
        yield {"again_out": again.getvalue(), "dir": run_dir, "cfg": cfg, "overrides": overrides, "interrupted": interrupted, "marks": marks,
               "saved": saved, "page_at_interrupt": page_at_interrupt}
    finally:
        ray.shutdown()


def test_interrupted_stage_resumes_from_its_checkpoint(run):
    # the Ctrl-C hit the long model's SFT at step 3: earlier stages are complete, sft resumes, later ones are new
    assert run["interrupted"] == {"bootstrap": "done", "chunk": "done", "judge": "done", "score": "done",
                                  "coldstart": "done", "sft": "resume", "rl": "new", "eval": "new", "export": "new"}
    long_steps = [r["sft/stage_step"] for r in read_metrics(run["dir"] / "metrics.jsonl") if "sft_long/loss" in r]
    # steps 1-k (k >= 3) from the first attempt, then those after its newest checkpoint (every 2 steps) up to the
    # last, 4: nothing before that checkpoint was redone
    newest = run["saved"][-1]
    assert newest in (2, 4) and run["saved"] == list(range(2, newest + 1, 2))
    k = len(long_steps) - (4 - newest)
    assert k >= 3 and long_steps == [*range(1, k + 1), *range(newest + 1, 5)], (long_steps, run["saved"])


def test_every_stage_wrote_its_outputs_and_one_increasing_step_counter(run):
    d = run["dir"]
    for name in STAGES:
        assert (d / name / MARKER).is_file(), name
        assert all(o.exists() for o in outputs(run["cfg"], d, name)), name
        assert not (d / name / ".started.json").exists()
    state = json.loads((d / "pipeline.json").read_text())
    assert [s for s, r in state["stages"].items() if r["action"] == "ran"] == list(STAGES)
    assert (d / "eval" / "table.md").is_file() and (d / "export" / "manifest.json").is_file()
    # W&B ignores a step lower than one it has seen: one increasing counter across both attempts; a step the resumed
    # attempt redoes is logged above the killed attempt's last step, not on top of it
    records = read_metrics(d / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert steps == sorted(steps)
    long_sft = [r["step"] for r in records if "sft_long/loss" in r]
    assert len(long_sft) == len(set(long_sft)) and long_sft == sorted(long_sft)
    assert "W&B ignored" not in (d / "log.txt").read_text()


def test_the_report_page_shows_the_run_and_renders_on_a_phone(run, chromium, tmp_path):
    """``report.html``, rewritten after every stage (and after the Ctrl-C, naming the stage it stopped), holds the
    results table with error bars, the plot, every stage's time, and dialogues coloured by author with the long
    role's thoughts marked; headless Chromium renders each at a phone's width without errors or a sideways scroll."""
    from builders import render_page

    assert "<td>sft</td><td>started, not finished</td>" in run["page_at_interrupt"]
    assert "No results yet" in run["page_at_interrupt"]
    page = run["dir"] / "report.html"
    text = page.read_text(encoding="utf-8")
    results = json.loads((run["dir"] / rd.EVAL_RESULTS).read_text())
    for system, per in results["results"].items():
        m = per["tiny"]
        assert f"<td>{system}</td>" in text and f"{100 * m['accuracy']:.1f} ± {100 * m['accuracy_se']:.1f}" in text
    for stage in STAGES:
        seconds = json.loads((run["dir"] / stage / MARKER).read_text())["seconds"]
        assert f"<td>{stage}</td><td>finished</td><td>{seconds:.1f}</td>" in text
    assert " src=" not in text and 'href="http' not in text  # self-contained: nothing to fetch
    seen = render_page(chromium, page, tmp_path)
    assert seen["errors"] == [] and seen["console"] == []
    assert seen["page_width"] <= seen["viewport"]  # wide tables scroll in their own box, not the page
    assert seen["results_rows"] == len(results["results"])
    assert all(w > 0 and h > 0 for w, h in seen["tables"]) and len(seen["tables"]) >= 3  # results, checks, stages
    assert len(seen["svgs"]) == 1 and seen["svgs"][0][0] >= 300 and seen["svgs"][0][1] >= 200
    assert seen["plot_marks"] > 10
    pairs = [s for s, info in results["systems"].items() if info["kind"] == "pair"]
    assert len(seen["dialogues"]) >= len(pairs) + 1 and all(h > 0 for _, h in seen["turns"])  # + cold start
    assert {"user", "long", "short"} <= set(seen["roles"]) and seen["kept"]
    assert "score/report.html" in seen["links"] and "eval/table.csv" in seen["links"]


def test_rl_sets_the_pair_beside_the_base_on_the_same_problems(run):
    """RL's progress eval reads dev problems (the test split is the eval stage's), beside the base model's answers to
    exactly those (smoke: the first 4 of the 200 its outcome check answered), graded as the pair's: a response cut at
    its limit is wrong."""
    rows = [json.loads(line) for line in (run["dir"] / rd.BOOTSTRAP_CHECK_SAMPLES).read_text().splitlines()]
    res = json.loads((run["dir"] / rd.RL_EVAL).read_text())
    assert res["base_problems"] == res["problems"] == 4 and len(rows) == 200
    mine = rows[:4]
    assert all(r["id"].startswith("dev-") for r in mine)
    assert res["base_accuracy"] == sum(r["correct"] and r["finished"] for r in mine) / 4
    assert res["base_tokens"] == sum(r["tokens"] for r in mine) / 4
    sft = json.loads((run["dir"] / rd.SFT_EVAL).read_text())  # the pair SFT's own eval: dev too
    assert sft["problems"] == 4


def test_a_complete_pipeline_is_skipped_whole(run):
    d = run["dir"]
    assert {s: (d / s / MARKER).stat().st_mtime for s in STAGES} == run["marks"]
    assert run["again_out"].count("skipped") == len(STAGES) and "| base |" in run["again_out"]  # + the eval table


def test_a_config_change_reruns_exactly_the_stages_downstream(run):
    d = run["dir"]
    cfg = load_run_config(SMOKE, [*run["overrides"], "rl.optim.lr=1e-3"])
    assert dict(plan(cfg, d)) == {"bootstrap": "done", "chunk": "done", "judge": "done", "score": "done",
                                  "coldstart": "done", "sft": "done", "rl": "changed", "eval": "changed",
                                  "export": "changed"}
    cfg = load_run_config(SMOKE, [*run["overrides"], "score.n_rollouts=3"])
    assert [s for s, st in plan(cfg, d) if st == "done"] == ["bootstrap", "chunk"]
    # the judge pair learns from a cold start and SFT: their settings rerun it, and everything after it
    cfg = load_run_config(SMOKE, [*run["overrides"], "coldstart.ratio=0.3"])
    assert [s for s, st in plan(cfg, d) if st == "done"] == ["bootstrap", "chunk"]
    # the base model as the judge: no judge stage, and its settings decide nothing
    base = [*run["overrides"], "score.judge=base"]
    assert dict(plan(load_run_config(SMOKE, base), d))["judge"] == "not needed"
    assert dict(plan(load_run_config(SMOKE, base), d))["score"] == "changed"
    score = {judge: [fingerprints(load_run_config(SMOKE, [*run["overrides"], f"score.judge={judge}", *more]))["score"]
                     for more in ([], ["coldstart.ratio=0.3"])] for judge in ("base", "pair")}
    assert score["base"][0] == score["base"][1] and score["pair"][0] != score["pair"][1]
    assert [s for s, st in plan(run["cfg"], d, restart_from="eval") if st != "done"] == ["eval", "export"]
    # knobs of where and how fast a stage runs (workers, batch sizes, parallel pair SFT, progress bars) rerun nothing
    cfg = load_run_config(SMOKE, [*run["overrides"], "score.engines.max_batch_size=7", "score.batch_cots=3",
                                  "sft.parallel=true", "sft.long.progress=false", "rl.progress=false"])
    assert {st for _, st in plan(cfg, d)} == {"done"}


def test_given_models_and_data_need_no_bootstrap(run, tmp_path):
    d = run["dir"]
    given = [f"chunk.source.path={d / 'bootstrap/data/train.jsonl'}", f"score.model={d / 'bootstrap/base_model'}",
             f"sft.long_model={d / 'bootstrap/base_model'}", f"sft.short_model={d / 'bootstrap/base_model'}",
             f"sft.eval.source.path={d / 'bootstrap/data/eval.jsonl'}", f"rl.train.path={d / 'bootstrap/data/train.jsonl'}",
             f"rl.eval.path={d / 'bootstrap/data/eval.jsonl'}", "pipeline.stages=[bootstrap, chunk]"]
    cfg = load_run_config(SMOKE, [f"output_dir={tmp_path}", *given])
    assert plan(cfg, tmp_path / "smoke") == [("bootstrap", "not needed"), ("chunk", "new")]
    assert plan(load_run_config(SMOKE, [f"output_dir={tmp_path}", *given, "pipeline.bootstrap=always"]),
                tmp_path / "smoke")[0] == ("bootstrap", "new")


def test_bad_stage_list_and_restart_stage_are_named(tmp_path):
    from longshort.core.errors import LongshortError

    with pytest.raises(LongshortError, match="pipeline.stages.*accepted: a subsequence"):
        load_run_config(SMOKE, ["pipeline.stages=[sft, chunk]"])
    cfg = load_run_config(SMOKE, [f"output_dir={tmp_path}", "pipeline.stages=[chunk]"])
    with pytest.raises(LongshortError, match="--restart-from rl: not a stage of this run"):
        run_pipeline(cfg, tmp_path, None, restart_from="rl")


def test_a_stage_that_reruns_reruns_everything_after_it(run, tmp_path):
    import shutil

    copy = tmp_path / "smoke"
    shutil.copytree(run["dir"], copy, symlinks=True)
    (copy / "coldstart" / MARKER).unlink()  # e.g. a user removed the stage's outputs: it must run again
    cfg = load_run_config(SMOKE, [f"output_dir={tmp_path}", RL_STEPS])
    assert [s for s, st in plan(cfg, copy) if st != "done"] == ["coldstart", "sft", "rl", "eval", "export"]
    assert dict(plan(cfg, copy))["coldstart"] == "unrecorded"


def test_a_damaged_output_is_found_named_and_rebuilt(run, tmp_path, caplog):
    """A finished stage's file truncated or overwritten after the fact: the rerun does not trust the marker."""
    import logging
    import shutil

    copy = tmp_path / "smoke"
    shutil.copytree(run["dir"], copy, symlinks=True)
    cfg = load_run_config(SMOKE, [f"output_dir={tmp_path}", RL_STEPS])
    assert {st for _, st in plan(cfg, copy)} == {"done"}  # a copy verifies: the record is relative to the run
    weights = copy / "sft" / "long" / "model" / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])  # e.g. a full disk while copying
    thoughts = copy / "chunk" / "thoughts.jsonl"
    text = thoughts.read_bytes()
    thoughts.write_bytes(text[:-10] + b"x" * 9 + text[-1:])  # same size, other content
    statuses = dict(plan(cfg, copy))
    assert statuses["chunk"] == "damaged" and statuses["sft"] == "changed"  # forced: everything after chunk reruns
    thoughts.write_bytes(text)
    assert dict(plan(cfg, copy))["sft"] == "damaged"
    with caplog.at_level(logging.WARNING, logger="longshort"), open_tracker(cfg, copy) as tracker:
        records = run_pipeline(cfg, copy, tracker)
    assert [r.stage for r in records if r.action == "ran"] == ["sft", "rl", "eval", "export"]
    assert f"sft: rerunning it (and every stage after it): its outputs changed since it finished: {weights} changed " \
           f"size ({len(intact)} -> {len(intact) // 2} bytes)" in caplog.text
    assert weights.read_bytes() == intact  # rebuilt, bit for bit
    assert {st for _, st in plan(cfg, copy)} == {"done"}


def test_a_stopped_stage_names_the_command_that_resumes_it(monkeypatch, tmp_path):
    from longshort.pipeline.commands import _resume_hint
    from longshort.rl.loop import RLInterrupted

    stopped = RLInterrupted("rl stopped at step 3: ...; it can resume from ck", None, tmp_path / "ck", 3)
    monkeypatch.setattr("sys.argv", ["longshort", "run", "cfg.yaml", "name=x"])
    with pytest.raises(RLInterrupted, match=r"; to continue, run `longshort run cfg.yaml name=x`$"):
        with _resume_hint(resume_flag=False):  # `longshort run` resumes by being run again
            raise stopped
    monkeypatch.setattr("sys.argv", ["longshort", "rl", "cfg.yaml"])
    with pytest.raises(RLInterrupted, match=r"; to continue, run `longshort rl cfg.yaml --resume`$"):
        with _resume_hint(resume_flag=True):
            raise RLInterrupted("rl stopped", None, tmp_path / "ck", 3)
    with pytest.raises(RLInterrupted, match=r"^no checkpoint$"):  # nothing to resume from: no hint
        with _resume_hint(resume_flag=True):
            raise RLInterrupted("no checkpoint", None, None, 1)


KILL_OVERRIDES = [RL_STEPS, "tracking.backends=[jsonl]"]


def _start_run(out: Path, name: str = "smoke"):
    """`longshort run` of the smoke config as a user starts it (no RAY_ADDRESS: a cluster of its own), its stdout and
    stderr in ``out/<name>.log``."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"WANDB_MODE": "offline",
                                                                         "RAY_AUTH_MODE": "disabled"}
    with open(out / f"{name}.log", "a") as log:
        return subprocess.Popen([sys.executable, "-m", "longshort", "run", SMOKE, f"output_dir={out}", f"name={name}",
                                 *KILL_OVERRIDES], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _log(out: Path, name: str = "smoke") -> str:
    return (out / f"{name}.log").read_text()


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """Two different uninterrupted runs (`smoke` and `side`), started here at once and left running: the next test
    runs a second command on one's directory while they work; the kill test compares with its outputs, the
    side-by-side test both with the `run` fixture's run."""
    out = tmp_path_factory.mktemp("whole")
    procs = {name: _start_run(out, name) for name in ("smoke", "side")}
    yield procs, out
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


def _finished(whole, name: str = "smoke") -> Path:
    procs, out = whole
    assert procs[name].wait(timeout=900) == 0, _log(out, name)[-3000:]
    return out / name


def test_a_second_run_on_the_same_directory_refuses_and_the_first_finishes(whole):
    """Two `longshort run` on one run directory: the second is refused at once, naming the first, and touches
    nothing; the first finishes unharmed (one step counter, every stage done)."""
    import time

    procs, out = whole
    first = procs["smoke"]
    lock = out / "smoke" / ".lock"
    deadline = time.time() + 60
    # the lock comes first, the resolved config right after it: wait for both
    while not (lock.exists() and str(first.pid) in lock.read_text() and (out / "smoke" / "config.yaml").exists()):
        assert first.poll() is None and time.time() < deadline, "the first run never took the lock"
        time.sleep(0.2)
    config_mtime = (out / "smoke" / "config.yaml").stat().st_mtime
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["run", SMOKE, f"output_dir={out}", *KILL_OVERRIDES]) == 2
    assert first.poll() is None  # refused at once: it did not wait for the first run (no timing in tests)
    assert f"is in use by another longshort command (pid {first.pid} on " in err.getvalue()
    assert (out / "smoke" / "config.yaml").stat().st_mtime == config_mtime
    run = _finished(whole)
    steps = [row["step"] for row in read_metrics(run / "metrics.jsonl")]
    assert steps == sorted(steps)  # one writer: the counter never goes back
    assert json.loads((run / "pipeline.json").read_text())
    assert {s for s, r in json.loads((run / "pipeline.json").read_text())["stages"].items() if r["action"] == "ran"} \
        == set(STAGES)
    assert lock.read_text() == ""


# Killed once the file exists: mid-stage, with the stage's workers up (score: its engines; sft: the two roles' rank
# actors at once, after a checkpoint; rl: the policy actors, after a checkpoint). One run is killed at each point in
# turn, each rerun resuming what the kill left, so the last rerun's outputs carry every resume. (sft.parallel: false
# runs the same rank actors from one thread, and makes the same weights.)
KILL_POINTS = ("score/.started.json", "sft/long/checkpoints/step-000002", "rl/checkpoints/step-000002")


def _kill_at(out: Path, at: str) -> None:
    """Start (or rerun) the run, wait for ``at`` to appear, `kill -9` the driver; no process of it may live 10 s
    later, and it listened on loopback only."""
    import os
    import signal
    import time

    from longshort.cluster.reaper import tree

    killed = _start_run(out)
    marker = out / "smoke" / at
    deadline = time.time() + 600
    while not marker.exists():
        assert killed.poll() is None and time.time() < deadline, (at, _log(out)[-3000:])
        time.sleep(0.05)
    listening, until = {}, time.time() + 15
    while not listening and time.time() < until:  # the stage's Ray cluster may still be opening its ports
        time.sleep(0.25)
        procs = set(tree([killed.pid]))
        listening = listening_addresses(procs)
    assert len(procs) > 3, (at, procs)  # the driver, its Ray cluster, the stage's workers
    assert listening and all(loopback(ip) for ips in listening.values() for ip in ips), (at, listening)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    deadline = time.time() + 10
    while any(tree([p]) for p in procs) and time.time() < deadline:
        time.sleep(0.25)
    assert [p for p in procs if tree([p])] == [], at


def test_a_sigkilled_run_leaves_no_process_and_resumes_exactly(whole, tmp_path):
    """`kill -9` of `longshort run` in the middle of a stage (score, the parallel pair SFT, RL, one after the other):
    no process of the run is alive 10 s later, it listened on loopback only, and rerunning the command resumes to the
    uninterrupted run's scores, metrics and weights."""
    from safetensors.torch import load_file

    uninterrupted = _finished(whole)
    for at in KILL_POINTS:
        _kill_at(tmp_path, at)
    again = _start_run(tmp_path)
    assert again.wait(timeout=600) == 0, _log(tmp_path)[-3000:]
    resumed = tmp_path / "smoke"

    def rl_steps(run):
        rows = read_metrics(run / "metrics.jsonl")
        return {r["rl/stage_step"]: {k: v for k, v in r.items() if k.startswith("episode/")} for r in rows
                if "episode/accuracy" in r}

    assert rl_steps(resumed) == rl_steps(uninterrupted) and len(rl_steps(uninterrupted)) == 6
    steps = [r["step"] for r in read_metrics(resumed / "metrics.jsonl")]
    assert steps == sorted(steps)
    assert (resumed / rd.SCORES).read_text() == (uninterrupted / rd.SCORES).read_text()
    for model in ("sft/long/model", "sft/short/model", "rl/long/model", "rl/short/model"):
        a, b = (load_file(run / model / "model.safetensors") for run in (uninterrupted, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), model


def test_computing_in_bf16_on_a_cpu_reruns_every_stage_and_fp32_keeps_the_old_fingerprints():
    """Fingerprints name the CPU precision only where it is bf16: runs computed in fp32 before `cpu_precision`
    existed stay complete (the embedded default pins fp32); a run that switches to bf16 reruns from its first stage."""
    fp32 = fingerprints(load_run_config(SMOKE, ["cpu_precision=fp32"]))
    assert fingerprints(load_run_config(SMOKE, [])) == fp32  # smoke inherits tiny.yaml's pin
    bf16 = fingerprints(load_run_config(SMOKE, ["cpu_precision=bf16"]))
    assert all(bf16[s] != fp32[s] for s in fp32)
    from longshort.core.errors import LongshortError

    with pytest.raises(LongshortError, match="key 'cpu_precision' is 'fast', expected one of 'auto', 'fp32', 'bf16'"):
        load_run_config(SMOKE, ["cpu_precision=fast"])


def test_two_runs_side_by_side_each_get_their_own_cluster_and_the_results_of_a_run_alone(run, whole):
    """Two different runs started at once on one machine (the `whole` fixture's): each starts a local Ray cluster of
    its own (its own GCS port and session), both finish, and their evaluations equal the `run` fixture's, which ran
    alone."""
    import re

    runs = {name: _finished(whole, name) for name in ("smoke", "side")}
    clusters = {name: set(re.findall(r"local Ray cluster on 127\.0\.0\.1 only.*?--address (127\.0\.0\.1:\d+)",
                                     _log(whole[1], name), re.S)) for name in runs}
    assert all(clusters.values()) and not clusters["smoke"] & clusters["side"], clusters

    def results(run_dir):  # every system's metrics on every benchmark, less the wall times
        per = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
        return {s: {b: {k: v for k, v in m.items() if k != "seconds"} for b, m in bm.items()} for s, bm in per.items()}

    alone = results(run["dir"])
    assert {"base", "sft-pair", "rl-pair"} <= set(alone)
    for name, run_dir in runs.items():
        assert results(run_dir) == alone, name


def test_a_stage_killed_for_memory_names_stage_role_memory_and_settings_and_a_rerun_finishes(run, tmp_path):
    """Ray's memory monitor kills the pair SFT's first rank inside `longshort run` (its threshold set below what the
    machine uses, so the first worker that runs is killed): the command stops with exit 2 naming the stage, the role,
    the node's memory and the settings that lower it; the stages before it stay done and the page shows where it
    stopped; the same command without the limit then finishes."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(run["dir"], tmp_path / "smoke")
    done_before = {s: (tmp_path / "smoke" / s / MARKER).read_text() for s in STAGES[:5]}
    cmd = [sys.executable, "-m", "longshort", "run", SMOKE, f"output_dir={tmp_path}", "tracking.mode=disabled",
           "--restart-from", "sft"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    low = {"RAY_memory_usage_threshold": "0.02", "RAY_memory_monitor_refresh_ms": "100"}
    killed = subprocess.run(cmd, env=env | low, capture_output=True, text=True, timeout=600)
    err = killed.stderr
    assert killed.returncode == 2, err[-3000:]
    assert "longshort: error: stage sft: sft_long: rank 0 died" in err and "Traceback" not in err
    assert "out of memory: Ray's memory monitor (or the kernel) killed it with the node at " in err
    assert "GB used of " in err and "sft.long.micro_batch_size" in err and "sft.long.gradient_checkpointing" in err
    assert {s: (tmp_path / "smoke" / s / MARKER).read_text() for s in STAGES[:5]} == done_before
    assert "<td>sft</td><td>started, not finished</td>" in (tmp_path / "smoke" / "report.html").read_text()
    again = subprocess.run(cmd[:-2], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all((tmp_path / "smoke" / s / MARKER).exists() for s in STAGES)
