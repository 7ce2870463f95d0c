"""The Trainer's step: the same update however a step's rows are cut into micro-batches (the RL update cuts them by
a logits-memory budget, longshort/rl/experience.py)."""

from __future__ import annotations

import pytest
import torch
from builders import build_model_dir, build_tokenizer, toy_examples

from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
from longshort.training.sft_data import collate, tokenize_examples
from longshort.training.trainer import Trainer, TrainerConfig


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_a_step_cut_into_more_micro_batches_is_the_same_step(tmp_path, zero_stage):
    model_dir = build_model_dir(tmp_path / "m")
    tok = build_tokenizer()
    data, _ = tokenize_examples(toy_examples(6), tok, 64, "drop")
    whole = [collate(data, list(range(6)), tok.pad_token_id, packed=False)]
    cut = [collate(data, rows, tok.pad_token_id, packed=False) for rows in ([0, 1], [2, 3, 4], [5])]
    norm = float(sum(b.num_targets for b in whole))
    out = {}
    for name, batches in (("whole", whole), ("cut", cut)):
        init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
        t = Trainer(model_dir, TrainerConfig(lr=1e-3, total_steps=2, zero_stage=zero_stage, precision="fp32"))
        stats = [t.step(batches, normalizer=norm) for _ in range(2)]
        out[name] = ([s.loss for s in stats], [s.grad_norm for s in stats],
                     {k: v.detach().clone() for k, v in t.module.state_dict().items()})
        assert t.engine.global_steps == 2  # one optimizer step per call, whatever the number of micro-batches
        t.close()
        shutdown_rank()
    torch.testing.assert_close(out["cut"][0], out["whole"][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(out["cut"][1], out["whole"][1], rtol=1e-4, atol=0)
    for k, w in out["whole"][2].items():
        torch.testing.assert_close(out["cut"][2][k], w, rtol=1e-5, atol=1e-6)
    assert out["whole"][0][1] < out["whole"][0][0]


def test_the_head_skips_the_columns_before_the_first_target_and_the_step_is_the_same(tmp_path):
    """``logits_to_keep``: the output head (and the loss's softmax) run only from the first column a target needs,
    so the prompts cost no head; the loss, the gradient norm and the weights after two steps match a trainer that
    computes every column's logits."""
    model_dir = build_model_dir(tmp_path / "m")
    tok = build_tokenizer()
    data, _ = tokenize_examples(toy_examples(6), tok, 64, "drop")
    batches = [collate(data, rows, tok.pad_token_id, packed=False) for rows in ([0, 1, 2], [3, 4, 5])]
    starts = [b.first_target_column() for b in batches]
    assert all(s > 4 for s in starts)  # every row's question is untrained
    assert all(not b.loss_mask[:, : s + 1].any() and b.loss_mask[:, s + 1].any() for b, s in zip(batches, starts, strict=True))
    out = {}
    for keep in (True, False):
        init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
        t = Trainer(model_dir, TrainerConfig(lr=1e-3, total_steps=2, precision="fp32"))
        assert t.keeps_logits  # a transformers model
        t.keeps_logits = keep
        widths: list[int] = []
        hook = t.module.lm_head.register_forward_hook(lambda m, i, o, w=widths: w.append(o.shape[1]))
        stats = [t.step(batches) for _ in range(2)]
        hook.remove()
        want = [b.input_ids.shape[1] - (s if keep else 0) for b, s in zip(batches, starts, strict=True)]
        assert widths == want * 2
        out[keep] = ([s.loss for s in stats], [s.grad_norm for s in stats],
                     {k: v.detach().clone() for k, v in t.module.state_dict().items()})
        t.close()
        shutdown_rank()
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=0)
    for k, w in out[False][2].items():
        torch.testing.assert_close(out[True][2][k], w, rtol=1e-5, atol=1e-7)
