"""A local Ray cluster dies with the command that started it: SIGKILL of the driver leaves no Ray process behind
(the raylet's agents used to linger for a minute), and a clean ray.shutdown() lets the watcher go too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from longshort.cluster.reaper import tree

DRIVER = """
import os, sys, time, ray
from longshort.cluster.topology import ensure_ray
ensure_ray()
@ray.remote(num_cpus=0)
class A:
    def pid(self): return os.getpid()
a = A.remote()
print(ray.get(a.pid.remote()), flush=True)
if sys.argv[1] == "shutdown":
    ray.shutdown()
    print("down", flush=True)
time.sleep(600)
"""


def _driver(mode: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, mode], stdout=subprocess.PIPE, text=True, env=env)
    actor = int(proc.stdout.readline())
    return proc, actor


def _gone(pids, within_s: float) -> list[int]:
    deadline = time.time() + within_s
    while time.time() < deadline:
        alive = [p for p in pids if tree([p])]
        if not alive:
            return []
        time.sleep(0.25)
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watcher reads /proc")
def test_sigkill_of_the_driver_takes_its_local_ray_cluster_along():
    proc, actor = _driver("kill")
    try:
        ray_procs = set(tree([proc.pid])) - {proc.pid}
        assert actor in ray_procs and len(ray_procs) >= 5  # gcs, raylet, agents, workers, the watcher
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _gone(ray_procs, 10) == []
    finally:
        proc.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watcher reads /proc")
def test_the_watcher_leaves_after_a_clean_shutdown():
    proc, _ = _driver("shutdown")
    try:
        watchers = [p for p in tree([proc.pid]) if b"longshort.cluster.reaper" in open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(watchers) == 1  # started with the cluster (else the check below could not fail)
        assert proc.stdout.readline().strip() == "down"
        assert _gone(watchers, 10) == []
        assert proc.poll() is None  # the driver itself lives on
    finally:
        proc.kill()
