"""One process at a time per run directory: ``runs/<name>/.lock``, held for the command's whole life.

The lock is an advisory ``flock`` on the file: the kernel releases it when the holder exits by any means (a SIGKILL
included), so there is no stale lock to clean up after a crash. The file also names the holder (pid, host, command,
start time) so that a refused second command can say who has the directory. Ray workers and spawned trainers are
started by exec, so they never inherit the descriptor (Python opens files non-inheritable); a child forked without
exec would keep the directory locked until it exits, which is the safe side.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from longshort.core.errors import LongshortError

LOCK = ".lock"


class RunLock:
    """``with RunLock(run_dir):`` -- refuse at once (``LongshortError`` naming the holder) if another process holds it."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise LongshortError(
                f"{self.path.parent} is in use by another longshort command ({holder}); wait for it to finish or stop "
                "it, or give this run another name (name=...)") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an unlocked file names nobody
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on {info['host']}, `{info['command']}`, since {info['started']}"
    except (ValueError, KeyError):
        return "holder unknown"
