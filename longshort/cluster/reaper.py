"""The local Ray cluster a command starts dies with the command, even by SIGKILL.

Ray stops its raylet and GCS with the driver, but the raylet's agents (dashboard and runtime-env agents) then spend
about a minute trying to report to the dead GCS, and a killed driver's workers linger a few seconds. ``start_ray``
launches this watcher in its own session (``python -m longshort.cluster.reaper DRIVER_PID ROOT_PID...``): every
half second it notes the Ray processes the driver started (the roots and their descendants, with start times so a
reused pid is never hit); when the driver is gone it SIGKILLs what it noted and exits. It also exits once every
root is gone (``ray.shutdown()`` stopped them cleanly).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

TICK_S = 0.5
log = logging.getLogger("longshort")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[1]), int(fields[19])) if fields[0] != "Z" else None


def tree(roots: list[int]) -> dict[int, int]:
    """``{pid: start time}`` of the live ``roots`` and all their descendants."""
    parent: dict[int, int] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parent[int(entry)], started[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [r for r in roots if r in started]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out[pid] = started[pid]
            todo += children.get(pid, [])
    return out


def watch(driver: int, roots: list[int]) -> None:
    noted: dict[int, int] = {}
    driver_start = _stat(driver)
    while True:
        now = _stat(driver)
        if now is None or (driver_start is not None and now[1] != driver_start[1]):
            for pid, start in noted.items():
                st = _stat(pid)
                if st is not None and st[1] == start:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            return
        noted = tree(roots)
        if not any(r in noted for r in roots):
            return
        time.sleep(TICK_S)


def joins_cluster(address: str | None = None) -> bool:
    """Will ``ray.init(address)`` join a running cluster (an address, ``RAY_ADDRESS``, or ``ray start``'s
    ``/tmp/ray/ray_current_cluster``) rather than start one of its own?"""
    from longshort.cluster.join import target

    return target(address) is not None


def session_token(address: str | None = None) -> None:
    """Give a local cluster this command starts a token of its own, passed to Ray's processes in the environment.

    Ray's default (token auth with a generated token) prints a notice and writes ``~/.ray/auth_token``, after which a
    later ``ray start`` demands that token. Left to Ray when the user set ``RAY_AUTH_MODE`` (or a token), when
    ``ray.init`` will join a cluster (``RAY_ADDRESS``, or ``ray start``'s ``/tmp/ray/ray_current_cluster``), or
    when ray is already imported: it reads the mode once, at import, so the CLI calls this before anything else.
    """
    env = os.environ
    if "ray" in sys.modules or joins_cluster(address) or any(
            k in env for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def loopback_only() -> None:
    """Make the local cluster's node address 127.0.0.1, so its servers bind to loopback. ``ray.init`` turns a given
    ``_node_ip_address`` of 127.0.0.1 into the machine's reachable address; Ray keeps loopback only where clusters
    are off (its macOS/Windows default), which this switch turns on: read by Ray's processes from the environment,
    and by this one, where ray may already be imported, from the constant."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def start_ray(address: str | None = None, **kwargs) -> None:
    """``ray.init``. A cluster this process starts locally listens on loopback only (``127.0.0.1``: nothing of a
    laptop run is reachable from the network), gets a token of its own (``session_token``, saved in Ray's session
    directory for ``ray list actors``, whose command is logged) and a watcher that stops it if this process dies.
    Joining a running cluster keeps that cluster's own settings."""
    session_token(address)
    import ray

    local = not joins_cluster(address)
    if not local:
        from longshort.cluster.join import announce

        announce(address)  # one line saying which cluster and why; stops when it does not answer
    if local:
        loopback_only()
        # Ray starts its workers at nice 15 (background work); here they are the training ranks and engines, which
        # ran at the command's own priority before they became actors. A cluster keeps its own setting.
        os.environ.setdefault("RAY_worker_niceness", "0")
    kwargs.setdefault("include_dashboard", local)  # on 127.0.0.1: `ray list actors` and the dashboard need it
    context = ray.init(address=address, ignore_reinit_error=True, **kwargs)
    if not local:
        return
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None:
        return
    _say_how_to_inspect(node, getattr(context, "dashboard_url", None))
    if not sys.platform.startswith("linux"):
        return
    roots = [info.process.pid for infos in node.all_processes.values() for info in infos]
    if roots:  # the processes this driver started
        subprocess.Popen([sys.executable, "-m", "longshort.cluster.reaper", str(os.getpid()), *map(str, roots)],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, close_fds=True)


def _say_how_to_inspect(node, dashboard_url: str | None) -> None:
    """Log the command that reaches this cluster from another shell: Ray's CLI must also keep to loopback, and
    carry the cluster's token (saved, owner-only, in Ray's session directory)."""
    env = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token and os.environ.get("RAY_AUTH_MODE") == "token":
        path = Path(node.get_session_dir_path()) / "longshort_auth_token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        env += f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={path} "
    where = f"; dashboard http://{dashboard_url}" if dashboard_url else ""
    log.info("local Ray cluster on 127.0.0.1 only%s; inspect it with: %sray list actors --address %s", where, env,
             node.address)


if __name__ == "__main__":
    watch(int(sys.argv[1]), [int(p) for p in sys.argv[2:]])
