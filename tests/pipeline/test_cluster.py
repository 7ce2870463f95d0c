"""A real multi-node Ray cluster on one machine: `ray start --head` and two `ray start --address` worker nodes on
loopback, each worker with one `fake_gpu` (`topology.accelerator`). The whole pipeline (smoke sizes) sent with
`launch/submit.sh`: every SFT's ranks and each RL role's rank and engine run on the worker nodes (the two roles on
different ones), never on the head that runs the entrypoint. A worker node is killed in the middle of RL: the job
stops within a minute naming the lost node; with the node back, the same submission resumes, and the metrics equal a
one-node run's."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from builders import ROOT

from longshort.training.ranks import free_port

BIN = Path(sys.executable).parent


def _kill_cluster(temp_dir: str, sigs: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL)) -> None:
    """Stop only this test's Ray processes (`ray stop` would stop every Ray cluster on the machine): those whose
    command line names ``temp_dir`` (or a worker's ``temp_dir-wN``)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = [int(line.split(None, 1)[0]) for line in out.splitlines() if temp_dir in line]
    for sig in sigs:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


def _ports(*names: str) -> list[str]:
    # Every port a node opens is chosen here: defaults (e.g. the agent's 52365) clash with other Ray sessions.
    return [f"--{n}={free_port()}" for n in names]


@pytest.fixture
def cluster():
    """A head (2 CPUs, no accelerator: the job's entrypoint and driver) and two worker nodes with 2 CPUs and one
    `fake_gpu` each, all on loopback, in a Ray temp dir of their own."""
    temp_dir = tempfile.mkdtemp(prefix="lsray", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}",
           "RAY_USAGE_STATS_ENABLED": "0"}
    # What an earlier test's local Ray left in this process's environment: a loopback-only switch that refuses
    # multi-node clusters, its address and its token.
    for key in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    agents = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--num-cpus=2"]
    head = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=true", f"--temp-dir={temp_dir}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", *common, *_ports(*agents)]
    # A temp dir per node, as on separate machines: nodes that share one unpack the job's working_dir into the same
    # folder, and a worker's fresh unpacking would pull it from under the driver running in it.
    workers = [[str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}", '--resources={"fake_gpu": 1}',
                f"--temp-dir={temp_dir}-w{i}", *common, *_ports("node-manager-port", "object-manager-port", *agents)]
               for i in (1, 2)]

    def start(cmd: list[str]) -> None:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"ray start failed:\n{done.stdout}\n{done.stderr}"

    def lose_worker(i: int) -> None:
        """Worker node ``i``'s processes all killed at once, as when a machine goes away."""
        _kill_cluster(f"{temp_dir}-w{i}", sigs=(signal.SIGKILL,))

    def restart_worker(i: int) -> None:
        start(workers[i - 1])

    try:
        for cmd in (head, *workers):
            start(cmd)
        yield SimpleNamespace(address=f"http://127.0.0.1:{dash}", env=env, lose_worker=lose_worker,
                              restart_worker=restart_worker)
    finally:
        _kill_cluster(temp_dir)


def _dead_worker(address: str, timeout_s: float = 60) -> str:
    """The id (12 characters) of the node Ray marks dead."""
    from ray.util.state import list_nodes

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        dead = [n.node_id[:12] for n in list_nodes(address=address) if n.state == "DEAD"]
        if dead:
            return dead[0]
        time.sleep(1)
    raise AssertionError(f"no node marked dead within {timeout_s} s")


def test_ray_job_submit_runs_the_pipeline(cluster, tmp_path):
    address, env = cluster.address, cluster.env
    out_dir = tmp_path / "runs"
    run = out_dir / "cluster"
    # the entrypoint's resources and an option submit.sh does not know itself go to `ray job submit`
    cmd = ["bash", str(ROOT / "launch/submit.sh"), "--address", address, "--entrypoint-num-cpus", "1",
           '--metadata-json={"submitted_by": "test_cluster"}', "--", "longshort", "run",
           "ray_configs/smoke.yaml", f"output_dir={out_dir}", "name=cluster", "tracking.mode=offline", *ON_DEVICES,
           *RL_STEPS]
    # A worker node lost in the middle of RL (after its first checkpoint): the job stops, naming the node.
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker, deadline = run / "rl" / "checkpoints" / "step-000001", time.time() + 900
    while not marker.exists():
        assert first.poll() is None and time.time() < deadline, f"the job ended before RL:\n{first.stdout.read()[-6000:]}"
        time.sleep(0.1)
    lost_at = time.monotonic()
    cluster.lose_worker(1)
    failed = first.communicate(timeout=180)[0]
    stopped_s = time.monotonic() - lost_at
    (tmp_path / "job-lost-node.log").write_text(failed)
    print(f"worker node lost mid-RL -> submitted job stopped in {stopped_s:.1f} s")  # the note's number (pytest -s)
    lost = _dead_worker(address)
    assert first.returncode != 0 and stopped_s < 60, (stopped_s, failed[-6000:])
    assert "died" in failed and f"on node {lost}" in failed, failed[-6000:]
    assert not (run / "rl" / ".complete.json").exists()
    # The node back (a new node id), the same submission resumes RL from its last checkpoint and finishes.
    cluster.restart_worker(1)
    job = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = job.stdout[-6000:] + job.stderr[-4000:]
    (tmp_path / "job.log").write_text(job.stdout + job.stderr)
    assert job.returncode == 0, f"job failed:\n{log}"
    assert "succeeded" in job.stdout.lower(), log
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    for stage in ("bootstrap", "chunk", "judge", "score", "coldstart", "sft", "rl", "eval", "export"):
        assert (run / stage / ".complete.json").is_file(), f"stage {stage} did not finish:\n{log}"
    assert (run / "export" / "manifest.json").is_file() and (run / "eval" / "table.md").is_file()
    assert "| base |" in job.stdout  # the results table ends the job's log
    from ray.util.state import list_nodes

    nodes = {n.node_id[:12]: n.is_head_node for n in list_nodes(address=address)}
    text = (run / "log.txt").read_text()
    assert "rl: resumed from" in text, log
    placed: dict[str, set[str]] = {}  # what ran -> the nodes the run's log names for it
    last: dict[str, set[str]] = {}  # ... in the last attempt that started it
    for line in text.splitlines():
        m = re.search(r"(\S+): \d+ rank\(s\): (.*)", line) or re.search(r"(policy \w+) ready \(.*?\): (.*)", line)
        if m:
            last[m[1]] = set(re.findall(r"on node ([0-9a-f]{12})", m[2]))
            placed.setdefault(m[1], set()).update(last[m[1]])
    sfts = [w for w in placed if w.endswith("sft") or w.startswith("sft_")]
    assert {"bootstrap/sft", "sft_long", "sft_short"} <= set(sfts), placed
    assert all(not nodes[n] for w in placed for n in placed[w]), (placed, nodes)  # never on the head
    long, short = last["policy long"], last["policy short"]
    assert len(long) == len(short) == 1 and long != short, placed  # one role a worker node
    assert lost in placed["policy long"] | placed["policy short"], (lost, placed)  # RL ran on the lost node
    _same_metrics_on_one_node(run, out_dir, env)
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


ON_DEVICES = ["topology.accelerator=fake_gpu", "topology.long.gpus_per_rank=1", "topology.short.gpus_per_rank=1",
              "bootstrap.sft.gpus_per_rank=1", "sft.long.gpus_per_rank=1", "sft.short.gpus_per_rank=1"]
# Room to lose a node after RL's first checkpoint (one a step): the smoke model's steps take ~0.1 s, so 60 of them
# leave seconds for the kill (seeing the checkpoint and killing took ~14 steps on 2 busy cores). Dynamic sampling off:
# the smoke model's groups mostly agree, and it would skip their updates.
RL_STEPS = ["rl.steps=60", "rl.filter_groups.enable=false"]
COMPARED = ("sft_long/loss", "sft_long/grad_norm", "sft_short/loss", "sft_short/grad_norm", "pair_eval/pair_accuracy",
            "pair_eval/pair_tokens", "long/reward", "short/reward", "episode/tokens", "eval/rl-pair/tiny/accuracy",
            "eval/rl-pair/tiny/mean_tokens")


def _same_metrics_on_one_node(run: Path, out_dir: Path, env: dict) -> None:
    """The multi-node run's SFT, RL and eval metrics equal a laptop run's (a local Ray instance, one node) at the same
    seeds, from the same analysis stages (copied: `longshort run` skips them)."""
    import json
    import math
    import shutil

    local = out_dir / "local"
    for stage in ("bootstrap", "chunk", "judge", "score", "coldstart"):
        shutil.copytree(run / stage, local / stage)
    out = subprocess.run([sys.executable, "-m", "longshort", "run", "ray_configs/smoke.yaml", f"output_dir={out_dir}",
                          "name=local", "tracking.backends=[jsonl]", *RL_STEPS], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("skipped") == 5, out.stdout[-3000:]

    def series(d: Path) -> dict[str, list[float]]:
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        rl = {r["rl/stage_step"]: r for r in rows if "rl/stage_step" in r}  # a resumed step's last record counts
        rows = [r for r in rows if "rl/stage_step" not in r] + [rl[s] for s in sorted(rl)]
        return {k: [r[k] for r in rows if k in r] for k in COMPARED}

    cluster, laptop = series(run), series(local)
    for k in COMPARED:
        assert cluster[k] and len(cluster[k]) == len(laptop[k]), (k, cluster[k], laptop[k])
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(cluster[k], laptop[k], strict=True)), \
            (k, cluster[k], laptop[k])
