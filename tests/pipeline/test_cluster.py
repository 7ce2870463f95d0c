"""A real local Ray cluster: `ray start --head` on loopback, the whole pipeline (smoke sizes) sent with `ray job submit`,
its outputs checked."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from builders import ROOT

from longshort.training.ranks import free_port

BIN = Path(sys.executable).parent
def _kill_cluster(temp_dir: str) -> None:
    """Stop only this test's Ray processes (`ray stop` would stop every Ray cluster on the machine)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = [int(line.split(None, 1)[0]) for line in out.splitlines() if temp_dir in line]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


@pytest.fixture
def cluster():
    temp_dir = tempfile.mkdtemp(prefix="lsray", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash = free_port(), free_port()
    # Every port the head opens is chosen here: defaults (e.g. the agent's 52365) clash with other Ray sessions.
    agent_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=4",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={temp_dir}",
         "--disable-usage-stats", *agent_ports],
        env=env, capture_output=True, text=True, timeout=180,
    )
    try:
        assert start.returncode == 0, f"ray start failed:\n{start.stdout}\n{start.stderr}"
        yield f"http://127.0.0.1:{dash}", env
    finally:
        _kill_cluster(temp_dir)


def test_ray_job_submit_runs_the_pipeline(cluster, tmp_path):
    address, env = cluster
    out_dir = tmp_path / "runs"
    # the entrypoint's resources and an option submit.sh does not know itself go to `ray job submit`
    cmd = ["bash", str(ROOT / "launch/submit.sh"), "--address", address, "--entrypoint-num-cpus", "1",
           '--metadata-json={"submitted_by": "test_cluster"}', "--", "longshort", "run",
           "ray_configs/smoke.yaml", f"output_dir={out_dir}", "name=cluster", "tracking.mode=offline"]
    job = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = job.stdout[-6000:] + job.stderr[-4000:]
    assert job.returncode == 0, f"job failed:\n{log}"
    assert "succeeded" in job.stdout.lower(), log
    run = out_dir / "cluster"
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    for stage in ("bootstrap", "chunk", "judge", "score", "coldstart", "sft", "rl", "eval", "export"):
        assert (run / stage / ".complete.json").is_file(), f"stage {stage} did not finish:\n{log}"
    assert (run / "export" / "manifest.json").is_file() and (run / "eval" / "table.md").is_file()
    assert "| base |" in job.stdout  # the results table ends the job's log
    from ray.job_submission import JobSubmissionClient

    submitted = job.stdout.split("[submit] submitted ", 1)[1].split()[0]
    client = JobSubmissionClient(address)
    assert client.get_job_info(submitted).metadata == {"submitted_by": "test_cluster"}
    # the entrypoint's resources reach the scheduler: a command that needs a node with a GPU waits for one
    pending = subprocess.run(["bash", str(ROOT / "launch/submit.sh"), "--address", address, "--no-wait",
                              "--entrypoint-num-gpus=1", "--", "longshort", "--help"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert pending.returncode == 0, pending.stderr
    waiting = pending.stdout.split("[submit] submitted ", 1)[1].split()[0]
    time.sleep(5)
    assert client.get_job_info(waiting).status == "PENDING"
    client.stop_job(waiting)
    # the RL actors ran in the submitted-to cluster, not in a private Ray instance started by the job
    assert "existing Ray cluster" in (job.stdout + job.stderr) or "Connected to Ray cluster" in (job.stdout + job.stderr)
