"""SoftCoT training step: the shared trainer (DeepSpeed, one rank, this process) vs a bare PyTorch loop.

Both train the same composite (frozen assistant + projection + frozen LLM, same init) on the same batch with the
same objective (token-mean NLL of the LLM's target), AdamW on the projection and grad clipping. Rounds of the two
are interleaved so background load hits both alike. Tokens/s counts the LLM's tokens. Target: trainer/bare >= 0.8.

    python bench/softcot_step.py [--llm-hidden 256 --assistant-hidden 128 --layers 4 --seq 256 --batch 4 --thoughts 32]
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

FACTORY = "longshort.recipes.softcot.model:softcot_model"


def build(model_dir: Path, hidden: int, layers: int, vocab: int, seq: int, seed: int) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from longshort.data.protocol import add_protocol_tokens

    torch.manual_seed(seed)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)},
                                                                               unk_token="w0")), unk_token="w0")
    add_protocol_tokens(tok)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, num_attention_heads=hidden // 64,
                      num_key_value_heads=hidden // 64, head_dim=64, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, max_position_embeddings=max(512, 2 * seq), tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-hidden", type=int, default=256)
    p.add_argument("--assistant-hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--thoughts", type=int, default=32)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="steps per path per round")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    from longshort.recipes.softcot.model import softcot_model, write_spec
    from longshort.training.batch import Batch, masked_nll_sum
    from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
    from longshort.training.trainer import Trainer, TrainerConfig

    root = Path(tempfile.mkdtemp(prefix="softcot-bench-"))
    build(root / "llm", args.llm_hidden, args.layers, args.vocab, args.seq, 0)
    build(root / "assistant", args.assistant_hidden, args.layers, args.vocab, args.seq, 1)
    write_spec(root / "init", assistant=str(root / "assistant"), llm=str(root / "llm"), assistant_slot="<|pad|>",
               llm_slot="<|pad|>")
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(root / "llm" / f, root / "init" / f)
    slot = softcot_model(root / "init").llm_slot_id
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    ids[:, 8:8 + args.thoughts] = slot  # the thoughts sit in the prompt, the target after them
    a_ids = torch.randint(0, args.vocab, (args.batch, 64 + args.thoughts), generator=g)
    a_ids[:, 64:] = slot
    mask = torch.zeros(args.batch, args.seq)
    mask[:, 8 + args.thoughts:] = 1
    batch = Batch(ids, mask, attention_mask=torch.ones_like(ids),
                  model_inputs={"assistant_ids": a_ids, "assistant_ids_mask": torch.ones_like(a_ids)})
    tokens = ids.numel()

    init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
    total = args.rounds * args.steps + 2
    trainer = Trainer(root / "init", TrainerConfig(lr=1e-3, grad_clip=1.0, total_steps=total, precision="fp32",
                                                   micro_batch_size=args.batch, model_factory=FACTORY))
    bare = softcot_model(root / "init", dtype=torch.float32)
    bare.train()
    opt = torch.optim.AdamW(bare.projection.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)

    def bare_step() -> float:
        logits = bare(batch.input_ids, batch.attention_mask, **batch.model_inputs).logits
        loss = masked_nll_sum(logits, batch) / batch.num_targets
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bare.projection.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def trainer_step() -> float:
        return trainer.step([batch], masked_nll_sum).loss

    first = (trainer_step(), bare_step())  # warm-up; also checks both compute the same loss
    times = {"trainer": 0.0, "bare": 0.0}
    for _ in range(args.rounds):
        for name, fn in (("trainer", trainer_step), ("bare", bare_step)):
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name] += time.perf_counter() - t
    n_steps = args.rounds * args.steps
    tps = {k: tokens * n_steps / v for k, v in times.items()}
    trained = sum(p.numel() for p in bare.projection.parameters())
    frozen = sum(p.numel() for p in bare.parameters()) - trained
    trainer.close()
    shutdown_rank()
    shutil.rmtree(root, ignore_errors=True)

    rows = [
        ("models", f"LLM Qwen2 h={args.llm_hidden}, assistant h={args.assistant_hidden}, L={args.layers}, "
                   f"V={args.vocab}; {frozen / 1e6:.2f} M frozen, {trained / 1e3:.1f} k trained (projection)"),
        ("batch", f"{args.batch} x {args.seq} LLM tokens ({args.thoughts} thoughts) + {args.batch} x "
                  f"{a_ids.shape[1]} assistant tokens; {n_steps} timed steps per path"),
        ("first-step loss (trainer / bare)", f"{first[0]:.5f} / {first[1]:.5f}"),
        ("trainer tokens/s (DeepSpeed ZeRO-0)", f"{tps['trainer']:.0f}"),
        ("bare PyTorch tokens/s", f"{tps['bare']:.0f}"),
        ("ratio trainer / bare (target >= 0.8)", f"{tps['trainer'] / tps['bare']:.3f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\nSoftCoT training step (CPU)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
