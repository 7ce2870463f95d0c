"""Failures: a dead or hung actor is reported by role and name, nothing hangs, and the last checkpoint resumes.

Real local Ray, real DeepSpeed ranks (gloo). Faults are injected from the outside: a loss function that calls
``os._exit`` inside rank 1 in the middle of a collective step, ``ray.kill`` on an engine, and a loss function
that hangs past the call timeout in a separate driver process (which must exit non-zero).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import ray
import torch
from builders import ROOT, build_model_dir, build_tokenizer

from longshort.cluster.policy_group import ActorFailure, PolicyGroup
from longshort.cluster.topology import RoleResources
from longshort.core.errors import LongshortError
from longshort.recipes.longshort.recipe import PairTopology
from longshort.training.batch import Batch, masked_nll_sum
from longshort.training.trainer import TrainerConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_model_dir(tmp_path_factory.mktemp("failures") / "model")


def exit_in_rank1(logits, batch):
    """Kill rank 1's process halfway through a collective step (rank 0 is left waiting on it)."""
    import torch.distributed as dist

    if dist.get_rank() == 1:
        os._exit(1)
    return masked_nll_sum(logits, batch)


def _batches(tok) -> list[Batch]:
    out = []
    for text in ("what is two plus two ? it is four .", "the cat sat on the mat and the dog sat on the log ."):
        ids = torch.tensor([tok.encode(text)])
        out.append(Batch(ids, torch.ones_like(ids)))
    return out


def hang(logits, batch):
    time.sleep(600)
    return masked_nll_sum(logits, batch)


def _topology(colocate: bool) -> PairTopology:
    return PairTopology(long=RoleResources(num_ranks=2, colocate=colocate, num_engines=1, reference=False),
                          call_timeout_s=120)


def test_dead_rank_is_named_and_a_fresh_group_resumes_from_the_checkpoint(ray_local, model_dir, tmp_path):
    """The first group hosts its engine inside rank 0; the one that resumes has a standalone engine actor (a
    checkpoint holds only trainer state, so the engine layout may change across a restart)."""
    tok, cfg = build_tokenizer(), TrainerConfig(lr=1e-2, total_steps=10)
    batches = _batches(tok)
    group = PolicyGroup.start("long", model_dir, _topology(colocate=True), cfg)
    group.train_step(batches)
    group.sync_weights()
    ckpt = group.save_checkpoint(tmp_path / "checkpoints" / "step-000001", {"step": 1})
    step2 = group.train_step(batches)  # what the resumed run must reproduce exactly
    weights2 = group.gathered_state_dict()

    t0 = time.monotonic()
    with pytest.raises(ActorFailure) as info:
        group.train_step(batches, loss_fn=exit_in_rank1)
    assert time.monotonic() - t0 < 60  # rank 0 was stuck in the collective: it was killed, not waited for
    failure = info.value
    assert (failure.role, failure.actor, failure.kind) == ("long", "long/rank1", "died")
    assert "policy 'long': actor long/rank1 died during train step" in str(failure)
    assert f"last good checkpoint: {ckpt}" in str(failure)
    assert not group.alive
    for m in group.members:  # every actor of the group is gone, the stuck rank 0 included
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(m.handle.ping.remote(), timeout=30)
    with pytest.raises(LongshortError, match="actors were stopped"):
        group.train_step(batches)

    fresh = PolicyGroup.start("long", model_dir, _topology(colocate=False), cfg)
    try:
        assert fresh.load_checkpoint(ckpt) == {"step": 1}
        assert fresh.version == 2 and fresh.engine_versions() == [2]  # engines re-synced to the checkpoint
        again = fresh.train_step(batches)
        assert again.loss == pytest.approx(step2.loss, abs=1e-6)
        resumed = fresh.gathered_state_dict()
        for name, t in weights2.items():
            torch.testing.assert_close(resumed[name], t, atol=1e-6, rtol=0)
        fresh.sync_weights()
        (engine_sd,) = fresh.engine_state_dicts()
        assert all(torch.equal(engine_sd[k], v) for k, v in resumed.items())

        # a hung collective: both ranks are busy (not dead), so it is reported as a timeout
        fresh.call_timeout_s = 3
        t0 = time.monotonic()
        with pytest.raises(ActorFailure) as info:
            fresh.train_step(batches, loss_fn=hang)
        assert time.monotonic() - t0 < 30
        assert (info.value.actor, info.value.kind, info.value.pending) == ("long/rank0", "timeout",
                                                                           ["long/rank0", "long/rank1"])
        assert "did not answer in time during train step (so did long/rank1)" in str(info.value)
        for m in fresh.members:
            with pytest.raises(ray.exceptions.RayActorError):
                ray.get(m.handle.ping.remote(), timeout=30)
    finally:
        fresh.kill()


DRIVER = textwrap.dedent("""
    import sys
    import ray
    from longshort.engines.base import GenerationRequest
    from longshort.core.errors import LongshortError
    from longshort.cluster.policy_group import Policies
    from longshort.cluster.topology import RoleResources
    from longshort.recipes.longshort.recipe import PairTopology

    ray.init(address=sys.argv[1], log_to_driver=False)
    topo = PairTopology(long=RoleResources(colocate=False, reference=False))
    try:
        with Policies.start(topo, {"long": sys.argv[2]}) as policies:
            group = policies["long"]
            print("actors:", " ".join(m.name for m in group.members), flush=True)
            ray.kill(group.engines[0].handle)
            group.generate([GenerationRequest([5, 6, 7])])
    except LongshortError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
""")


def test_dead_engine_is_named_and_the_driver_exits_nonzero(ray_local, model_dir):
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", DRIVER, address, str(model_dir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "actors: long/rank0 long/engine0" in proc.stdout
    assert "policy 'long': actor long/engine0 died during generate: ActorDiedError" in proc.stderr
    assert "no checkpoint was saved in this run yet" in proc.stderr
    assert time.monotonic() - t0 < 180


def test_engine_that_dies_while_rank0_broadcasts_is_named_and_nothing_hangs(ray_local, model_dir):
    """Collective weight sync (gloo here, NCCL on GPUs): rank 0 is inside a broadcast when its receiver dies; the
    group names the dead engine and stops every actor, the blocked rank 0 included."""
    topo = PairTopology(long=RoleResources(colocate=False, reference=False, weight_sync="collective"),
                          call_timeout_s=20)
    group = PolicyGroup.start("long", model_dir, topo, TrainerConfig(lr=1e-2, total_steps=10))
    try:
        assert group.sync_weights().extra["backend"] == "gloo"  # opens the broadcast group
        rank0, engine = group.ranks[0], group.engines[0]
        group.gather([(engine.name, engine.handle.begin_sync.remote(2))], collective=False, what="begin")
        group.gather([(rank0.name, rank0.handle.begin_publish.remote(topo.bucket_bytes))], collective=True,
                     what="layout")
        sending = rank0.handle.broadcast_bucket.remote(0)  # waits for a receiver that never calls receive
        time.sleep(1.0)
        ray.kill(engine.handle)
        t0 = time.monotonic()
        with pytest.raises(ActorFailure) as info:
            group.gather([(rank0.name, sending)], collective=True, what="weight sync 2 (bucket 0)")
        assert time.monotonic() - t0 < 40
        assert (info.value.actor, info.value.kind) == ("long/engine0", "died")
        assert "during weight sync 2 (bucket 0)" in str(info.value)
        assert not group.alive
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(rank0.handle.ping.remote(), timeout=30)
    finally:
        group.kill()


MEMORY_HOG = textwrap.dedent("""
    import os, sys, time
    def used():
        info = dict(line.split(":", 1) for line in open("/proc/meminfo"))
        kb = lambda k: int(info[k].split()[0])
        return 1 - kb("MemAvailable") / kb("MemTotal")
    os.environ["RAY_memory_usage_threshold"] = f"{min(0.95, used() + 0.04):.3f}"  # ~1 GB above what is used now
    os.environ["RAY_memory_monitor_refresh_ms"] = "100"
    from longshort.cluster.actor_calls import died_summary
    from longshort.cluster.reaper import start_ray
    import ray
    from ray.exceptions import RayError
    start_ray(None, num_cpus=1, include_dashboard=False, log_to_driver=False)

    @ray.remote
    class Hog:
        def grow(self):
            held = []
            for _ in range(80):  # up to 8 GB, 100 MB at a time, every page touched
                held.append(bytearray(b"x") * (100 << 20))
                time.sleep(0.05)
            return "survived"

    try:
        print("RESULT", ray.get(Hog.remote().grow.remote()))
    except RayError as e:
        print("DIED", died_summary(e))
""")


def test_a_worker_killed_for_memory_is_named_with_the_memory_and_the_settings_that_lower_it():
    """Ray's memory monitor, its threshold set just above what the machine uses, kills an actor that keeps
    allocating: the summary the driver reports says out of memory, the node's memory, and what lowers it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", MEMORY_HOG], env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert "DIED" in out, out + done.stderr[-3000:]
    assert "out of memory: Ray's memory monitor (or the kernel) killed it with the node at " in out
    assert "GB used of " in out and "rl.optim.micro_batch_logits_mb" in out
