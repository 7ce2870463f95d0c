"""Chunker: lossless on synthetic and real R1-style text, cue merging, model grouping validation and fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import run_dir_with_task, task_records, tiny_model_dir

from longshort.core.errors import LongshortError
from longshort.data.problems import LongCoTSource, ProblemSource
from longshort.recipes.longshort.chunking.config import ChunkConfig, ChunkStats
from longshort.recipes.longshort.chunking.grouping import parse_groups
from longshort.recipes.longshort.chunking.thoughts import (
    chunk_many,
    chunk_text,
    run_chunk,
    split_head_tail,
    split_steps,
    teacher_cover,
)

MATH500 = Path("/work/shared/data/benchmarks/math500.jsonl")

R1_TRACE = r"""<think>
Okay, so I need to find all real $x$ with $x^2 - 5x + 6 = 0$. Let me factor it.

The quadratic factors as
\begin{align*}
x^2 - 5x + 6 &= (x - 2)(x - 3)

&= 0,
\end{align*}
so $x = 2$ or $x = 3$.

Wait, let me double-check by plugging in. For $x = 2$: $4 - 10 + 6 = 0$. Good.
For $x = 3$: $9 - 15 + 6 = 0$. Good.

Hmm, I could also verify numerically with a quick script:

```python
def f(x):
    return x**2 - 5*x + 6


print([x for x in range(-10, 10) if f(x) == 0])
```

That prints [2, 3], which matches.

$$
\frac{5 \pm \sqrt{25 - 24}}{2}

= \frac{5 \pm 1}{2}
$$

Alternatively, the quadratic formula gives the same roots.

\[
x_{1,2} = 2, 3
\]
So the answer is $2, 3$.
</think>

The roots are $x = 2$ and $x = 3$, so the answer is $\boxed{2, 3}$."""


def _samples() -> list[str]:
    long_para = " ".join(f"Term {i} equals {i * i} because we square it." for i in range(3000))  # ~130k chars
    many = "\n\n".join(f"Then step {i}: add {i}." for i in range(400))
    return [
        R1_TRACE,
        R1_TRACE.replace("\n", "\r\n"),
        "<think>\n" + long_para + "\n\nWait, that is long.\n\n" + long_para + "\n</think>\nDone: \\boxed{1}",
        "<think>\n" + many + "\n</think>",
        "no tags at all\n\njust paragraphs\n\n\n\nWait, three.\n",
        "  \n<think>\n\n\nleading blank lines\n\n  indented step\n\n</think>\n\ntail",
        "<think>\ncut off in the middle of a thought with no closing tag\n\nHmm, and another",
        "Okay, R1 distill outputs often start after the prompt's <think>.\n\nSo x = 1.\n</think>\n\n\\boxed{1}",
        "<think></think>\\boxed{0}",
        "",
        "\n\n\n",
        "<think>\n```\nunclosed fence\n\nstill code\n</think>\n\nanswer",
        "<think>\n$$ a $$\n\n$$\nb\n\nc\n$$\n\nWait, d\n</think>",
    ]


def test_lossless_on_synthetic_and_aligned_with_teacher():
    cfg = ChunkConfig(rules="cues")  # what the embedded default's configs set
    for rec in task_records(300):
        ch = chunk_text(rec["long_cot"], cfg)
        assert ch.text == rec["long_cot"]
        assert ch.head == "<think>\n" and ch.tail.startswith("</think>")
        # every teacher thought opens with a cue: one teacher thought per thought
        assert [len(c) for c in teacher_cover(ch, rec["thoughts"])] == [1] * len(rec["thoughts"])
        assert [t.strip() for t in ch.thoughts] == [t["text"] for t in rec["thoughts"]]


@pytest.mark.parametrize("i", range(len(_samples())))
def test_lossless_on_crafted_r1_traces(i):
    text = _samples()[i]
    ch = chunk_text(text, ChunkConfig(max_thought_chars=2000))
    assert ch.text == text
    assert all(t for t in ch.thoughts)  # no empty thought
    bounds = ch.boundaries()
    assert bounds[0] == len(ch.head) and bounds[-1] == len(text) - len(ch.tail)


def test_lossless_on_math500_solutions():
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    multi = {}
    for rules in ("cues", "moves"):
        multi[rules] = 0
        for row in rows:
            ch = chunk_text(row["solution"], ChunkConfig(rules=rules))
            assert ch.text == row["solution"]
            multi[rules] += len(ch.thoughts) > 1
    # real paragraphs with cues do split; concise solutions are mostly one move ("So ...", "Then ..." continue it)
    assert multi["cues"] > 50 and 0 < multi["moves"] < multi["cues"] / 2


def test_code_fences_and_display_math_keep_their_blank_lines():
    _, body, tail = split_head_tail(R1_TRACE)
    steps = split_steps(body)
    code = [s for s in steps if "```python" in s]
    assert len(code) == 1 and "print([x" in code[0] and code[0].rstrip().endswith("```")
    align = [s for s in steps if "\\begin{align*}" in s]
    assert len(align) == 1 and "\\end{align*}" in align[0]
    dollars = [s for s in steps if s.lstrip().startswith("$$")]
    assert len(dollars) == 1 and "= \\frac{5 \\pm 1}{2}" in dollars[0]
    assert tail.startswith("</think>")
    assert "".join(steps) == body


def test_cues_open_thoughts_and_other_steps_merge():
    text = ("<think>\nFirst, compute 2 + 2 = 4.\n\nthe sum is even.\n\n**Wait**, recheck: 2 + 2 = 4.\n\n"
            "indeed four.\n\nAlternatively, count on fingers.\n\nSo the answer is 4.\n</think>\n\n\\boxed{4}")
    ch = chunk_text(text, ChunkConfig(rules="cues"))
    assert [t.split("\n")[0] for t in ch.thoughts] == [
        "First, compute 2 + 2 = 4.", "**Wait**, recheck: 2 + 2 = 4.", "Alternatively, count on fingers.",
        "So the answer is 4."]
    assert "the sum is even." in ch.thoughts[0] and "indeed four." in ch.thoughts[1]
    # no cues at all: everything merges into one thought; max_thought_chars closes thoughts at step boundaries
    none = {"en": []}
    for rules in ("cues", "moves"):
        assert len(chunk_text(text, ChunkConfig(rules=rules, cues=none, check_cues=none,
                                                conclusion_cues=none)).thoughts) == 1
    capped = chunk_text(text, ChunkConfig(rules="cues", cues=none, check_cues=none, conclusion_cues=none,
                                          max_thought_chars=40))
    assert len(capped.thoughts) > 2 and capped.text == text


def test_cues_per_language():
    text = "<think>\n首先，2 + 2 = 4。\n\n所以答案是 4。\n\n等等，再检查一下。\n</think>"
    en = chunk_text(text, ChunkConfig(rules="cues"))
    zh = chunk_text(text, ChunkConfig(language="zh", rules="cues"))
    assert len(en.thoughts) == 1 and len(zh.thoughts) == 3 and zh.text == text
    with pytest.raises(ValueError, match="language"):
        ChunkConfig(language="fr").validate()
    with pytest.raises(ValueError, match="not a valid regex"):
        ChunkConfig(cues={"en": ["(unclosed"]}).validate()


def test_parse_groups_validation():
    assert parse_groups("1-3,4,5-7", 7) == [(0, 3), (3, 4), (4, 7)]
    assert parse_groups("<think>maybe 1-2, 3</think>\nHere you go:\n1-2, 3-4\n", 4) == [(0, 2), (2, 4)]
    assert parse_groups("1 – 2,3.", 3) == [(0, 2), (2, 3)]
    assert parse_groups("I think steps go together", 3) == "no_ranges"
    assert parse_groups("1-2,4", 4) == "gap"
    assert parse_groups("1-3,2-4", 4) == "overlap"
    assert parse_groups("3,1-2", 3) == "not_in_order"
    assert parse_groups("1-9", 4) == "out_of_range"
    assert parse_groups("0-2,3", 3) == "out_of_range"
    assert parse_groups("2-1", 3) == "reversed"
    assert parse_groups("1,2", 4) == "incomplete"


def test_model_grouping_with_invalid_output_falls_back_and_counts(tmp_path):
    from transformers import AutoTokenizer

    from longshort.cluster.engine_pool import LocalEnginePool
    from longshort.engines.hf.engine import HFEngine

    model = tiny_model_dir(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(str(model))
    backend = LocalEnginePool(HFEngine(str(model), seed=0))
    recs = task_records(6)
    texts = [r["long_cot"] for r in recs] + ["<think>\nonly one step\n</think>"]
    cfg = ChunkConfig(mode="model")
    cfg.grouping.max_tokens = 8
    stats = ChunkStats()
    out = chunk_many(texts, cfg, backend, tok, stats)
    assert [c.text for c in out] == texts
    # a random model never answers with a valid grouping: every multi-step CoT falls back to the rules
    assert sum(stats.fallbacks.values()) == 6 and stats.by_model == 0 and backend.calls == 1
    assert all(c.method.startswith("fallback:") for c in out[:6]) and out[6].method == "rules"
    assert [c.thoughts for c in out[:6]] == [chunk_text(t).thoughts for t in texts[:6]]
    # prompts longer than the limit are not sent at all
    cfg.grouping.max_prompt_tokens = 16
    stats = ChunkStats()
    chunk_many(texts[:2], cfg, backend, tok, stats)
    assert stats.fallbacks == {"prompt_too_long": 2} and backend.calls == 1
    with pytest.raises(LongshortError, match="needs an engine"):
        chunk_many(texts, cfg)


def test_run_chunk_writes_thoughts_with_teacher_cover(tmp_path):
    recs = task_records(12)
    recs[3] = {k: v for k, v in recs[3].items() if k != "long_cot"}  # a bad record: chunk.source needs long CoTs
    run = run_dir_with_task(tmp_path, recs)
    with pytest.raises(LongshortError, match=r"train.jsonl:4: missing field 'long_cot'"):
        run_chunk(ChunkConfig(rules="cues"), run)
    res = run_chunk(ChunkConfig(rules="cues", source=LongCoTSource(limit=64, on_bad_record="skip")), run)
    lines = [json.loads(line) for line in res.path.read_text().splitlines()]
    assert len(lines) == 11 and res.stats.cots == 11  # skipped by the load, counted in its report
    summary = json.loads((run / "chunk" / "summary.json").read_text())
    assert summary["left_out_by_limit"] == 0
    for line in lines:
        assert line["head"] + "".join(line["thoughts"]) + line["tail"] == next(
            r["long_cot"] for r in recs if r["id"] == line["id"])
        assert len(line["teacher"]["cover"]) == len(line["thoughts"])
    limited = run_chunk(ChunkConfig(source=ProblemSource(path=str(run / "bootstrap/data/train.jsonl"), limit=4)),
                        tmp_path / "other")
    assert limited.stats.cots == 3  # the limit counts loaded problems, one of which has no CoT
    assert json.loads((tmp_path / "other/chunk/summary.json").read_text())["left_out_by_limit"] == 8
    with pytest.raises(LongshortError, match="bootstrap"):
        run_chunk(ChunkConfig(), tmp_path / "empty")


R1_STYLE = Path(__file__).resolve().parents[3] / "coldstart_data" / "r1_style" / "cots.jsonl"


def _r1_style() -> list[str]:
    return [json.loads(line)["long_cot"] for line in R1_STYLE.read_text().splitlines()]


def test_moves_keep_a_conclusion_with_its_working_and_a_check_with_its_recomputation():
    text = ("<think>\nFirst, square both sides: (x + 1/x)^2 = x^2 + 2 + 1/x^2 = 9.\n\n"
            "So, solving for x^2 + 1/x^2: it is 9 - 2 = 7.\n\n"
            "Let me double-check that expansion, since the middle term matters.\n\n"
            "Now (a + b)^2 = a^2 + 2ab + b^2 and 2 * x * (1/x) = 2, so the middle term is 2.\n\n"
            "Yes, right.\n\n"
            "Alternatively, use the recurrence s_(n+1) = s_1 s_n - s_(n-1): s_2 = 3 * 3 - 2 = 7.\n</think>\n\n\\boxed{7}")
    moves = chunk_text(text, ChunkConfig())
    assert moves.text == text
    assert [t.split("\n")[0][:20] for t in moves.thoughts] == [
        "First, square both s", "Let me double-check ", "Alternatively, use t"]
    assert "So, solving" in moves.thoughts[0]  # the conclusion stays with the working it concludes
    assert "Now (a + b)^2" in moves.thoughts[1] and "Yes, right." in moves.thoughts[1]  # recomputation + a fragment
    assert len(chunk_text(text, ChunkConfig(rules="cues")).thoughts) == 5  # cues: So and Now open thoughts


def test_moves_on_r1_style_cots_give_fewer_longer_thoughts_and_stay_lossless():
    cots = _r1_style()
    counts = {}
    for rules in ("cues", "moves"):
        chunked = [chunk_text(t, ChunkConfig(rules=rules)) for t in cots]
        assert [c.text for c in chunked] == cots
        thoughts = [t.strip() for c in chunked for t in c.thoughts]
        counts[rules] = (len(thoughts), sum(len(t) < 60 for t in thoughts),
                         sum(t.startswith(("So", "Therefore", "Thus")) for t in thoughts))
    assert counts["cues"] == (44, 13, 17)  # documented in docs/importance.md (bench/chunk_rules.py)
    assert counts["moves"] == (21, 0, 0)
