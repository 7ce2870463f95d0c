"""SFT examples: loading and validation, tokenization with role masks, and the batch plan.

File format (JSONL, one example per line)::

    {"id": "ex1", "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "train_roles": ["assistant"]}

``id`` defaults to ``<file>:<line>``, ``train_roles`` to ``["assistant"]``; ``meta`` may hold anything.
Masks come from ``protocol.render`` spans (content + terminator of each trained turn), never from
re-tokenized text. The batch plan depends only on example lengths, the seed and the epoch, so every
rank (and a resumed run) computes the same one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from longshort.core.errors import LongshortError, where
from longshort.core.jsonl import json_error_text
from longshort.data.protocol import CHAT_ROLES, Message, render, special_ids
from longshort.training.batch import Batch

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 10
_KEYS = {"id", "messages", "train_roles", "meta"}


@dataclass(frozen=True)
class SFTExample:
    id: str
    messages: list[Message]
    train_roles: tuple[str, ...] = ("assistant",)


def _check(ex: SFTExample, loc: str) -> list[str]:
    """Problems with one example, each naming ``loc`` and the fix."""
    errs = []
    if not ex.messages:
        return [f"{loc}: 'messages' is empty; give at least one user turn and one trained turn"]
    for i, m in enumerate(ex.messages):
        if m.role not in CHAT_ROLES:
            errs.append(f"{loc}: messages[{i}].role {m.role!r} is not a protocol role; use one of {', '.join(CHAT_ROLES)}")
        if not isinstance(m.content, str) or not m.content.strip():
            errs.append(f"{loc}: messages[{i}] (role {m.role!r}) has empty content; every turn needs text")
    if not ex.train_roles:
        errs.append(f"{loc}: 'train_roles' is empty; name the role(s) whose tokens are trained, e.g. [\"assistant\"]")
    present = {m.role for m in ex.messages}
    for r in ex.train_roles:
        if r not in CHAT_ROLES:
            errs.append(f"{loc}: train_roles has {r!r}, not a protocol role; use one of {', '.join(CHAT_ROLES)}")
        elif r not in present:
            errs.append(
                f"{loc}: train role {r!r} never appears in messages (roles present: {', '.join(sorted(present))}); "
                "fix train_roles or add that role's turn"
            )
    return errs


def _parse_line(obj, path: str, lineno: int) -> tuple[SFTExample | None, list[str]]:
    loc = where(path, lineno)
    if not isinstance(obj, dict):
        return None, [f"{loc}: each line must be a JSON object with 'messages', got {type(obj).__name__}"]
    unknown = set(obj) - _KEYS
    if unknown:
        return None, [f"{loc}: unknown key(s) {sorted(unknown)}; allowed keys are {sorted(_KEYS)}"]
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        return None, [f"{loc}: key 'messages' is missing or not a list; give a list of {{\"role\", \"content\"}}"]
    messages, errs = [], []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            errs.append(f"{loc}: messages[{i}] needs both 'role' and 'content', got {json.dumps(m)[:80]}")
        elif not isinstance(m["content"], str) or not isinstance(m["role"], str):
            errs.append(f"{loc}: messages[{i}] 'role' and 'content' must be strings")
        else:
            messages.append(Message(m["role"], m["content"]))
    roles = obj.get("train_roles", ["assistant"])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        errs.append(f"{loc}: 'train_roles' must be a list of role names, e.g. [\"assistant\"]")
        roles = []
    ex_id = obj.get("id", f"{path}:{lineno}")
    if errs:
        return None, errs
    ex = SFTExample(str(ex_id), messages, tuple(roles))
    return ex, _check(ex, loc)


def _raise(errs: list[str], what: str) -> None:
    shown = "\n  ".join(errs[:MAX_REPORTED_ERRORS])
    more = f"\n  ... and {len(errs) - MAX_REPORTED_ERRORS} more" if len(errs) > MAX_REPORTED_ERRORS else ""
    raise LongshortError(f"{len(errs)} problem(s) in {what}:\n  {shown}{more}")


def load_sft_jsonl(path: str | Path) -> list[SFTExample]:
    """Read and validate a JSONL file; all problems (up to 10 shown) are raised as one ``LongshortError``."""
    path = Path(path)
    if not path.exists():
        raise LongshortError(f"SFT data file {path} does not exist; check the data path in the config")
    examples, errs, seen = [], [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errs.append(f"{where(str(path), lineno)}: not valid JSON ({json_error_text(e)})")
                continue
            ex, line_errs = _parse_line(obj, str(path), lineno)
            errs += line_errs
            if ex is not None and not line_errs:
                if ex.id in seen:
                    errs.append(f"{where(str(path), lineno)}: id {ex.id!r} already used on line {seen[ex.id]}; "
                                "give every example a unique id")
                seen[ex.id] = lineno
                examples.append(ex)
    if errs:
        _raise(errs, str(path))
    if not examples:
        raise LongshortError(f"SFT data file {path} has no examples; add JSONL lines with 'messages'")
    return examples


def validate_examples(examples: Sequence[SFTExample]) -> None:
    """The same checks for in-memory examples (generated by other stages)."""
    errs: list[str] = []
    seen: set[str] = set()
    for ex in examples:
        errs += _check(ex, f"example {ex.id!r}")
        if ex.id in seen:
            errs.append(f"example {ex.id!r}: duplicate id; give every example a unique id")
        seen.add(ex.id)
    if errs:
        _raise(errs, "the SFT examples")
    if not examples:
        raise LongshortError("no SFT examples given")


# ---- tokenization ---------------------------------------------------------------------------------
@dataclass
class TokenizeStats:
    examples: int = 0  # kept
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_targets: int = 0  # truncation removed every trained token
    tokens: int = 0
    targets: int = 0

    def summary(self) -> str:
        return (f"{self.examples} examples kept ({self.tokens} tokens, {self.targets} trained); "
                f"{self.truncated} truncated, {self.dropped_overlong} dropped as over-long, "
                f"{self.dropped_no_targets} dropped with no trained token left after truncation")


@dataclass
class TokenizedSet:
    """Examples as flat arrays (cheap to pickle to ranks): example i is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray  # int32
    mask: np.ndarray  # uint8, 1 = trained target token
    offsets: np.ndarray  # int64, len n+1
    example_ids: list[str] = field(default_factory=list)
    # more forward() inputs per example, ragged (name -> (values int32, offsets int64)): a composite model's second
    # token sequence, say; ``collate`` right-pads each into ``Batch.model_inputs[name]`` and ``[name + "_mask"]``
    side: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.ids[a:b], self.mask[a:b]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for arr in (self.ids, self.mask, self.offsets):
            h.update(np.ascontiguousarray(arr).tobytes())
        for name in sorted(self.side):
            h.update(name.encode())
            for arr in self.side[name]:
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def with_side(self, name: str, rows: dict[str, Sequence[int]]) -> TokenizedSet:
        """This set plus the side input ``name``: ``rows[example id]`` for every kept example."""
        missing = [i for i in self.example_ids if i not in rows]
        if missing:
            raise LongshortError(f"side input {name!r} has no row for example(s) {missing[:5]}")
        parts = [np.asarray(rows[i], dtype=np.int32) for i in self.example_ids]
        offsets = np.cumsum([0] + [len(p) for p in parts], dtype=np.int64)
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return TokenizedSet(self.ids, self.mask, self.offsets, self.example_ids, {**self.side, name: (values, offsets)})


def tokenize_examples(
    examples: Iterable[SFTExample], tokenizer, max_len: int, overlong: Literal["truncate", "drop"]
) -> tuple[TokenizedSet, TokenizeStats]:
    """Render each example and mask its ``train_roles`` spans; over-long ones truncated or dropped, counted."""
    special_ids(tokenizer)  # a clear error if the tokenizer lacks the protocol tokens
    stats = TokenizeStats()
    ids, masks, offsets, names = [], [], [0], []
    for ex in examples:
        r = render(ex.messages, tokenizer, finished=True)
        tok, mask = r.ids, r.loss_mask(frozenset(ex.train_roles))
        if len(tok) > max_len:
            if overlong == "drop":
                stats.dropped_overlong += 1
                continue
            stats.truncated += 1
            tok, mask = tok[:max_len], mask[:max_len]
            if not any(mask):
                stats.dropped_no_targets += 1
                continue
        ids.append(np.asarray(tok, dtype=np.int32))
        masks.append(np.asarray(mask, dtype=np.uint8))
        offsets.append(offsets[-1] + len(tok))
        names.append(ex.id)
        stats.examples += 1
        stats.tokens += len(tok)
        stats.targets += int(sum(mask))
    if stats.examples == 0:
        raise LongshortError(
            f"no SFT example is left after applying max_len={max_len} (overlong={overlong!r}): {stats.summary()}; "
            "raise sft.max_len or set sft.overlong: truncate"
        )
    data = TokenizedSet(np.concatenate(ids), np.concatenate(masks), np.asarray(offsets, dtype=np.int64), names)
    return data, stats


# ---- batch plan -----------------------------------------------------------------------------------
SORT_CHUNK = 64  # micro-batches' worth of examples sorted together: little padding, still shuffled


def plan_epoch(
    lengths: np.ndarray,
    epoch: int,
    seed: int,
    batching: Literal["bucket", "pack"],
    micro_batch_size: int,
    pack_tokens: int,
) -> list[list[int]]:
    """Micro-batches (lists of example indices) for one epoch, in training order.

    ``bucket``: ``micro_batch_size`` sequences of similar length per micro-batch (padded).
    ``pack``: one row per micro-batch filled first-fit with up to ``pack_tokens`` tokens.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    chunk = SORT_CHUNK * (micro_batch_size if batching == "bucket" else max(1, pack_tokens // max(1, int(lengths.mean()))))
    batches: list[list[int]] = []
    for c in range(0, len(perm), chunk):
        part = perm[c : c + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        if batching == "bucket":
            batches += [part[i : i + micro_batch_size].tolist() for i in range(0, len(part), micro_batch_size)]
        else:
            bins: list[list[int]] = []
            room: list[int] = []
            for idx in part.tolist():
                n = int(lengths[idx])
                for b, free in enumerate(room):
                    if n <= free:
                        bins[b].append(idx)
                        room[b] -= n
                        break
                else:
                    bins.append([idx])
                    room.append(pack_tokens - n)
            batches += bins
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def plan_steps(micro_batches: list[list[int]], world_size: int, grad_accum: int) -> list[list[list[list[int]]]]:
    """Group an epoch's micro-batches into optimizer steps: ``steps[s][rank]`` = that rank's micro-batches.

    The last step is filled with empty micro-batches (zero loss, but every rank still runs a forward,
    as ZeRO-3 requires) so no example is dropped. The plan only depends on ``world_size * grad_accum``.
    """
    per_step = world_size * grad_accum
    steps = []
    for s in range(0, len(micro_batches), per_step):
        chunk = micro_batches[s : s + per_step]
        chunk = chunk + [[] for _ in range(per_step - len(chunk))]
        steps.append([chunk[r * grad_accum : (r + 1) * grad_accum] for r in range(world_size)])
    return steps


def collate(data: TokenizedSet, indices: list[int], pad_id: int, packed: bool) -> Batch:
    """Build a micro-batch; an empty ``indices`` gives a one-token dummy with no targets."""
    if not indices:
        ids = torch.full((1, 1), pad_id, dtype=torch.long)
        return Batch(ids, torch.zeros((1, 1)), attention_mask=torch.ones((1, 1), dtype=torch.long))
    parts = [data.example(i) for i in indices]
    if packed:
        ids = torch.from_numpy(np.concatenate([p[0] for p in parts]).astype(np.int64))[None]
        mask = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.float32))[None]
        pos = torch.from_numpy(np.concatenate([np.arange(len(p[0])) for p in parts]))[None]
        mask[pos == 0] = 0.0  # a sequence's first token is never predicted from the previous sequence
        return Batch(ids, mask, attention_mask=None, position_ids=pos)
    width = max(len(p[0]) for p in parts)
    ids = torch.full((len(parts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(parts), width))
    attn = torch.zeros((len(parts), width), dtype=torch.long)
    for row, (t, m) in enumerate(parts):
        ids[row, : len(t)] = torch.from_numpy(t.astype(np.int64))
        mask[row, : len(t)] = torch.from_numpy(m.astype(np.float32))
        attn[row, : len(t)] = 1
    inputs = {}
    for name, (values, offsets) in data.side.items():
        rows = [values[offsets[i]:offsets[i + 1]] for i in indices]
        side = torch.full((len(rows), max(1, max(len(r) for r in rows))), pad_id, dtype=torch.long)
        side_mask = torch.zeros_like(side)
        for row, r in enumerate(rows):
            side[row, : len(r)] = torch.from_numpy(r.astype(np.int64))
            side_mask[row, : len(r)] = 1
        inputs[name], inputs[f"{name}_mask"] = side, side_mask
    return Batch(ids, mask, attention_mask=attn, model_inputs=inputs)
