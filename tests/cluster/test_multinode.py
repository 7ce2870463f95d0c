"""A multi-node Ray cluster on one machine: Ray's own harness (`ray.cluster_utils.Cluster`) starts a head and two
worker raylets on loopback, each worker declaring `fake_gpu` (`topology.accelerator`) as its stand-in for GPUs. A
role's trainer rank and its engine are placed on different nodes (STRICT_SPREAD), the trained weights cross nodes
(both the object store and a gloo broadcast), and the engine serves exactly the trainer's weights after each sync."""

from __future__ import annotations

import os
import tempfile

import pytest
import ray
import torch
from builders import build_tokenizer

from longshort.cluster.policy_group import PolicyGroup
from longshort.cluster.reaper import loopback_only
from longshort.cluster.topology import RoleResources
from longshort.recipes.longshort.recipe import PairTopology
from longshort.training.trainer import TrainerConfig

torch.set_num_threads(1)
TRAIN_TEXT = "the answer is 42 because six times seven is forty two ."


@pytest.fixture(scope="module")
def three_nodes(request):
    """A head (no accelerator, where the driver attaches) and two workers with 2 `fake_gpu` each. Its own Ray temp
    dir: the harness writes `ray_current_cluster`, which every later `ray.init()` on the machine would join."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="lsmn", dir="/tmp")  # short: socket paths have a limit
    loopback_only()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2, resources={"fake_gpu": 2}) for _ in range(2)]
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        ray.cloudpickle.register_pickle_by_value(request.module)
        yield cluster, {w.node_id: w for w in workers}
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


def _model_dir(path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                      intermediate_size=128, num_hidden_layers=2, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"))
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("strategy", ["object_store", "collective"])
def test_rank_and_engine_on_two_nodes_sync_across_them(three_nodes, tmp_path, strategy, logged):
    from longshort.engines.base import GenerationRequest, SamplingParams
    from longshort.training.trainer import Batch

    res = RoleResources(num_ranks=1, gpus_per_rank=1, colocate=False, num_engines=1, gpus_per_engine=1,
                        reference=False, placement="STRICT_SPREAD", weight_sync=strategy)
    topo = PairTopology(long=res, accelerator="fake_gpu", call_timeout_s=300, actor_start_timeout_s=300)
    group = PolicyGroup.start("long", _model_dir(tmp_path / "m"), topo, TrainerConfig(lr=3e-2, total_steps=4))
    try:
        rank_node, engine_node = (group.nodes[n].split()[0] for n in ("long/rank0", "long/engine0"))
        workers = {node_id[:12] for node_id in three_nodes[1]}
        assert rank_node != engine_node and {rank_node, engine_node} == workers  # one on each worker node
        assert "long/rank0 on node" in logged.text and "long/engine0 on node" in logged.text  # the run's log says
        tok = build_tokenizer()
        prompts = [tok.encode(p) for p in ("the cat sat on", "what is two plus")]
        ids = torch.tensor([tok.encode(TRAIN_TEXT)])
        for version in (1, 2):
            group.train_step([Batch(ids, torch.ones_like(ids))])
            stats = group.sync_weights()
            assert stats.version == version and group.engine_versions() == [version]
            if strategy == "collective":
                assert stats.extra["backend"] == "gloo"  # a custom accelerator never asks for NCCL
            (engine_sd,) = group.engine_state_dicts()
            for name, t in group.gathered_state_dict().items():
                assert torch.equal(engine_sd[name], t), name
        results = group.generate([GenerationRequest(p, SamplingParams(max_tokens=8, temperature=0.0), str(i))
                                  for i, p in enumerate(prompts)], min_version=2)
        batches = [Batch(torch.tensor([r.prompt_ids + r.samples[0].token_ids]),
                         torch.ones(1, len(r.prompt_ids) + len(r.samples[0].token_ids), dtype=torch.long))
                   for r in results]
        for r, lg in zip(results, group.forward(batches, "logits"), strict=True):
            p = len(r.prompt_ids)
            assert lg[0, p - 1 : -1].argmax(-1).tolist() == r.samples[0].token_ids  # the engine is the trainer
    finally:
        group.close()


def test_losing_a_node_stops_the_group_naming_the_node(three_nodes, tmp_path):
    """Runs last: it removes one worker node of the module's cluster."""
    import time

    from longshort.cluster.actor_calls import ActorFailure

    cluster, workers = three_nodes
    res = RoleResources(num_ranks=1, gpus_per_rank=1, colocate=False, num_engines=1, gpus_per_engine=1,
                        reference=False, placement="STRICT_SPREAD", weight_sync="object_store")
    topo = PairTopology(long=res, accelerator="fake_gpu", call_timeout_s=300, actor_start_timeout_s=300)
    group = PolicyGroup.start("long", _model_dir(tmp_path / "m"), topo, TrainerConfig(lr=3e-2, total_steps=4))
    try:
        engine_node = group.nodes["long/engine0"]
        lost = next(w for node_id, w in workers.items() if engine_node.startswith(node_id[:12]))
        cluster.remove_node(lost)
        t0 = time.monotonic()
        ids = torch.tensor([build_tokenizer().encode(TRAIN_TEXT)])
        from longshort.training.trainer import Batch

        with pytest.raises(ActorFailure) as failure:
            group.train_step([Batch(ids, torch.ones_like(ids))])
            group.sync_weights()
        print(f"node lost -> group stopped in {time.monotonic() - t0:.1f} s")  # the note's number (pytest -s)
        assert time.monotonic() - t0 < 60
        assert failure.value.kind == "died" and failure.value.actor == "long/engine0"
        assert f"on node {engine_node}" in str(failure.value) and not group.alive
    finally:
        group.kill()
