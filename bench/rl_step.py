"""One RL step: longshort's RL loop vs TRL's GRPOTrainer, side by side on this CPU.

Same tiny model (the embedded default's architecture: ``--model`` dir, else a random one built here), same
prompts x group size, same maximum completion length, one optimizer step per RL step, correctness reward only,
no KL (neither loads a reference), temperature 1, one torch thread per worker, both sides in ``--precision``
(auto: bf16 on a CPU with fast bf16, else fp32; ``core/precision.py``). longshort runs
``rl.episode.max_turns: 1`` so it does the same single-policy work as GRPO (the long policy writes the whole
completion; the short policy's group is up but has no tokens to train); the full pair step is a second row.
Per-step wall time excludes start-up (Ray actors / Trainer construction), reported apart; the first step of
each is a warm-up and not counted. TRL is a bench-only dependency: the TRL rows are skipped without it.

    python bench/rl_step.py [--model DIR] [--prompts 8] [--group 8] [--max-tokens 128] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

PROBLEM = "Begin with the number {a}. First add {b}, and finally multiply by 2. What is the final number?"


def build_model(out: Path, texts: list[str]) -> Path:
    """The tiny default's architecture (random init) with a tokenizer trained on ``texts``."""
    from longshort.toy.tiny import TinyModelConfig, TokenizerConfig, save_pretrained, train_tokenizer
    from longshort.toy.tiny import build_model as build

    tok = train_tokenizer(texts * 20, TokenizerConfig())
    return save_pretrained(build(TinyModelConfig(), tok), tok, out)


def problems(n: int) -> list[dict]:
    return [{"id": f"p{i}", "problem": PROBLEM.format(a=i % 50, b=i % 7 + 1), "answer": str(2 * (i % 50 + i % 7 + 1))}
            for i in range(n)]


def run_ours(model: Path, work: Path, args, pair: bool) -> dict:
    import ray

    from longshort.cluster.reaper import start_ray  # loopback only, its own token
    from longshort.cluster.topology import RoleResources
    from longshort.core import precision
    from longshort.core.config import build
    from longshort.recipes.longshort.recipe import PairTopology
    from longshort.rl.loop import RLConfig, run_rl
    from longshort.tracking.tracker import Tracker, TrackingConfig, read_metrics

    run = work / ("ours-pair" if pair else "ours")
    for role in ("long", "short"):
        shutil.copytree(model, run / "sft" / role / "model")
    data = run / "bootstrap" / "data"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems(args.prompts * (args.steps + 2))))
    for split in ("eval.jsonl", "dev.jsonl"):  # RL reads dev; neither is evaluated here (eval_every 0)
        (data / split).write_text(json.dumps(problems(1)[0]) + "\n")
    half = max(1, args.max_tokens // 2)
    episode = ({"max_turns": 4, "max_turn_tokens_long": half, "max_turn_tokens_short": half} if pair
               else {"max_turns": 1, "max_turn_tokens_long": args.max_tokens})
    cfg = build(RLConfig, {"steps": args.steps + 1, "prompts_per_step": args.prompts, "group_size": args.group,
                           "episode": {**episode, "max_episode_tokens": args.max_tokens},
                           "rewards": [{"name": "correctness"}], "kl_coef": 0.0,
                           "optim": {"lr": 1e-5, "grad_accum": args.grad_accum},
                           "eval_before": False, "eval_at_end": False, "eval_every": 0, "save_every": 0,
                           "samples_logged": 0, "export": False, "progress": False,
                           "lora": {"long": args.lora} if getattr(args, "lora", None) else {}}, "rl")
    res = RoleResources(cpus_per_rank=1, threads_per_actor=args.threads, reference=False)
    topo = PairTopology(long=res, short=res)
    precision.set_policy(args.precision)  # the trainer's and the engine's `auto`, in every actor
    start_ray(num_cpus=4, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    try:
        with Tracker(TrackingConfig(backends=["jsonl"], mode="disabled"), run) as tracker:
            run_rl(cfg, run, topo, tracker)
    finally:
        ray.shutdown()
    total = time.perf_counter() - t0
    steps = [r for r in read_metrics(run / "metrics.jsonl") if "time/step" in r][1:]
    step_s = [r["time/step"] for r in steps]
    return {"step_s": step_s, "startup_s": total - sum(r["time/step"] for r in read_metrics(run / "metrics.jsonl")
                                                       if "time/step" in r),
            "gen_tokens": statistics.mean(r["episode/tokens"] * r["episode/count"] for r in steps),
            "parts": {part: [sum(r.get(key, 0.0) for key in {k.format(role=x) for x in ("long", "short")})
                             for r in steps] for part, k in PARTS.items()}}


# Where our step's time goes (metrics of rl/loop.py): the update's "train" includes its old/ref logprobs pass.
PARTS = {"generation (rollouts)": "time/generate", "old/ref logprobs": "time/logprobs_{role}",
         "update (forward + backward)": "time/train_{role}", "weight sync": "time/sync_{role}"}


def print_breakdown(rows: dict[str, dict]) -> None:
    """Median seconds of each part of our steps; the rest (rewards, batching, Ray calls) is step minus parts."""
    print(f"\n{'where the time goes (median s)':34}" + "".join(f"{n[:24]:>26}" for n in rows if "parts" in rows[n]))
    ours = {n: r for n, r in rows.items() if "parts" in r}
    for part in [*PARTS, "rest (rewards, batching, Ray)"]:
        cells = []
        for r in ours.values():
            if part in PARTS:
                v = statistics.median(r["parts"][part]) - (statistics.median(r["parts"]["old/ref logprobs"])
                                                           if part.startswith("update") else 0.0)
            else:
                v = statistics.median(r["step_s"]) - sum(statistics.median(r["parts"][p]) for p in PARTS
                                                         if p != "old/ref logprobs")
            cells.append(f"{v:26.2f}")
        print(f"{part:34}" + "".join(cells))


def run_trl(model: Path, work: Path, args) -> dict | None:
    try:
        from datasets import Dataset
        from transformers import AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        print(f"TRL not installed ({e}): skipping the TRL rows (pip install trl --no-deps; it is bench-only)")
        return None
    from longshort.data.protocol import Message, prompt_ids
    from longshort.data.verify import Verifier

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(str(model))
    probs = problems(args.prompts * (args.steps + 2))
    prompts = [tok.decode(prompt_ids([Message("user", p["problem"])], tok, "long")) for p in probs]
    ds = Dataset.from_dict({"prompt": prompts, "answer": [p["answer"] for p in probs]})
    verifier = Verifier()

    def correctness(completions, answer, **_):
        return [float(v.correct) for v in verifier.judge_many(completions, answer)]

    class Clock(TrainerCallback):
        def __init__(self):
            self.t, self.steps = 0.0, []

        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.steps.append(time.perf_counter() - self.t)

    clock = Clock()
    ga = args.grad_accum  # same micro-batches as ours: generation still covers prompts x group at once
    from longshort.core import precision

    bf16 = precision.is_bf16(args.precision)  # TRL's best on this CPU, as ours: bf16 only where it is fast
    cfg = GRPOConfig(output_dir=str(work / "trl"), use_cpu=True, bf16=bf16, learning_rate=1e-5,
                     per_device_train_batch_size=args.prompts * args.group // ga, gradient_accumulation_steps=ga,
                     generation_batch_size=args.prompts * args.group, num_generations=args.group,
                     max_completion_length=args.max_tokens, max_steps=args.steps + 1, beta=0.0, temperature=1.0,
                     logging_steps=1, report_to=[], save_strategy="no", shuffle_dataset=False, seed=0,
                     dataloader_num_workers=0, disable_tqdm=True)
    t0 = time.perf_counter()
    trainer = GRPOTrainer(model=str(model), reward_funcs=correctness, args=cfg, train_dataset=ds,
                          processing_class=tok, callbacks=[clock])
    startup = time.perf_counter() - t0
    trainer.train()
    tokens = [h["completions/mean_length"] * args.prompts * args.group for h in trainer.state.log_history
              if "completions/mean_length" in h][1:]
    verifier.close()
    return {"step_s": clock.steps[1:], "startup_s": startup, "gen_tokens": statistics.mean(tokens) if tokens else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="HF model dir with the protocol tokenizer (default: a random tiny one)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (both sides)")
    p.add_argument("--no-pair", action="store_true", help="skip the full pair row")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="both sides: auto is bf16 on a CPU with fast bf16 (AMX, AVX512-BF16), else fp32")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    try:
        model = args.model or build_model(work / "model", [p["problem"] for p in problems(200)])
        rows = {"longshort (single turn)": run_ours(model, work, args, pair=False)}
        trl = run_trl(model, work, args)
        if trl is not None:
            rows["TRL GRPOTrainer"] = trl
        if not args.no_pair:
            rows["longshort (pair, both trained)"] = run_ours(model, work, args, pair=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nOne RL step: {args.prompts} prompts x {args.group} samples, max {args.max_tokens} completion tokens, "
          f"{args.threads} thread(s) per worker, median of {args.steps} steps after a warm-up\n")
    print_rows(rows, target=1.0)
    print_breakdown(rows)


def print_rows(rows: dict[str, dict], target: float) -> None:
    """The step table, then TRL's step time over ours (whole step and per generated token) against ``target``."""
    print(f"{'':34}{'step s':>9}{'gen tokens':>12}{'tokens/s':>10}{'start-up s':>12}")
    for name, r in rows.items():
        s = statistics.median(r["step_s"])
        print(f"{name:34}{s:9.2f}{r['gen_tokens']:12.0f}{r['gen_tokens'] / s:10.0f}{r['startup_s']:12.1f}")
    if "TRL GRPOTrainer" in rows:
        ours, theirs = rows["longshort (single turn)"], rows["TRL GRPOTrainer"]
        t_ours, t_trl = statistics.median(ours["step_s"]), statistics.median(theirs["step_s"])
        per_token = (t_trl / max(theirs["gen_tokens"], 1)) / (t_ours / max(ours["gen_tokens"], 1))
        print(f"\nTRL step time / longshort step time: {t_trl / t_ours:.2f}x (target >= {target}: "
              f"{'PASS' if t_trl / t_ours >= target else 'FAIL'}); per generated token: {per_token:.2f}x")


if __name__ == "__main__":
    main()
