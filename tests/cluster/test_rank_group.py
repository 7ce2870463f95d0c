"""Training ranks as Ray actors (``run_ranks``): a real process group over gloo between actors, rank 0's reports on
the driver, errors and crashes named, nothing left when the driver is killed, an unplaceable job named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from builders import free_cpus_return_to

from longshort.cluster.rank_group import RankPlacement, run_ranks
from longshort.core.errors import LongshortError
from longshort.training.ranks import RankInfo, init_rank, shutdown_rank

pytestmark = pytest.mark.usefixtures("ray_local")


def _rank_work(info: RankInfo, fail_rank: int, report=None):
    init_rank(info)
    try:
        t = torch.tensor([float(info.rank + 1)])
        torch.distributed.all_reduce(t)
        if report:
            report({"sum": float(t), "pid": os.getpid()})
        if info.rank == fail_rank:
            raise LongshortError(f"bad input seen on rank {info.rank}")
        return float(t), os.getpid()
    finally:
        shutdown_rank()


def test_ranks_join_one_process_group_in_actors_and_report_to_the_driver():
    seen = []
    out = run_ranks(_rank_work, (-1,), RankPlacement(2, cpus_per_rank=1, threads_per_rank=1), on_report=seen.append)
    assert [s for s, _ in out] == [3.0, 3.0]  # both ranks all-reduced over gloo
    pids = {p for _, p in out}
    assert len(pids) == 2 and os.getpid() not in pids  # two actor processes, not the driver
    assert seen == [{"sum": 3.0, "pid": out[0][1]}]  # rank 0's report, delivered here
    assert free_cpus_return_to(4.0)  # actors and placement group freed


def test_a_rank_error_reaches_the_caller_as_it_is():
    seen = []
    with pytest.raises(LongshortError, match="bad input seen on rank 1"):
        run_ranks(_rank_work, (1,), RankPlacement(2, cpus_per_rank=1, threads_per_rank=1), on_report=seen.append)
    assert [s["sum"] for s in seen] == [3.0]  # the ranks ran and all-reduced before rank 1 failed


def _dies(info: RankInfo, report=None):
    init_rank(info, timeout_s=60)
    if report is not None:  # rank 0: its step reaches the driver before its peer dies
        report({"kind": "step", "step": 1})
    if info.rank == 1:
        time.sleep(1.5)
        os._exit(3)
    torch.distributed.all_reduce(torch.ones(1))  # rank 0 fails in the collective, or would wait for its peer


def test_a_dead_rank_stops_the_job_and_names_its_node():
    t0 = time.monotonic()
    with pytest.raises(LongshortError) as err:
        run_ranks(_dies, (), RankPlacement(2, cpus_per_rank=1), name="sft_long")
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "sft_long: rank 1 died on node " in msg and "run the stage again to resume" in msg
    assert " after step 1: " in msg  # where the job was when it failed
    assert free_cpus_return_to(4.0)


def test_an_unplaceable_job_names_its_key_and_the_fix():
    with pytest.raises(LongshortError) as err:
        run_ranks(_rank_work, (-1,), RankPlacement(2, cpus_per_rank=3, key="sft.long"), start_timeout_s=2)
    msg = str(err.value)
    assert "sft.long: Ray could not place 2 actor(s) needing {'CPU': 6.0}" in msg
    assert "lower sft.long.num_ranks / cpus_per_rank / gpus_per_rank" in msg


DRIVER = """
import sys
from builders import sleeping_rank
from longshort.cluster.rank_group import RankPlacement, run_ranks
run_ranks(sleeping_rank, (sys.argv[1],), RankPlacement(2, cpus_per_rank=0.5, threads_per_rank=1))
"""


def test_ranks_die_with_the_driver_that_started_them(tmp_path):
    """SIGKILL the driver (a user's `kill -9` of `longshort sft`): no rank outlives it to keep writing checkpoints
    and models that a rerun would take as done."""
    from builders import ROOT

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, not this module's
    env = {**env, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)], env=env, cwd=ROOT)
    deadline = time.time() + 180
    while len(list(tmp_path.glob("rank*.pid"))) < 2:
        assert driver.poll() is None and time.time() < deadline, "the ranks never started"
        time.sleep(0.2)
    ranks = [int(p.read_text()) for p in tmp_path.glob("rank*.pid")]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 30
    while any(alive(pid) for pid in ranks) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in ranks)


def _precision_seen(info: RankInfo, report=None):
    from longshort.core import precision

    return os.environ.get(precision.ENV), str(precision.cpu_dtype())


def test_ranks_compute_in_the_drivers_cpu_precision():
    """`cpu_precision` reaches every actor through its runtime env (a cluster's nodes do not share the driver's)."""
    from longshort.core import precision

    try:
        precision.set_policy("bf16")
        out = run_ranks(_precision_seen, (), RankPlacement(2, cpus_per_rank=1, threads_per_rank=1))
        assert out == [("bf16", "torch.bfloat16")] * 2
    finally:
        precision.set_policy("fp32")


def test_auto_reaches_the_actors_as_the_drivers_decision():
    """Under `auto` every actor computes in the driver's decision, not its own probe: probes taken at once by ranks
    starting together disagreed on a loaded CPU (one fp32, one bf16 in one pair SFT)."""
    from longshort.core import precision

    try:
        precision.set_policy("auto")
        want = "bf16" if precision.is_bf16("auto") else "fp32"
        out = run_ranks(_precision_seen, (), RankPlacement(2, cpus_per_rank=1, threads_per_rank=1))
        assert out == [(want, f"torch.{'bfloat16' if want == 'bf16' else 'float32'}")] * 2
    finally:
        precision.set_policy("fp32")
