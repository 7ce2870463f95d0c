"""Importance to the pair: score each thought by what it is worth to the SFT'd pair, rebuild the cold start from it.

    python bench/pair_importance.py RUN_DIR [--pair SFT_DIR] [--n 4] [--temperature 0.7] [--seed 0] [--eval 1000]

RUN_DIR is a finished run through ``longshort sft`` (``runs/tiny`` after ``longshort run``). ``longshort score``
measures a thought by the base model's own continuations; this measures it by the pair's. For each scored CoT and
each ``k``, the long role's first turn is the CoT's thoughts ``0..k-1`` verbatim and the SFT'd pair (``--pair``,
default RUN_DIR/sft; e.g. ``RUN_DIR-ablation/random-0/sft``, a pair from a random cold start) carries the
dialogue on ``--n`` times at ``--temperature`` (token in, token out); ``a_k`` is the share of those dialogues whose
answer verifies, smoothed as the scorer does (Beta(0.5, 0.5)), and thought ``k`` gets ``a_{k+1} - a_k`` (the
opening thought, always the long role's, gets 0). The scores go to ``RUN_DIR-pair-importance/scored/score``,
then the cold start is rebuilt from each score at the run's keep ratio, the pair SFT'd from the base model, and
evaluated against the base model on ``--eval`` held-out problems (``scorer_ablation.run_arm``). Prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scorer_ablation import run_arm, se  # noqa: E402

BETA = 0.5


def pair_success(pair: Path, recs: list[dict], n: int, temperature: float, seed: int) -> dict[tuple[int, int], int]:
    """Successes of ``n`` pair dialogues per (CoT, k): the long role opened with thoughts ``0..k-1``."""
    import torch
    from transformers import AutoTokenizer

    from longshort.data.protocol import END_TURN, EOS, MAX_TURNS, Message, header_ids, prompt_ids
    from longshort.data.verify import shared_verifier
    from longshort.engines.base import GenerationRequest, SamplingParams
    from longshort.engines.hf.engine import HFEngine

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(pair / "short/model"))
    engines = {r: HFEngine(str(pair / f"{r}/model"), tok, max_batch_size=128, seed=seed) for r in ("long", "short")}
    end_turn, eos = tok.convert_tokens_to_ids(END_TURN), tok.convert_tokens_to_ids(EOS)
    rows = []  # one dialogue each: CoT c, prefix k, sample j, its ids so far, the answer turn's ids, done
    for c, rec in enumerate(recs):
        texts = [t["text"].strip() for t in rec["thoughts"]]
        for k in range(1, len(texts) + 1):
            opening = "\n\n".join(x for x in texts[:k] if x)
            ids = prompt_ids([Message("user", rec["problem"]), Message("long", opening)], tok, "short")
            rows += [{"c": c, "k": k, "j": j, "ids": list(ids), "answer": [], "done": False} for j in range(n)]
    t0, tokens = time.perf_counter(), 0
    for turn in range(1, MAX_TURNS):
        live = [r for r in rows if not r["done"]]
        if not live:
            break
        role = "short" if turn % 2 else "long"
        reqs = [GenerationRequest(r["ids"], SamplingParams(
            n=1, temperature=temperature, max_tokens=128, stop_token_ids=[end_turn, eos], logprobs=False,
            seed=seed + (r["c"] * 1000 + r["j"]) * 16 + turn), request_id=str(i)) for i, r in enumerate(live)]
        for r, res in zip(live, engines[role].generate(reqs), strict=True):
            out = res.samples[0].token_ids
            tokens += len(out)
            r["ids"] += out
            if out and out[-1] == eos:  # the dialogue ends; only the short role's last turn answers
                r["done"], r["answer"] = True, out if role == "short" else []
            elif not out or out[-1] != end_turn:  # cut at max_tokens: no answer
                r["done"] = True
            else:
                r["ids"] += header_ids(tok, "long" if role == "short" else "short")
        print(f"  turn {turn} ({role}): {len(live)} dialogues, {tokens} tokens, {time.perf_counter() - t0:.0f} s",
              flush=True)
    verdicts = shared_verifier().judge_many([tok.decode(r["answer"], skip_special_tokens=True) for r in rows],
                                            [recs[r["c"]]["answer"] for r in rows])
    succ: dict[tuple[int, int], int] = {}
    for r, v in zip(rows, verdicts, strict=True):
        succ[(r["c"], r["k"])] = succ.get((r["c"], r["k"]), 0) + int(v.correct)
    return succ


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--pair", help="the SFT'd pair that measures (default: RUN_DIR/sft)")
    ap.add_argument("--n", type=int, default=4, help="pair dialogues per prefix")
    ap.add_argument("--temperature", type=float, default=0.7, help="the RL stage's sampling temperature")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", type=int, default=1000, help="held-out problems per evaluation")
    args = ap.parse_args()
    run = Path(args.run_dir).resolve()
    pair = Path(args.pair).resolve() if args.pair else run / "sft"
    missing = [str(p) for p in (run / "score/scores.jsonl", pair / "long/model", pair / "short/model",
                                run / "config.yaml") if not p.exists()]
    if missing:
        sys.exit(f"pair_importance: {run} lacks {missing}; run `longshort run` (or through `longshort sft`) first")
    recs = [json.loads(line) for line in (run / "score/scores.jsonl").open()]
    t0 = time.perf_counter()
    succ = pair_success(pair, recs, args.n, args.temperature, args.seed)
    seconds = time.perf_counter() - t0

    out = run.with_name(run.name + "-pair-importance")
    shutil.rmtree(out, ignore_errors=True)  # fresh arms: another seed's checkpoints must not be resumed
    scored = out / "scored"  # a run directory whose score stage holds the pair's importances
    (scored / "score").mkdir(parents=True)
    for stage in ("bootstrap", "chunk"):
        (scored / stage).symlink_to(run / stage, target_is_directory=True)
    for f in (run / "score").iterdir():
        if f.is_file() and f.name != "scores.jsonl":
            shutil.copy(f, scored / "score" / f.name)
    shutil.copy(run / "config.yaml", scored / "config.yaml")
    with (scored / "score/scores.jsonl").open("w") as f:
        for c, rec in enumerate(recs):
            acc = [(succ[(c, k)] + BETA) / (args.n + 2 * BETA) for k in range(1, len(rec["thoughts"]) + 1)]
            for k, t in enumerate(rec["thoughts"]):
                t["importance"] = 0.0 if k == 0 else acc[k] - acc[k - 1]
                t["pair_acc_after"] = acc[k]
            f.write(json.dumps(rec) + "\n")

    rows = [run_arm("base-importance", ["coldstart.rank_by=importance"], run, run / "config.yaml", out, args.eval),
            run_arm("pair-importance", ["coldstart.rank_by=importance"], scored, run / "config.yaml", out, args.eval)]
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    n = rows[0]["problems"]
    print(f"\nimportance to the pair ({pair}) on {run}: {len(recs)} CoTs, {args.n} dialogues per prefix at T {args.temperature}, "
          f"seed {args.seed}, {seconds:.0f} s; {n} held-out problems, greedy; base {100 * rows[0]['base_accuracy']:.1f}%"
          f" at {rows[0]['base_tokens']:.0f} tokens\n")
    print("| cold start ranked by | SFT'd pair accuracy (%) | pair tokens | tokens vs base |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {100 * r['pair_accuracy']:.1f} ± {100 * se(r['pair_accuracy'], n):.1f} | "
              f"{r['pair_tokens']:.1f} | {r['token_ratio']:.2f} |")


if __name__ == "__main__":
    main()
