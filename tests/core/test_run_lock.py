"""The run-directory lock, against real processes: a holder is named, a SIGKILLed holder frees the directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from longshort.core.errors import LongshortError
from longshort.core.run_lock import LOCK, RunLock

HOLD = "import sys, time; from longshort.core.run_lock import RunLock\nwith RunLock(sys.argv[1]):\n print('held', flush=True); time.sleep(600)"


def _holder(run_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_at_once_and_named(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        t0 = time.perf_counter()
        with pytest.raises(LongshortError, match=rf"run is in use by another longshort command \(pid {proc.pid} on "):
            RunLock(tmp_path / "run").__enter__()
        assert time.perf_counter() - t0 < 1.0
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = _holder(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with RunLock(tmp_path / "run"):  # the kernel released the flock with the process
        assert str(os.getpid()) in (tmp_path / "run" / LOCK).read_text()
    assert (tmp_path / "run" / LOCK).read_text() == ""  # released: names nobody
    with RunLock(tmp_path / "run"), pytest.raises(LongshortError, match="in use"):
        RunLock(tmp_path / "run").__enter__()  # held in this process: a second take is refused too
