"""A local Ray cluster dies with the command that started it: SIGKILL of the driver leaves no Ray process behind
(the raylet's agents used to linger for a minute), and a clean ray.shutdown() lets the watcher go too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from builders import listening_addresses, loopback

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


def test_a_local_cluster_gets_a_token_of_its_own_and_the_home_stays_clean(tmp_path):
    """Without RAY_AUTH_MODE, the cluster `longshort` starts keeps token auth with a token made for this command:
    no notice, no ~/.ray/auth_token (after which a later `ray start` would demand that token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    short_tmp = tempfile.mkdtemp(prefix="ls-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    env.update(HOME=str(tmp_path), TMPDIR=short_tmp)  # a fresh <tmp>/ray too: no earlier cluster to join
    code = ("import os\nfrom longshort.cluster.reaper import start_ray\nstart_ray(num_cpus=1)\nimport ray\n"
            "f = ray.remote(lambda: os.environ['RAY_AUTH_MODE'])\nprint(ray.get(f.remote()))\nray.shutdown()")
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    finally:
        shutil.rmtree(short_tmp, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "token"  # the workers run with token auth on
    assert not (tmp_path / ".ray").exists() and "Token authentication is enabled" not in run.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_local_cluster_listens_on_loopback_only_and_ray_tools_reach_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    short_tmp = tempfile.mkdtemp(prefix="ls-", dir="/tmp")
    env.update(HOME=str(tmp_path), TMPDIR=short_tmp)
    code = ("import logging, os, sys, time\nlogging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
            "from longshort.cluster.reaper import start_ray\nstart_ray(num_cpus=1)\nimport ray\n"
            "@ray.remote(num_cpus=0)\nclass Probe:\n    def pid(self): return os.getpid()\n"
            "p = Probe.remote()\nprint('actor', ray.get(p.pid.remote()), flush=True)\ntime.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        lines = []
        while not (lines and lines[-1].startswith("actor")):
            lines.append(proc.stdout.readline().strip())
            assert lines[-1] or proc.poll() is None, "\n".join(lines)
        listening = listening_addresses(tree([proc.pid]))
        assert len(listening) >= 3, listening  # gcs, raylet, the workers at least
        assert all(loopback(ip) for ips in listening.values() for ip in ips), listening
        hint = next(line for line in lines if "inspect it with:" in line).split("inspect it with: ", 1)[1]
        prefix, command = hint.split(" ray ", 1)  # "VAR=value ... ray list actors --address 127.0.0.1:PORT"
        given = dict(a.split("=", 1) for a in prefix.split())
        assert given["RAY_AUTH_MODE"] == "token" and os.stat(given["RAY_AUTH_TOKEN_PATH"]).st_mode & 0o077 == 0
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        listed = subprocess.run([ray_cli, *command.split()], capture_output=True, text=True, timeout=120,
                                env={**env, **given})  # the logged command, from another shell
        assert listed.returncode == 0 and "Probe" in listed.stdout, listed.stderr[-2000:]
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(short_tmp, ignore_errors=True)
