"""Ray overhead of a generate-then-train cycle through the policy actors (both roles, the embedded default layout).

    python bench/ray_overhead.py [--cycles 5] [--prompts 8] [--samples 4] [--max-tokens 48] [--hidden 256]

One cycle, for each role in turn: generate on its engine (sampling), build a padded batch of prompt + completion on
the driver, one optimizer step on its rank, weight sync. Inside-actor time is measured in the actors: generation
(``Engine.generate``) and forward/backward (``Trainer.step``, optimizer step included). Everything else is
overhead: Ray calls, serialization, the driver building batches, the weight sync. Target: overhead <= 10% of the
cycle on the embedded default (tiny model, colocated HF engine, one CPU rank per role).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from longshort.cluster.policy_group import Policies
from longshort.cluster.reaper import start_ray  # loopback only, its own token
from longshort.cluster.topology import RoleResources
from longshort.data.protocol import Message, prompt_ids
from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.recipes.longshort.recipe import PairTopology
from longshort.toy.task import TaskConfig, generate
from longshort.toy.tiny import (
    TinyModelConfig,
    TokenizerConfig,
    build_model,
    save_pretrained,
    task_texts,
    train_tokenizer,
)
from longshort.training.batch import Batch
from longshort.training.trainer import TrainerConfig


def build_model_dir(out: Path, hidden: int, layers: int) -> tuple[Path, list[dict]]:
    train, _ = generate(TaskConfig(n_train=400, n_eval=20))
    tok = train_tokenizer(task_texts(train, 400), TokenizerConfig(n_texts=400))
    model = build_model(TinyModelConfig(heads=hidden // 64, kv_heads=hidden // 64, layers=layers,
                                        intermediate=2 * hidden), tok)
    save_pretrained(model, tok, out)
    return out, train


def to_batch(results, pad_id: int) -> Batch:
    rows = [(r.prompt_ids, s.token_ids) for r in results for s in r.samples]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    loss = torch.zeros_like(ids, dtype=torch.float32)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attn[i, : len(p) + len(c)] = 1
        loss[i, len(p) : len(p) + len(c)] = 1.0
    return Batch(ids, loss, attention_mask=attn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--cpus", type=float, default=None, help="num_cpus for a local Ray (default: all cores)")
    ap.add_argument("--separate", action="store_true", help="standalone engine actors instead of colocated ones")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, records = build_model_dir(Path(tmp) / "model", args.hidden, args.layers)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        start_ray(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        res = RoleResources(colocate=not args.separate, reference=False)
        topo = PairTopology(long=res, short=res)
        t0 = time.perf_counter()
        policies = Policies.start(topo, {"long": model_dir, "short": model_dir}, TrainerConfig(lr=1e-4, total_steps=100))
        start_s = time.perf_counter() - t0
        rows = []
        with policies:
            for cycle in range(args.cycles + 1):  # cycle 0 warms up (first calls build caches, import lazily)
                for role in ("long", "short"):
                    policies[role].take_timings()
                t0 = time.perf_counter()
                for role in ("long", "short"):
                    group = policies[role]
                    reqs = []
                    for i in range(args.prompts):
                        rec = records[(cycle * args.prompts + i) % len(records)]
                        reqs.append(GenerationRequest(
                            prompt_ids([Message("user", rec["problem"])], tok, role),
                            SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens,
                                           seed=cycle * 1000 + i)))
                    results = group.generate(reqs)
                    group.train_step([to_batch(results, tok.pad_token_id)])
                    group.sync_weights()
                wall = time.perf_counter() - t0
                t = {k: sum(policies[r].timings.get(k, 0.0) for r in ("long", "short"))
                     for k in ("generate", "train", "sync")}
                if cycle:
                    rows.append((wall, t["generate"], t["train"], t["sync"]))
        ray.shutdown()

    print(f"\nRay overhead of a generate-then-train cycle ({'standalone' if args.separate else 'colocated'} engines; "
          f"hidden {args.hidden}, {args.layers} layers; {args.prompts}x{args.samples} samples of <= {args.max_tokens} "
          f"tokens per role; actors started in {start_s:.1f} s)")
    print(f"{'cycle':>5} {'wall s':>8} {'generate':>9} {'fwd/bwd':>8} {'sync':>7} {'other':>7} {'overhead':>9}")
    for i, (wall, gen, train, sync) in enumerate(rows, 1):
        other = wall - gen - train - sync
        print(f"{i:>5} {wall:>8.3f} {gen:>9.3f} {train:>8.3f} {sync:>7.3f} {other:>7.3f} "
              f"{(wall - gen - train) / wall:>8.1%}")
    walls = [r[0] for r in rows]
    share = statistics.median([(w - g - t) / w for w, g, t, _ in rows])
    print(f"median cycle {statistics.median(walls):.3f} s; share outside generation and forward/backward: "
          f"{share:.1%} (target <= 10%: {'met' if share <= 0.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
