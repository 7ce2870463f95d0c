"""The worker side of the vLLM engine's weight sync, mixed into every vLLM worker as ``worker_extension_cls``.

vLLM imports this module by name inside its worker processes, so it must stay importable there (longshort on the
path) and import nothing heavy at module level.
"""

from __future__ import annotations

import torch


class WeightSyncExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``): loads HF-named tensors into the live model.

    Names start with ``longshort_`` so they never collide with vLLM's own worker attributes.
    """

    def longshort_update_weights(self, blob: bytes, tied_embed: str | None, begin: bool, finish: bool) -> int:
        """In-band transport: the tensors arrive inside the RPC as one safetensors blob."""
        from safetensors.torch import load

        return self._longshort_load(list(load(blob).items()) if blob else [], tied_embed, begin, finish)

    def longshort_open_sync_group(self, host: str, port: int, first_rank: int, world: int, backend: str,
                                  timeout_s: float) -> None:
        """Collective transport: join the trainer's weight-broadcast group as rank ``first_rank`` + this worker's
        rank (one member per tensor-parallel worker; each receives full tensors and its loaders shard them)."""
        from longshort.weight_sync.collective import SyncGroup

        self._longshort_sync = SyncGroup(host, port, first_rank + self.rank, world, backend, self.device, timeout_s)

    def longshort_receive_bucket(self, metas: list, tied_embed: str | None) -> int:
        """Receive one broadcast bucket on this worker's device and load it (inside an open reload session)."""
        from longshort.weight_sync.buckets import TensorMeta, layout_bytes, unpack_flat

        group = getattr(self, "_longshort_sync", None)
        if group is None:
            raise RuntimeError("longshort_receive_bucket before longshort_open_sync_group")
        layout = [TensorMeta(m[0], m[1], tuple(m[2]), m[3], m[4]) for m in metas]
        flat = group.receive(layout_bytes(layout))
        items = [(n, t) for n, t in unpack_flat(flat, layout) if not (tied_embed and n == "lm_head.weight")]
        return self._longshort_load(items, tied_embed, begin=False, finish=False)

    def _longshort_load(self, items: list, tied_embed: str | None, begin: bool, finish: bool) -> int:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            model = self.model_runner.get_model()
            if begin:
                initialize_layerwise_reload(model)
            try:
                if items:
                    # Tensors as in a checkpoint load: each weight loader copies (and shards, under TP) to its device.
                    model.load_weights(weights=items)
                    if tied_embed is not None:
                        _load_tied_head(model, dict(items).get(tied_embed))
            finally:
                if finish:  # also after an error: layers that received nothing get their weights back
                    finalize_layerwise_reload(model, self.vllm_config.model_config)
        return len(items)


def _load_tied_head(model: torch.nn.Module, embed: torch.Tensor | None) -> None:
    """Give a tied output projection the new embedding.

    vLLM's loaders skip ``lm_head.weight`` for tied models (it is the embedding's Parameter), but during an in-place
    reload the head is its own layer whose post-processed kernel (e.g. the CPU GEMM's packed copy) must be rebuilt
    from the new values, so it is loaded explicitly.
    """
    head = getattr(model, "lm_head", None)
    weight = getattr(head, "weight", None)
    if embed is None or not isinstance(weight, torch.nn.Parameter):
        return
    from vllm.model_executor.model_loader.weight_utils import default_weight_loader

    getattr(weight, "weight_loader", default_weight_loader)(weight, embed)
