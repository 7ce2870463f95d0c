"""A tiny run directory for the RL tests: a pair of small Qwen2 policies that speak the protocol, and problems.

The policies are a random tiny model taught the pair format for a few seconds (plain torch, no DeepSpeed): the long
role writes one thought and hands off, the short role writes a step and a ``\\boxed{}`` answer. Sampling at
temperature 1 then gives finished, cut and wrong episodes in one group, so rewards and advantages are not all zero.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from _sft_fixtures import build_model_dir

from longshort.engines.base import Engine, GenerationRequest, GenerationResult, Sample
from longshort.protocol import Message, render

OPS = {"add": ("Add", "+", lambda a, b: a + b), "mul": ("Multiply by", "*", lambda a, b: a * b)}


def problems(n: int, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """(problem, answer, long thought, short answer turn)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        word, sym, fn = OPS[rng.choice(sorted(OPS))]
        q = f"Begin with {a}. {word} {b}. What is the result?"
        out.append((q, str(fn(a, b)), f"compute {a} {sym} {b}", f"{a} {sym} {b} = {fn(a, b)} so \\boxed{{{fn(a, b)}}}"))
    return out


def write_problems(path: Path, items) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, item in enumerate(items):
            f.write(json.dumps({"id": f"{path.stem}-{i}", "problem": item[0], "answer": item[1]}) + "\n")
    return path


def _teach_format(model_dir: Path, items, steps: int, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = []
    for q, _, thought, answer in items:
        r = render([Message("user", q), Message("long", thought), Message("short", answer)], tok)
        rows.append((r.ids, r.loss_mask({"long", "short"})))
    width = max(len(i) for i, _ in rows)
    ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in rows])
    mask = torch.tensor([m + [0] * (width - len(m)) for _, m in rows])
    attn = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                reduction="none")
        loss = (nll * mask[:, 1:].reshape(-1)).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(model_dir)


def build_run_dir(root: Path, steps: int = 60) -> Path:
    """``root/sft/{long,short}/model`` (format-taught pair) and ``root/bootstrap/data/{train,eval}.jsonl``."""
    import shutil

    items = problems(24)
    base = build_model_dir(root / "sft" / "long" / "model", seed=1)
    _teach_format(base, items, steps, seed=1)
    shutil.copytree(base, root / "sft" / "short" / "model")
    write_problems(root / "bootstrap" / "data" / "train.jsonl", items[:16])
    write_problems(root / "bootstrap" / "data" / "eval.jsonl", items[16:])
    return root


class ScriptedEngine(Engine):
    """A deterministic engine: ``reply(request) -> token ids`` (cut at ``max_tokens``), logprobs -0.1, -0.2, ...
    It checks the episode controller's bookkeeping exactly; the real engines are exercised in test_rl."""

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        out = []
        for r in requests:
            ids = list(self.reply(r))[: r.params.max_tokens]
            lps = [-0.1 * (k + 1) for k in range(len(ids))]
            out.append(GenerationResult(r.request_id, list(r.prompt_ids), [Sample(ids, "", lps, "stop")]))
        return out

    def update_weights(self, named_tensors, version: int) -> None:
        raise NotImplementedError
