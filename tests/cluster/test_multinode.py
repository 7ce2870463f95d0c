"""A multi-node Ray cluster on one machine: Ray's own harness (`ray.cluster_utils.Cluster`) starts a head and two
worker raylets on loopback, each worker declaring `fake_gpu` (`topology.accelerator`) as its stand-in for GPUs. A
role's trainer rank and its engine are placed on different nodes (STRICT_SPREAD), the trained weights cross nodes
(both the object store and a gloo broadcast), and the engine serves exactly the trainer's weights after each sync.
An SFT's two ranks on the two worker nodes train exactly as on one node, and a stage's engine pool holds the
accelerator. Losing a node stops a group within a minute, naming the node."""

from __future__ import annotations

import os
import tempfile

import pytest
import ray
import torch
from builders import build_model_dir, build_tokenizer, toy_examples

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
    return build_model_dir(path, hidden=64, positions=256)


@pytest.mark.parametrize("strategy", ["object_store", "collective"])
def test_rank_and_engine_on_two_nodes_sync_across_them(three_nodes, tmp_path, strategy, logged):
    from longshort.engines.base import GenerationRequest, SamplingParams
    from longshort.training.batch import Batch

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


@pytest.fixture
def fake_gpu_run():
    """The run's accelerator is `fake_gpu` (as `longshort run` sets it from `topology.accelerator`)."""
    from longshort.cluster.topology import use_cluster

    use_cluster(PairTopology(accelerator="fake_gpu"))
    yield
    use_cluster(None)


def test_sft_ranks_on_two_nodes_train_exactly_as_on_one(three_nodes, fake_gpu_run, tmp_path, logged):
    from longshort.cluster.sft_job import run_sft
    from longshort.training.sft import SFTConfig

    model = _model_dir(tmp_path / "m")
    losses, nodes = {}, {}
    for placement in ("STRICT_SPREAD", "STRICT_PACK"):
        cfg = SFTConfig(lr=3e-3, max_len=64, micro_batch_size=2, epochs=1, num_ranks=2, gpus_per_rank=1,
                        placement=placement, threads_per_rank=1, progress=False, seed=1)
        logged.clear()
        losses[placement] = run_sft(cfg, toy_examples(16), model, tmp_path / placement, metric_prefix="sft_long/").losses
        [line] = [r.getMessage() for r in logged.records if r.getMessage().startswith("sft_long: 2 rank(s)")]
        nodes[placement] = {part.split(" on node ")[1].split()[0] for part in line.split(": ", 1)[1].split(", ")}
    workers = {node_id[:12] for node_id in three_nodes[1]}
    assert nodes["STRICT_SPREAD"] == workers  # a rank on each worker node, the driver's (head) node has none
    assert len(nodes["STRICT_PACK"]) == 1 and nodes["STRICT_PACK"] < workers
    assert len(losses["STRICT_SPREAD"]) == 4 and losses["STRICT_SPREAD"] == losses["STRICT_PACK"]  # bit for bit


def test_a_stage_engine_pool_holds_the_runs_accelerator(three_nodes, fake_gpu_run, tmp_path):
    from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
    from longshort.engines.base import GenerationRequest, SamplingParams

    pool = open_engine_pool(EnginePoolConfig(workers=2, gpus_per_worker=1.5), _model_dir(tmp_path / "m"))
    try:
        assert ray.available_resources().get("fake_gpu", 0) == 1.0  # 4 - 2 x 1.5: one worker node each
        req = GenerationRequest(build_tokenizer().encode("the cat sat on"), SamplingParams(max_tokens=4, temperature=0.0))
        assert len(pool([req])[0].samples[0].token_ids) == 4
    finally:
        pool.close()


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
        from longshort.training.batch import Batch

        with pytest.raises(ActorFailure) as failure:
            group.train_step([Batch(ids, torch.ones_like(ids))])
            group.sync_weights()
        print(f"node lost -> group stopped in {time.monotonic() - t0:.1f} s")  # the note's number (pytest -s)
        assert time.monotonic() - t0 < 60
        assert failure.value.kind == "died" and failure.value.actor == "long/engine0"
        assert f"on node {engine_node}" in str(failure.value) and not group.alive
    finally:
        group.kill()
