"""``longshort solve EXPORT_DIR [PROBLEM]`` for a Hawkeye export: the planner writes its CoT, the responder answers
(the one dialogue driver, ``eval.runner.run_team``, with ``PLANNER_RESPONDER_RULES``); prints both turns and the
answer, or one JSON object per problem with ``--json``. Same options as the pair's solve (``longshort solve -h``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from longshort.core.errors import LongshortError
from longshort.eval.problem_input import engine_args, read_problems


def solve(args: argparse.Namespace, stdin=None) -> list[dict]:
    from transformers import AutoTokenizer

    from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
    from longshort.data.protocol import PLANNER_RESPONDER_RULES
    from longshort.data.verify import extract_answer
    from longshort.eval.runner import run_team

    root = Path(args.pair_dir)
    dirs = {r: root / r for r in PLANNER_RESPONDER_RULES.order}
    missing = [str(d) for d in dirs.values() if not (d / "config.json").exists()]
    if missing:
        raise LongshortError(f"{root}: not a complete Hawkeye export (missing {', '.join(missing)}); run "
                             "`longshort export` on the run again")
    problems = read_problems(args.problem, args.file, stdin or sys.stdin)
    backend = "hf" if args.backend == "auto" else args.backend
    cfg = EnginePoolConfig(backend=backend, device=args.device, dtype=args.dtype, engine_kwargs=engine_args(args.engine_arg))
    tok = AutoTokenizer.from_pretrained(str(dirs["planner"]))
    opened = {}
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the answers
        try:
            for role, d in dirs.items():
                opened[role] = open_engine_pool(cfg, d, args.seed)
            answers = run_team(opened, PLANNER_RESPONDER_RULES, tok, problems, max_turns=2,
                               max_turn_tokens=args.max_turn_tokens, temperature=args.temperature, seed=args.seed)
        finally:
            for engine in opened.values():
                engine.close()
    records = []
    for problem, a in zip(problems, answers, strict=True):
        turns = [{"role": r, "text": tok.decode(ids, skip_special_tokens=True), "tokens": len(ids)} for r, ids in a.turns]
        answer = (extract_answer(a.answer_text) or a.answer_text.strip()) if a.status == "finished" else None
        records.append({"problem": problem, "turns": turns, "answer": answer, "status": a.status})
    return records


def solve_cmd(args: argparse.Namespace) -> int:
    for rec in solve(args):
        if args.json:
            print(json.dumps(rec, ensure_ascii=False), flush=True)
            continue
        print(f"user: {rec['problem']}")
        for t in rec["turns"]:
            print(f"{t['role']} ({t['tokens']} tokens): {t['text']}")
        print(f"answer: {rec['answer']}" if rec["answer"] is not None else f"no answer ({rec['status']})")
    return 0
