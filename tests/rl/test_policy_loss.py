"""Clipped policy loss, KL estimators and loss aggregation against hand-computed values; role masking."""

from __future__ import annotations

import math

import pytest
import torch
from builders import build_model_dir

from longshort.rl.episodes import Episode, Turn
from longshort.rl.experience import aggregation, make_minibatches, role_sequences, split_by_length, to_batch
from longshort.rl.policy_loss import LossSpec, PolicyLoss, kl_penalty, scaled_token_logprobs, token_losses
from longshort.training.batch import Batch

torch.set_num_threads(1)
SPEC = LossSpec(clip_low=0.2, clip_high=0.28)


def _t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_clipped_loss_per_token():
    # ratios 1.5, 0.5, 0.5, 1.5 (old logprob 0) with advantages +1, +1, -1, -1
    logp = torch.log(_t(1.5, 0.5, 0.5, 1.5))
    loss, parts = token_losses(logp, torch.zeros(4), _t(1, 1, -1, -1), SPEC)
    # +A, r above 1+0.28: clipped to -1.28 | +A, r low: unclipped -0.5 | -A, r below 0.8: clipped 0.8 | -A, r high: 1.5
    assert loss.tolist() == pytest.approx([-1.28, -0.5, 0.8, 1.5], abs=1e-6)
    assert parts["clipped_high"].tolist() == [True, False, False, False]
    assert parts["clipped_low"].tolist() == [False, False, True, False]
    dual, _ = token_losses(logp, torch.zeros(4), _t(1, 1, -1, -1), LossSpec(0.2, 0.28, dual_clip=1.4))
    assert dual.tolist() == pytest.approx([-1.28, -0.5, 0.8, 1.4], abs=1e-6)  # -A losses capped at 1.4 |A|


def test_clipped_tokens_have_no_gradient_and_unclipped_ones_do():
    logp = torch.log(_t(1.5, 0.5, 0.5, 1.5)).requires_grad_(True)
    loss, _ = token_losses(logp, torch.zeros(4), _t(1, 1, -1, -1), SPEC)
    loss.sum().backward()
    # d(-A r)/d logp = -A r on unclipped tokens, 0 on clipped ones
    assert logp.grad.tolist() == pytest.approx([0.0, -0.5, 0.0, 1.5], abs=1e-6)


def test_kl_estimators():
    logp, ref = _t(-1.0, -2.0), _t(-2.0, -2.0)
    assert kl_penalty(logp, ref, "k1").tolist() == pytest.approx([1.0, 0.0])
    assert kl_penalty(logp, ref, "k3").tolist() == pytest.approx([math.exp(-1) + 1 - 1, 0.0], abs=1e-6)
    assert kl_penalty(logp, ref, "none").tolist() == [0.0, 0.0]
    spec = LossSpec(kl_coef=0.5, kl_estimator="k1")
    loss, parts = token_losses(logp, logp.clone(), _t(0.0, 0.0), spec, ref)  # ratio 1, A 0: only the KL term
    assert loss.tolist() == pytest.approx([0.5, 0.0])
    with pytest.raises(ValueError, match="ref_logprobs"):
        token_losses(logp, logp, _t(0.0, 0.0), spec, None)


def test_scaled_logprobs_equal_log_softmax_at_temperature():
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    for temp in (1.0, 0.7):
        want = torch.log_softmax(logits[:, :-1] / temp, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        torch.testing.assert_close(scaled_token_logprobs(logits, ids, temp), want)


def _episode() -> Episode:
    """user(0..2) | long header 3, long 4..6 | short header 7, short 8..9 | long header 10, long 11..12 | short 14..15."""
    ids = list(range(100, 116))
    turns = [Turn("long", 4, 7, [-0.1, -0.2, -0.3], "handoff"), Turn("short", 8, 10, [-0.4, -0.5], "handoff"),
             Turn("long", 11, 13, [-0.6, -0.7], "handoff"), Turn("short", 14, 16, [-0.8, -0.9], "finish")]
    return Episode("p", "q", "1", 0, 0, ids, 3, turns, "finished", "1")


def test_role_sequences_mask_each_roles_tokens_with_their_rollout_logprobs():
    ep = _episode()
    (long_seq,) = role_sequences([ep], "long", [2.0])
    (short_seq,) = role_sequences([ep], "short", [-1.0])
    assert [i for i, m in enumerate(long_seq.mask) if m] == [4, 5, 6, 11, 12]
    assert [i for i, m in enumerate(short_seq.mask) if m] == [8, 9, 14, 15]
    assert long_seq.old_logprobs[4:7] == [-0.1, -0.2, -0.3] and long_seq.old_logprobs[8] == 0.0
    assert short_seq.old_logprobs[14:16] == [-0.8, -0.9]
    b = to_batch([long_seq], [1.0], pad_id=0)
    assert b.extras["advantages"][0].tolist() == [2.0 * m for m in long_seq.mask]
    # a rewritten long EOS (END_TURN in the context, EOS sampled) is not trained
    ep.turns[0].rewritten = True
    (long_seq,) = role_sequences([ep], "long", [2.0])
    assert [i for i, m in enumerate(long_seq.mask) if m] == [4, 5, 11, 12]


def _tiny_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=128, hidden_size=32, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                      intermediate_size=64, num_hidden_layers=2, max_position_embeddings=64)
    return Qwen2ForCausalLM(cfg).eval()


def _role_batch(role: str, adv: float) -> Batch:
    ep = _episode()
    ep.ids = [i - 100 for i in ep.ids]
    return to_batch(role_sequences([ep], role, [adv]), [1.0], pad_id=0)


def test_a_roles_loss_gets_no_gradient_from_the_other_roles_tokens():
    model = _tiny_model()
    for role, other in (("long", "short"), ("short", "long")):
        batch = _role_batch(role, 1.5)
        logits = model(input_ids=batch.input_ids).logits.detach().requires_grad_(True)
        PolicyLoss(LossSpec(kl_coef=0.1, kl_estimator="k3"))(
            logits, Batch(batch.input_ids, batch.loss_mask, batch.attention_mask,
                          extras={**batch.extras, "ref_logprobs": torch.full(batch.input_ids.shape, -4.0)})).backward()
        # logits at position t-1 predict token t: a token's gradient lives in the row before it
        grad_rows = logits.grad[0].abs().sum(-1)
        own = {t for s in _episode().spans(role) for t in range(s.start, s.end)}
        for t in range(1, batch.input_ids.shape[1]):
            if t in own:
                assert grad_rows[t - 1] > 0, (role, t)
            else:
                assert grad_rows[t - 1] == 0, f"{role} loss has gradient from token {t} ({other} or context)"
        # the other role's advantages and logprobs are not in this role's batch at all
        assert batch.extras["advantages"][0][[8, 9, 14, 15] if role == "long" else [4, 5, 6]].abs().sum() == 0


def test_loss_value_and_aggregation_modes():
    """On-policy (old = current logprobs) the clipped loss is -A per token: check each aggregation by hand."""
    model = _tiny_model()
    ep1, ep2 = _episode(), _episode()
    ep2.turns = ep2.turns[:1]  # the second episode: long wrote 3 tokens only
    for e in (ep1, ep2):
        e.ids = [i - 100 for i in e.ids]
    seqs = role_sequences([ep1, ep2], "long", [1.0, -2.0])  # 5 tokens with A=1, 3 tokens with A=-2
    with torch.no_grad():
        for s in seqs:
            lp = scaled_token_logprobs(model(input_ids=torch.tensor([s.ids])).logits, torch.tensor([s.ids]))[0]
            s.old_logprobs = [0.0] + lp.tolist()
    expected = {"token-mean": (-(5 * 1) + 3 * 2) / 8,  # every token equal
                "seq-mean-token-sum": (-5 + 6) / 2,  # sums per sequence, averaged over sequences
                "seq-mean-token-mean": (-1 + 2) / 2}  # means per sequence, averaged
    for agg, want in expected.items():
        weights, norm = aggregation(seqs, agg)
        b = to_batch(seqs, weights, pad_id=0)
        loss_fn = PolicyLoss(SPEC)
        loss = loss_fn(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b) / norm
        assert loss.item() == pytest.approx(want, abs=1e-5), agg
        assert loss_fn.stats["tokens"] == 8 and loss_fn.stats["clipped"] == 0
        assert loss_fn.stats["ratio"] / 8 == pytest.approx(1.0, abs=1e-5)


def test_minibatches_cover_every_sequence_once():
    eps = []
    for k in range(6):
        e = _episode()
        e.sample = k
        e.ids = [i - 100 for i in e.ids] + [1] * k  # different lengths
        eps.append(e)
    seqs = role_sequences(eps, "short", [float(k) for k in range(6)])
    minis = make_minibatches(seqs, mini_batches=2, ranks=1, grad_accum=2, agg="token-mean", pad_id=0)
    assert [len(m.micro_batches) for m in minis] == [2, 2]
    assert [m.sequences for m in minis] == [3, 3] and [m.normalizer for m in minis] == [12.0, 12.0]
    seen = sorted(float(b.extras["advantages"][r].max()) for m in minis for b in m.micro_batches
                  for r in range(b.input_ids.shape[0]))
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(Exception, match="cannot fill 4 mini-batch"):
        make_minibatches(seqs, mini_batches=4, ranks=2, agg="token-mean", pad_id=0)


def test_minibatches_are_cut_finer_to_keep_each_micro_batchs_logits_within_budget():
    eps = []
    for k in range(12):
        e = _episode()
        e.sample = k
        e.ids = [i - 100 for i in e.ids] + [1] * (3 * k)
        eps.append(e)
    seqs = role_sequences(eps, "short", [1.0] * 12)
    longest = max(len(s.ids) for s in seqs)
    (whole,) = make_minibatches(seqs, mini_batches=1, ranks=2, agg="token-mean", pad_id=0)
    assert len(whole.micro_batches) == 2  # no budget: grad_accum (1) per rank
    budget = 2 * longest
    (cut,) = make_minibatches(seqs, mini_batches=1, ranks=2, agg="token-mean", pad_id=0, max_tokens=budget)
    sizes = [b.input_ids.numel() for b in cut.micro_batches]
    assert max(sizes) <= budget < max(b.input_ids.numel() for b in whole.micro_batches)
    assert len(cut.micro_batches) % 2 == 0  # the same count on each rank
    assert sum(b.input_ids.shape[0] for b in cut.micro_batches) == 12 and cut.normalizer == whole.normalizer
    (tight,) = make_minibatches(seqs, mini_batches=1, ranks=2, agg="token-mean", pad_id=0, max_tokens=1)
    assert [b.input_ids.shape[0] for b in tight.micro_batches] == [1] * 12  # as fine as one sequence each


def test_recomputed_logprobs_skip_the_head_before_the_first_target_and_match_where_a_loss_reads_them(tmp_path):
    """The update's old/reference logprobs (``rl.update._logprobs``) from ``logits_to_keep``: equal to the whole
    forward's at every column from the first target on, 0 before it (no loss reads those columns)."""
    from transformers import AutoModelForCausalLM

    from longshort.rl.update import _logprobs

    model = AutoModelForCausalLM.from_pretrained(str(build_model_dir(tmp_path / "m")), dtype=torch.float32).eval()
    ids = torch.randint(5, 300, (3, 12))
    mask = torch.zeros_like(ids)
    mask[0, 7:10], mask[1, 5:12], mask[2, 9:11] = 1, 1, 1
    batch = Batch(ids, mask, torch.ones_like(ids))
    assert batch.first_target_column() == 4
    whole = _logprobs(model, batch, torch.device("cpu"), 0.7, keep=False)
    kept = _logprobs(model, batch, torch.device("cpu"), 0.7, keep=True)
    assert whole.shape == kept.shape == (3, 12)
    assert (kept[:, :5] == 0).all() and (whole[:, 1:5] != 0).all()
    torch.testing.assert_close(kept[:, 5:], whole[:, 5:], rtol=1e-5, atol=1e-6)


def test_micro_batches_group_similar_lengths_and_balance_the_ranks():
    """A micro-batch costs rows x its longest row: sorted runs pad least; each rank gets the same number of groups and
    a balanced padded total. 16 GRPO-like lengths (a 60-token prompt and 10-130 completion tokens) into 2 ranks x 2:
    each group's spread is at most its run's, and the padded total is below half-and-half mixing's."""
    lengths = [60 + (37 * i) % 121 + 10 for i in range(16)]
    groups = split_by_length(lengths, 2, 2)
    assert len(groups) == 4 and sorted(i for g in groups for i in g) == list(range(16))
    assert all(len(g) == 4 for g in groups)
    ranked = sorted(range(16), key=lambda i: (lengths[i], i))
    runs = [set(ranked[4 * j:4 * j + 4]) for j in range(4)]
    assert sorted(map(set, groups), key=min) == sorted(runs, key=min)  # each group is a run of the sorted order
    cost = [len(g) * max(lengths[i] for i in g) for g in groups]
    mixed = sum(4 * max(lengths[i] for i in ranked[j::4]) for j in range(4))  # each group spanning every length
    assert sum(cost) < mixed
    ranks = [cost[0] + cost[1], cost[2] + cost[3]]
    assert abs(ranks[0] - ranks[1]) <= max(cost) - min(cost)
    assert split_by_length([5, 5, 5], 1, 3) == [[0], [1], [2]]  # one per group when there are just enough
