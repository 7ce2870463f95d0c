"""The DeepSpeed SFT trainer on CPU: masks, learning, 1 vs 2 ranks (ZeRO-2/3 over gloo, ranks as Ray actors), resume,
export."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from builders import build_model_dir, toy_examples

from longshort.cluster.sft_job import run_sft
from longshort.core import manifest
from longshort.core.errors import LongshortError
from longshort.data.protocol import Message
from longshort.training.batch import masked_nll_sum
from longshort.training.checkpoint_prune import DROPPED
from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
from longshort.training.sft import SFTConfig, _checkpoints, check_packing
from longshort.training.sft_data import SFTExample, collate, tokenize_examples
from longshort.training.trainer import Trainer, TrainerConfig

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_model_dir(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def trainer(model_dir):
    """A one-rank Trainer in this process."""
    init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
    t = Trainer(model_dir, TrainerConfig(lr=1e-3, total_steps=10, grad_accum=1))
    yield t
    t.close()
    shutdown_rank()


def cfg(**kw) -> SFTConfig:
    base = dict(lr=3e-3, min_lr=3e-4, max_len=64, micro_batch_size=4, grad_accum=2, epochs=2, progress=False,
                warmup_ratio=0.1, seed=1)
    return SFTConfig(**{**base, **kw})


class Tracker:
    def __init__(self):
        self.rows = []

    def log(self, metrics: dict, step: int) -> None:
        self.rows.append((step, metrics))


def test_gradient_flows_only_from_trained_role_tokens(model_dir, tok):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ex = SFTExample("g", [Message("user", "what is 6 times 7 ?"), Message("long", "six sevens , think"),
                          Message("short", "it is 42 .")], ("short",))
    data, _ = tokenize_examples([ex], tok, 512, "drop")
    batch = collate(data, [0], tok.pad_token_id, packed=False)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits.retain_grad()
    masked_nll_sum(logits, batch).backward()
    # logits at position t-1 predict token t: they get gradient iff token t is in the 'short' span
    has_grad = logits.grad[0, :-1].abs().sum(-1) > 0
    assert torch.equal(has_grad, batch.loss_mask[0, 1:].bool())
    assert 0 < int(has_grad.sum()) < len(has_grad) // 2


def test_loss_decreases_and_metrics_reach_tracker(model_dir, tmp_path):
    tracker = Tracker()
    res = run_sft(cfg(log_every=2), toy_examples(40), model_dir, tmp_path / "run", tracker=tracker)
    losses = list(res.losses.values())
    assert res.steps == res.total_steps == len(losses) == 10  # 40 examples / (4 * 2) per step, 2 epochs
    assert losses[-1] < 0.5 * losses[0]
    steps = [s for s, _ in tracker.rows]
    assert steps == [2, 4, 6, 8, 10]
    m = tracker.rows[-1][1]
    assert set(m) == {f"sft/{k}" for k in ("loss", "lr", "grad_norm", "tokens_per_s", "trained_tokens", "epoch")}
    assert m["sft/tokens_per_s"] > 0 and m["sft/grad_norm"] > 0 and m["sft/epoch"] == pytest.approx(2.0)
    trained = [row["sft/trained_tokens"] for _, row in tracker.rows]
    assert trained == sorted(trained) and trained[-1] == 2 * res.stats.targets
    lrs = [row["sft/lr"] for _, row in tracker.rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(3e-4)
    assert (res.model_dir / "model.safetensors").exists()


def test_exact_resume_after_interruption(model_dir, tmp_path):
    c = cfg(save_every=2, keep_last=2)
    full = run_sft(c, toy_examples(40), model_dir, tmp_path / "full")
    part = run_sft(c, toy_examples(40), model_dir, tmp_path / "cut", stop_after=5)
    assert part.steps == 5 and part.model_dir is None and part.checkpoint.name == "step-000005"
    # a crash in the middle of a later save leaves only a temp dir, which resume ignores
    (tmp_path / "cut" / "checkpoints" / ".tmp-step-000006").mkdir()
    rest = run_sft(c, toy_examples(40), model_dir, tmp_path / "cut")
    assert rest.resumed_from == 5
    assert {s: full.losses[s] for s in range(1, 6)} == part.losses
    assert rest.losses == {s: full.losses[s] for s in range(6, 11)}  # bit-for-bit
    names = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert names == ["step-000008", "step-000010"]  # keep_last=2, temp dir cleaned by the next save
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-000010" / "state.json").read_text())
    assert state["client"]["step"] == 10 and state["world_size"] == 1
    assert state["client"]["trained_tokens"] == 2 * full.stats.targets  # counted across the interruption
    # tokens/s counts what each call's steps ran (2 epochs of the data in all), not the data's size
    assert part.tokens_run + rest.tokens_run == full.tokens_run == 2 * full.stats.tokens
    assert 0 < part.tokens_run < full.tokens_run and part.step_seconds > 0 and full.tokens_per_s > 0


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(model_dir, tmp_path, caplog):
    c = cfg(save_every=2, keep_last=3)
    full = run_sft(c, toy_examples(40), model_dir, tmp_path / "full")
    run_sft(c, toy_examples(40), model_dir, tmp_path / "cut", stop_after=6)
    ckpts = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002", "step-000004", "step-000006"]
    weights = max((ckpts / "step-000006").rglob("*model_states.pt"), key=lambda p: p.stat().st_size)
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, e.g. by a full disk
    with caplog.at_level(logging.INFO, logger="longshort"):
        rest = run_sft(c, toy_examples(40), model_dir, tmp_path / "cut")
    assert "skipping damaged checkpoint(s) step-000006: " in caplog.text and "changed size" in caplog.text
    assert f"sft: resumed from {ckpts / 'step-000004'} (step 4 of 10); skipped damaged step-000006" in caplog.text
    assert "step-000004: resuming with fresh optimizer moments (only the newest checkpoint keeps them)" in caplog.text
    assert rest.resumed_from == 4 and sorted(rest.losses) == list(range(5, 11))
    assert rest.losses[5] == full.losses[5]  # the weights, data order and RNG of step 4 are exact: Adam restarts
    assert rest.losses[10] < full.losses[1]


def test_only_the_newest_checkpoint_keeps_its_optimizer_state(model_dir, tmp_path):
    """keep_last=3: the two older checkpoints drop Adam's moments (2x the weights) and stay sealed and loadable."""
    run_sft(cfg(save_every=2, keep_last=3), toy_examples(40), model_dir, tmp_path / "run", stop_after=6)
    ckpts = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step-000002", "step-000004", "step-000006"]
    sizes = [sum(f.stat().st_size for f in p.rglob("*model_states.pt")) for p in ckpts]
    assert sizes[0] == sizes[1] < sizes[2] / 2.5  # weights only vs weights + two moments
    assert [(p / DROPPED).exists() for p in ckpts] == [True, True, False]
    newest = torch.load(next(ckpts[2].rglob("*model_states.pt")), weights_only=False)
    assert newest["optimizer"] is not None
    intact, skipped = manifest.newest_intact(ckpts[:2])  # re-sealed after the rewrite
    assert intact == ckpts[1] and skipped == []


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_zero1_older_checkpoints_drop_their_optimizer_files_and_still_resume(model_dir, tmp_path, caplog, precision):
    """Under ZeRO-1 the optimizer files hold master weights and moments (bf16: 6x the model): the older checkpoints
    lose them, stay sealed, and a fallback to one rebuilds the master weights from the module's and restarts Adam."""
    c = cfg(save_every=2, keep_last=3, zero_stage=1, precision=precision)
    full = run_sft(c, toy_examples(40), model_dir, tmp_path / "full")
    run_sft(c, toy_examples(40), model_dir, tmp_path / "cut", stop_after=6)
    ckpts = sorted((tmp_path / "cut" / "checkpoints").iterdir())
    optim = [sum(f.stat().st_size for f in p.rglob("*optim_states.pt")) for p in ckpts]
    assert optim[0] == optim[1] == 0 < optim[2]
    assert [(p / DROPPED).exists() for p in ckpts] == [True, True, False]
    assert manifest.newest_intact(ckpts[:2]) == (ckpts[1], [])  # re-sealed after the deletion
    weights = max(ckpts[2].rglob("*model_states.pt"), key=lambda p: p.stat().st_size)
    weights.write_bytes(weights.read_bytes()[:100])
    with caplog.at_level(logging.INFO, logger="longshort"):
        rest = run_sft(c, toy_examples(40), model_dir, tmp_path / "cut")
    assert "step-000004: resuming with fresh optimizer moments" in caplog.text
    assert rest.resumed_from == 4 and sorted(rest.losses) == list(range(5, 11))
    if precision == "fp32":  # the master weights come back exactly; under bf16 they are rounded to the module's
        assert rest.losses[5] == full.losses[5]
    else:
        assert rest.losses[5] == pytest.approx(full.losses[5], rel=2e-2)
    assert rest.losses[10] < full.losses[1]


def test_resume_refuses_different_data(model_dir, tmp_path):
    run_sft(cfg(), toy_examples(16), model_dir, tmp_path / "r", stop_after=1)
    with pytest.raises(LongshortError, match="cannot resume .* data"):
        run_sft(cfg(), toy_examples(16, seed=5), model_dir, tmp_path / "r")
    with pytest.raises(LongshortError, match="already has checkpoints .* resume is off"):
        run_sft(cfg(), toy_examples(16), model_dir, tmp_path / "r", resume=False)


def test_checkpoint_is_atomic_when_save_fails(trainer, tok, tmp_path):
    data, _ = tokenize_examples(toy_examples(4), tok, 64, "drop")
    batch = collate(data, [0, 1, 2, 3], tok.pad_token_id, packed=False)
    trainer.step([batch])
    trainer.save_checkpoint(tmp_path / "step-1", {"step": 1})
    trainer.step([batch])
    real = trainer.engine.save_checkpoint

    def dies_midway(save_dir, **kw):
        (tmp_path / ".tmp-step-2" / "partial.bin").write_bytes(b"x")
        raise OSError("disk full")

    trainer.engine.save_checkpoint = dies_midway
    with pytest.raises(OSError):
        trainer.save_checkpoint(tmp_path / "step-2", {"step": 2})
    trainer.engine.save_checkpoint = real
    assert not (tmp_path / "step-2").exists() and [p.name for p in _checkpoints(tmp_path)] == ["step-1"]
    assert trainer.load_checkpoint(tmp_path / "step-1") == {"step": 1}
    trainer.save_checkpoint(tmp_path / "step-2", {"step": 2})  # the next save replaces the stale temp dir
    assert (tmp_path / "step-2" / "state.json").exists() and not (tmp_path / ".tmp-step-2").exists()


def test_export_loads_with_from_pretrained_and_gives_same_logits(trainer, tok, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data, _ = tokenize_examples(toy_examples(4), tok, 64, "drop")
    batch = collate(data, [0, 1, 2, 3], tok.pad_token_id, packed=False)
    for _ in range(2):
        trainer.step([batch])
    want = trainer.forward_logits(batch)
    out = trainer.export(tmp_path / "export", tok)
    model = AutoModelForCausalLM.from_pretrained(out)
    got = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<|short|>") == tok.convert_tokens_to_ids("<|short|>")
    lp = trainer.forward_logprobs(batch)
    assert lp.shape == (4, batch.input_ids.shape[1] - 1) and bool((lp <= 0).all())


def test_packed_rows_match_padded_batches(trainer, tok):
    check_packing(trainer, len(tok))
    data, _ = tokenize_examples(toy_examples(6), tok, 64, "drop")
    padded = collate(data, list(range(6)), tok.pad_token_id, packed=False)
    packed = collate(data, list(range(6)), tok.pad_token_id, packed=True)
    a = masked_nll_sum(trainer.forward_logits(padded), padded)
    b = masked_nll_sum(trainer.forward_logits(packed), packed)
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_pack_batching_trains(model_dir, tmp_path):
    res = run_sft(cfg(batching="pack", pack_tokens=128, grad_accum=1), toy_examples(40), model_dir, tmp_path / "p")
    losses = list(res.losses.values())
    assert losses[-1] < 0.6 * losses[0]


def test_bad_config_is_a_clear_error(model_dir, tmp_path):
    with pytest.raises(LongshortError, match="pack_tokens"):
        run_sft(cfg(batching="pack", pack_tokens=32), toy_examples(4), model_dir, tmp_path)
    with pytest.raises(LongshortError, match="offload: needs ZeRO"):
        run_sft(cfg(offload="optimizer"), toy_examples(4), model_dir, tmp_path)
    with pytest.raises(LongshortError, match="no config.json"):
        run_sft(cfg(), toy_examples(4), tmp_path, tmp_path)
    small = tmp_path / "small"
    shutil.copytree(model_dir, small)
    conf = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**conf, "vocab_size": 100}))
    with pytest.raises(LongshortError, match="only 100 embeddings; call .*add_protocol_tokens"):
        run_sft(cfg(), toy_examples(4), small, tmp_path / "out")


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_zero_match_one_rank(model_dir, tmp_path, stage):
    """2 ranks x grad_accum 1 (ZeRO over gloo) == 1 rank x grad_accum 2: same global batches, same loss."""
    one = run_sft(cfg(epochs=1), toy_examples(40), model_dir, tmp_path / "one")
    kw = dict(epochs=1, num_ranks=2, grad_accum=1, zero_stage=stage, save_every=2)
    if stage == 2:  # also interrupt and resume the 2-rank run: partitioned optimizer state must round-trip
        first = run_sft(cfg(**kw), toy_examples(40), model_dir, tmp_path / "two", stop_after=3)
        rest = run_sft(cfg(**kw), toy_examples(40), model_dir, tmp_path / "two")
        assert rest.resumed_from == 3
        two = {**first.losses, **rest.losses}
    else:
        tracker = Tracker()
        rest = run_sft(cfg(**kw), toy_examples(40), model_dir, tmp_path / "two", tracker=tracker)
        two = rest.losses
        assert [s for s, _ in tracker.rows] == [1, 2, 3, 4, 5]  # rank 0's reports cross the process boundary
        assert [m["sft/loss"] for _, m in tracker.rows] == [two[s] for s in range(1, 6)]
    assert sorted(two) == sorted(one.losses) == list(range(1, 6))
    np.testing.assert_allclose([two[s] for s in two], [one.losses[s] for s in two], rtol=2e-5)
    from safetensors.torch import load_file

    w1, w2 = load_file(one.model_dir / "model.safetensors"), load_file(rest.model_dir / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:  # full weights gathered from the partitions (ZeRO-3: no rank holds them whole)
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-4)


def test_bf16_steps_match_fp32_and_keep_fp32_master_weights(model_dir, tok, tmp_path):
    """bf16 (a GPU's default, and a CPU's with fast bf16): ZeRO-1 keeps gradients, master weights and Adam's state in
    fp32. Against fp32 from the same start, three steps' losses agree within 0.5% and gradient norms within 3%
    (bf16 keeps 8 bits of mantissa: ~0.4% per value, averaged over many)."""
    data, _ = tokenize_examples(toy_examples(8), tok, 64, "drop")
    batch = collate(data, list(range(8)), tok.pad_token_id, packed=False)
    losses, norms = {}, {}
    for precision in ("fp32", "bf16"):
        init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
        t = Trainer(model_dir, TrainerConfig(lr=1e-3, total_steps=3, precision=precision))
        stats = [t.step([batch]) for _ in range(3)]
        losses[precision], norms[precision] = [s.loss for s in stats], [s.grad_norm for s in stats]
        if precision == "bf16":
            assert t.zero_stage == 1 and t.module.dtype == torch.bfloat16
            master = [p for g in t.optimizer.optimizer.param_groups for p in g["params"]]
            assert master and {p.dtype for p in master} == {torch.float32}
            assert {v.dtype for p in master for v in t.optimizer.optimizer.state[p].values()
                    if v.dim() > 0} == {torch.float32}
            out = t.export(tmp_path / "bf16", tok)
        t.close()
        shutdown_rank()
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=5e-3)
    np.testing.assert_allclose(norms["bf16"], norms["fp32"], rtol=3e-2)
    assert losses["bf16"][-1] < losses["bf16"][0]  # it learns
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU accelerator's notice")
def test_joining_a_rank_on_cpu_prints_no_accelerator_warning(tmp_path):
    import os
    import subprocess
    import sys

    code = ("from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank\n"
            "init_rank(RankInfo(0, 1, '127.0.0.1', free_port())); shutdown_rank()")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unable to detect" not in out.stdout + out.stderr  # DeepSpeed logs to stdout


def test_a_full_disk_stops_sft_naming_it_keeps_the_last_checkpoint_and_resumes(model_dir, tmp_path, small_disk):
    """A checkpoint that does not fit stops the job with where, the free space and what a checkpoint takes; the
    checkpoint before it stays intact, and once space is freed the same call resumes and ends as if never stopped."""
    from longshort.core import manifest
    from longshort.core.disk import size_of

    c = cfg(save_every=2, keep_last=3)
    full = run_sft(c, toy_examples(40), model_dir, tmp_path / "full")
    one = size_of(tmp_path / "full" / "checkpoints" / "step-000010")
    mnt, resize = small_disk
    resize(int(one * 1.5))  # room for the first checkpoint, not for the second beside it
    out = mnt / "sft"
    with pytest.raises(LongshortError) as err:
        run_sft(c, toy_examples(40), model_dir, out, key="sft.long")
    text = str(err.value)
    assert text.startswith(f"sft.long: no space left on the device holding {out} while writing a checkpoint")
    assert "free of" in text and "it needs about" in text and "run the same command again to resume" in text
    kept = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert kept == ["step-000002"]
    assert manifest.newest_intact([out / "checkpoints" / "step-000002"])[0] is not None  # sealed and whole
    resize(64 << 20)
    rest = run_sft(c, toy_examples(40), model_dir, out)
    assert rest.resumed_from == 2 and rest.losses == {s: full.losses[s] for s in range(3, 11)}
