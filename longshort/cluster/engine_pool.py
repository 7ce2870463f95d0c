"""Where batched generation runs for the analysis stages (chunk grouping, scoring, rewriting, pair eval).

A backend is a callable ``list[GenerationRequest] -> list[GenerationResult]`` (results in request order) with a
``close()``. ``LocalEnginePool`` hosts one engine in this process (the tiny default); ``RayEnginePool`` spreads a batch
over ``workers`` Ray actors (``engine_worker.EngineWorker``), each hosting one engine. Requests carry their own seeds, so
the results do not depend on how a batch is split between actors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longshort.cluster.topology import device_options, ensure_ray, run_accelerator
from longshort.core.config import PLACEMENT
from longshort.core.errors import LongshortError
from longshort.engines.base import GenerationRequest, GenerationResult
from longshort.engines.registry import make_engine

log = logging.getLogger("longshort")


@dataclass
class EnginePoolConfig:
    """Where a stage's generation runs: engine backend, workers, batch size (the ``engines`` key of chunk, score,
    coldstart.rewrite, sft.eval and eval; called ``rollout`` before, which still loads with a warning)."""

    backend: str = "hf"  # engine registry name: hf | vllm
    workers: int = field(default=0, metadata={"ge": 0, PLACEMENT: True})  # 0: one engine in this process; N: N Ray actors
    max_batch_size: int = field(default=64, metadata={"ge": 1, PLACEMENT: True})  # rows decoded together (hf)
    device: str = "auto"
    dtype: str = "auto"
    threads_per_worker: int | None = field(default=None, metadata={"ge": 1, PLACEMENT: True})  # torch threads per Ray actor (CPU)
    gpus_per_worker: float = field(default=0.0, metadata={"ge": 0, PLACEMENT: True})
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments of the engine


def engine_kwargs(cfg: EnginePoolConfig, model_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Constructor arguments for ``make_engine(cfg.backend, **kwargs)``."""
    path = str(model_dir)
    if not (Path(path) / "config.json").exists():
        raise LongshortError(f"model {path!r} has no config.json; point the stage at a Hugging Face model directory "
                             "(e.g. run `longshort bootstrap` first for runs/<name>/bootstrap/base_model)")
    if cfg.backend == "vllm":
        kw: dict[str, Any] = {"model_path": path, "dtype": cfg.dtype, "seed": seed}
    else:
        kw = {"model": path, "tokenizer": path, "device": cfg.device, "dtype": cfg.dtype,
              "max_batch_size": cfg.max_batch_size, "seed": seed}
    return {**kw, **cfg.engine_kwargs}


class LocalEnginePool:
    """One engine in this process."""

    def __init__(self, engine):
        self.engine = engine
        self.calls = 0  # generate calls made (tests check that a cached re-run makes none)

    def __call__(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.calls += 1
        return self.engine.generate(requests) if requests else []

    @property
    def context_limit(self) -> int | None:
        """The engine's context length (prompt + generation), when it can tell; callers trim prompts to fit."""
        limit = getattr(self.engine, "max_model_len", None)
        model = getattr(self.engine, "model", None)
        if limit is None and model is not None:
            limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        return limit

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None and hasattr(engine, "close"):
            engine.close()  # vLLM: stop its engine processes now, not at interpreter exit


class RayEnginePool:
    """``workers`` Ray actors (``EngineWorker``, one engine each); a batch is cut into contiguous slices of about
    equal sample counts, one per actor."""

    def __init__(self, cfg: EnginePoolConfig, model_dir: str | Path, seed: int = 0, name: str = "analysis",
                 cpu_share: float = 1.0):
        import ray

        from longshort.cluster.workers.engine import EngineWorker

        ensure_ray(log_to_driver=False)
        kwargs = engine_kwargs(cfg, model_dir, seed)
        path = kwargs.pop("model_path", None) or kwargs.pop("model")
        kwargs.pop("tokenizer", None)
        threads = cfg.threads_per_worker or 1
        devices = device_options(cfg.gpus_per_worker, run_accelerator())
        host = ray.remote(num_cpus=threads * cpu_share, **devices)(EngineWorker)
        self._ray = ray
        self.actors = [host.remote(name, i, f"{name}-engine-{i}") for i in range(cfg.workers)]
        # Engines load in parallel; construction errors surface here, not in the middle of a run.
        ray.get([a.setup.remote(cfg.backend, path, {**kwargs, "seed": seed + i}, threads)
                 for i, a in enumerate(self.actors)])
        self.calls = 0

    def __call__(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.calls += 1
        if not requests:
            return []
        slices = split_even([r.params.n for r in requests], len(self.actors))
        futures = [actor.generate.remote(requests[a:b]) for actor, (a, b) in zip(self.actors, slices, strict=False)
                   if b > a]
        out: list[GenerationResult] = []
        for part, _seconds in self._ray.get(futures):
            out += part
        return out

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []


def split_even(weights: list[int], parts: int) -> list[tuple[int, int]]:
    """Cut ``range(len(weights))`` into at most ``parts`` contiguous slices of about equal total weight."""
    total = sum(weights)
    bounds, acc, start = [], 0, 0
    for i, w in enumerate(weights):
        acc += w
        if len(bounds) < parts - 1 and acc >= total * (len(bounds) + 1) / parts:
            bounds.append((start, i + 1))
            start = i + 1
    if start < len(weights) or not bounds:
        bounds.append((start, len(weights)))
    return bounds


def open_engine_pool(cfg: EnginePoolConfig, model_dir: str | Path, seed: int = 0, name: str = "analysis",
                     cpu_share: float = 1.0) -> LocalEnginePool | RayEnginePool:
    """The backend ``cfg`` asks for, hosting the model in ``model_dir``. ``cpu_share``: the share of its threads an
    actor reserves on Ray, for pools that take turns (two roles of a dialogue: 1/2 each, so both fit where one
    would; GPUs are reserved whole)."""
    if cfg.workers == 0:
        log.info("rollouts: %s engine in this process (%s)", cfg.backend, model_dir)
        return LocalEnginePool(make_engine(cfg.backend, **engine_kwargs(cfg, model_dir, seed)))
    log.info("rollouts: %d Ray actors with a %s engine each (%s)", cfg.workers, cfg.backend, model_dir)
    return RayEnginePool(cfg, model_dir, seed, name, cpu_share)
