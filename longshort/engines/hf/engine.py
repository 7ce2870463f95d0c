"""HF engine: batched generation with the model's KV cache, the embedded default on CPU or one GPU.

Why our own decode loop instead of ``model.generate``: per-row seeded sampling (results do not depend on
which other requests share the batch), per-row temperature/top-p/stop rules in one batch, the logprobs
the trainer expects, finished rows leave the batch instead of being padded to the end, and coupled sampling
(``SamplingParams.couple_context``: the random number of a step is a hash of the seed and the recent tokens) for
low-variance comparisons of rollouts from neighbouring prefixes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch

from longshort.core.checkpoint_io import load_error
from longshort.core.errors import LongshortError
from longshort.core.precision import auto_dtype
from longshort.engines.base import Engine, GenerationRequest, GenerationResult, Sample, SamplingParams
from longshort.engines.hf import prefix
from longshort.engines.hf.sampling import pick

log = logging.getLogger(__name__)

_SEED_MASK_64 = 2**64 - 1
_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, sample index) pairs over the seed space
_SEED_MASK = (1 << 63) - 1
_COMPACT_AT = 0.75  # live share of the decode batch below which finished rows are dropped from the cache


@dataclass
class _Row:
    """One sample being generated: request ``req`` (index into the call's list), sample ``j`` of its ``n``."""

    req: int
    j: int
    prompt: list[int]
    params: SamplingParams
    rng: random.Random | None  # None for greedy rows: they draw no random numbers
    stop_ids: frozenset[int]
    max_new: int
    stop_window: int  # tokens decoded to look for stop strings (0: no stop strings)
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: Literal["stop", "length"] | None = None
    key: int | None = None  # coupled sampling: the sample's seed, mixed with the last ``couple_context`` tokens
    embeds: torch.Tensor | None = None  # the request's prompt_embeds

    def uniform(self) -> float:
        """This step's uniform number (sampled rows only): from the row's RNG, or (coupled) a hash of the seed and
        the context."""
        if self.key is None:
            return self.rng.random()
        m = self.params.couple_context
        ctx = self.ids[-m:] if len(self.ids) >= m else self.prompt[len(self.ids) - m :] + self.ids
        return (_mix64(hash((self.key, *ctx)) & _SEED_MASK_64) >> 11) / 2.0**53


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a well-spread 64-bit hash of a 64-bit integer (Python's tuple hash is not)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _SEED_MASK_64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _SEED_MASK_64
    return x ^ (x >> 31)


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        # GPUs want bf16 (fp16 where they lack it); a CPU bf16 only where it is fast (core/precision.py).
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return auto_dtype(device)
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise LongshortError(f"engine dtype {dtype!r} is unknown; accepted: auto, {', '.join(names)}")
    return names[dtype]


@dataclass
class HFConfig:
    """Settings of the HF engine (one per policy); defaults suit the embedded CPU run."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    max_batch_size: int = field(default=64, metadata={"ge": 1})  # rows (prompts x n) decoded together
    seed: int = 0  # seeds of requests that carry none are drawn from this
    # torch CPU threads for generation; None leaves torch's setting. Tiny models on few shared cores run
    # fastest with 1 (more threads mostly wait on each other).
    num_threads: int | None = field(default=None, metadata={"ge": 1})


class HFEngine(Engine):
    """Generate with a transformers causal LM.

    ``model``: a path/hub-style directory or a loaded ``PreTrainedModel`` (the engine then owns it: it is put in
    eval mode and moved to ``device``). ``tokenizer``: object or path; defaults to the model path. Without a
    tokenizer, ``Sample.text`` is "" and stop strings are refused. ``device``/``dtype`` "auto": for a path, CUDA
    with bf16 when available else CPU with fp32; for a model object, its current device/dtype. Rows are processed
    ``max_batch_size`` at a time (longest prompts first, so similar lengths share padding; prompts that are prefixes of
    one another together, prefilled once: ``prefix.py``).

    Generation also stops on the tokenizer's and generation config's EOS ids (as vLLM does by default), in
    addition to each request's ``stop_token_ids``.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        max_batch_size: int = 64,
        seed: int | None = None,
        num_threads: int | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_batch_size < 1:
            raise LongshortError(f"max_batch_size: {max_batch_size} is not allowed; accepted: an integer >= 1")
        if isinstance(model, str):
            dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                               ("cpu" if device == "auto" else device))
            try:
                model_obj = AutoModelForCausalLM.from_pretrained(model, dtype=_resolve_dtype(dtype, dev))
            except Exception as e:  # safetensors' SafetensorError is no OSError
                if (err := load_error(model, e)) is None:
                    raise
                raise err from e
            if tokenizer is None:
                tokenizer = model
        else:
            model_obj = model
            dev = next(model_obj.parameters()).device if device == "auto" else torch.device(device)
            if dtype != "auto":
                model_obj.to(_resolve_dtype(dtype, dev))
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if tokenizer is None:
            log.warning("HFEngine without a tokenizer: Sample.text will be empty and stop strings are refused")
        self.model = model_obj.to(dev).eval()
        self.tokenizer = tokenizer
        self._cache_arg: str | None = None  # the forward argument that takes the KV cache (see _cache_kw)
        self.device = dev
        self.max_batch_size = max_batch_size
        self.num_threads = num_threads
        self.weight_version = 0
        self._asleep = False
        # Unseeded requests draw their seeds here, so one engine seed makes a whole run reproducible.
        self._seed_rng = random.Random(seed)  # seed None: fresh OS entropy
        self._targets = self._update_targets()
        self._eos_ids = self._default_stop_ids()

    @classmethod
    def from_config(cls, model_path: str, cfg: HFConfig, tokenizer=None) -> HFEngine:
        return cls(model_path, tokenizer, cfg.device, cfg.dtype, cfg.max_batch_size, cfg.seed, cfg.num_threads)

    # ------------------------------------------------------------------ weights

    def _update_targets(self) -> dict[str, torch.Tensor]:
        # remove_duplicate=False lists tied weights under every name (lm_head.weight and embed_tokens.weight are
        # one Parameter), so an update may name either and both see it.
        targets: dict[str, torch.Tensor] = dict(self.model.named_parameters(remove_duplicate=False))
        persistent = set(self.model.state_dict().keys())
        for name, buf in self.model.named_buffers(remove_duplicate=False):
            if name in persistent:
                targets[name] = buf
        return targets

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Copy full tensors (HF names) into the live model in place; any subset per call (buckets).

        Checked before anything is copied: unknown names, shape mismatches, and tied weights given
        different values in one call all raise ``LongshortError`` and leave the model unchanged.
        """
        items = list(named_tensors)
        problems = []
        for name, tensor in items:
            target = self._targets.get(name)
            if target is None:
                hint = ""
                for prefix in ("module.", "_orig_mod.", "model."):
                    if name.startswith(prefix) and name[len(prefix):] in self._targets:
                        hint = f" (did you mean {name[len(prefix):]!r}? strip the wrapper prefix {prefix!r})"
                problems.append(f"unknown parameter {name!r}{hint}")
            elif tuple(tensor.shape) != tuple(target.shape):
                problems.append(f"{name!r} has shape {tuple(tensor.shape)}, the engine's model has {tuple(target.shape)}")
        by_storage: dict[int, tuple[str, torch.Tensor]] = {}
        for name, tensor in items:
            target = self._targets.get(name)
            if target is None or tuple(tensor.shape) != tuple(target.shape):
                continue
            seen = by_storage.setdefault(target.data_ptr(), (name, tensor))
            if seen[0] != name and not torch.equal(seen[1].to(tensor.device, tensor.dtype), tensor):
                problems.append(f"{seen[0]!r} and {name!r} are one tied tensor in the engine's model "
                                "(tie_word_embeddings) but were sent different values")
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise LongshortError(
                f"update_weights(version={version}): " + "; ".join(problems[:5]) + more
                + ". Fix: send the HF parameter names and shapes of the engine's model architecture "
                "(see model.named_parameters()); nothing was updated"
            )
        written: set[int] = set()
        with torch.no_grad():
            for name, tensor in items:
                target = self._targets[name]
                if target.data_ptr() not in written:  # a tied pair sent twice (equal, checked above) is copied once
                    target.copy_(tensor)
                    written.add(target.data_ptr())
        self.weight_version = version

    # ------------------------------------------------------------------ memory

    def sleep(self) -> None:
        """On GPU: move weights to CPU and release cached GPU memory. On CPU: a no-op (nothing to free;
        the KV cache only lives inside one ``generate`` call)."""
        if self.device.type == "cuda" and not self._asleep:
            self.model.to("cpu")
            torch.cuda.empty_cache()
            self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            self.model.to(self.device)
            self._targets = self._update_targets()
            self._asleep = False

    # ------------------------------------------------------------------ generation

    def _default_stop_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.tokenizer):
            eos = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, list | tuple):
                ids.update(int(e) for e in eos)
        return frozenset(ids)

    def _rows(self, requests: list[GenerationRequest]) -> list[_Row]:
        vocab = self.model.get_input_embeddings().weight.shape[0]
        max_pos = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        rows = []
        for r, req in enumerate(requests):
            p = req.params
            at = f"request {r} (id {req.request_id!r})"
            checks = [
                ("n", p.n >= 1, "an integer >= 1"),
                ("temperature", p.temperature >= 0, ">= 0 (0 = greedy)"),
                ("top_p", 0 < p.top_p <= 1, "0 < top_p <= 1"),
                ("max_tokens", p.max_tokens >= 1, "an integer >= 1"),
            ]
            for key, ok, accepted in checks:
                if not ok:
                    raise LongshortError(f"{at}: sampling param '{key}' = {getattr(p, key)!r}; accepted: {accepted}")
            if not req.prompt_ids:
                raise LongshortError(f"{at}: prompt_ids is empty; render a prompt with longshort.data.protocol.prompt_ids")
            bad = [t for t in req.prompt_ids if not 0 <= t < vocab]
            if bad:
                raise LongshortError(f"{at}: prompt token ids {bad[:5]} are outside the model's vocabulary [0, {vocab}); "
                                     "was the prompt tokenized with another tokenizer?")
            hidden = self.model.get_input_embeddings().weight.shape[1]
            if req.prompt_embeds is not None and tuple(req.prompt_embeds.shape) != (len(req.prompt_ids), hidden):
                raise LongshortError(f"{at}: prompt_embeds has shape {tuple(req.prompt_embeds.shape)}; accepted: "
                                     f"({len(req.prompt_ids)}, {hidden}), one embedding per prompt token")
            if p.stop and self.tokenizer is None:
                raise LongshortError(f"{at}: stop strings {p.stop!r} need a tokenizer; pass tokenizer= to HFEngine")
            if any(not s for s in p.stop):
                raise LongshortError(f"{at}: an empty stop string would stop at once; remove it from 'stop'")
            max_new = p.max_tokens
            if max_pos is not None:
                if len(req.prompt_ids) >= max_pos:
                    raise LongshortError(f"{at}: prompt has {len(req.prompt_ids)} tokens, the model's context is "
                                         f"{max_pos}; shorten the prompt")
                max_new = min(max_new, max_pos - len(req.prompt_ids))  # ends with "length" at the context limit
            # A stop string of c characters spans at most ~4c byte-level tokens; +4 covers a split character.
            window = 4 * max((len(s) for s in p.stop), default=0) + 4 if p.stop else 0
            for j in range(p.n):
                rng = None
                if p.temperature > 0:
                    if p.seed is not None:
                        seed = (p.seed ^ (j * _SEED_MIX)) & _SEED_MASK
                    else:
                        seed = self._seed_rng.getrandbits(63)
                    rng = random.Random(seed)
                row = _Row(r, j, list(req.prompt_ids), p, rng, self._eos_ids | frozenset(p.stop_token_ids), max_new,
                           window, embeds=req.prompt_embeds)
                if p.couple_context and rng is not None:
                    row.key = rng.getrandbits(63)  # fixed by the seed: the same (seed, j) couples across prompts
                rows.append(row)
        return rows

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if self._asleep:
            raise LongshortError("HFEngine.generate called while asleep; call engine.wake() first")
        rows = self._rows(requests)
        # Rows sharing a prefix go to one batch (one prefill, prefix.py); longest first, so similar lengths share
        # padding.
        root = prefix.group_by_prefix([r.prompt[:-1] if r.embeds is None else None for r in rows])
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[root[i]].prompt), root[i], -len(rows[i].prompt)))
        threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            for start in range(0, len(order), self.max_batch_size):
                self._decode([rows[i] for i in order[start : start + self.max_batch_size]])
        finally:
            torch.set_num_threads(threads)
        results = [GenerationResult(req.request_id, list(req.prompt_ids), []) for req in requests]
        for row in rows:  # rows were built in (request, sample) order
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True) if self.tokenizer is not None else ""
            results[row.req].samples.append(
                Sample(row.ids, text, row.logprobs if row.params.logprobs else None, row.finish or "length"))
        return results

    @torch.inference_mode()
    def _decode(self, rows: list[_Row]) -> None:
        dev = self.device
        temps = torch.tensor([r.params.temperature for r in rows], dtype=torch.float32, device=dev)
        top_ps = torch.tensor([r.params.top_p for r in rows], dtype=torch.float32, device=dev)
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None and self.tokenizer.pad_token_id is not None \
            else 0
        cache, mask = prefix.prefill(self.model, [r.prompt[:-1] for r in rows], [r.embeds for r in rows], pad,
                                     self._cache_kw)
        # Every row's last prompt token is the first decode step: its logits are the row's first, whichever
        # root's cache the row's context was cut from (prefix.py).
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        next_pos = torch.tensor([[len(r.prompt) - 1] for r in rows], device=dev)
        last = torch.tensor([[r.prompt[-1]] for r in rows], device=dev)
        first = {"input_ids": last}
        if any(r.embeds is not None for r in rows):
            emb = self.model.get_input_embeddings()(last)
            for i, r in enumerate(rows):
                if r.embeds is not None:
                    emb[i, 0] = r.embeds[-1].to(emb.device, emb.dtype)
            first = {"inputs_embeds": emb}
        out = self.model(**first, attention_mask=mask, position_ids=next_pos, **self._cache_kw(cache), use_cache=True)
        next_pos = next_pos + 1
        active = list(rows)  # the cache's rows, in order; finished ones stay (dead) until the next compaction
        live = [True] * len(active)
        while True:
            uniforms = [r.uniform() if ok and r.rng is not None else None for r, ok in zip(active, live, strict=True)]
            tokens, logprobs = pick(out.logits[:, -1, :].float(), temps, top_ps, uniforms)
            for i, (r, tok, lp) in enumerate(zip(active, tokens.tolist(), logprobs.tolist(), strict=True)):
                if not live[i]:
                    continue
                r.ids.append(tok)
                r.logprobs.append(lp)
                if tok in r.stop_ids or (r.stop_window and self._hit_stop_string(r)):
                    r.finish = "stop"
                    live[i] = False
                elif len(r.ids) >= r.max_new:
                    r.finish = "length"
                    live[i] = False
            n_live = sum(live)
            if not n_live:
                return
            # Finished rows leave the batch when a quarter of it is dead: dropping them copies the whole KV cache,
            # which per finished row (as rows end one by one) cost more than decoding a few dead rows.
            if n_live <= _COMPACT_AT * len(active):
                idx = torch.tensor([i for i, ok in enumerate(live) if ok], device=dev)
                cache.batch_select_indices(idx)
                mask, next_pos, tokens, temps, top_ps = (t[idx] for t in (mask, next_pos, tokens, temps, top_ps))
                active = [r for r, ok in zip(active, live, strict=True) if ok]
                live = [True] * len(active)
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos,
                             **self._cache_kw(cache), use_cache=True)
            next_pos = next_pos + 1

    def _cache_kw(self, cache) -> dict:
        """The KV cache argument under this transformers' name: ``cache`` (5.2x on; ``past_key_values`` warns that
        it goes away in 5.40) or ``past_key_values`` (before)."""
        if self._cache_arg is None:
            import inspect

            self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else \
                "past_key_values"
        return {self._cache_arg: cache}

    def _hit_stop_string(self, row: _Row) -> bool:
        # Only the tail can hold a new match: an earlier one would already have stopped the row.
        tail = self.tokenizer.decode(row.ids[-row.stop_window :], skip_special_tokens=True)
        return any(s in tail for s in row.params.stop)
