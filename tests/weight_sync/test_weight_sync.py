"""Weight sync trainer → engines: buckets, versions, and engines that match the trainer after an update.

The Ray tests use a real local Ray instance, real DeepSpeed ranks (gloo) and real HF engines in their own actors.
vLLM cannot run here (it lives in its own venv, see tests/engines/vllm_cpu_check.py): the topology reaches it only by its
registry name, and its in-place weight update is tested there.
"""

from __future__ import annotations

import pytest
import torch
from builders import build_model_dir, build_tokenizer
from transformers import Qwen2ForCausalLM

from longshort.cluster.policy_group import Policies, PolicyGroup
from longshort.cluster.topology import RoleResources
from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.engines.hf.engine import HFEngine
from longshort.recipes.longshort.recipe import PairTopology
from longshort.training.batch import Batch
from longshort.training.trainer import TrainerConfig
from longshort.weight_sync.base import StaleWeightsError, SyncError, VersionedEngine
from longshort.weight_sync.buckets import (
    ALIGN,
    pack_bucket,
    plan_buckets,
    unpack,
)

torch.set_num_threads(1)
PROMPTS = ["the cat sat on", "what is two plus", "think step by step :"]
TRAIN_TEXT = "the answer is 42 because six times seven is forty two ."


# ---------------------------------------------------------------------------------------------- buckets (no Ray)


def test_buckets_round_trip_every_dtype_and_respect_the_plan():
    g = torch.Generator().manual_seed(0)
    tensors = [
        ("a", torch.randn(3, 5, generator=g)),
        ("b", torch.randn(7, generator=g).to(torch.bfloat16)),
        ("c", torch.arange(6, dtype=torch.int64).reshape(2, 3)),
        ("d", torch.randn(4, 6, generator=g).t()),  # non-contiguous
        ("e", torch.tensor(3.5)),  # 0-dim
        ("f", torch.tensor([True, False, True])),
        ("big", torch.randn(300, generator=g)),  # 1200 bytes: larger than a bucket
        ("g", torch.randn(10, generator=g, dtype=torch.float64)),
    ]
    sizes = [t.numel() * t.element_size() for _, t in tensors]
    cap = 256
    plan = plan_buckets(sizes, cap)
    assert sum(plan) == len(tensors) and len(plan) > 2
    it = iter(tensors)
    got = []
    for count in plan:
        bucket = pack_bucket([next(it) for _ in range(count)], cap)
        assert bucket.nbytes <= cap or count == 1  # only a lone oversized tensor exceeds the cap
        assert all(m.offset % ALIGN == 0 for m in bucket.metas)
        ro = bucket.data.copy()
        ro.setflags(write=False)  # what a reader of the object store sees
        bucket.data = ro
        got += unpack(bucket)
    assert [n for n, _ in got] == [n for n, _ in tensors]
    for (_, want), (_, have) in zip(tensors, got, strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape
        assert torch.equal(have, want)


def test_plan_matches_a_greedy_packing():
    assert plan_buckets([], 100) == []
    assert plan_buckets([10, 10, 10], 1000) == [3]
    assert plan_buckets([100, 1, 100], 100) == [1, 1, 1]  # 1 byte at offset 100 would not fit after alignment
    assert plan_buckets([500, 10], 100) == [1, 1]
    assert plan_buckets([0, 0, 50], 64) == [3]


# ------------------------------------------------------------------------------------ versions (no Ray, one engine)


@pytest.fixture(scope="module")
def local_engine(tmp_path_factory):
    path = build_model_dir(tmp_path_factory.mktemp("local"), positions=256)
    return VersionedEngine(HFEngine(str(path), str(path)), "test/engine0"), path


def _reqs(tok, **params):
    params = {"temperature": 0.0, "max_tokens": 6, **params}
    return [GenerationRequest(tok.encode(p), SamplingParams(**params), request_id=str(i)) for i, p in enumerate(PROMPTS)]


def test_versions_increase_and_partial_syncs_are_never_served(local_engine):
    engine, path = local_engine
    tok = build_tokenizer()
    model = engine.engine.model
    params = [(n, p.detach().clone() + 0.01) for n, p in model.named_parameters()]
    assert engine.version == 0
    engine.generate(_reqs(tok), min_version=0)
    with pytest.raises(StaleWeightsError, match="holds weight version 0 but version 1"):
        engine.generate(_reqs(tok), min_version=1)
    with pytest.raises(SyncError, match="must increase"):
        engine.begin(0)

    engine.begin(1)
    engine.load(params[:3])
    with pytest.raises(StaleWeightsError, match="sync to version 1 is in progress"):
        engine.generate(_reqs(tok))
    with pytest.raises(SyncError, match=f"delivered 3 of {len(params)} tensors"):
        engine.finish(1, expected_tensors=len(params))
    with pytest.raises(StaleWeightsError, match="interrupted"):  # never advertised, even without min_version
        engine.generate(_reqs(tok))
    assert engine.version is None

    engine.begin(2)  # a complete sync repairs it
    engine.load(params)
    engine.finish(2, expected_tensors=len(params))
    assert engine.version == 2 and engine.engine.weight_version == 2
    engine.generate(_reqs(tok), min_version=2)
    with pytest.raises(SyncError, match="must increase"):
        engine.begin(2)


# ------------------------------------------------------------------------------------------- through Ray actors


def _batch(ids: list[int]) -> Batch:
    t = torch.tensor([ids])
    return Batch(t, torch.ones_like(t))


def _check_engine_matches_trainer(group: PolicyGroup, tok, version: int) -> list:
    """Greedy output and logprobs of every engine equal the trainer's own forward pass (teacher-forced)."""
    results = group.generate(_reqs(tok, max_tokens=10), min_version=version)
    batches = [_batch(r.prompt_ids + r.samples[0].token_ids) for r in results]
    logits = group.forward(batches, "logits")
    logprobs = group.forward(batches, "logprobs")
    for r, lg, lp in zip(results, logits, logprobs, strict=True):
        s, p = r.samples[0], len(r.prompt_ids)
        gen_logits = lg[0, p - 1 : -1]
        # greedy decoding with the trainer's forward picks exactly the engine's tokens
        assert gen_logits.argmax(-1).tolist() == s.token_ids
        torch.testing.assert_close(torch.tensor(s.logprobs), lp[0, p - 1 :], atol=1e-4, rtol=0)
    return results


@pytest.fixture(scope="module")
def pair(ray_local, tmp_path_factory):
    """long: a tied-embedding model with a colocated HF engine; short: an untied model with a standalone HF engine
    actor (object-store sync). The ZeRO-3 test below covers a tied model with standalone engines."""
    root = tmp_path_factory.mktemp("pair")
    paths = {"long": build_model_dir(root / "tied", positions=256), "short": build_model_dir(root / "untied", tie=False, positions=256)}
    topo = PairTopology(long=RoleResources(colocate=True, reference=False),
                          short=RoleResources(colocate=False, reference=False), call_timeout_s=300)
    policies = Policies.start(topo, paths, TrainerConfig(lr=3e-2, total_steps=10))
    yield policies
    policies.close()


@pytest.mark.parametrize("role", ["long", "short"])
def test_engine_equals_trainer_after_update_and_sync(pair, role):
    policies, tie = pair, role == "long"
    group, tok = policies[role], build_tokenizer()
    assert group.version == 0 and group.engine_versions() == [0]
    before = _check_engine_matches_trainer(group, tok, 0)
    group.train_step([_batch(tok.encode(TRAIN_TEXT))])
    # the engine still serves the old weights: it is stale and refuses newer requests
    with pytest.raises(StaleWeightsError, match=rf"{role}/\w+0: engine {role}/engine0 holds weight version 0"):
        group.generate(_reqs(tok), min_version=1)
    old = group.generate(_reqs(tok, max_tokens=10), min_version=0)
    lp_new = group.forward([_batch(r.prompt_ids + r.samples[0].token_ids) for r in old], "logprobs")
    gap = max(float((torch.tensor(r.samples[0].logprobs) - lp[0, len(r.prompt_ids) - 1 :]).abs().max())
              for r, lp in zip(old, lp_new, strict=True))
    assert gap > 1e-2  # the step moved the trainer: the checks below can tell synced from stale weights

    stats = group.sync_weights()
    assert stats.version == 1 and group.engine_versions() == [1]
    assert stats.tensors == (26 if tie else 27)  # a tied lm_head is the embedding: sent once
    _check_engine_matches_trainer(group, tok, 1)
    (engine_sd,) = group.engine_state_dicts()
    trainer_sd = group.gathered_state_dict()
    assert set(trainer_sd) <= set(engine_sd)
    for name, t in trainer_sd.items():
        assert torch.equal(engine_sd[name], t), name
    assert torch.equal(engine_sd["lm_head.weight"], engine_sd["model.embed_tokens.weight"]) == tie

    group.train_step([_batch(tok.encode(TRAIN_TEXT))])
    assert group.sync_weights().version == 2 and group.engine_versions() == [2]
    after = _check_engine_matches_trainer(group, tok, 2)
    with pytest.raises(StaleWeightsError):
        group.generate(_reqs(tok), min_version=3)
    assert [r.samples[0].logprobs for r in after] != [r.samples[0].logprobs for r in before]
    assert group.alive  # user errors inside actors leave the group running


@pytest.mark.parametrize("strategy", ["object_store", "collective"])
def test_zero3_group_syncs_full_params_to_every_engine(ray_local, tmp_path, strategy):
    """2 ranks under ZeRO-3 (each holds half of every parameter), 2 standalone engines, buckets of 128 KiB; through
    the object store, or broadcast by rank 0 over a gloo group of its own (the NCCL path's code, on CPU)."""
    path = build_model_dir(tmp_path / "m", 1, positions=256)
    res = RoleResources(num_ranks=2, colocate=False, num_engines=2, reference=True, weight_sync=strategy)
    topo = PairTopology(long=res, bucket_mb=0.125, call_timeout_s=300)
    group = PolicyGroup.start("long", path, topo, TrainerConfig(lr=3e-2, total_steps=10, zero_stage=3))
    try:
        tok = build_tokenizer()
        batches = [_batch(tok.encode(TRAIN_TEXT)), _batch(tok.encode("the cat sat on the mat ."))]
        start = group.forward(batches, "logprobs")
        ref = group.forward(batches, "ref_logprobs")
        for a, b in zip(start, ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        stats = group.train_step(batches)  # one micro-batch per rank
        assert stats.targets == sum(b.num_targets for b in batches)
        sync = group.sync_weights()
        assert sync.buckets > 3 and sync.engines == 2 and group.engine_versions() == [1, 1]
        assert type(group.sync).__name__ == {"object_store": "ObjectStoreSync", "collective": "CollectiveSync"}[strategy]
        if strategy == "collective":
            assert sync.extra["backend"] == "gloo"
        trainer_sd = group.gathered_state_dict()
        assert sync.tensors == len(trainer_sd) == 26
        for engine_sd in group.engine_state_dicts():
            for name, t in trainer_sd.items():
                assert torch.equal(engine_sd[name], t), name
        moved = group.forward(batches, "logprobs")
        assert any(float((a - b).abs().max()) > 1e-3 for a, b in zip(moved, start, strict=True))
        for a, b in zip(group.forward(batches, "ref_logprobs"), ref, strict=True):  # the reference stays frozen
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        results = _check_engine_matches_trainer(group, tok, 1)  # 3 requests split over 2 engines, order kept
        assert [r.request_id for r in results] == ["0", "1", "2"]
        group.train_step(batches)  # a second sync reuses the transport (the collective group stays open)
        assert group.sync_weights().version == 2 and group.engine_versions() == [2, 2]
        _check_engine_matches_trainer(group, tok, 2)
        trainer_sd = group.gathered_state_dict()
        exported = Qwen2ForCausalLM.from_pretrained(group.export(tmp_path / "export"))
        assert all(torch.equal(exported.state_dict()[k], v) for k, v in trainer_sd.items())
    finally:
        group.close()
    assert not group.alive


def test_bf16_engines_hold_the_trainers_weights_and_match_its_logprobs(ray_local, tmp_path):
    """`cpu_precision: bf16` (what `auto` picks on a CPU with AMX): trainer and engine both compute in bf16 after a
    step and a sync; the engine holds the trainer's bf16 weights bit for bit, and its sampled-token logprobs (KV cache,
    token by token) match the trainer's teacher-forced forward within 0.05 nats (bf16's rounding, not a bug: fp32
    matches within 1e-4, above)."""
    from longshort.core import precision

    precision.set_policy("bf16")
    try:
        topo = PairTopology(long=RoleResources(colocate=False, reference=False), call_timeout_s=300)
        paths = {"long": build_model_dir(tmp_path / "m", positions=256)}
        policies = Policies.start(topo, paths, TrainerConfig(lr=3e-2, total_steps=10))
        try:
            group, tok = policies["long"], build_tokenizer()
            group.train_step([_batch(tok.encode(TRAIN_TEXT))])
            assert group.sync_weights().version == 1
            (engine_sd,) = group.engine_state_dicts()
            for name, t in group.gathered_state_dict().items():
                assert t.dtype == torch.bfloat16 and torch.equal(engine_sd[name], t), name
            results = group.generate(_reqs(tok, max_tokens=10), min_version=1)
            lps = group.forward([_batch(r.prompt_ids + r.samples[0].token_ids) for r in results], "logprobs")
            gaps = [float((torch.tensor(r.samples[0].logprobs) - lp[0, len(r.prompt_ids) - 1:].float()).abs().max())
                    for r, lp in zip(results, lps, strict=True)]
            assert max(gaps) < 5e-2, gaps
        finally:
            policies.close()
    finally:
        precision.set_policy("fp32")


def test_a_lora_group_syncs_its_merged_weights_and_its_reference_is_the_adapter_off(ray_local, tmp_path):
    """LoRA (peft) on 2 ZeRO-3 ranks: the engine gets the merged weights under the base model's names (greedy tokens
    are the trainer's argmax), the reference is the trainer's own model with the adapter switched off (the starting
    policy, no second copy), and the export is the merged model."""
    from longshort.training.lora import LoraSettings

    path = build_model_dir(tmp_path / "m", 1, positions=256)
    res = RoleResources(num_ranks=2, colocate=False, reference=True)
    topo = PairTopology(long=res, call_timeout_s=300)
    cfg = TrainerConfig(lr=3e-2, total_steps=10, zero_stage=3, lora=LoraSettings(rank=4, alpha=8.0))
    group = PolicyGroup.start("long", path, topo, cfg)
    try:
        tok = build_tokenizer()
        batches = [_batch(tok.encode(TRAIN_TEXT)), _batch(tok.encode("the cat sat on the mat ."))]
        start = group.forward(batches, "logprobs")
        group.train_step(batches)
        assert group.sync_weights().version == 1
        trainer_sd = group.gathered_state_dict()
        assert len(trainer_sd) == 26 and not any("lora" in k or "base_layer" in k for k in trainer_sd)
        (engine_sd,) = group.engine_state_dicts()
        for name, t in trainer_sd.items():
            assert torch.equal(engine_sd[name], t), name
        _check_engine_matches_trainer(group, tok, 1)
        moved = group.forward(batches, "logprobs")
        assert any(float((a - b).abs().max()) > 1e-3 for a, b in zip(moved, start, strict=True))
        for a, b in zip(group.forward(batches, "ref_logprobs"), start, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        exported = Qwen2ForCausalLM.from_pretrained(group.export(tmp_path / "export"))
        assert all(torch.equal(exported.state_dict()[k], v) for k, v in trainer_sd.items())
    finally:
        group.close()
