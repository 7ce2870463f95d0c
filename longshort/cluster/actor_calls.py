"""What the driver reports when a policy's actor dies, crashes or hangs (used by ``PolicyGroup.gather``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from longshort.core.errors import LongshortError

FailureKind = Literal["died", "timeout", "error"]
COLLECTIVE_GRACE_S = 10.0  # after one rank's user error, how long the others get to finish before the group is killed
# What lowers the memory an actor holds at once (named in the out-of-memory message)
RL_MEMORY = ("rl.optim.micro_batch_logits_mb (a smaller logits budget: more, smaller micro-batches, the same update), "
             "rl.prompts_per_step or rl.group_size (fewer episodes a step), "
             "topology.<role>.engine_kwargs.max_batch_size (fewer rows decoded together), or rl.lora.<role> (LoRA: "
             "no optimizer state for the frozen weights)")
def sft_memory(key: str = "the stage's sft") -> str:
    """The settings of the SFT section ``key`` (e.g. ``sft.long``) that lower what a rank holds."""
    return (f"{key}.micro_batch_size or {key}.pack_tokens (smaller micro-batches; raise {key}.grad_accum to keep the "
            f"batch), {key}.max_len, {key}.gradient_checkpointing: true, or {key}.lora (no optimizer state for "
            "the frozen weights)")


SFT_MEMORY = sft_memory()
_OOM = re.compile(r"running low on memory|OutOfMemoryError|killed by the OOM killer", re.I)
_USED = re.compile(r"was ([\d.]+\s*[KMGT]?B) used / ([\d.]+\s*[KMGT]?B) limit")


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


def memory_note(text: str, lower: str) -> str:
    """For a worker Ray's memory monitor killed: that it ran out, the node's memory then, and ``lower`` (the
    settings that lower what it holds); "" for any other death."""
    if not _OOM.search(text):
        return ""
    used = _USED.search(text)
    had = f" with the node at {used.group(1)} used of {used.group(2)}" if used else ""
    return f"out of memory: Ray's memory monitor (or the kernel) killed it{had}; lower what it holds at once: {lower}"


def died_summary(err: BaseException, lower: str = RL_MEMORY) -> str:
    """Ray's death reports run to paragraphs: keep the kind and the exit detail (for a worker killed for memory:
    that, the memory it had and ``lower``, the settings that lower it)."""
    text = " ".join(str(err).split())
    oom = memory_note(text, lower)
    if oom:
        return f"{type(err).__name__}: {oom}"
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
