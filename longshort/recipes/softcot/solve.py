"""``longshort solve EXPORT_DIR [PROBLEM]`` for a SoftCoT export: the assistant reads the problem, the projection
turns its states into the manifest's number of soft thoughts, the LLM answers; prints the answer, or one JSON object
per problem with ``--json``. Same options as the pair's solve (``longshort solve -h``); ``--max-turn-tokens`` caps the
LLM's answer."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from longshort.core.errors import LongshortError
from longshort.eval.problem_input import read_problems


def solve(args: argparse.Namespace, stdin=None) -> list[dict]:
    from longshort.data.verify import extract_answer
    from longshort.recipes.softcot.evaluate import load_system
    from longshort.recipes.softcot.infer import generate
    from longshort.recipes.softcot.prompts import PromptConfig

    root = Path(args.pair_dir)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    if not (root / "projection.safetensors").exists():
        raise LongshortError(f"{root}: not a complete SoftCoT export (no projection.safetensors); run "
                             "`longshort export` on the run again")
    problems = read_problems(args.problem, args.file, stdin or sys.stdin)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the answers
        model, llm_tok, assistant_tok = load_system(root, args.device, "auto" if args.dtype == "auto" else args.dtype)
        answers = generate(model, llm_tok, assistant_tok, PromptConfig(**manifest["prompts"]), problems,
                           manifest["thoughts"], temperature=args.temperature, max_new_tokens=args.max_turn_tokens,
                           seeds=(args.seed,))
    return [{"problem": p, "text": a.text, "tokens": a.tokens, "thoughts": manifest["thoughts"],
             "answer": (extract_answer(a.text) or None) if a.finished else None,
             "status": "finished" if a.finished else "cut"} for p, a in zip(problems, answers, strict=True)]


def solve_cmd(args: argparse.Namespace) -> int:
    for rec in solve(args):
        if args.json:
            print(json.dumps(rec, ensure_ascii=False), flush=True)
            continue
        print(f"user: {rec['problem']}")
        print(f"llm ({rec['tokens']} tokens, {rec['thoughts']} soft thoughts): {rec['text']}")
        print(f"answer: {rec['answer']}" if rec["answer"] is not None else f"no answer ({rec['status']})")
    return 0
