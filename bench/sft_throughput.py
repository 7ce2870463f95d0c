"""SFT trainer throughput vs a bare PyTorch loop and vs the CPU's matmul bound.

Both paths train the same model (same init) on the same batch with the same objective (token-mean NLL),
AdamW and grad clipping; the trainer goes through DeepSpeed (one rank, this process). Rounds of the two
are interleaved so background load hits both alike. Target: trainer/bare >= 0.8.

The flop bound: a step costs ~6 * N * tokens flops, N = weights of all matmuls (Linear layers and the
LM head; attention scores excluded, their share is printed). Utilisation = achieved flop/s divided by
the measured throughput of one large fp32 matmul on the same threads.

    python bench/sft_throughput.py [--hidden 256 --layers 4 --seq 256 --batch 4 --threads 2 --zero-stage 0]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def build(model_dir: Path, args) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, num_attention_heads=args.hidden // 64,
                      num_key_value_heads=args.hidden // 64, head_dim=64, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, max_position_embeddings=max(512, args.seq),
                      tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="steps per path per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--zero-stage", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    from transformers import AutoModelForCausalLM

    from longshort.training.batch import Batch, masked_nll_sum
    from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
    from longshort.training.trainer import Trainer, TrainerConfig

    model_dir = Path(tempfile.mkdtemp(prefix="sft-bench-"))
    build(model_dir, args)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    mask = torch.ones(args.batch, args.seq)
    batch = Batch(ids, mask, attention_mask=torch.ones_like(ids))
    tokens = ids.numel()

    init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
    total = args.rounds * args.steps + 2
    trainer = Trainer(model_dir, TrainerConfig(lr=1e-4, grad_clip=1.0, total_steps=total, zero_stage=args.zero_stage,
                                              micro_batch_size=args.batch, precision="fp32"))

    bare = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    bare.config.use_cache = False
    bare.train()
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)

    def bare_step() -> float:
        logits = bare(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        loss = masked_nll_sum(logits, batch) / batch.num_targets
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def trainer_step() -> float:
        return trainer.step([batch], masked_nll_sum).loss

    first = (trainer_step(), bare_step())  # warm-up (allocator, lazy init); also checks both compute the same loss
    times = {"trainer": 0.0, "bare": 0.0}
    for _ in range(args.rounds):
        for name, fn in (("trainer", trainer_step), ("bare", bare_step)):
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name] += time.perf_counter() - t
    n_steps = args.rounds * args.steps
    tps = {k: tokens * n_steps / v for k, v in times.items()}

    matmul_params = sum(m.weight.numel() for m in bare.modules() if isinstance(m, torch.nn.Linear))
    flops_per_token = 6 * matmul_params
    attn_share = 12 * args.layers * args.seq * args.hidden / flops_per_token
    peak = matmul_gflops()
    trainer.close()
    shutdown_rank()
    shutil.rmtree(model_dir, ignore_errors=True)

    rows = [
        ("model", f"Qwen2 h={args.hidden} L={args.layers} V={args.vocab}, {matmul_params / 1e6:.2f} M matmul params"),
        ("batch", f"{args.batch} x {args.seq} = {tokens} tokens/step, {n_steps} timed steps per path"),
        ("first-step loss (trainer / bare)", f"{first[0]:.5f} / {first[1]:.5f}"),
        (f"trainer tokens/s (DeepSpeed ZeRO-{args.zero_stage})", f"{tps['trainer']:.0f}"),
        ("bare PyTorch tokens/s", f"{tps['bare']:.0f}"),
        ("ratio trainer / bare (target >= 0.8)", f"{tps['trainer'] / tps['bare']:.3f}"),
        (f"CPU fp32 matmul GFLOP/s ({args.threads} threads)", f"{peak:.1f}"),
        ("trainer GFLOP/s (6 * N * tokens/s)", f"{flops_per_token * tps['trainer'] / 1e9:.1f}"),
        ("flop-bound utilisation (trainer)", f"{flops_per_token * tps['trainer'] / 1e9 / peak:.1%}"),
        ("flop-bound utilisation (bare)", f"{flops_per_token * tps['bare'] / 1e9 / peak:.1%}"),
        ("attention-score flops not counted", f"+{attn_share:.1%} of 6N"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nSFT throughput (CPU)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
