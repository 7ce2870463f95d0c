"""Weight sync time vs model size: colocated (in-place copy inside the rank's process) and object store (buckets).

    python bench/weight_sync.py [--sizes 256x4,512x8,1024x8] [--vocab 32000] [--bucket-mb 64] [--repeats 3]

For each size (hidden x layers, a Qwen2 with untied embeddings) one Ray run starts both layouts side by side:
"long" with its engine inside its rank, "short" with a standalone engine actor; each syncs ``--repeats`` times
(median reported; the first sync is a warm-up). fp32 on CPU; one rank per role.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import ray
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from longshort.policy_group import Policies
from longshort.task import TaskConfig, generate
from longshort.tiny import TokenizerConfig, task_texts, train_tokenizer
from longshort.topology import RoleResources, TopologyConfig
from longshort.trainer import EngineConfig


def build(out: Path, hidden: int, layers: int, vocab: int, tok) -> int:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=max(vocab, len(tok)), hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                      head_dim=64, max_position_embeddings=512, tie_word_embeddings=False,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256x4,512x8,1024x8")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=float, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    train, _ = generate(TaskConfig(n_train=200, n_eval=10))
    tok = train_tokenizer(task_texts(train, 200), TokenizerConfig(n_texts=200))

    rows = []
    for size in args.sizes.split(","):
        hidden, layers = (int(x) for x in size.lower().split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            n = build(Path(tmp) / "m", hidden, layers, args.vocab, tok)
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            topo = TopologyConfig(long=RoleResources(colocate=True, reference=False),
                                  short=RoleResources(colocate=False, reference=False), bucket_mb=args.bucket_mb)
            times: dict[str, list[float]] = {"long": [], "short": []}
            buckets = 0
            with Policies.start(topo, {"long": Path(tmp) / "m", "short": Path(tmp) / "m"}, EngineConfig()) as pol:
                for rep in range(args.repeats + 1):
                    for role in ("long", "short"):
                        stats = pol[role].sync_weights()
                        if rep:
                            times[role].append(stats.seconds)
                        if role == "short":
                            buckets = stats.buckets
            ray.shutdown()
        mb = n * 4 / 2**20
        colo, store = statistics.median(times["long"]), statistics.median(times["short"])
        rows.append((size, n, mb, colo, store, buckets))
        print(f"{size}: {n / 1e6:.1f}M params, colocated {colo:.3f} s, object store {store:.3f} s", flush=True)

    print(f"\nWeight sync time vs model size (fp32, CPU, bucket {args.bucket_mb:g} MB, median of {args.repeats})")
    print(f"{'size':>9} {'params':>8} {'MB':>7} {'colocated s':>12} {'GB/s':>6} {'obj store s':>12} {'GB/s':>6} "
          f"{'buckets':>8}")
    for size, n, mb, colo, store, buckets in rows:
        print(f"{size:>9} {n / 1e6:>7.1f}M {mb:>7.0f} {colo:>12.3f} {mb / 1024 / colo:>6.2f} {store:>12.3f} "
              f"{mb / 1024 / store:>6.2f} {buckets:>8}")


if __name__ == "__main__":
    main()
