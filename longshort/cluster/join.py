"""Joining a running Ray cluster is said, and bounded.

``ray.init`` joins whatever cluster its address names: ``topology.ray_address``, the ``RAY_ADDRESS`` variable, or
(with neither) the file ``ray start`` leaves in Ray's temp directory (``/tmp/ray/ray_current_cluster``). A stale file
from a crashed ``ray start``, or an address nothing answers on, makes Ray retry the GCS forever. So before joining,
one line says which cluster and what named it, and an address that does not accept a connection within
``LONGSHORT_RAY_JOIN_TIMEOUT_S`` (30 s) stops the command with what named it and the fix. ``local`` (as
``topology.ray_address`` or ``RAY_ADDRESS``) always starts a cluster of the command's own.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from longshort.core.errors import LongshortError

log = logging.getLogger("longshort")
LOCAL = "local"


def current_cluster_file() -> Path:
    """Where ``ray start`` records the cluster it started: Ray's temp directory is ``RAY_TMPDIR``, else ``TMPDIR``,
    else ``/tmp`` (Ray's own lookup; tests/cluster/test_join.py checks the two agree)."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / "ray" / "ray_current_cluster"


def join_timeout_s() -> float:
    return float(os.environ.get("LONGSHORT_RAY_JOIN_TIMEOUT_S", "30"))


@dataclass(frozen=True)
class Target:
    address: str  # host:port, or a ray:// URL
    source: str  # what named it
    fix: str  # how to run on a cluster of the command's own instead


def target(address: str | None) -> Target | None:
    """The cluster ``ray.init(address)`` would join, and what named it; None when it starts its own."""
    env = os.environ.get("RAY_ADDRESS")
    own = "for a cluster of this command's own set topology.ray_address=local (or RAY_ADDRESS=local)"
    if address == LOCAL or (not address and env == LOCAL):
        return None
    if address:
        source = "the RAY_ADDRESS variable" if address == env else "topology.ray_address"
    elif env:
        address, source = env, "the RAY_ADDRESS variable"
    elif current_cluster_file().exists():
        address, source = "auto", "nothing (Ray's default)"
    else:
        return None
    if address == "auto":
        path = current_cluster_file()
        if not path.exists():
            return Target(address, source, own)  # Ray says itself that it found no cluster
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        return Target(text, f"{path}, written by `ray start` ({source} said auto)",
                      f"if that cluster is gone, remove the file (`ray stop` does); {own}")
    return Target(address, source, own)


def reachable(address: str, timeout_s: float) -> bool:
    """Does anything accept a TCP connection at ``address`` (host:port or URL) within ``timeout_s``?"""
    url = urlparse(address if "://" in address else f"x://{address}")
    try:
        host, port = url.hostname, url.port or 6379
    except ValueError:
        return False
    if not host:
        return False
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def announce(address: str | None) -> None:
    """Say which running cluster ``ray.init(address)`` joins and why; stop when it does not answer."""
    t = target(address)
    if t is None or t.address == "auto":
        return
    log.info("joining the Ray cluster at %s (named by %s); %s", t.address, t.source, t.fix)
    timeout = join_timeout_s()
    if not reachable(t.address, timeout):
        raise LongshortError(f"the Ray cluster at {t.address!r} (named by {t.source}) does not answer: no connection "
                             f"in {timeout:.0f} s; start it, or {t.fix}")
