"""Joining a running Ray cluster is said and bounded: a stale ``ray start`` file or an address nothing answers on stops
the command with what named it and the fix, instead of Ray retrying the GCS forever; ``local`` starts its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from longshort.cluster.join import Target, current_cluster_file, reachable, target

START = ("import logging\nlogging.basicConfig(level=logging.INFO)\n"
         "from longshort.cluster.reaper import start_ray\n"
         "from longshort.core.errors import LongshortError\n"
         "try:\n    start_ray(None, num_cpus=1, include_dashboard=False)\n"
         "except LongshortError as e:\n    print('ERROR', e); raise SystemExit(2)\n"
         "import ray\nprint('STARTED', ray.get_runtime_context().gcs_address); ray.shutdown()\n")


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.fixture
def short_tmp():
    """Ray's socket paths live under TMPDIR and may not exceed 107 bytes: a short directory, not pytest's."""
    import shutil
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="lsj-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _start(tmp_path, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    full.update(TMPDIR=str(tmp_path), LONGSHORT_RAY_JOIN_TIMEOUT_S="3", **env)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", START], env=full, capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - t0


def test_a_stale_ray_start_file_stops_the_command_naming_the_file_and_the_fix(short_tmp):
    tmp_path = short_tmp
    stale = tmp_path / "ray" / "ray_current_cluster"
    stale.parent.mkdir()
    stale.write_text(f"127.0.0.1:{_dead_port()}\n")
    done, seconds = _start(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the Ray cluster at '127.0.0.1:" in done.stdout and f"named by {stale}, written by `ray start`" in done.stdout
    assert "remove the file (`ray stop` does)" in done.stdout and "topology.ray_address=local" in done.stdout
    assert "joining the Ray cluster at 127.0.0.1:" in done.stderr  # said before trying
    assert seconds < 60


def test_a_dead_ray_address_is_named_and_local_starts_a_cluster_of_its_own(short_tmp):
    tmp_path = short_tmp
    done, _ = _start(tmp_path, RAY_ADDRESS=f"127.0.0.1:{_dead_port()}")
    assert done.returncode == 2 and "(named by the RAY_ADDRESS variable) does not answer" in done.stdout
    stale = tmp_path / "ray" / "ray_current_cluster"
    stale.parent.mkdir()
    stale.write_text(f"127.0.0.1:{_dead_port()}\n")
    done, _ = _start(tmp_path, RAY_ADDRESS="local")  # the stale file is not consulted
    assert done.returncode == 0 and "STARTED 127.0.0.1:" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("address, env, expected", [
    (None, {}, None),
    ("local", {"RAY_ADDRESS": "10.0.0.1:6379"}, None),
    ("10.0.0.2:6379", {}, Target("10.0.0.2:6379", "topology.ray_address", "")),
    (None, {"RAY_ADDRESS": "ray://head:10001"}, Target("ray://head:10001", "the RAY_ADDRESS variable", "")),
])
def test_what_names_the_cluster(monkeypatch, tmp_path, address, env, expected):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    got = target(address)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert (got.address, got.source) == (expected.address, expected.source)


def test_reachable_answers_for_a_listening_port_and_not_for_a_closed_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert reachable(f"127.0.0.1:{s.getsockname()[1]}", 2.0)
    assert not reachable(f"127.0.0.1:{_dead_port()}", 0.5)


@pytest.mark.parametrize("env", [{}, {"TMPDIR": "/tmp/lsj-t"}, {"RAY_TMPDIR": "/tmp/lsj-r", "TMPDIR": "/tmp/lsj-t"}])
def test_the_current_cluster_file_is_where_ray_looks(monkeypatch, env):
    """The file a bare ``ray.init()`` joins from: one process per worker of a parallel test run (or per user) can
    point Ray at a temp directory of its own with RAY_TMPDIR; the join check must read the same file Ray reads."""
    from ray._common.utils import get_ray_address_file

    for k in ("RAY_TMPDIR", "TMPDIR"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert str(current_cluster_file()) == get_ray_address_file(None)
