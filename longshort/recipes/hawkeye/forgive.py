"""The public code's "forgiveness" (Hawkeye ft.py: ``match_score = 1`` when the reader was already wrong on the
question in a baseline run), off by default: ``hawkeye.forgive_responder_failures``.

Why it exists: on a problem the small responder cannot answer alone, the paper's authors did not want the planner
punished for the responder's weakness. Why it is off: it pays those problems' full correctness for any CoT, so their
only signal is the length penalty, and the planner learns to say nothing on exactly the hard problems.

"Alone" here is the responder answering after the no-steps CoT (``data.NO_STEPS``), greedy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from longshort.recipes.hawkeye.data import NO_STEPS
from longshort.rl.episodes import Episode

_CACHE: dict[str, frozenset[str]] = {}


def responder_alone_wrong(responder_dir: Path, problems, verifier, out: Path, batch: int = 256) -> Path:
    """Write the ids of ``problems`` the responder gets wrong without a CoT to ``out`` (JSON list); returns it."""
    from transformers import AutoTokenizer

    from longshort.cluster.engine_pool import EnginePoolConfig, open_engine_pool
    from longshort.data.protocol import END_TURN, EOS, Message, header_ids, render
    from longshort.engines.base import GenerationRequest, SamplingParams

    tok = AutoTokenizer.from_pretrained(str(responder_dir))
    stops = tok.convert_tokens_to_ids([EOS, END_TURN])
    engine = open_engine_pool(EnginePoolConfig(), responder_dir, 0)
    wrong: list[str] = []
    try:
        for i in range(0, len(problems), batch):
            part = problems[i : i + batch]
            reqs = [GenerationRequest(render([Message("user", p.problem), Message("assistant", NO_STEPS)], tok,
                                             finished=False).ids + header_ids(tok, "short"),
                                      SamplingParams(temperature=0.0, max_tokens=64, stop_token_ids=stops, seed=0,
                                                     logprobs=False)) for p in part]
            texts = [tok.decode(r.samples[0].token_ids, skip_special_tokens=True) for r in engine(reqs)]
            verdicts = verifier.judge_many(texts, [p.gold for p in part])
            wrong += [p.id for p, v in zip(part, verdicts, strict=True) if not v.correct]
    finally:
        engine.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(wrong) + "\n")
    return out


def forgiven_correctness(episodes: Sequence[Episode], ctx, wrong_ids_file: str) -> list[float]:
    """``correctness``, but 1 on every problem listed in ``wrong_ids_file`` (see the module docstring)."""
    if wrong_ids_file not in _CACHE:
        _CACHE[wrong_ids_file] = frozenset(json.loads(Path(wrong_ids_file).read_text()))
    forgiven = _CACHE[wrong_ids_file]
    return [1.0 if c or e.problem_id in forgiven else 0.0 for e, c in zip(episodes, ctx.correct, strict=True)]
