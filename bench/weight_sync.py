"""Weight sync time vs model size: colocated (in-place copy in the rank's process), object store, collective broadcast.

    python bench/weight_sync.py [--sizes 256x4,512x8,1024x8] [--vocab 32000] [--bucket-mb 64] [--repeats 3]

For each size (hidden x layers, a Qwen2 with untied embeddings) one Ray instance runs "long" with its engine inside
its rank and "short" with a standalone engine actor, fed through the object store and then by rank 0's broadcast
(gloo here, NCCL on GPUs); each syncs ``--repeats`` times (median reported; the first sync is a warm-up). fp32 on
CPU; one rank per role.
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

from longshort.cluster.policy_group import Policies
from longshort.cluster.reaper import start_ray  # loopback only, its own token
from longshort.cluster.topology import RoleResources
from longshort.recipes.longshort.recipe import PairTopology
from longshort.toy.task import TaskConfig, generate
from longshort.toy.tiny import TokenizerConfig, task_texts, train_tokenizer
from longshort.training.trainer import TrainerConfig


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
        times: dict[str, list[float]] = {"colocated": [], "object_store": [], "collective": []}
        buckets = 0
        with tempfile.TemporaryDirectory() as tmp:
            n = build(Path(tmp) / "m", hidden, layers, args.vocab, tok)
            start_ray(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            # "long" keeps its engine in its rank; "short" has a standalone engine fed by the store, then by broadcast
            for standalone in ("object_store", "collective"):
                topo = PairTopology(long=RoleResources(colocate=True, reference=False),
                                      short=RoleResources(colocate=False, reference=False, weight_sync=standalone),
                                      bucket_mb=args.bucket_mb)
                with Policies.start(topo, {"long": Path(tmp) / "m", "short": Path(tmp) / "m"}, TrainerConfig()) as pol:
                    for rep in range(args.repeats + 1):  # the first sync is a warm-up (and opens the broadcast group)
                        for role, key in (("long", "colocated"), ("short", standalone)):
                            if role == "long" and standalone == "collective":
                                continue
                            stats = pol[role].sync_weights()
                            if rep:
                                times[key].append(stats.seconds)
                            if role == "short":
                                buckets = stats.buckets
            ray.shutdown()
        mb = n * 4 / 2**20
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((size, n, mb, med, buckets))
        print(f"{size}: {n / 1e6:.1f}M params, " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()), flush=True)

    print(f"\nWeight sync time vs model size (fp32, CPU, bucket {args.bucket_mb:g} MB, median of {args.repeats}; "
          "collective = gloo broadcast here, NCCL on GPUs)")
    print(f"{'size':>9} {'params':>8} {'MB':>7} " + " ".join(f"{k + ' s':>14} {'GB/s':>6}" for k in times)
          + f" {'buckets':>8}")
    for size, n, mb, med, buckets in rows:
        print(f"{size:>9} {n / 1e6:>7.1f}M {mb:>7.0f} " + " ".join(f"{v:>14.3f} {mb / 1024 / v:>6.2f}"
                                                                  for v in med.values()) + f" {buckets:>8}")


if __name__ == "__main__":
    main()
