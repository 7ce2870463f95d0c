"""HF engine throughput vs a plain ``model.generate`` on the same batch, and ``update_weights`` time vs model size.

    python bench/engine_hf.py [--batch 32] [--new-tokens 128] [--threads 2] [--repeats 3]

Target: engine tokens/s >= 1.0x generate's (same prompts, sampling at temperature 1, no early stop).
Ragged batches (rows stop at different lengths, as prefix rollouts do): tokens/s when finished rows leave the
batch at every finish, once a quarter of it is dead (the engine's default), or never.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.engines.hf import engine as hf
from longshort.engines.hf.engine import HFEngine


def tiny_model(hidden: int, layers: int, vocab: int, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64,
                      max_position_embeddings=1024, tie_word_embeddings=True, eos_token_id=None, bos_token_id=None,
                      pad_token_id=0)
    model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None  # both sides generate exactly new_tokens per row
    return model


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns, repeats: int) -> list[float]:
    """Median time of each fn, runs alternating so load from other processes hits all of them alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def throughput(args) -> None:
    model = tiny_model(args.hidden, args.layers, args.vocab)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, args.vocab, (int(n),), generator=gen).tolist()
               for n in torch.randint(16, 65, (args.batch,), generator=gen)]
    engine = HFEngine(model)
    requests = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=args.new_tokens, seed=i))
                for i, p in enumerate(prompts)]

    def ours():
        out = engine.generate(requests)
        assert sum(len(s.token_ids) for r in out for s in r.samples) == args.batch * args.new_tokens

    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def plain():
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                 top_k=0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 pad_token_id=0)
        assert out.shape == (args.batch, width + args.new_tokens)

    tokens = args.batch * args.new_tokens
    t_ours, t_plain = interleaved([ours, plain], args.repeats)
    print(f"\nGeneration: tiny Qwen2 (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}), {args.batch} "
          f"prompts of 16-64 tokens "
          f"x {args.new_tokens} new tokens, sampling T=1, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'generator':<22}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'HFEngine.generate':<22}{t_ours:>10.3f}{tokens / t_ours:>12.0f}")
    print(f"{'model.generate':<22}{t_plain:>10.3f}{tokens / t_plain:>12.0f}")
    ratio = t_plain / t_ours
    print(f"ratio engine/generate: {ratio:.2f}x  (target >= 1.0x: {'PASS' if ratio >= 1.0 else 'FAIL'})")


def ragged(args) -> None:
    model = tiny_model(args.hidden, args.layers, args.vocab)
    engine = HFEngine(model, max_batch_size=10**6)
    print(f"\nRagged batches: each row stops after 8-{args.new_tokens} tokens (uniform), prompts of 16-64 tokens")
    print(f"{'rows':>6}{'compaction':>27}{'seconds':>10}{'tokens/s':>12}")
    for rows in (64, 256):
        gen = torch.Generator().manual_seed(1)
        requests = [GenerationRequest(torch.randint(3, args.vocab, (int(n),), generator=gen).tolist(),
                                      SamplingParams(temperature=1.0, max_tokens=int(m), seed=i))
                    for i, (n, m) in enumerate(zip(torch.randint(16, 65, (rows,), generator=gen),
                                                   torch.randint(8, args.new_tokens + 1, (rows,), generator=gen),
                                                   strict=True))]
        tokens = sum(r.params.max_tokens for r in requests)
        modes = [("at every finish", 1.0), ("a quarter dead (default)", hf._COMPACT_AT), ("never", 0.0)]
        default = hf._COMPACT_AT

        def run(at, requests=requests):
            hf._COMPACT_AT = at
            engine.generate(requests)

        try:
            times = interleaved([lambda at=at: run(at) for _, at in modes], args.repeats)
        finally:
            hf._COMPACT_AT = default
        for (name, _), t in zip(modes, times, strict=True):
            print(f"{rows:>6}{name:>27}{t:>10.3f}{tokens / t:>12.0f}")


def weight_sync(args) -> None:
    print("\nupdate_weights (full state dict from a second model, fp32, CPU)")
    print(f"{'hidden x layers':<18}{'params (M)':>12}{'MiB':>9}{'one call ms':>13}{'buckets ms':>12}{'GiB/s':>8}")
    for hidden, layers in [(256, 4), (512, 8), (1024, 8), (1024, 16)]:
        engine = HFEngine(tiny_model(hidden, layers, args.vocab, seed=0))
        state = list(tiny_model(hidden, layers, args.vocab, seed=1).state_dict().items())
        nbytes = sum(t.numel() * t.element_size() for t in {t.data_ptr(): t for _, t in state}.values())
        params = sum(p.numel() for p in engine.model.parameters())
        t_one = timed(lambda: engine.update_weights(state, version=1), args.repeats)  # noqa: B023

        def bucketed(state=state, engine=engine):  # ~64 MiB buckets, as a trainer would stream them
            bucket, size = [], 0
            for name, t in state:
                bucket.append((name, t))
                size += t.numel() * t.element_size()
                if size >= 64 << 20:
                    engine.update_weights(bucket, version=2)
                    bucket, size = [], 0
            if bucket:
                engine.update_weights(bucket, version=2)

        t_buckets = timed(bucketed, args.repeats)
        print(f"{f'{hidden} x {layers}':<18}{params / 1e6:>12.1f}{nbytes / 2**20:>9.0f}{t_one * 1e3:>13.1f}"
              f"{t_buckets * 1e3:>12.1f}{nbytes / 2**30 / t_one:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256, help="a multiple of 64 (head_dim 64)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)  # 1: steadier on a shared 2-core box
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-weights", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("longshort.engines.hf.engine").setLevel(logging.ERROR)  # no-tokenizer notice: text is not measured
    throughput(args)
    ragged(args)
    if not args.skip_weights:
        weight_sync(args)


if __name__ == "__main__":
    main()
