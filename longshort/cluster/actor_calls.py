"""What the driver reports when a policy's actor dies, crashes or hangs (used by ``PolicyGroup.gather``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from longshort.core.errors import LongshortError

FailureKind = Literal["died", "timeout", "error"]
COLLECTIVE_GRACE_S = 10.0  # after one rank's user error, how long the others get to finish before the group is killed


class ActorFailure(LongshortError):
    """An actor of a policy died, crashed or hung; the group's actors have been stopped.

    ``role`` ("long"/"short"), ``actor`` (e.g. "long/rank1"), ``kind`` (died/timeout/error), ``cause`` (text),
    ``during`` (the call), ``checkpoint`` (last good one, if any), ``pending`` (actors still busy then), ``node``
    (the Ray node the actor ran on: a lost node shows as its actors dying).
    """

    def __init__(self, role: str, actor: str, kind: FailureKind, cause: str, during: str = "",
                 checkpoint: str | None = None, pending: list[str] | None = None, node: str | None = None):
        self.role, self.actor, self.kind, self.cause, self.node = role, actor, kind, cause, node
        self.during, self.checkpoint, self.pending = during, checkpoint, list(pending or [])
        what = {"died": "died", "timeout": "did not answer in time", "error": "failed"}[kind]
        others = [p for p in self.pending if p != actor]
        also = f" (so did {', '.join(others)})" if kind == "timeout" and others else ""
        ckpt = (f"last good checkpoint: {checkpoint}; restart from it" if checkpoint
                else "no checkpoint was saved in this run yet")
        on = f" (on node {node})" if node else ""
        super().__init__(f"policy '{role}': actor {actor} {what}{f' during {during}' if during else ''}{also}: "
                         f"{cause}{on}. All actors of role '{role}' were stopped; {ckpt}")

    def __reduce__(self):
        return (ActorFailure, (self.role, self.actor, self.kind, self.cause, self.during, self.checkpoint,
                               self.pending, self.node))


@dataclass
class Member:
    name: str  # e.g. "long/rank0", "short/engine1"
    handle: Any  # ray.actor.ActorHandle
    kind: Literal["rank", "engine"]
    index: int


def error_summary(err: BaseException, lines: int = 12) -> str:
    """The end of an error's text (a remote traceback ends with the actual error)."""
    text = str(err).strip()
    parts = text.splitlines()
    return text if len(parts) <= lines else "\n".join(["...", *parts[-lines:]])


def died_summary(err: BaseException) -> str:
    """Ray's death reports run to paragraphs: keep the kind and the exit detail."""
    text = " ".join(str(err).split())
    detail = text.partition("Worker exit detail:")[2].strip() or text
    return f"{type(err).__name__}: {detail[:240]}{'...' if len(detail) > 240 else ''}"


def dead_members(members: list[Member], wait_s: float = 3.0) -> list[str]:
    """Names of the actors that are gone (a busy or hung one is not), asked with one ping each."""
    import ray
    from ray.exceptions import RayActorError

    pings = {m.handle.ping.remote(): m.name for m in members}
    ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=wait_s)
    dead = set()
    for ref in ready:
        try:
            ray.get(ref)
        except RayActorError:
            dead.add(pings[ref])
    return [m.name for m in members if m.name in dead]
