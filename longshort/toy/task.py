"""The embedded synthetic task: chained arithmetic word problems with R1-style long CoTs.

A problem is a start value and 2-5 operations (add / subtract / multiply) stated in words. A programmatic
teacher writes a long CoT of blank-line-separated thoughts, each tagged with its ground-truth role:

* ``essential``  -- a step that computes the next intermediate value (it carries the state forward),
* ``redundant``  -- restating, hesitation, double-checks, an alternative method, a recap (no new state),
* ``error``      -- a planted wrong step (the wrong operation applied), or a step computed from its wrong value,
* ``correction`` -- the reflection that catches the planted error and restores the right value.

Without the correction the chain ends on a wrong answer, so reflections truly matter. The tags stay in the
data for evaluating the importance scorer; models never see them. A concise reference CoT (one line per
step) is emitted as ``solution``. Besides train and eval, ``dev_split`` draws the dev problems the stages check
their outcome on. Everything is deterministic given ``TaskConfig.seed``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from longshort.core.config import PLACEMENT
from longshort.core.jsonl import write_jsonl
from longshort.data.protocol import THINK_CLOSE, THINK_OPEN

SEP = "\n\n"  # between thoughts inside <think>
TAGS = ("essential", "redundant", "error", "correction")
SOURCE = "longshort-arith"
SYMBOL = {"add": "+", "sub": "-", "mul": "×"}
# How the teacher opens a correction thought (to count self-corrections in generated text).
CORRECTION_RE = re.compile(r"Wait, (?:that is not right|I made a mistake)")


@dataclass
class TaskConfig:
    """Generator settings; the defaults are the tiny embedded run's task."""

    seed: int = 0
    n_train: int = 16000
    n_eval: int = 200
    # problems of the dev split (``dev_split``), which the stages' outcome checks read; drawn from its own random
    # stream, so train and eval stay as they were. Left out of stage fingerprints: it decides no training.
    n_dev: int = field(default=500, metadata={"ge": 0, PLACEMENT: True})
    min_steps: int = field(default=2, metadata={"ge": 1})
    max_steps: int = field(default=4, metadata={"ge": 1})
    # Difficulty by size of numbers: every intermediate value stays in [0, max_value];
    # add/subtract operands are in [1, max_operand], multiply factors in [2, max_factor].
    max_value: int = field(default=99, metadata={"ge": 10})
    max_operand: int = field(default=9, metadata={"ge": 1})
    max_factor: int = field(default=3, metadata={"ge": 2})
    error_rate: float = field(default=0.2, metadata={"ge": 0.0, "le": 1.0})  # P(a CoT has a planted wrong step)
    max_correction_delay: int = field(default=1, metadata={"ge": 0})  # steps a wrong value may propagate
    redundancy: float = field(default=0.7, metadata={"ge": 0.0, "le": 1.0})  # P(each optional redundant thought)
    # Two R1 habits on their own dials (None: derived from ``redundancy`` as before): a hesitation before a step,
    # and a final pass over the whole chain (R1's long CoTs are mostly such text; docs/bootstrap.md has their shares).
    hesitation: float | None = field(default=None, metadata={"ge": 0.0, "le": 1.0})  # None: 0.4 x redundancy
    reverify: float | None = field(default=None, metadata={"ge": 0.0, "le": 1.0})  # None: 0.5 x redundancy
    # R1 checks a step more than once: up to this many redundant thoughts follow each step, each with probability
    # ``redundancy`` (1: the data exactly as before; more: longer CoTs at the same concise solution).
    checks_per_step: int = field(default=1, metadata={"ge": 0, "le": 8})

    def validate(self) -> None:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps: {self.min_steps} > max_steps {self.max_steps}; accepted: min_steps <= max_steps")
        if self.max_operand >= self.max_value:
            raise ValueError(f"max_operand: {self.max_operand} must be below max_value {self.max_value}")
        if self.max_factor * 2 > self.max_value:
            raise ValueError(f"max_factor: {self.max_factor} too large for max_value {self.max_value}; "
                             "accepted: max_factor * 2 <= max_value")


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Op:
    kind: str  # add | sub | mul
    arg: int

    def apply(self, x: int) -> int:
        return x + self.arg if self.kind == "add" else x - self.arg if self.kind == "sub" else x * self.arg

    def expr(self, x: int, result: int) -> str:
        return f"{x} {SYMBOL[self.kind]} {self.arg} = {result}"


def _sample_op(rng: random.Random, x: int, cfg: TaskConfig) -> Op:
    """An operation whose result stays in [0, max_value]."""
    kinds = []
    if x + 1 <= cfg.max_value:
        kinds.append("add")
    if x >= 1:
        kinds.append("sub")
    if 1 <= x and 2 * x <= cfg.max_value:
        kinds.append("mul")
    kind = rng.choice(kinds)
    if kind == "add":
        return Op(kind, rng.randint(1, min(cfg.max_operand, cfg.max_value - x)))
    if kind == "sub":
        return Op(kind, rng.randint(1, min(cfg.max_operand, x)))
    return Op(kind, rng.randint(2, min(cfg.max_factor, cfg.max_value // x)))


# Wordings of an operation inside the problem statement (the model must map them to the symbol). The teacher
# quotes the problem's own wording in each step, which is what a reader does and what lets a small model find
# its place in the problem by matching text (an induction pattern) instead of counting operations.
_PHRASES = {
    "add": ["add {a}", "increase it by {a}", "add {a} more"],
    "sub": ["subtract {a}", "decrease it by {a}", "take away {a}"],
    "mul": ["multiply by {a}", "multiply it by {a}"],
}
_SPECIAL_MUL = {2: ["double it"], 3: ["triple it"]}
_OPENERS = ["Start with {x}.", "Begin with the number {x}.", "Take the number {x}."]
_QUESTIONS = ["What is the final number?", "What number do you get?", "What is the result?"]


def _phrase(rng: random.Random, op: Op) -> str:
    options = _PHRASES[op.kind] + (_SPECIAL_MUL.get(op.arg, []) if op.kind == "mul" else [])
    return rng.choice(options).format(a=op.arg)


def _statement(rng: random.Random, start: int, phrases: list[str]) -> str:
    if len(phrases) == 1:
        body = f"Then {phrases[0]}."
    else:
        body = f"First {phrases[0]}, " + "".join(f"then {p}, " for p in phrases[1:-1]) + f"and finally {phrases[-1]}."
    return f"{rng.choice(_OPENERS).format(x=start)} {body} {rng.choice(_QUESTIONS)}"


def _plain_ops(ops: list[Op]) -> str:
    words = {"add": "add {a}", "sub": "subtract {a}", "mul": "multiply by {a}"}
    items = [words[op.kind].format(a=op.arg) for op in ops]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- teacher


# A planted error confuses the operation (its arithmetic stays right): wrong arithmetic in the training text
# would teach a small model off-by-one sums, which is what it then writes.
_SLIPS = {"add": "sub", "sub": "add", "mul": "add"}


def _slip(x: int, op: Op, cfg: TaskConfig) -> Op | None:
    """The operation a careless solver applies instead of ``op`` at ``x``; None if it would go unnoticed."""
    wrong = Op(_SLIPS[op.kind], op.arg)
    value = wrong.apply(x)
    return wrong if 0 <= value <= cfg.max_value and value != op.apply(x) else None


def _redundant_after_step(rng: random.Random, x: int, op: Op, y: int) -> str:
    """A double-check, an alternative method, or a status recap of step ``x op = y`` (no new state).

    Half of them check by the inverse operation: redundant for the answer, yet more arithmetic practice per
    token for a small model than a verbatim repeat.
    """
    if rng.random() < 0.5:
        if op.kind == "mul":
            return f"Another way to see it: {op.arg} {SYMBOL[op.kind]} {x} = {y}, the same result."
        inverse = "-" if op.kind == "add" else "+"
        return f"Let me verify another way: {y} {inverse} {op.arg} = {x}. Good."
    return rng.choice([
        f"Wait, let me double-check that. {op.expr(x, y)}, yes.",
        f"So far we have {y}.",
        f"Hmm, is {op.expr(x, y)} right? Yes, it is.",
    ])


_HESITATIONS = [
    "Hmm, let me be careful with the next one.",
    "Okay, I should not rush this.",
    "Let me slow down and make sure I apply the right operation.",
]
_PLANS = [
    "Okay, I will apply the operations in order, one at a time.",
    "Alright, let me go step by step.",
    "So I need to work through each operation in order.",
]


def _step(i: int, phrase: str, expr: str) -> str:
    return f"Step {i + 1}: {phrase}, so {expr}."


def teacher(
    start: int, ops: list[Op], phrases: list[str], rng: random.Random, cfg: TaskConfig
) -> tuple[list[dict], dict]:
    """Tagged thoughts of a long CoT for ``start`` under ``ops`` (worded ``phrases``), plus meta on a planted error."""
    thoughts: list[dict] = []

    def add(text: str, tag: str) -> None:
        thoughts.append({"text": text, "tag": tag})

    if rng.random() < max(cfg.redundancy, 0.5):
        add(f"Let me restate the problem: start at {start}, then {_plain_ops(ops)}.", "redundant")
    if rng.random() < cfg.redundancy:
        add(rng.choice(_PLANS), "redundant")

    err_step = rng.randrange(len(ops)) if rng.random() < cfg.error_rate else None
    delay = 0
    if err_step is not None:
        delay = rng.randint(0, min(cfg.max_correction_delay, len(ops) - 1 - err_step))
    meta: dict = {"error_step": None}
    x = start
    i = 0
    while i < len(ops):
        op = ops[i]
        y = op.apply(x)
        if rng.random() < (cfg.redundancy * 0.4 if cfg.hesitation is None else cfg.hesitation):
            add(rng.choice(_HESITATIONS), "redundant")
        slip = _slip(x, op, cfg) if i == err_step else None
        if slip is not None:
            wrong = slip.apply(x)
            add(_step(i, phrases[i], slip.expr(x, wrong)), "error")
            # Propagate the wrong value for `delay` steps (while it stays in range), then catch it.
            chain, w = [], wrong
            for j in range(i + 1, i + 1 + delay):
                w_next = ops[j].apply(w)
                if not 0 <= w_next <= cfg.max_value:
                    break
                add(_step(j, phrases[j], ops[j].expr(w, w_next)), "error")
                chain.append(j)
                w = w_next
            used = f"I used {SYMBOL[slip.kind]} instead of {SYMBOL[op.kind]}. {op.expr(x, y)}, not {wrong}."
            fix = f"Wait, I made a mistake in step {i + 1}: {used}" if chain else f"Wait, that is not right: {used}"
            v = y
            for j in chain:
                v_next = ops[j].apply(v)
                fix += f" Redo step {j + 1}: {phrases[j]}, so {ops[j].expr(v, v_next)}."
                v = v_next
            add(fix + f" So we have {v}.", "correction")
            meta = {"error_step": i + 1, "wrong_value": wrong, "right_value": y, "delay": len(chain)}
            x = v
            i += 1 + len(chain)
            continue
        add(_step(i, phrases[i], op.expr(x, y)), "essential")
        for _ in range(cfg.checks_per_step):
            if rng.random() < cfg.redundancy:
                add(_redundant_after_step(rng, x, op, y), "redundant")
        x = y
        i += 1
    if rng.random() < (cfg.redundancy * 0.5 if cfg.reverify is None else cfg.reverify):  # copying a chain is error-prone
        chain_text, v = [], start
        for op in ops:
            chain_text.append(op.expr(v, op.apply(v)))
            v = op.apply(v)
        add(f"Let me go over the whole chain once more: {', '.join(chain_text)}. Everything checks out.", "redundant")
    add(f"So the final number is {x}.", "redundant")
    return thoughts, meta


def concise_cot(start: int, ops: list[Op]) -> str:
    lines, x = [], start
    for op in ops:
        lines.append(op.expr(x, op.apply(x)))
        x = op.apply(x)
    return "\n".join(lines) + f"\nThe final number is \\boxed{{{x}}}."


def long_cot(thoughts: list[dict], answer: str) -> str:
    body = SEP.join(t["text"] for t in thoughts)
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n\nThe final number is \\boxed{{{answer}}}."


def think_body(cot: str) -> str:
    """The text between ``<think>\\n`` and ``\\n</think>`` (what the thoughts concatenate to)."""
    start = cot.index(THINK_OPEN) + len(THINK_OPEN) + 1
    return cot[start : cot.index(THINK_CLOSE) - 1]


# --------------------------------------------------------------------------- datasets


def make_record(rng: random.Random, cfg: TaskConfig, rid: str) -> dict:
    n = rng.randint(cfg.min_steps, cfg.max_steps)
    start = rng.randint(1, cfg.max_value // 2)
    ops, x = [], start
    for _ in range(n):
        op = _sample_op(rng, x, cfg)
        ops.append(op)
        x = op.apply(x)
    phrases = [_phrase(rng, op) for op in ops]
    thoughts, err = teacher(start, ops, phrases, rng, cfg)
    answer = str(x)
    return {
        "id": rid,
        "problem": _statement(rng, start, phrases),
        "answer": answer,
        "solution": concise_cot(start, ops),
        "long_cot": long_cot(thoughts, answer),
        "thoughts": thoughts,
        "source": SOURCE,
        "meta": {"steps": n, "start": start, "ops": [[op.kind, op.arg] for op in ops], **err},
    }


_MAX_MISSES = 5000  # consecutive draws that repeat a held-out problem before giving up


def problem_key(rec: dict) -> str:
    """What makes two problems the same: the start value and the operations (their wording aside)."""
    return json.dumps([rec["meta"]["start"], rec["meta"]["ops"]])


def generate(cfg: TaskConfig) -> tuple[list[dict], list[dict]]:
    """(train, eval) records; eval problems are distinct and never appear in train (compared on the numbers)."""
    cfg.validate()
    rng = random.Random(f"longshort-task-{cfg.seed}")
    held_out: set[str] = set()
    splits: dict[str, list[dict]] = {"eval": [], "train": []}
    for split, n in (("eval", cfg.n_eval), ("train", cfg.n_train)):
        out, misses = splits[split], 0
        while len(out) < n:
            if misses > _MAX_MISSES:
                raise ValueError(f"n_{split}: cannot draw {n} {split} problems distinct from the held-out ones at "
                                 f"this difficulty (got {len(out)}); lower n_train/n_eval or raise max_steps/max_value")
            rec = make_record(rng, cfg, f"{split}-{len(out):06d}")
            key = problem_key(rec)
            if key in held_out:
                misses += 1
                continue
            misses = 0
            if split == "eval":
                held_out.add(key)
            out.append(rec)
    return splits["train"], splits["eval"]


def dev_split(cfg: TaskConfig, train: list[dict], held_out: list[dict]) -> list[dict]:
    """Up to ``cfg.n_dev`` dev problems, distinct from each other and from every train and eval problem, drawn from
    a random stream of their own (``generate``'s output does not change). Fewer when the task has too few problems
    left outside train and eval (a small, easy task): the caller says so."""
    rng = random.Random(f"longshort-task-{cfg.seed}-dev")
    taken = {problem_key(r) for r in train + held_out}
    out: list[dict] = []
    misses = 0
    while len(out) < cfg.n_dev and misses <= _MAX_MISSES:
        rec = make_record(rng, cfg, f"dev-{len(out):06d}")
        key = problem_key(rec)
        if key in taken:
            misses += 1
            continue
        misses = 0
        taken.add(key)
        out.append(rec)
    return out


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> None:
    """``python -m longshort.toy.task --out coldstart_data/sample.jsonl --n 20 --seed 0``"""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = TaskConfig(seed=args.seed, n_train=args.n, n_eval=0)
    train, _ = generate(cfg)
    write_jsonl(train, args.out)
    print(json.dumps({"out": args.out, "records": len(train), "config": asdict(cfg)}))


if __name__ == "__main__":
    main()
