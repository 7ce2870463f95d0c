"""Topology config (types, ranges, cross-field checks with file:line), bundles, placement on a real local Ray."""

from __future__ import annotations

import time

import pytest
import ray
from builders import build_model_dir, free_cpus_return_to

from longshort.cluster.policy_group import Policies, PolicyGroup
from longshort.cluster.topology import (
    RoleResources,
    actor_name,
    create_placement_group,
    role_bundles,
    split_evenly,
    topology_config_class,
)
from longshort.cluster.workers.engine import build_engine
from longshort.core.config import build, load
from longshort.core.errors import LongshortError
from longshort.recipes.longshort.recipe import PairTopology


def test_defaults_fit_a_two_core_laptop():
    topo = build(PairTopology, {})
    bundles = role_bundles(topo.long) + role_bundles(topo.short)
    assert bundles == [{"CPU": 0.5}, {"CPU": 0.5}]  # one rank per role; engines live inside the ranks
    assert topo.long.colocate and topo.long.engine_backend == "hf" and topo.long.reference


def test_cluster_layout_bundles():
    topo = build(PairTopology, {"long": {"num_ranks": 2, "gpus_per_rank": 1, "cpus_per_rank": 4,
                                           "colocate": False, "num_engines": 2, "gpus_per_engine": 2,
                                           "engine_backend": "vllm",
                                           "engine_kwargs": {"tensor_parallel_size": 2}, "placement": "SPREAD"}})
    assert role_bundles(topo.long) == [{"CPU": 4.0, "GPU": 1.0}] * 2 + [{"CPU": 0.5, "GPU": 2.0}] * 2
    assert topo.long.engine_kwargs == {"tensor_parallel_size": 2}
    assert topo.long.threads(4) == 4 and topo.short.threads(0.5) == 1
    assert actor_name("short", "engine", 1) == "short/engine1"


@pytest.mark.parametrize("section, message", [
    ({"long": {"num_engines": 2}}, "key 'topology.long.num_engines': 2 colocated engines need as many ranks"),
    ({"short": {"engine_backend": "sglang"}}, "key 'topology.short.engine_backend': 'sglang' is unknown; "
                                              "accepted: hf, vllm"),
    ({"long": {"gpus_per_rank": 1.5}}, "key 'topology.long.gpus_per_rank': 1.5 is not allowed"),
    ({"long": {"num_ranks": 2, "gpus_per_rank": 0.5}}, "key 'topology.long.gpus_per_rank': 0.5 would let 2 ranks "
                                                        "share a GPU"),
    ({"long": {"cpus_per_rank": 0}}, "key 'topology.long.cpus_per_rank' is 0.0, must be > 0"),
    ({"long": {"placement": "PACKED"}}, "key 'topology.long.placement' is 'PACKED', expected one of 'PACK'"),
    ({"long": {"num_rank": 2}}, "unknown key 'topology.long.num_rank' (did you mean 'num_ranks'?)"),
    ({"bucket_mb": -1}, "key 'topology.bucket_mb' is -1.0, must be > 0"),
])
def test_bad_config_names_the_key_and_the_fix(section, message):
    with pytest.raises(LongshortError) as info:
        build(PairTopology, section, "topology")
    assert message in str(info.value)


def test_yaml_errors_point_at_the_line(tmp_path):
    path = tmp_path / "topology.yaml"
    path.write_text("long:\n  num_ranks: 1\n  colocate: true\n  num_engines: 3\n")
    with pytest.raises(LongshortError, match=r"topology.yaml:\d+: key 'long.num_engines'"):
        load(PairTopology, path)


def test_split_evenly():
    assert [len(r) for r in split_evenly(7, 3)] == [3, 2, 2]
    assert [list(r) for r in split_evenly(2, 3)] == [[0], [1], []]
    assert split_evenly(0, 2) == [range(0, 0), range(0, 0)]


def test_vllm_is_reached_by_registry_name_only(tmp_path):
    # vLLM is not installed in this environment: choosing it validates, building it gives the install hint.
    assert build(PairTopology, {"long": {"engine_backend": "vllm"}}).long.engine_backend == "vllm"
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(LongshortError, match="engine backend 'vllm'.*'hf'"):
            build_engine("vllm", str(tmp_path), {}, "long/engine0")
    else:  # pragma: no cover - a venv with vLLM
        pytest.skip("vllm is installed here")


def test_engine_kwargs_the_backend_rejects_are_named(tmp_path):
    path = build_model_dir(tmp_path / "m")
    with pytest.raises(LongshortError, match=r"engine long/engine0: backend 'hf' rejected engine_kwargs "
                                             r"\['tensor_parallel_size'\]"):
        build_engine("hf", str(path), {"tensor_parallel_size": 2}, "long/engine0")


# ---------------------------------------------------------------------------------------------- placement on Ray


@pytest.fixture(scope="module")
def ray_two_cpus():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_default_topology_places_both_roles_on_two_cpus(ray_two_cpus):
    from ray.util.placement_group import remove_placement_group

    topo = PairTopology()
    pgs = [create_placement_group(role, topo.role(role), timeout_s=20) for role in ("long", "short")]
    assert ray.available_resources().get("CPU", 0.0) == pytest.approx(1.0)
    for pg in pgs:
        remove_placement_group(pg)
    assert free_cpus_return_to(2.0)


def test_unplaceable_role_is_named_and_nothing_leaks(ray_two_cpus, tmp_path):
    path = build_model_dir(tmp_path / "m")
    topo = PairTopology(short=RoleResources(num_ranks=2, cpus_per_rank=4), actor_start_timeout_s=2)
    t0 = time.monotonic()
    with pytest.raises(LongshortError) as info:
        Policies.start(topo, {"long": path, "short": path})  # long is launched first, then short cannot be placed
    assert time.monotonic() - t0 < 30
    msg = str(info.value)
    assert "topology.short: Ray could not place 2 actor(s) needing {'CPU': 8.0}" in msg
    assert "the cluster has {'CPU': 2.0}" in msg and "lower topology.short.num_ranks" in msg
    assert free_cpus_return_to(2.0)  # long's placement group and actors were released


def test_model_dir_is_checked_before_any_actor_starts(ray_two_cpus, tmp_path):
    with pytest.raises(LongshortError, match="has no config.json"):
        PolicyGroup("long", tmp_path, PairTopology())
    with pytest.raises(LongshortError, match="unknown role 'medium'"):
        PolicyGroup("medium", tmp_path, PairTopology())


def test_a_frozen_role_starts_engines_only_and_is_never_synced(ray_two_cpus, tmp_path):
    """Roles are data: a recipe's frozen role (Hawkeye's responder) gets standalone engines and nothing else."""
    from longshort.core.config import build
    from longshort.core.stage import RoleSpec
    from longshort.engines.base import GenerationRequest, SamplingParams

    Topo = topology_config_class({"planner": RoleSpec(trainable=True), "responder": RoleSpec(trainable=False)})
    topo = build(Topo, {"planner": {"reference": False, "cpus_per_rank": 0.5},
                        "responder": {"cpus_per_engine": 0.5}, "call_timeout_s": 120})
    assert topo.role_names == ["planner", "responder"] and not topo.responder.trainable
    assert role_bundles(topo.responder) == [{"CPU": 0.5}]  # one engine bundle: no rank, no reference
    with pytest.raises(LongshortError, match="'topology.responder.weight_sync': 'object_store' is set on a frozen role"):
        build(Topo, {"responder": {"weight_sync": "object_store"}}, "topology")
    path = build_model_dir(tmp_path / "m")
    with Policies.start(topo, {"planner": path, "responder": path}) as pol:
        frozen = pol["responder"]
        assert frozen.ranks == [] and len(frozen.engines) == 1 and frozen.sync is None
        req = [GenerationRequest([5, 6, 7], SamplingParams(temperature=0.0, max_tokens=4, seed=0))]
        before = frozen.generate(req)[0].samples[0].token_ids
        pol["planner"].sync_weights()  # the trainable role syncs as usual
        assert pol["planner"].version == 1 and frozen.version == 0 and frozen.engine_versions() == [0]
        for call in (frozen.sync_weights, lambda: frozen.train_step([]), lambda: frozen.save_checkpoint(tmp_path)):
            with pytest.raises(LongshortError, match="policy 'responder' is frozen .*trainable: false"):
                call()
        assert frozen.generate(req)[0].samples[0].token_ids == before
    assert free_cpus_return_to(2.0)
