"""Checks of longshort.engines.vllm.engine.VLLMEngine against the HF model's own forward pass; run inside the vLLM venv.

Not collected by pytest (vLLM cannot be imported in the main venv): tests/test_engine_vllm.py builds the venv with
launch/vllm_cpu_venv.sh and runs ``python tests/engines/vllm_cpu_check.py OUT.json`` there. Each check records its numbers
and an ``ok`` flag in OUT.json; the exit status is 0 only when every check passed.

For tied and untied tiny Qwen2 models (head_dim 64): greedy generation equals the HF model's teacher-forced argmax
and its logprobs match; after ``update_weights`` with a second model's weights, outputs equal that second model's
forward pass (one call, and several buckets in a session). Plus sampling rules (seeds, n, temperature logprobs,
stop ids/strings, length cap) and refused bad updates.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

TOL = 5e-4  # max |logprob difference| allowed, float32 on both sides (measured: ~3e-5 on x86 AVX-512)
PROMPT_TEXTS = ["what is 12 + 7 ?", "the fox jumps over the dog", "3 * 4 = 12 , 5 * 6 = 30", "lazy"]
TEXTS = ["the quick brown fox jumps over the lazy dog", "what is 12 + 7 ? it is 19", "3 * 4 = 12 , 5 * 6 = 30",
         "a long thought is written by the long model , the short model answers"] * 20


def build(tokenizer, out_dir: str, tied: bool, seed: int) -> str:
    """Save a tiny Qwen2 made with longshort.toy.tiny, weights drawn wider than HF's init so greedy choices are clear."""
    import torch

    from longshort.toy.tiny import TinyModelConfig, build_model, save_pretrained

    model = build_model(TinyModelConfig(layers=2, heads=2, kv_heads=1, head_dim=64, intermediate=256,
                                        max_positions=256, tie_word_embeddings=tied, seed=seed), tokenizer)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.25)
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:  # q/k/v biases
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    save_pretrained(model, tokenizer, out_dir)
    return out_dir


def reference(path: str):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def forward_logprobs(model, prompt: list[int], gen: list[int], temperature: float = 1.0):
    """Teacher-forced log-softmax(logits / T) at each generated position: (argmax ids, logprobs of ``gen``)."""
    import torch

    ids = torch.tensor([prompt + gen])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : len(prompt) + len(gen) - 1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.argmax(-1).tolist(), logp.gather(1, torch.tensor(gen)[:, None]).squeeze(1).tolist()


def compare_greedy(engine, model, prompts: list[list[int]], max_tokens: int = 24) -> dict:
    from longshort.engines.base import GenerationRequest, SamplingParams

    reqs = [GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=max_tokens), f"g{i}")
            for i, p in enumerate(prompts)]
    results = engine.generate(reqs)
    worst, mismatched, tokens, finishes = 0.0, 0, 0, []
    for req, res in zip(reqs, results, strict=True):
        s = res.samples[0]
        argmax, lps = forward_logprobs(model, req.prompt_ids, s.token_ids)
        mismatched += sum(a != b for a, b in zip(argmax, s.token_ids, strict=True))
        worst = max([worst] + [abs(a - b) for a, b in zip(lps, s.logprobs, strict=True)])
        tokens += len(s.token_ids)
        finishes.append(s.finish_reason)
    return {"ok": mismatched == 0 and worst < TOL and tokens > 0, "tokens": tokens, "argmax_mismatches": mismatched,
            "max_abs_logprob_diff": worst, "finish_reasons": finishes}


def state(path: str, tied_duplicates: bool):
    """A trainer's view of a checkpoint: named_parameters (tied head listed once) or state_dict (listed twice)."""
    model = reference(path)
    if tied_duplicates:
        return list(model.state_dict().items())
    return list(model.named_parameters())


def run_model_checks(results: dict, tokenizer, tmp: str, tied: bool) -> None:
    from longshort.core.errors import LongshortError
    from longshort.engines.vllm.engine import VLLMEngine

    tag = "tied" if tied else "untied"
    path_a = build(tokenizer, os.path.join(tmp, f"{tag}_a"), tied, seed=1)
    path_b = build(tokenizer, os.path.join(tmp, f"{tag}_b"), tied, seed=2)
    path_c = build(tokenizer, os.path.join(tmp, f"{tag}_c"), tied, seed=3)
    prompts = [tokenizer.encode(t) for t in PROMPT_TEXTS]
    t0 = time.time()
    engine = VLLMEngine(path_a, dtype="float32", enforce_eager=True, kv_cache_memory_gb=0.25, max_model_len=256,
                        seed=0)
    results[f"{tag}_startup_s"] = round(time.time() - t0, 1)
    try:
        model_a, model_b, model_c = reference(path_a), reference(path_b), reference(path_c)
        results[f"{tag}_initial"] = compare_greedy(engine, model_a, prompts)
        # The two models must disagree, or "equals model B after the update" would prove nothing.
        results[f"{tag}_b_differs_from_a"] = compare_greedy(engine, model_b, prompts)
        results[f"{tag}_b_differs_from_a"]["ok"] = results[f"{tag}_b_differs_from_a"]["argmax_mismatches"] > 0

        # One call with the whole model; for tied models, named_parameters lists the embedding only.
        t0 = time.time()
        engine.update_weights(state(path_b, tied_duplicates=False), version=1)
        results[f"{tag}_update_s"] = round(time.time() - t0, 2)
        results[f"{tag}_after_update"] = compare_greedy(engine, model_b, prompts)
        results[f"{tag}_after_update"]["weight_version"] = engine.weight_version

        # Several buckets in one session (state_dict: a tied head is sent under both names).
        items = state(path_c, tied_duplicates=True)
        with engine.weight_update_session(version=2):
            for i in range(0, len(items), 5):
                engine.update_weights(items[i : i + 5], version=2)
        results[f"{tag}_after_bucketed_update"] = compare_greedy(engine, model_c, prompts)

        # Refused updates name the problem and leave the weights alone.
        q_name = "model.layers.0.self_attn.q_proj.weight"
        q_c = dict(items)[q_name]
        refused = {}
        bad_sets = {
            "unknown_name": [("model.layers.0.mlp.nope.weight", items[0][1])],
            "prefixed_name": [("module." + items[0][0], items[0][1])],
            "wrong_shape": [(items[0][0], items[0][1][:3])],
            # q without k/v: vLLM would rebuild the fused qkv layer from uninitialized memory.
            "partial_module": [(q_name, q_c)],
        }
        if tied:
            emb = dict(items)["model.embed_tokens.weight"]
            bad_sets["tied_conflict"] = [("model.embed_tokens.weight", emb), ("lm_head.weight", emb + 1)]
        for key, bad in bad_sets.items():
            try:
                engine.update_weights(bad, version=99)
                refused[key] = "accepted"
            except LongshortError as e:
                refused[key] = str(e)
        unchanged = compare_greedy(engine, model_c, prompts)
        results[f"{tag}_refused_updates"] = {
            "ok": all(v != "accepted" for v in refused.values()) and unchanged["ok"] and engine.weight_version == 2,
            "messages": refused, "weights_unchanged": unchanged["ok"], "weight_version": engine.weight_version}

        # A session that ends with a module sent in part says so; a full update then restores exact weights.
        try:
            with engine.weight_update_session(version=3):
                engine.update_weights([(q_name, q_c)], version=3)
            partial = "accepted"
        except LongshortError as e:
            partial = str(e)
        engine.update_weights(state(path_c, tied_duplicates=False), version=4)
        recovered = compare_greedy(engine, model_c, prompts)
        results[f"{tag}_partial_session"] = {"ok": "inconsistent" in partial and recovered["ok"]
                                            and engine.weight_version == 4, "message": partial,
                                            "recovered": recovered}
        if not tied:
            run_sampling_checks(results, engine, model_c, prompts, tokenizer)
        # last: it replaces model C's weights with model D's
        run_broadcast_check(results, engine, tag, build(tokenizer, os.path.join(tmp, f"{tag}_d"), tied, seed=4),
                            prompts)
    finally:
        engine.close()


def _broadcast_sender(path: str, port: int, bucket_bytes: int) -> None:
    """Trainer rank 0 of the collective weight sync, in a process of its own: broadcast every bucket over gloo."""
    import torch

    from longshort.weight_sync.buckets import layout_bytes, pack_into, plan_layout
    from longshort.weight_sync.collective import SyncGroup

    params = [(n, p.data) for n, p in reference(path).named_parameters()]
    layout = plan_layout([(n, t.dtype, tuple(t.shape)) for n, t in params], bucket_bytes)
    group = SyncGroup("127.0.0.1", port, 0, 2, "gloo", torch.device("cpu"), 120)
    it = iter(params)
    for metas in layout:
        buf = torch.empty(layout_bytes(metas), dtype=torch.uint8)
        pack_into((next(it) for _ in metas), metas, buf)
        group.broadcast(buf)


def run_broadcast_check(results: dict, engine, tag: str, path_d: str, prompts) -> None:
    """The collective transport: a sender process broadcasts model D in 64 KiB buckets; every vLLM worker receives
    them into its own memory inside one reload session; outputs then equal model D's forward."""
    import multiprocessing
    import socket

    from longshort.weight_sync.base import VersionedEngine
    from longshort.weight_sync.buckets import plan_layout
    from longshort.weight_sync.collective import receive_bucket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model_d = reference(path_d)
    bucket_bytes = 64 * 1024
    layout = plan_layout([(n, p.dtype, tuple(p.shape)) for n, p in model_d.named_parameters()], bucket_bytes)
    sender = multiprocessing.get_context("spawn").Process(target=_broadcast_sender, args=(path_d, port, bucket_bytes))
    sender.start()
    t0 = time.time()
    try:
        engine.open_sync_group("127.0.0.1", port, 1, 2, "gloo", 120)
        versioned = VersionedEngine(engine, tag, version=engine.weight_version)
        versioned.begin(5)
        for metas in layout:
            receive_bucket(versioned, metas, None)
        versioned.finish(5, sum(len(m) for m in layout))
    finally:
        sender.join(120)
    out = compare_greedy(engine, model_d, prompts)
    out.update(ok=out["ok"] and sender.exitcode == 0 and engine.weight_version == 5 and len(layout) > 3,
               buckets=len(layout), sender_exit=sender.exitcode, seconds=round(time.time() - t0, 2))
    results[f"{tag}_broadcast_update"] = out


def run_sampling_checks(results: dict, engine, model, prompts, tokenizer) -> None:
    from longshort.core.errors import LongshortError
    from longshort.data.protocol import END_TURN
    from longshort.engines.base import GenerationRequest, SamplingParams

    def one(params: SamplingParams, prompt=None):
        return engine.generate([GenerationRequest(prompt or prompts[0], params, "s")])[0]

    # Seeded sampling: same seed, same samples (also when batched with other requests); n samples differ.
    a = one(SamplingParams(n=3, temperature=1.0, max_tokens=16, seed=7))
    b = engine.generate([GenerationRequest(prompts[1], SamplingParams(max_tokens=8, seed=1), "other"),
                         GenerationRequest(prompts[0], SamplingParams(n=3, temperature=1.0, max_tokens=16, seed=7),
                                           "s")])[1]
    same = [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    distinct = len({tuple(s.token_ids) for s in a.samples})
    results["seeded_sampling"] = {"ok": same and len(a.samples) == 3 and distinct > 1,
                                  "reproducible": same, "distinct_of_3": distinct}

    # Temperature: logprobs are log-softmax(logits / T), the trainer's definition (top_p = 1).
    worst = 0.0
    for temp in (0.7, 1.0, 1.5):
        res = one(SamplingParams(n=2, temperature=temp, max_tokens=16, seed=3))
        for s in res.samples:
            _, lps = forward_logprobs(model, prompts[0], s.token_ids, temperature=temp)
            worst = max([worst] + [abs(x - y) for x, y in zip(lps, s.logprobs, strict=True)])
    results["temperature_logprobs"] = {"ok": worst < TOL, "max_abs_logprob_diff": worst}

    # Stop token ids: generation ends after emitting one (kept in ids); logprobs=False gives None.
    greedy = one(SamplingParams(temperature=0.0, max_tokens=24)).samples[0].token_ids
    stop_tok = greedy[3]
    cut = one(SamplingParams(temperature=0.0, max_tokens=24, stop_token_ids=[stop_tok], logprobs=False)).samples[0]
    first = greedy.index(stop_tok)
    results["stop_token_ids"] = {"ok": cut.token_ids == greedy[: first + 1] and cut.finish_reason == "stop"
                                 and cut.logprobs is None, "ids": cut.token_ids, "finish": cut.finish_reason}

    # Stop strings: text ends with the matched string (kept, as base.py says).
    text = tokenizer.decode(greedy, skip_special_tokens=True)
    stop_str = text[len(text) // 2 : len(text) // 2 + 2] if len(text) > 4 else None
    if stop_str and stop_str.strip():
        res = one(SamplingParams(temperature=0.0, max_tokens=24, stop=[stop_str])).samples[0]
        ok = res.finish_reason == "stop" and res.text.endswith(stop_str) and stop_str not in res.text[:-len(stop_str)]
        results["stop_strings"] = {"ok": ok, "stop": stop_str, "text": res.text, "finish": res.finish_reason}
    else:
        results["stop_strings"] = {"ok": False, "why": f"greedy text {text!r} too short for a stop string"}

    # Context limit: max_tokens is capped so the request ends with "length" at max_model_len.
    long_prompt = (prompts[0] * 200)[: engine.max_model_len - 5]
    res = one(SamplingParams(temperature=0.0, max_tokens=50), prompt=long_prompt).samples[0]
    stopped = any(t in (tokenizer.convert_tokens_to_ids(END_TURN), tokenizer.eos_token_id) for t in res.token_ids)
    results["context_cap"] = {"ok": len(res.token_ids) <= 5 and (res.finish_reason == "length" or stopped),
                              "generated": len(res.token_ids), "finish": res.finish_reason}

    # Bad requests are refused with the request named.
    errors = {}
    for key, req in {
        "empty_prompt": GenerationRequest([], SamplingParams(), "bad"),
        "out_of_vocab": GenerationRequest([10**6], SamplingParams(), "bad"),
        "top_p_zero": GenerationRequest(prompts[0], SamplingParams(top_p=0.0), "bad"),
        "too_long": GenerationRequest(prompts[0] * 300, SamplingParams(), "bad"),
    }.items():
        try:
            engine.generate([req])
            errors[key] = "accepted"
        except LongshortError as e:
            errors[key] = str(e)
    results["bad_requests"] = {"ok": all(v != "accepted" and "bad" in v for v in errors.values()), "messages": errors}

    # Sleep mode does not exist on CPU: sleep()/wake() are no-ops and generation keeps working.
    engine.sleep()
    engine.wake()
    after = one(SamplingParams(temperature=0.0, max_tokens=24)).samples[0].token_ids
    results["sleep_wake_cpu_noop"] = {"ok": after == greedy and not engine.sleep_enabled}


REAL_QUESTIONS = ["Begin with the number 42. First multiply it by 2, and finally add 2. What is the final number?",
                  "What is 12 + 7 * 3?", "Name a color."]


def run_real_checks(results: dict, path: str, tmp: str) -> None:
    """A real pretrained checkpoint (``LONGSHORT_REAL_MODEL``: SmolLM2-135M-Instruct after prepare-model, tied head):
    vLLM's greedy tokens equal the HF model's; after one optimizer step on the HF copy (a trainer's update) and its
    weights sent in one call, and again after a second step broadcast in buckets, vLLM equals the updated model."""
    import torch
    from transformers import AutoTokenizer

    from longshort.data.protocol import Message, prompt_ids
    from longshort.engines.vllm.engine import VLLMEngine

    tok = AutoTokenizer.from_pretrained(path)
    prompts = [prompt_ids([Message("user", q)], tok, "long") for q in REAL_QUESTIONS]
    t0 = time.time()
    engine = VLLMEngine(path, dtype="float32", enforce_eager=True, kv_cache_memory_gb=0.5, max_model_len=512, seed=0)
    results["real_startup_s"] = round(time.time() - t0, 1)
    try:
        model = reference(path)

        def check(key: str) -> dict:
            out = compare_greedy(engine, model, prompts, max_tokens=16)
            out["ok"] = out["argmax_mismatches"] == 0 and out["max_abs_logprob_diff"] < TOL and out["tokens"] > 0
            results[key] = out
            return out

        def step(text: str) -> None:  # one AdamW step, as a trainer rank would take
            ids = torch.tensor([tok.encode(text)])
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            model.eval()

        check("real_initial")
        before = engine.generate(_real_requests(prompts))
        step("<|long|>Step 1: multiply it by 2, so 42 × 2 = 84.<|end_turn|>")
        engine.update_weights([(n, p.data) for n, p in model.named_parameters()], version=1)
        after = check("real_after_step")
        now = engine.generate(_real_requests(prompts))
        # the step must show, or "equals the updated model" could not tell synced from stale weights
        moved = max(abs(a - b) if s0.token_ids == s1.token_ids else float("inf")
                    for s0, s1 in ((x.samples[0], y.samples[0]) for x, y in zip(before, now, strict=True))
                    for a, b in zip(s0.logprobs, s1.logprobs, strict=False))
        after.update(ok=after["ok"] and moved > 1e-3, logprob_moved_by=moved)
        step("<|short|>84 + 2 = 86. \\boxed{86}<|endoftext|>")
        path_d = os.path.join(tmp, "real_d")
        model.save_pretrained(path_d)
        tok.save_pretrained(path_d)
        run_broadcast_check(results, engine, "real", path_d, prompts)
        out = results["real_broadcast_update"]
        out["ok"] = out["argmax_mismatches"] == 0 and out["max_abs_logprob_diff"] < TOL and out["buckets"] > 3 \
            and out["sender_exit"] == 0
    finally:
        engine.close()


def _real_requests(prompts):
    from longshort.engines.base import GenerationRequest, SamplingParams

    return [GenerationRequest(p, SamplingParams(temperature=0.0, max_tokens=16), f"r{i}") for i, p in enumerate(prompts)]


def main(out_path: str, only: str | None = None) -> int:
    import torch

    torch.set_num_threads(2)
    from longshort.toy.tiny import TokenizerConfig, train_tokenizer

    results: dict = {}
    import vllm

    results["vllm_version"] = vllm.__version__
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(TEXTS, TokenizerConfig(vocab_size=320, min_frequency=1))
        for tied in (True, False):
            if only is not None and only != ("tied" if tied else "untied"):
                continue
            try:
                run_model_checks(results, tokenizer, tmp, tied)
            except Exception:
                results[f"{'tied' if tied else 'untied'}_crash"] = {"ok": False, "error": traceback.format_exc()}
        real = os.environ.get("LONGSHORT_REAL_MODEL")
        if real and only in (None, "real"):
            try:
                run_real_checks(results, real, tmp)
            except Exception:
                results["real_crash"] = {"ok": False, "error": traceback.format_exc()}
    results["total_s"] = round(time.time() - start, 1)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
    failed = [k for k, v in results.items() if isinstance(v, dict) and not v.get("ok")]
    print(json.dumps(results, indent=1))
    print("FAILED: " + ", ".join(failed) if failed else "ALL CHECKS PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[0] if args else os.path.join(tempfile.gettempdir(), "vllm_cpu_check.json"),
                  args[1] if len(args) > 1 else None))
