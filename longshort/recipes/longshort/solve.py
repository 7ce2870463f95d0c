"""``longshort solve PAIR_DIR [PROBLEM]``: run an exported pair on problems; print each turn and the final answer.

The export is checked with ``export.load_pair``, each model gets one engine (``rollout_backend.open_engine_pool``: HF or
vLLM) and the dialogue runs through ``pair.run_pair``, the same token-in/token-out loop the pair was trained and
evaluated with. Takes no run config. Imports stay light (no Ray, DeepSpeed or W&B at import time) so the command
also runs inside the vLLM venv.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from longshort.core.errors import LongshortError
from longshort.eval.problem_input import engine_args, read_problems

ROLE_STYLE = {"long": "bold magenta", "short": "bold cyan"}
WHY_NO_ANSWER = {"cut": "a turn hit --max-turn-tokens before ending", "max_turns": "the turns ran out (--max-turns)"}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pair_dir", help="an exported pair (`longshort export` writes runs/<name>/export)")
    p.add_argument("problem", nargs="?", default=None, help="the problem text; '-' or nothing: read it from stdin")
    p.add_argument("--file", help="problems: one per line, or JSONL with a \"problem\" key")
    p.add_argument("--backend", choices=["hf", "vllm", "auto"], default="hf",
                   help="generation engine (default hf; auto: vllm when it is importable)")
    p.add_argument("--max-turn-tokens", type=int, default=256, help="token limit of one turn (default 256)")
    p.add_argument("--max-turns", type=int, default=None, help="model turns per dialogue (default: the manifest's)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per problem: turns, answer, status")
    p.add_argument("--device", default="auto", help="hf backend: auto, cpu or cuda")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra engine constructor argument (repeatable), e.g. max_model_len=4096 kv_cache_memory_gb=2")
    p.add_argument("--verify", action="store_true", help="check the weight files' sha256 against the manifest")
    p.add_argument("--adapters", action="store_true",
                   help="run each role from its base model + LoRA adapter (export.adapters) instead of the merged model")


# ---------------------------------------------------------------------------------------------- input


def _check(args: argparse.Namespace) -> None:
    if args.max_turn_tokens < 1:
        raise LongshortError(f"--max-turn-tokens: {args.max_turn_tokens} is not allowed; accepted: an integer >= 1")
    if args.max_turns is not None and args.max_turns < 2:
        raise LongshortError(f"--max-turns: {args.max_turns} is not allowed; accepted: an integer >= 2 (the long role "
                             "opens, the short role answers)")
    if args.temperature < 0:
        raise LongshortError(f"--temperature: {args.temperature} is not allowed; accepted: a number >= 0")


# ---------------------------------------------------------------------------------------------- running


def pick_backend(name: str) -> str:
    if name == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    return name


def solve(args: argparse.Namespace, stdin: TextIO | None = None) -> list[dict]:
    """Run the pair of ``args.pair_dir`` on the problems; one record per problem (turns, answer, status)."""
    from longshort.recipes.longshort.export import load_pair

    _check(args)
    manifest, long_dir, short_dir = load_pair(args.pair_dir, verify_hashes=args.verify)
    problems = read_problems(args.problem, args.file, stdin or sys.stdin)
    backend = pick_backend(args.backend)
    if backend == "vllm":
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # also in vLLM's engine processes
    from transformers import AutoTokenizer

    from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
    from longshort.data.verify import extract_answer
    from longshort.recipes.longshort.pair_sft import run_pair

    tok = AutoTokenizer.from_pretrained(str(long_dir))
    tmp = None
    if args.adapters:  # the adapters merged onto their bases, written where any backend loads them
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="longshort-solve-")
        long_dir, short_dir = (_merged(manifest, role, d, Path(tmp.name)) for role, d in
                               (("long", long_dir), ("short", short_dir)))
    cfg = EnginePoolConfig(backend=backend, device=args.device, dtype=args.dtype,
                        engine_kwargs=engine_args(args.engine_arg))
    max_turns = args.max_turns or int(manifest["protocol"]["max_turns"])
    opened = []
    # stdout is for the answers (--json is piped): what libraries print while loading goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        try:
            for d in (long_dir, short_dir):
                opened.append(open_engine_pool(cfg, d, args.seed))
            outcomes = run_pair(*opened, tok, problems, max_turns=max_turns, max_turn_tokens=args.max_turn_tokens,
                                temperature=args.temperature, seed=args.seed)
        finally:
            for b in opened:
                b.close()
            if tmp is not None:
                tmp.cleanup()
    records = []
    for problem, o in zip(problems, outcomes, strict=True):
        turns = [{"role": role, "text": tok.decode(ids, skip_special_tokens=True), "tokens": len(ids)}
                 for role, ids in o.turns]
        answer = (extract_answer(o.answer_text) or o.answer_text.strip()) if o.status == "finished" else None
        records.append({"problem": problem, "turns": turns, "answer": answer, "status": o.status})
    return records


def _merged(manifest: dict, role: str, model_dir: Path, tmp: Path) -> Path:
    """The role's adapter merged onto its base, saved under ``tmp`` (the merged export itself when it has none)."""
    from transformers import AutoTokenizer, GenerationConfig

    from longshort.training.lora import load_merged

    entry = manifest["models"][role].get("adapter")
    if entry is None:
        print(f"solve --adapters: the {role} role has no adapter in this export; using its merged model",
              file=sys.stderr)
        return model_dir
    out = tmp / role
    model = load_merged(model_dir.parent / entry["dir"])
    model.generation_config = GenerationConfig.from_pretrained(str(model_dir))  # the export's stop tokens
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(out)
    return out


def print_records(records: list[dict], as_json: bool) -> None:
    if as_json:
        for rec in records:
            print(json.dumps(rec, ensure_ascii=False), flush=True)
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    for n, rec in enumerate(records, 1):
        if len(records) > 1:
            console.rule(f"problem {n}/{len(records)}")
        console.print(Text.assemble(("user", "bold"), ": ", rec["problem"]))
        for t in rec["turns"]:
            console.print(Text.assemble((t["role"], ROLE_STYLE[t["role"]]), f" ({t['tokens']} tokens): ", t["text"]))
        if rec["answer"] is not None:
            console.print(Text.assemble(("answer", "bold green"), ": ", rec["answer"]))
        else:
            console.print(Text.assemble(("no answer", "bold red"), f": {WHY_NO_ANSWER.get(rec['status'], rec['status'])}"))


def solve_cmd(args: argparse.Namespace) -> int:
    """CLI entry: ``longshort solve PAIR_DIR [PROBLEM]``."""
    print_records(solve(args), args.json)
    return 0
