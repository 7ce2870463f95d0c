"""A Ray actor hosting one standalone generation engine of a policy (``colocate: false``).

The engine backend is chosen by registry name (``hf``, ``vllm`` or any registered one), so this actor never
imports a backend it does not use. Weights arrive as object-store buckets (``load_bucket``; every engine
of the group reads the same stored bucket, so one copy per node serves all of them) or as broadcasts from
trainer rank 0 over a process group of their own (``receive_bucket``; NCCL on GPUs).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from longshort.core.errors import LongshortError
from longshort.engines.base import GenerationRequest
from longshort.weight_sync import collective, object_store
from longshort.weight_sync.base import VersionedEngine
from longshort.weight_sync.buckets import Bucket


def build_engine(backend: str, model_dir: str, kwargs: dict[str, Any], name: str) -> VersionedEngine:
    """Construct the ``backend`` engine on ``model_dir`` (its tokenizer too, where the backend takes one)."""
    from longshort.engines.registry import engine_class

    cls = engine_class(backend)
    params = inspect.signature(cls.__init__).parameters
    args = dict(kwargs)
    key = "model_path" if "model_path" in params else "model"  # vLLM takes a path, HF a path or a model
    args.setdefault(key, model_dir)
    if "tokenizer" in params:
        args.setdefault("tokenizer", model_dir)
    try:
        engine = cls(**args)
    except TypeError as e:
        raise LongshortError(f"engine {name}: backend {backend!r} rejected engine_kwargs {sorted(kwargs)}: {e}; "
                             "fix topology.<role>.engine_kwargs") from e
    return VersionedEngine(engine, name)


def engine_state_dict(engine: VersionedEngine) -> dict:
    """CPU copy of an engine's weights, for checks; only backends that expose a torch ``model`` have one."""
    model = getattr(engine.engine, "model", None)
    if model is None or not hasattr(model, "state_dict"):
        raise LongshortError(f"engine {engine.name}: backend {type(engine.engine).__name__} does not expose its "
                             "weights; compare generations or logprobs instead")
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def node_label() -> str:
    """This actor's Ray node: its id (the first 12 hex digits, as `ray list nodes` shows them) and address."""
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:12]} ({ray.util.get_node_ip_address()})"


class EngineWorker:
    """One engine actor. Construction is cheap; ``setup`` loads the model (so many actors start in parallel)."""

    def __init__(self, role: str, index: int, name: str):
        self.role, self.index, self.name = role, index, name
        self.engine: VersionedEngine | None = None
        self._sync_group = None  # weight_sync.collective.SyncGroup, for HF-style engines on the collective path

    def ping(self) -> str:
        return self.name

    def setup(self, backend: str, model_dir: str, kwargs: dict[str, Any], threads: int) -> dict:
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        t0 = time.perf_counter()
        torch.set_num_threads(threads)
        self.engine = build_engine(backend, model_dir, kwargs, self.name)
        return {"seconds": time.perf_counter() - t0, "node": node_label()}

    def _need(self) -> VersionedEngine:
        if self.engine is None:
            raise LongshortError(f"engine {self.name}: setup() was not called")
        return self.engine

    def generate(self, requests: list[GenerationRequest], min_version: int | None = None) -> tuple[list, float]:
        engine = self._need()
        engine.engine.wake()
        t0 = time.perf_counter()
        results = engine.generate(requests, min_version)
        return results, time.perf_counter() - t0

    def version(self) -> int | None:
        return self._need().version

    def begin_sync(self, version: int) -> None:
        self._need().begin(version)

    def load_bucket(self, bucket: Bucket) -> float:
        return object_store.load_bucket(self._need(), bucket)

    # collective transport (``weight_sync.collective``)
    def sync_receivers(self) -> int:
        """Members this engine adds to the weight-broadcast group: one per worker process that holds weights."""
        return int(getattr(self._need().engine, "sync_receivers", 1))

    def open_sync_group(self, host: str, port: int, rank: int, world: int, backend: str, timeout_s: float) -> None:
        """Join the broadcast group as ranks ``rank ..`` (blocks until every member has joined)."""
        self._sync_group = collective.open_receiver(self._need(), host, port, rank, world, backend, timeout_s)

    def receive_bucket(self, metas: list) -> float:
        t0 = time.perf_counter()
        collective.receive_bucket(self._need(), metas, self._sync_group)
        return time.perf_counter() - t0

    def finish_sync(self, version: int, expected_tensors: int) -> int | None:
        engine = self._need()
        engine.finish(version, expected_tensors)
        return engine.version

    def state_dict(self) -> dict:
        return engine_state_dict(self._need())

    def sleep(self) -> None:
        self._need().engine.sleep()

    def wake(self) -> None:
        self._need().engine.wake()

    def shutdown(self) -> None:
        close = getattr(self.engine.engine, "close", None) if self.engine else None
        if close is not None:
            close()
        self.engine = self._sync_group = None
