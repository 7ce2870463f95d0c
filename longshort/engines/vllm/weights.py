"""In-place weight updates of the vLLM engine (mixed into ``VLLMEngine``), over two transports.

Both feed the same worker-side session of ``vllm_worker.WeightSyncExtension`` (begin, load buckets, finish):
``update_weights`` moves tensors in-band through ``LLM.collective_rpc`` as a safetensors blob (object-store and
colocated syncs), ``receive_bucket`` has every tensor-parallel worker receive a bucket that trainer rank 0
broadcasts over a process group of their own (``weight_sync.collective``). Names and shapes are checked against
the checkpoint first, and a tied ``lm_head.weight`` is folded into the input embedding. See docs/vllm.md.

The host class provides ``self.llm``, ``self.model_path``, ``self.vocab_size``, ``self.tensor_parallel_size``,
``self.weight_version``, ``self._asleep`` and ``wake()``, and calls ``_init_weight_updates`` once ``llm`` exists.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from longshort.core.errors import LongshortError

log = logging.getLogger(__name__)

# HF names of the input embedding in common architectures (to pair with ``lm_head.weight`` when they are tied).
_EMBED_NAMES = ("model.embed_tokens.weight", "transformer.wte.weight", "model.decoder.embed_tokens.weight",
                "gpt_neox.embed_in.weight", "transformer.word_embeddings.weight")
_LM_HEAD = "lm_head.weight"


def _checkpoint_shapes(model_path: str) -> dict[str, tuple[int, ...]] | None:
    """HF parameter names and shapes of a local safetensors checkpoint (headers only), or None if unknown."""
    if not os.path.isdir(model_path):
        return None
    files = sorted(f for f in os.listdir(model_path) if f.endswith(".safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        with safe_open(os.path.join(model_path, name), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


class VLLMWeightUpdates:
    """The weight-update half of ``VLLMEngine``."""

    def _init_weight_updates(self, model_path: str) -> None:
        """Checkpoint names/shapes (to check updates against) and the tied input embedding, if any."""
        self._session: int | None = None  # version of an open multi-bucket weight update, else None
        self._session_names: set[str] = set()
        self._shapes = _checkpoint_shapes(model_path)
        self._tied_embed: str | None = None
        # vLLM's own reading of the HF config (with the architecture's defaults, which config.json may omit).
        if getattr(self.llm.llm_engine.model_config.hf_text_config, "tie_word_embeddings", False):
            names = self._shapes or {}
            cfg = self.llm.llm_engine.model_config
            by_shape = [n for n, shape in names.items() if shape == (self.vocab_size, cfg.get_hidden_size())]
            self._tied_embed = next((n for n in _EMBED_NAMES if n in names), by_shape[0] if len(by_shape) == 1 else None)
            if self._tied_embed is None and names:
                log.warning("tied embeddings but no known input-embedding name in %s; an update must then name the "
                            "embedding itself (lm_head.weight cannot be mapped)", model_path)

    def _prepare(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> list[tuple[str, torch.Tensor]]:
        """Check names/shapes against the checkpoint and fold a tied ``lm_head.weight`` into the embedding."""
        items = [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]
        problems = self._shape_problems([(name, tuple(t.shape)) for name, t in items])
        by_name = dict(items)
        if self._tied_embed is not None and _LM_HEAD in by_name:
            embed = by_name.get(self._tied_embed)
            if embed is not None and not torch.equal(embed, by_name[_LM_HEAD].to(embed.dtype)):
                problems.append(f"{self._tied_embed!r} and {_LM_HEAD!r} are one tied tensor in the engine's model "
                                "(tie_word_embeddings) but were sent different values")
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise LongshortError(f"update_weights(version={version}): " + "; ".join(problems[:5]) + more
                                 + ". Fix: send the HF parameter names and shapes of the engine's checkpoint "
                                 f"({self.model_path}); nothing was updated")
        if self._tied_embed is not None and _LM_HEAD in by_name:
            head = by_name.pop(_LM_HEAD)
            by_name.setdefault(self._tied_embed, head)
            items = list(by_name.items())
        return items

    def _shape_problems(self, shapes: list[tuple[str, tuple[int, ...]]]) -> list[str]:
        """What is wrong with sending these HF names and shapes to the engine's checkpoint (empty: nothing)."""
        problems: list[str] = []
        if self._shapes is None:
            return problems
        known = dict(self._shapes)
        if self._tied_embed is not None:
            known.setdefault(_LM_HEAD, known[self._tied_embed])
        for name, shape in shapes:
            if name not in known:
                hint = next((f" (did you mean {name[len(p):]!r}? strip the wrapper prefix {p!r})"
                             for p in ("module.", "_orig_mod.") if name[len(p):] in known and name.startswith(p)), "")
                problems.append(f"unknown parameter {name!r}{hint}")
            elif shape != known[name]:
                problems.append(f"{name!r} has shape {shape}, the engine's model has {known[name]}")
        return problems

    # ------------------------------------------------------------------ collective transport (weight_sync.collective)

    @property
    def sync_receivers(self) -> int:
        """Members this engine adds to a weight-broadcast group: every tensor-parallel worker receives."""
        return self.tensor_parallel_size

    def open_sync_group(self, host: str, port: int, first_rank: int, world: int, backend: str,
                        timeout_s: float) -> None:
        self.llm.collective_rpc("longshort_open_sync_group", args=(host, port, first_rank, world, backend, timeout_s))

    def receive_bucket(self, metas: list, version: int) -> None:
        """Receive one broadcast bucket straight into every worker (no copy through this process); only inside a
        ``weight_update_session``, since vLLM rebuilds layers once all buckets are in."""
        if self._session != version:
            raise LongshortError(f"receive_bucket(version={version}) outside its weight_update_session; open one "
                                 "first (VersionedEngine.begin does)")
        problems = self._shape_problems([(m.name, tuple(m.shape)) for m in metas])
        if problems:  # fatal: the sender's broadcast then finds no receiver and the group stops the run
            raise LongshortError(f"weight sync (version={version}): " + "; ".join(problems[:5])
                                 + f". Fix: train the engine's own architecture ({self.model_path})")
        self._session_names.update(m.name for m in metas)
        self.llm.collective_rpc("longshort_receive_bucket",
                                args=([(m.name, m.dtype, list(m.shape), m.offset, m.nbytes) for m in metas],
                                      self._tied_embed))

    def _send(self, items: list[tuple[str, torch.Tensor]], begin: bool, finish: bool) -> None:
        """Transport seam: tensors travel in-band through collective_rpc as one safetensors blob (vLLM's RPC
        serializer does not round-trip tensors; safetensors keeps dtype and shape exactly, bfloat16 included). Fine
        on CPU and for small models; a NCCL/IPC transport overrides this and drives the same worker session."""
        from safetensors.torch import save

        seen: set[int] = set()
        tensors = {}
        for name, t in items:
            # safetensors refuses tensors that share memory; only a duplicate pointer needs its own copy.
            tensors[name] = t.clone() if t.data_ptr() in seen else t
            seen.add(t.data_ptr())
        blob = save(tensors) if tensors else b""
        self.llm.collective_rpc("longshort_update_weights", args=(blob, self._tied_embed, begin, finish))

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Load full HF-named tensors in place.

        Outside ``weight_update_session`` each call is one complete update, so it must hold whole modules (all of
        ``...self_attn.*`` together: vLLM fuses q/k/v and gate/up into one layer, and a half-loaded layer would be
        rebuilt from uninitialized memory); a bucketed sync opens a session instead.
        """
        items = self._prepare(named_tensors, version)
        if self._asleep:
            self.wake()
        if self._session is None:
            self._check_whole_modules({name for name, _ in items}, f"update_weights(version={version})")
            self._send(items, begin=True, finish=True)
            self._finished(version)
        else:
            self._session_names.update(name for name, _ in items)
            self._send(items, begin=False, finish=False)

    @contextmanager
    def weight_update_session(self, version: int) -> Iterator[VLLMWeightUpdates]:
        """Send an update in several ``update_weights`` calls (buckets of any size); layers are rebuilt at the end.

        Every module touched must be complete by the end of the session, else ``LongshortError`` (the weights are
        then inconsistent: send a full update).
        """
        if self._session is not None:
            raise LongshortError("weight_update_session: a session is already open; finish it first")
        if self._asleep:
            self.wake()
        self._send([], begin=True, finish=False)
        self._session, self._session_names = version, set()
        try:
            yield self
        finally:
            self._session = None
            self._send([], begin=False, finish=True)  # always: restores the layers that received nothing
        self._check_whole_modules(self._session_names, f"weight_update_session(version={version})",
                                  done=" The engine's weights are now inconsistent; send a full update.")
        self._finished(version)

    def _check_whole_modules(self, names: set[str], what: str, done: str = " Nothing was updated.") -> None:
        if self._shapes is None:
            return
        known = set(self._shapes) - ({_LM_HEAD} if self._tied_embed else set())  # a tied head is folded away

        def group(name: str) -> str:  # "model.layers.0.self_attn.q_proj.weight" -> "model.layers.0.self_attn"
            return name.rsplit(".", 2)[0] if name.count(".") >= 2 else ""

        touched = {group(n) for n in names}
        missing = sorted(n for n in known if group(n) in touched and n not in names)
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise LongshortError(
                f"{what}: modules sent in part: missing {', '.join(missing[:5])}{more}. vLLM rebuilds fused layers "
                "(q/k/v, gate/up) from all their parts; send whole modules per call, or send buckets inside "
                "engine.weight_update_session(version)." + done)

    def _finished(self, version: int) -> None:
        # Cached prefixes hold KV computed with the old weights.
        self.llm.reset_prefix_cache()
        self.weight_version = version
