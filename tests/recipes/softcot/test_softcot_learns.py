"""The projection learns, through the shared DeepSpeed SFT trainer, what only the soft thoughts can carry.

A "hidden operand" task on real tiny models: the LLM was taught ``Copy 7`` → ``7``; the assistant was taught
``Number 7`` → ``=7``, so its state at ``=`` predicts the digit. SoftCoT gives the LLM ``Copy <thought>`` and the
assistant ``Number 7`` ending at ``=``: the LLM can only answer through the projected thought. Trained, it does;
the LLM alone and the untrained projection stay near chance (1 in 10). Both models are bitwise unchanged, and the
checkpoints hold the projection only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import build_model_dir, teach, under_kernel_set

from longshort.cluster.sft_job import run_sft
from longshort.data.protocol import Message
from longshort.recipes.softcot.model import softcot_model, write_spec
from longshort.recipes.softcot.prompts import PromptConfig, assistant_prompt, llm_prompt
from longshort.training.sft import SFTConfig
from longshort.training.sft_data import TokenizedSet

FACTORY = "longshort.recipes.softcot.model:softcot_model"
DIGITS = [str(d) for d in range(10)]


def _set(tok, items: list[tuple[str, int]], cfg: PromptConfig, slot_a: int, slot_l: int) -> TokenizedSet:
    ids, masks, side = [], [], {}
    for name, d in items:
        prompt = llm_prompt(tok, cfg, "Copy", 1, slot_l)
        target = tok.encode(str(d), add_special_tokens=False) + [tok.eos_token_id]
        ids.append(np.asarray(prompt + target, dtype=np.int32))
        masks.append(np.asarray([0] * len(prompt) + [1] * len(target), dtype=np.uint8))
        side[name] = assistant_prompt(tok, cfg, f"Number {d}", 1, slot_a)
    offsets = np.cumsum([0] + [len(x) for x in ids], dtype=np.int64)
    return TokenizedSet(np.concatenate(ids), np.concatenate(masks), offsets, [n for n, _ in items]).with_side(
        "assistant_ids", side)


def _accuracy(model, tok, cfg, n: int, slot_a: int, slot_l: int) -> float:
    """Greedy next token after the LLM's prompt, over the 10 digits x 5 repeats (held-out order)."""
    hits = 0
    digit_ids = [tok.encode(d, add_special_tokens=False)[0] for d in DIGITS]
    for d in list(range(10)) * 5:
        ids = torch.tensor([llm_prompt(tok, cfg, "Copy", n, slot_l)])
        a_ids = torch.tensor([assistant_prompt(tok, cfg, f"Number {d}", 1, slot_a)]) if n else None
        with torch.no_grad():
            logits = model(ids, torch.ones_like(ids), assistant_ids=a_ids).logits[0, -1]
        hits += int(int(logits[digit_ids].argmax()) == d)
    return hits / 50


def _train(root) -> dict:
    root = Path(root)
    llm, assistant = build_model_dir(root / "llm", seed=0), build_model_dir(root / "assistant", seed=1)
    teach(llm, [([Message("user", f"Copy {d}"), Message("assistant", d)], {"assistant"}) for d in DIGITS], 120, 0)
    teach(assistant, [([Message("user", f"Number {d}"), Message("assistant", f"={d}")], {"assistant"})
                      for d in DIGITS], 300, 1)
    originals = {r: (root / r / "model.safetensors").read_bytes() for r in ("llm", "assistant")}
    write_spec(root / "init", assistant=str(assistant), llm=str(llm), assistant_slot="=", llm_slot="<|pad|>", seed=0)
    for f in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(llm / f, root / "init" / f)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llm)
    cfg = PromptConfig(assistant="{problem}", llm="{problem} {thoughts}")
    slot_a, slot_l = tok.convert_tokens_to_ids("="), tok.pad_token_id
    data = _set(tok, [(f"e{i}", (i * 7) % 10) for i in range(3200)], cfg, slot_a, slot_l)
    sft = SFTConfig(lr=1e-2, min_lr=1e-3, warmup_ratio=0.0, micro_batch_size=16, max_len=64, epochs=1,
                    model_factory=FACTORY, progress=False, save_every=100, keep_last=1)
    result = run_sft(sft, data, root / "init", root / "out")
    return {"root": root, "tok": tok, "cfg": cfg, "slots": (slot_a, slot_l), "result": result, "originals": originals}


def _learned(trained: dict) -> dict:
    """The first and last loss, and the three accuracies: the LLM alone, the untrained and the trained projection."""
    tok, cfg, (slot_a, slot_l) = trained["tok"], trained["cfg"], trained["slots"]
    losses = trained["result"].losses
    untrained = softcot_model(trained["root"] / "init")
    done = softcot_model(trained["result"].model_dir)
    return {"first_loss": losses[1], "last_loss": losses[max(losses)],
            "alone": _accuracy(untrained, tok, cfg, 0, slot_a, slot_l),
            "control": _accuracy(untrained, tok, cfg, 1, slot_a, slot_l),
            "learned": _accuracy(done, tok, cfg, 1, slot_a, slot_l)}


def _train_and_measure(root: str) -> dict:
    return _learned(_train(root))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("softcot-learns"))


def _assert_learned(m: dict) -> None:
    assert m["last_loss"] < 0.5 * m["first_loss"], m
    assert m["learned"] >= 0.8 and m["alone"] <= 0.35 and m["control"] <= 0.35, m


def test_trained_thoughts_carry_the_hidden_operand(trained):
    _assert_learned(_learned(trained))


def test_the_projection_learns_under_avx2_kernels_too(tmp_path):
    """The same training in a fresh interpreter whose PyTorch and oneDNN run AVX2 kernels (another CPU's numerics):
    a setting that only learns under one kernel set fails here."""
    capability, m = under_kernel_set("avx2", _train_and_measure, str(tmp_path))
    assert capability == "AVX2", capability
    _assert_learned(m)


def test_only_the_projection_trains_and_is_saved(trained):
    root, result = trained["root"], trained["result"]
    for role in ("llm", "assistant"):  # the frozen models' files are untouched...
        assert (root / role / "model.safetensors").read_bytes() == trained["originals"][role]
    done = softcot_model(result.model_dir)
    untrained = softcot_model(root / "init")
    for role in ("llm", "assistant"):  # ... and so are the weights the trained composite computes with
        a, b = getattr(done, role).state_dict(), getattr(untrained, role).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(done.projection.weight, untrained.projection.weight)
    assert sorted(p.name for p in result.model_dir.iterdir() if p.suffix == ".safetensors") == [
        "projection.safetensors"]
    ckpt = result.checkpoint / "engine"
    states = torch.load(next(ckpt.glob("mp_rank_00_model_states.pt")), weights_only=False)
    assert sorted(states["module"]) == ["projection.bias", "projection.weight"]
    shapes = sorted(tuple(v["exp_avg"].shape) for v in states["optimizer"]["state"].values())
    assert shapes == [(128,), (128, 128)]  # Adam moments for the projection's two tensors, nothing else
    assert json.loads((result.model_dir / "softcot.json").read_text())["assistant_slot"] == "="
