"""Multiple-choice problems: options from the problem's text or a field, shuffled per problem, graded by letter or
option text and never through math-verify (data/choices.py, data/answers.py)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from longshort.core.errors import LongshortError
from longshort.data.answers import MultipleChoice
from longshort.data.choices import parse_options
from longshort.data.problems import ProblemSource, load_problems, write_jsonl

# A GPQA copy of a common public layout: the options written into the question, the right one always first, the gold
# the option's text (these are the values seen in such a copy).
_OPTIONS = ["10^-4 eV", "10^-11 eV", "10^-8 eV", "10^-9 eV"]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _copy_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        opts = [f"{o} (state {i})" for o in _OPTIONS]
        listed = "\n".join(f"{'ABCD'[k]}. {o}" for k, o in enumerate(opts))
        rows.append({"id": f"q{i}", "problem": f"Which energy difference resolves state {i}?\n{listed}",
                     "answer": opts[0] + "."})  # the gold ends with a period, the option does not
    return rows


def test_options_in_the_question_become_shuffled_letters_graded_by_letter_or_text(tmp_path, verifier):
    problems, _ = load_problems(ProblemSource(path=_write(tmp_path / "copy.jsonl", _copy_rows(40))))
    letters = Counter(p.answer for p in problems)
    assert set(letters) == set("ABCD") and min(letters.values()) >= 4  # position no longer gives the answer away
    for i, p in enumerate(problems):
        shown = re.findall(r"^\(([A-D])\) (.*)$", p.problem, re.M)
        assert [text for _, text in shown] == list(p.choices)
        assert p.problem.startswith(f"Which energy difference resolves state {i}?\n\n(A) ")
        assert p.gold == MultipleChoice(p.answer, p.choices) and p.gold.text == f"10^-4 eV (state {i})"
    p = problems[0]
    wrong = next(o for o in p.choices if o.startswith("10^-11"))  # shares the number 10 with the gold
    cases = [(rf"\boxed{{{p.answer}}}", True), (f"The answer is ({p.answer.lower()}).", True),
             (rf"\boxed{{{p.gold.text}.}}", True), (rf"\boxed{{\text{{{p.gold.text}}}}}", True),
             (rf"\boxed{{{wrong}}}", False), (r"\boxed{E}", False), ("no idea", False)]
    before = dict(verifier.counts)
    verdicts = verifier.judge_many([c for c, _ in cases], [p.gold] * len(cases))
    assert [v.correct for v in verdicts] == [ok for _, ok in cases], verdicts
    assert verifier.counts["timeout"] == before.get("timeout", 0)


def test_the_order_is_seeded_and_can_be_kept(tmp_path):
    path = _write(tmp_path / "copy.jsonl", _copy_rows(30))
    first, _ = load_problems(ProblemSource(path=path))
    assert load_problems(ProblemSource(path=path))[0] == first
    reseeded, _ = load_problems(ProblemSource(path=path, seed=1))
    assert sum(a.answer != b.answer for a, b in zip(first, reseeded, strict=True)) > 10
    kept, _ = load_problems(ProblemSource(path=path, shuffle_choices=False))
    assert {p.answer for p in kept} == {"A"} and all(p.choices[0].startswith("10^-4") for p in kept)


def test_mmlu_layout_choices_field_with_an_index(tmp_path, verifier):
    rows = [{"question": "Which number is prime?", "subject": "math", "choices": ["4", "6", "7", "9"], "answer": 2},
            {"question": "Pick the noble gas.", "subject": "chem", "choices": ["Neon", "Sodium"], "answer": 0}]
    problems, report = load_problems(ProblemSource(path=_write(tmp_path / "mmlu_test.jsonl", rows)))
    assert report.preset == "mmlu"
    assert [p.gold.text for p in problems] == ["7", "Neon"]  # an integer answer is the 0-based index, not "2"
    assert problems[0].meta == {"subject": "math"} and "(D) " in problems[0].problem
    assert verifier.judge(r"\boxed{7}", problems[0].gold).correct
    assert not verifier.judge(r"\boxed{6}", problems[0].gold).correct


def test_written_problems_read_back_unchanged(tmp_path):
    problems, _ = load_problems(ProblemSource(path=_write(tmp_path / "copy.jsonl", _copy_rows(5))))
    write_jsonl(problems, tmp_path / "out.jsonl")
    again, _ = load_problems(ProblemSource(path=str(tmp_path / "out.jsonl"), seed=7))  # no second shuffle
    assert [(p.problem, p.answer, p.choices) for p in again] == [(p.problem, p.answer, p.choices) for p in problems]


def test_a_gold_that_is_no_option_is_refused_naming_the_line(tmp_path):
    rows = [{"problem": "Pick one.", "answer": "purple", "choices": ["red", "blue"]}]
    with pytest.raises(LongshortError, match=r"bad\.jsonl:1: the gold answer 'purple' is not a letter or the text "
                                             r"of one option .* give choices as a list"):
        load_problems(ProblemSource(path=_write(tmp_path / "bad.jsonl", rows)))
    rows = [{"problem": "Pick one.", "answer": "A", "choices": ["red"]}]
    with pytest.raises(LongshortError, match="needs 2 to 10 non-empty options"):
        load_problems(ProblemSource(path=_write(tmp_path / "bad.jsonl", rows)))


def test_lettered_lines_that_hold_no_gold_are_graded_as_written(tmp_path):
    text = "Steps:\nA. add 2\nB. double it\nStart at 3. What is the result?"  # lines that are not a final option list
    rows = [{"problem": text, "answer": "10"},
            {"problem": "Compute it.\nA) 3\nB) 4", "answer": "12"}]  # a final list, but the gold is none of it
    problems, _ = load_problems(ProblemSource(path=_write(tmp_path / "math.jsonl", rows)))
    assert [(p.problem, p.answer, p.choices) for p in problems] == [(r["problem"], r["answer"], ()) for r in rows]


@pytest.mark.parametrize("listing", ["(A) red\n(B) blue", "A) red\nB) blue", "A. red\n\nB. blue", "A: red\r\nB: blue  "])
def test_option_list_spellings(listing):
    assert parse_options(f"Which colour?\n{listing}") == ("Which colour?", ["red", "blue"])


@pytest.mark.parametrize("listing", ["(A) red\n(C) blue", "(B) red\n(C) blue", "(A) red"])
def test_not_an_option_list(listing):
    assert parse_options(f"Which colour?\n{listing}") is None


# The LongShort repository's GPQA copy writes the options inline, numbered, after "Candidate answer:", the gold the
# right option's text. Its kind of options: ranges, formulas and term symbols that math-verify would evaluate as
# arithmetic ("110-130" and "140-160" are both -20) and powers with units.
_INLINE = [
    ["110-130", "140-160", "90-100", "60-70"],
    ["1S0 -> 3P0 + s", "1S0 -> 3S1 + p", "1S0 -> 3D3 + f", "1S0 -> 7D1 + p"],
    ["10^-4 eV", "10^-11 eV", "10^-8 eV", "10^-9 eV"],
    ["H2SO4", "HNO3", "H3PO4", "HClO4"],
    ["(2S,3R)-2-bromo-3-methylpentane", "(2R,3R)-2-bromo-3-methylpentane", "(2S,3S)-2-bromo-3-methylpentane",
     "(2R,3S)-2-bromo-3-methylpentane"],
]


def _inline_rows(style: str) -> list[dict]:
    rows = []
    for i, opts in enumerate(_INLINE):
        if style == "numbered":
            listed = "Candidate answer: " + ", or ".join(f"({k + 1}) {o}" for k, o in enumerate(opts))
        else:
            listed = "Choose one: " + " ".join(f"({'ABCD'[k]}) {o}" for k, o in enumerate(opts))
        rows.append({"id": f"g{i}", "problem": f"Question {i}: which one is right?\n{listed}", "answer": opts[0]})
    return rows


@pytest.mark.parametrize("style", ["numbered", "lettered"])
def test_inline_options_are_multiple_choice_graded_by_option_never_by_arithmetic(tmp_path, verifier, style):
    """Every option of every question: the gold accepted (as its text, its letter and its shown number), every other
    option rejected (as text, letter and number)."""
    problems, _ = load_problems(ProblemSource(path=_write(tmp_path / "gpqa.jsonl", _inline_rows(style))))
    assert len(problems) == len(_INLINE)
    preds, golds, expected = [], [], []
    for p, opts in zip(problems, _INLINE, strict=True):
        assert isinstance(p.gold, MultipleChoice) and sorted(p.choices) == sorted(opts) and p.gold.text == opts[0]
        assert re.findall(r"^\(([A-D])\) ", p.problem, re.M) == list("ABCD")  # shown as lettered lines
        for k, option in enumerate(p.choices):
            right = option == opts[0]
            for said in (option, "ABCD"[k], f"({k + 1})"):
                preds.append(rf"The answer is \boxed{{{said}}}.")
                golds.append(p.gold)
                expected.append(right)
    verdicts = verifier.judge_many(preds, golds)
    assert [v.correct for v in verdicts] == expected, [(p, v) for p, v, e in zip(preds, verdicts, expected, strict=True)
                                                        if v.correct != e]


def test_inline_labels_that_hold_no_gold_are_graded_as_written(tmp_path):
    """Inline "(1)", "(2)" also label equations: without a gold that is one option's text, nothing is rebuilt."""
    rows = [{"id": "e", "problem": "Solve (1) x + y = 3 and (2) x - y = 1. What is x?", "answer": "2"},
            {"id": "l", "problem": "Which is right?\nCandidate answer: (1) 3, or (2) 5", "answer": "A"}]
    problems, _ = load_problems(ProblemSource(path=_write(tmp_path / "eq.jsonl", rows)))
    assert [(p.problem, p.gold) for p in problems] == [(r["problem"], r["answer"]) for r in rows]


@pytest.mark.parametrize(("answer", "gold", "correct"), [
    ("110-130", "140-160", False), ("140-160", "140-160", True), ("5-10 nm", "15-20 nm", False),
    ("1S0 -> 3S1 + p", "1S0 -> 3P0 + s", False), ("H3PO4", "H2SO4", False), ("H2SO4", "H2SO4", True),
    (r"\frac{1}{2}", "0.5", True), ("1-2i", "1-2i", True), ("3R^2", "3R^2", True),
])
def test_ranges_and_formulas_are_compared_as_text(verifier, answer, gold, correct):
    assert verifier.verify(rf"\boxed{{{answer}}}", gold) is correct
