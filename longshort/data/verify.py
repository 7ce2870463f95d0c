"""Is a model's final answer the gold one? For rewards and evaluation.

``judge``/``verify`` take the final answer out of a response (``answers.extract_answer``) and compare it with the
gold: a multiple-choice gold by letter or option text, text by one normalisation of both sides, and two math
answers with math-verify (symbolic and numeric equivalence, sets, intervals, matrices, units, percent, degrees).

Why a process pool: math-verify bounds its sympy work with ``signal.alarm``, which only works in the
main thread, and even there cannot interrupt a long C-level computation (``9^{9^{9^9}}`` hangs in
big-integer arithmetic). Here math-verify runs with its own timeouts off, in a few long-lived worker
processes; the caller waits on a pipe with a deadline and kills and replaces a worker that runs
late. That is safe from any thread, a Ray actor or an asyncio executor, a hung check costs one
worker restart (about 0.2 s with the fork server), and a batch is checked on several cores at once.
A check that times out or whose worker dies counts as wrong and is counted in ``Verifier.counts``.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import types
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, field, replace
from typing import Literal

from longshort.data.answers import (
    MultipleChoice,
    brace_exponents,
    choice_letter,
    clean,
    extract_answer,
    is_math,
    picked_letter,
    plain_text,
)

__all__ = ["MultipleChoice", "Verdict", "Verifier", "VerifyConfig", "extract_answer", "judge", "shared_verifier",
           "verify"]

log = logging.getLogger("longshort")

Gold = str | int | float | MultipleChoice
Reason = Literal["correct", "wrong", "no_answer", "cut", "timeout", "error"]
_WORKER_START_TIMEOUT_S = 120.0  # import of sympy/math-verify on a loaded machine; not part of a check's limit


@dataclass
class VerifyConfig:
    """How answers are checked (config section ``verify``)."""

    timeout_s: float = field(default=5.0, metadata={"gt": 0})  # wall-clock limit of one equivalence check
    workers: int = field(default=2, metadata={"ge": 1})  # checker processes (checks run in parallel up to this)
    # A prediction with no \boxed{} or answer cue is taken whole as the answer only if it is one line this short,
    # so a long unfinished reasoning text never passes by containing the right number somewhere.
    bare_answer_max_chars: int = field(default=64, metadata={"ge": 0})
    start_method: Literal["forkserver", "spawn"] = "forkserver"


@dataclass(frozen=True)
class Verdict:
    answer: str | None  # the answer extracted from the prediction (None: none found)
    correct: bool
    reason: Reason
    detail: str = ""


# -------------------------------------------------------------------------------------------------- checking


def _equivalent(pred: str, gold: str) -> bool:
    """math-verify's equivalence of two bare answers; runs inside a worker (no timeouts of its own)."""
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    return bool(gold_parsed and pred_parsed) and verify(gold_parsed, pred_parsed, timeout_seconds=None)


def _serve(conn) -> None:
    """Worker loop: answer (pred, gold) requests until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then kills us
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silence "timeout is disabled" (we time out outside)
    _equivalent("1", "1")  # import and warm up math-verify before saying ready: start-up never eats a check's limit
    conn.send("ready")
    while True:
        try:
            pred, gold = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", _equivalent(pred, gold)))
        except Exception as exc:  # noqa: BLE001 - report any failure of one check and keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _WorkerDied(RuntimeError):
    pass


class _TimedOut(Exception):  # not TimeoutError: that is an OSError, which means a dead pipe here
    pass


_START_LOCK = threading.Lock()


def _start_without_main(proc) -> None:
    """Start a worker (and, the first time, the fork server) without the parent's ``__main__``: multiprocessing
    re-runs the parent's script in every child to find the target, which repeats a user's script that lacks an
    ``if __name__ == "__main__":`` guard and breaks under a notebook or stdin. The worker only runs ``_serve`` from
    this module, so it never needs that script."""
    with _START_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            proc.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main


class _Worker:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="longshort-verify")
        _start_without_main(self.proc)
        child.close()
        try:
            if not self.conn.poll(_WORKER_START_TIMEOUT_S):
                raise _WorkerDied(f"verify worker did not start within {_WORKER_START_TIMEOUT_S:.0f}s")
            self.conn.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise _WorkerDied(f"verify worker exited at start (exit code {self.proc.exitcode})") from exc
        except _WorkerDied:
            self.kill()
            raise

    def ask(self, pred: str, gold: str, timeout_s: float) -> tuple[str, object]:
        try:
            self.conn.send((pred, gold))
            if not self.conn.poll(timeout_s):
                raise _TimedOut
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise _WorkerDied(f"verify worker died (exit code {self.proc.exitcode})") from exc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class Verifier:
    """Checks answers in a small pool of worker processes; thread-safe, one per process is enough.

    ``counts`` tallies verdict reasons (correct/wrong/no_answer/timeout/error) for logging.
    """

    def __init__(self, config: VerifyConfig | None = None) -> None:
        self.config = config or VerifyConfig()
        self.counts: Counter[str] = Counter()
        self._ctx = mp.get_context(self.config.start_method)
        if self.config.start_method == "forkserver":
            # Workers fork from a server that has math-verify imported: a replacement is ready in ~0.2 s, not ~1 s.
            self._ctx.set_forkserver_preload(["longshort.data.verify", "math_verify"])
        self._reset()

    def _reset(self) -> None:
        # Also run in a child forked after use: the pipes and any held lock belong to the parent.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle: list[_Worker] = []
        self._slots = threading.BoundedSemaphore(self.config.workers)

    def judge(self, prediction: str, gold: Gold, *, timeout_s: float | None = None) -> Verdict:
        """Is the final answer in ``prediction`` (a full response or a bare answer) equal to ``gold``?"""
        if os.getpid() != self._pid:
            self._reset()
        answer = extract_answer(prediction)
        if answer is None:
            bare = prediction.strip()
            if bare and "\n" not in bare and len(bare) <= self.config.bare_answer_max_chars:
                answer = clean(bare) or None
        verdict = Verdict(None, False, "no_answer") if answer is None else self._compare(answer, gold, timeout_s)
        with self._lock:
            self.counts[verdict.reason] += 1
        return verdict

    def _compare(self, answer: str, gold: Gold, timeout_s: float | None) -> Verdict:
        if isinstance(gold, MultipleChoice):
            ok = gold.picked(answer) == gold.letter
        elif (letter := choice_letter(gold := str(gold).strip())) is not None:
            ok = picked_letter(answer) == letter
        elif plain_text(answer) == plain_text(gold):
            ok = True  # one normalisation for both sides ("Cold medium." is "Cold  medium"): no math-verify needed
        elif not (is_math(answer) and is_math(gold)):
            return Verdict(answer, False, "wrong", "compared as text")  # math-verify would read numbers in words
        else:
            return self._check(brace_exponents(answer), brace_exponents(gold),
                               self.config.timeout_s if timeout_s is None else timeout_s)
        return Verdict(answer, ok, "correct" if ok else "wrong")

    def verify(self, prediction: str, gold: Gold, *, timeout_s: float | None = None) -> bool:
        return self.judge(prediction, gold, timeout_s=timeout_s).correct

    def judge_many(
        self, predictions: Sequence[str], golds: Sequence[Gold], *, finished: Sequence[bool] | None = None,
        timeout_s: float | None = None,
    ) -> list[Verdict]:
        """Judge pairs in parallel on all workers; order is kept. ``finished``: whether each response ended on its
        own; one cut at its length limit is wrong (reason ``cut``, its extracted answer kept for the record), the
        one rule for every system, single model or team, in every stage."""
        if len(predictions) != len(golds) or (finished is not None and len(finished) != len(golds)):
            raise ValueError(f"judge_many: {len(predictions)} predictions, {len(golds)} gold answers"
                             + ("" if finished is None else f", {len(finished)} finished flags"))
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="longshort-verify") as pool:
            verdicts = list(pool.map(lambda pg: self.judge(*pg, timeout_s=timeout_s),
                                     zip(predictions, golds, strict=True)))
        if finished is None:
            return verdicts
        return [v if done else replace(v, correct=False, reason="cut", detail="cut at its length limit")
                for v, done in zip(verdicts, finished, strict=True)]

    def _check(self, answer: str, gold: str, timeout_s: float) -> Verdict:
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            try:
                worker = worker or self._new_worker()
                status, value = worker.ask(answer, gold, timeout_s)
            except _TimedOut:
                log.warning("answer check timed out after %.1fs (counted wrong): %.80r vs gold %.80r",
                            timeout_s, answer, gold)
                worker.kill()
                return Verdict(answer, False, "timeout", f"no result within {timeout_s:.1f}s")
            except _WorkerDied as exc:
                if worker is not None:
                    worker.kill()
                log.warning("answer check failed (counted wrong): %s", exc)
                return Verdict(answer, False, "error", str(exc))
            with self._lock:
                self._idle.append(worker)
        if status == "error":
            return Verdict(answer, False, "error", str(value))
        return Verdict(answer, bool(value), "correct" if value else "wrong")

    def _new_worker(self) -> _Worker:
        try:
            return _Worker(self._ctx)
        except ChildProcessError:
            # This process was forked from one that runs a fork server, which is not this process's child and
            # cannot serve it: start workers from scratch instead.
            self._ctx = mp.get_context("spawn")
            return _Worker(self._ctx)

    def close(self) -> None:
        """Stop the workers (a later check starts new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        if os.getpid() == self._pid:
            for worker in idle:
                worker.kill()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: dict[tuple, Verifier] = {}
_shared_lock = threading.Lock()


def shared_verifier(config: VerifyConfig | None = None) -> Verifier:
    """The process-wide verifier for ``config`` (created on first use, closed at exit)."""
    config = config or VerifyConfig()
    key = astuple(config)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Verifier(config)
        return _shared[key]


@atexit.register
def _close_shared() -> None:
    for verifier in _shared.values():
        verifier.close()


def judge(
    prediction: str, gold: Gold, *, timeout_s: float | None = None, config: VerifyConfig | None = None
) -> Verdict:
    """Judge one prediction against ``gold`` with the shared verifier (see ``Verifier.judge``)."""
    return shared_verifier(config).judge(prediction, gold, timeout_s=timeout_s)


def verify(
    prediction: str, gold: Gold, *, timeout_s: float | None = None, config: VerifyConfig | None = None
) -> bool:
    """True when the final answer in ``prediction`` equals ``gold``; a timed-out check is False."""
    return judge(prediction, gold, timeout_s=timeout_s, config=config).correct
