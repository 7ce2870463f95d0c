"""vLLM engine: the rollout engine for GPU clusters, through vLLM's public offline API (``vllm.LLM``).

Weights are updated in place, without restarting vLLM: a worker extension (``vllm_worker.WeightSyncExtension``,
given to vLLM as ``worker_extension_cls``) receives full HF-named tensors through ``LLM.collective_rpc`` and loads
them with vLLM's own in-place reload (``initialize_layerwise_reload`` / ``model.load_weights`` /
``finalize_layerwise_reload``). A bare ``model.load_weights`` is not enough: after loading, vLLM post-processes
weights into kernel formats (on CPU every linear weight is repacked for oneDNN and the original tensor is freed), and
for tied input/output embeddings the output projection is a separate kernel that a bare reload leaves stale.

The update side (checks, tied heads, the in-band and the broadcast transport) lives in ``vllm_weights.py``; this
module builds the engine, generates and sleeps. See docs/vllm.md.

Importing this module needs no vLLM; constructing an engine does.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from longshort.core.errors import LongshortError
from longshort.engines.base import Engine, GenerationRequest, GenerationResult, Sample, SamplingParams
from longshort.engines.vllm.weights import VLLMWeightUpdates

log = logging.getLogger(__name__)

# vLLM versions this engine supports: 0.16 brought the in-place layerwise reload it needs; every API used here is
# present from 0.16 through 0.33. Run and tested: 0.32.0 (the vllm-cpu build, see launch/vllm_cpu_venv.sh).
VLLM_MIN, VLLM_MAX_EXCLUSIVE = "0.16", "0.34"
VLLM_TESTED = "0.32.0"
_EXTENSION = "longshort.weight_sync.vllm_extension.WeightSyncExtension"

@dataclass
class VLLMConfig:
    """Settings of a vLLM engine (one per policy). Defaults suit one colocated GPU; CPU ignores the GPU ones."""

    tensor_parallel_size: int = field(default=1, metadata={"ge": 1})
    # Share of GPU memory vLLM may take (weights + KV cache); the colocated trainer needs the rest.
    gpu_memory_utilization: float = field(default=0.5, metadata={"gt": 0, "le": 1})
    # "auto": bfloat16 on GPU, float32 on CPU (vLLM's own "auto" would turn float32 checkpoints into float16).
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # Free GPU memory while the trainer runs (sleep/wake). Not available on CPU: there it is turned off with a warning.
    enable_sleep_mode: bool = False
    sleep_level: Literal[1, 2] = 1  # 1: weights to CPU RAM, KV dropped; 2: both dropped (a full weight sync follows)
    max_model_len: int | None = field(default=None, metadata={"ge": 16})
    # True skips CUDA graphs / torch.compile (faster start, slower decode). None: True on CPU, False on GPU.
    enforce_eager: bool | None = None
    # Fixed KV-cache size. None: by gpu_memory_utilization on GPU; on CPU 1 GiB (or VLLM_CPU_KVCACHE_SPACE if set).
    kv_cache_memory_gb: float | None = field(default=None, metadata={"gt": 0})
    seed: int = 0
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to vllm.LLM as is (e.g. max_num_seqs)


def _vllm_version_check() -> str:
    try:
        import vllm
    except ImportError as e:
        raise LongshortError(
            f"engine backend 'vllm' needs the vllm package ({e}); fix: on a CUDA machine pip install 'longshort[vllm]', "
            "on CPU run launch/vllm_cpu_venv.sh and use its venv, or choose engine backend 'hf'"
        ) from e
    from packaging.version import Version

    version = Version(vllm.__version__.split("+")[0])
    if version < Version(VLLM_MIN):
        raise LongshortError(f"vllm {vllm.__version__} is too old for in-place weight updates; fix: install "
                             f"vllm>={VLLM_MIN},<{VLLM_MAX_EXCLUSIVE} (tested {VLLM_TESTED})")
    if version >= Version(VLLM_MAX_EXCLUSIVE):
        log.warning("vllm %s is newer than this engine was checked against (>=%s,<%s; tested %s); if weight sync "
                    "fails, pin vllm<%s", vllm.__version__, VLLM_MIN, VLLM_MAX_EXCLUSIVE, VLLM_TESTED,
                    VLLM_MAX_EXCLUSIVE)
    return vllm.__version__


class VLLMEngine(VLLMWeightUpdates, Engine):
    """Generate with ``vllm.LLM`` from prompt token ids; update weights in place between rollouts.

    Logprobs are vLLM's ``processed_logprobs``: log-softmax(logits / temperature), as base.py defines, when
    ``top_p`` is 1. With ``top_p < 1`` vLLM renormalizes over the nucleus (there is no mode that applies temperature
    but not top-p); the engine warns once per run in that case.
    """

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.5,
        dtype: str = "auto",
        enable_sleep_mode: bool = False,
        sleep_level: int = 1,
        seed: int = 0,
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        kv_cache_memory_gb: float | None = None,
        tokenizer: str | None = None,
        engine_kwargs: dict | None = None,
    ):
        self.vllm_version = _vllm_version_check()
        from vllm import LLM
        from vllm.platforms import current_platform

        if tensor_parallel_size < 1:
            raise LongshortError(f"tensor_parallel_size: {tensor_parallel_size} is not allowed; accepted: an integer >= 1")
        if sleep_level not in (1, 2):
            raise LongshortError(f"sleep_level: {sleep_level!r} is not allowed; accepted: 1 or 2")
        on_cpu = current_platform.is_cpu()
        if dtype == "auto":
            dtype = "float32" if on_cpu else "bfloat16"
        if enable_sleep_mode and not current_platform.is_sleep_mode_available():
            log.warning("vLLM sleep mode is not available on this platform (%s); running without it: sleep() and "
                        "wake() do nothing and the engine keeps its memory", current_platform.device_name)
            enable_sleep_mode = False
        kwargs = dict(engine_kwargs or {})
        if "worker_extension_cls" in kwargs:
            raise LongshortError("engine_kwargs: 'worker_extension_cls' is set by the engine itself (weight sync); "
                                 "remove it, or subclass longshort.weight_sync.vllm_extension.WeightSyncExtension")
        if enforce_eager is None:
            enforce_eager = on_cpu  # CPU compilation needs a C++ toolchain and minutes; CUDA graphs pay off on GPU
        if kv_cache_memory_gb is None and on_cpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            kv_cache_memory_gb = 1.0  # vLLM CPU would otherwise reserve a share of all RAM (the utilization)
        if kv_cache_memory_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_gb * 2**30)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if tensor_parallel_size > 1:
            # Inside a Ray actor that holds tensor_parallel_size GPUs, vLLM's own worker processes use exactly the
            # actor's devices (CUDA_VISIBLE_DEVICES); its Ray executor would ask the cluster for more GPUs instead.
            kwargs.setdefault("distributed_executor_backend", "mp")
        self.model_path = model_path
        self.tensor_parallel_size = tensor_parallel_size
        self.llm = LLM(
            model=model_path,
            tokenizer=tokenizer,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            seed=seed,
            enforce_eager=enforce_eager,
            enable_sleep_mode=enable_sleep_mode,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=_EXTENSION,
            **kwargs,
        )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        self.sleep_enabled = enable_sleep_mode
        self.sleep_level = sleep_level
        self.weight_version = 0
        self._asleep = False
        self._warned_top_p = False
        self._init_weight_updates(model_path)

    @classmethod
    def from_config(cls, model_path: str, cfg: VLLMConfig, tokenizer: str | None = None) -> VLLMEngine:
        return cls(model_path, cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.dtype, cfg.enable_sleep_mode,
                   cfg.sleep_level, cfg.seed, cfg.max_model_len, cfg.enforce_eager, cfg.kv_cache_memory_gb, tokenizer,
                   cfg.engine_kwargs)

    # ------------------------------------------------------------------ generation

    def _vllm_params(self, r: int, req: GenerationRequest):
        from vllm import SamplingParams as VSP

        p: SamplingParams = req.params
        at = f"request {r} (id {req.request_id!r})"
        for key, ok, accepted in (
            ("n", p.n >= 1, "an integer >= 1"),
            ("temperature", p.temperature >= 0, ">= 0 (0 = greedy)"),
            ("top_p", 0 < p.top_p <= 1, "0 < top_p <= 1"),
            ("max_tokens", p.max_tokens >= 1, "an integer >= 1"),
        ):
            if not ok:
                raise LongshortError(f"{at}: sampling param '{key}' = {getattr(p, key)!r}; accepted: {accepted}")
        if not req.prompt_ids:
            raise LongshortError(f"{at}: prompt_ids is empty; render a prompt with longshort.data.protocol.prompt_ids")
        if p.couple_context:
            raise LongshortError(f"{at}: coupled sampling (couple_context={p.couple_context}) is an HF-engine "
                                 "feature; set score.couple_context: 0 or use the hf backend for scoring")
        bad = [t for t in req.prompt_ids if not 0 <= t < self.vocab_size]
        if bad:
            raise LongshortError(f"{at}: prompt token ids {bad[:5]} are outside the model's vocabulary "
                                 f"[0, {self.vocab_size}); was the prompt tokenized with another tokenizer?")
        if any(not s for s in p.stop):
            raise LongshortError(f"{at}: an empty stop string would stop at once; remove it from 'stop'")
        if len(req.prompt_ids) >= self.max_model_len:
            raise LongshortError(f"{at}: prompt has {len(req.prompt_ids)} tokens, the engine's context is "
                                 f"{self.max_model_len}; shorten the prompt or raise max_model_len")
        if p.logprobs and p.top_p < 1 and p.temperature > 0 and not self._warned_top_p:
            log.warning("vLLM logprobs with top_p=%s < 1 are renormalized over the top-p nucleus, not "
                        "log-softmax(logits/temperature) over the vocabulary; use top_p=1 for trainer-exact logprobs",
                        p.top_p)
            self._warned_top_p = True
        return VSP(
            n=p.n,
            temperature=p.temperature,
            top_p=p.top_p,
            # Like the HF engine: a request ends with "length" at the context limit instead of failing.
            max_tokens=min(p.max_tokens, self.max_model_len - len(req.prompt_ids)),
            stop=list(p.stop) or None,
            stop_token_ids=list(p.stop_token_ids) or None,
            include_stop_str_in_output=True,  # base.py: the matched stop string stays in text and ids
            seed=p.seed,
            logprobs=0 if p.logprobs else None,  # 0: only the sampled token's logprob
        )

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        from vllm.inputs import TokensPrompt

        if self._asleep:
            raise LongshortError("VLLMEngine.generate called while asleep; call engine.wake() first")
        if not requests:
            return []
        if any(req.prompt_embeds is not None for req in requests):
            raise LongshortError("the vllm engine takes token prompts only (prompt_embeds given); generate soft-token "
                                 "prompts with the hf backend")
        params = [self._vllm_params(r, req) for r, req in enumerate(requests)]
        prompts = [TokensPrompt(prompt_token_ids=list(req.prompt_ids)) for req in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for req, out in zip(requests, outputs, strict=True):
            samples = []
            for comp in sorted(out.outputs, key=lambda c: c.index):
                if comp.finish_reason not in ("stop", "length"):
                    raise LongshortError(f"request {req.request_id!r}: vLLM ended a sample with finish reason "
                                         f"{comp.finish_reason!r} (aborted?); check the vLLM log above")
                ids = list(comp.token_ids)
                lps = None
                if req.params.logprobs:
                    lps = [step[tok].logprob for tok, step in zip(ids, comp.logprobs, strict=True)]
                samples.append(Sample(ids, comp.text, lps, comp.finish_reason))
            results.append(GenerationResult(req.request_id, list(req.prompt_ids), samples))
        return results

    # ------------------------------------------------------------------ memory

    def sleep(self) -> None:
        """Free GPU memory for the trainer (vLLM sleep mode); a no-op where sleep mode is off or unavailable."""
        if self.sleep_enabled and not self._asleep:
            self.llm.sleep(level=self.sleep_level)
            self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        """Stop vLLM's engine processes and free their memory."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        core = getattr(llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm
        gc.collect()
