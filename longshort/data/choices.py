"""Multiple-choice problems as the loader builds them: options from a field or from the problem's text, shuffled
per problem, shown as lettered lines, the gold answer the right option's letter.

Why shuffle: public copies often list the right option first (GPQA's "Correct Answer" column, or a copy that wrote
it first into the question), and a model learns positions. The order is seeded by the source's ``seed`` and the
question's text, so it is the same on every run and machine and does not depend on row order.

Where the options come from:
* a field (``choices``: a list of strings), the gold being a letter, the option's text, or, when the record's
  answer is an integer, the option's 0-based index (the MMLU layout);
* else the problem's last lines, one option each (``(A) ...``, ``A) ...``, ``A. ...``, ``A: ...``; letters in order
  from A, at least two), when the gold is a letter or the text of exactly one of them;
* else options written inline on the problem's last line, ``(1) ..., or (2) ..., or (3) ...`` (the LongShort
  repository's GPQA copy: ``Candidate answer: (1) 10^-4 eV, or (2) 10^-11 eV, ...``) or ``(A) ... (B) ...``, numbered
  or lettered in order, when the gold is the text of exactly one of them (a letter gold is not enough here: inline
  "(1)", "(2)" also label equations). Otherwise the problem is graded as written.
A problem whose text already shows the field's options in that order (a file ``write_jsonl`` wrote) is kept as is.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from longshort.data.answers import LETTERS, choice_letter, option_with_text

_OPTION_LINE = re.compile(r"[ \t]*(?:\(([A-J])\)|([A-J])[).:])[ \t]+(\S.*?)[ \t]*")
_INLINE_MARK = re.compile(r"(?:^|(?<=\s))\(([1-9]|10|[A-J])\)\s+")
_INLINE_JOINER = re.compile(r"(?:[,;]\s*)?(?:\bor\b)?[\s,;]*$")  # ", or" / "or" / "," between inline options


@dataclass(frozen=True)
class Built:
    problem: str  # the question with the options as "(A) ..." lines
    letter: str
    options: tuple[str, ...]  # in the order shown


def parse_options(problem: str) -> tuple[str, list[str]] | None:
    """``(stem, options)`` when ``problem`` ends with a lettered list of options; None otherwise."""
    lines = problem.replace("\r\n", "\n").rstrip().split("\n")
    found: list[tuple[str, str]] = []
    i = len(lines)
    while i > 0:
        line = lines[i - 1]
        if not line.strip() and found:  # blank lines between options
            i -= 1
            continue
        m = _OPTION_LINE.fullmatch(line)
        if m is None:
            break
        found.append((m.group(1) or m.group(2), m.group(3)))
        i -= 1
    found.reverse()
    stem = "\n".join(lines[:i]).rstrip()
    if len(found) < 2 or "".join(letter for letter, _ in found) != LETTERS[: len(found)] or not stem:
        return None
    return stem, [text for _, text in found]


def parse_inline_options(problem: str) -> tuple[str, list[str]] | None:
    """``(stem, options)`` when the problem's last line lists options inline, numbered ``(1) (2) ...`` or lettered
    ``(A) (B) ...`` in order (at least two), joined by commas or "or"; None otherwise."""
    lines = problem.replace("\r\n", "\n").rstrip().split("\n")
    last = lines[-1]
    marks = list(_INLINE_MARK.finditer(last))
    for first in range(len(marks)):  # the list starts at the first "(1)" / "(A)" whose labels then run in order
        labels = [m.group(1) for m in marks[first:]]
        numbered = labels[0] == "1"
        if not numbered and labels[0] != "A":
            continue
        expected = [str(i + 1) for i in range(len(labels))] if numbered else list(LETTERS[: len(labels)])
        if labels != expected or len(labels) < 2:
            continue
        spans = marks[first:]
        ends = [m.start() for m in spans[1:]] + [len(last)]
        texts = [last[m.end(): end] for m, end in zip(spans, ends, strict=True)]
        options = [_INLINE_JOINER.sub("", t).strip() for t in texts[:-1]] + [texts[-1].strip().rstrip(".")]
        stem = "\n".join([*lines[:-1], last[: spans[0].start()]]).rstrip()
        if all(options) and stem:
            return stem, options
    return None


def render(stem: str, options: Sequence[str]) -> str:
    return f"{stem.strip()}\n\n" + "\n".join(f"({LETTERS[i]}) {text}" for i, text in enumerate(options))


def _gold_index(gold: str, options: Sequence[str], index_given: bool) -> int | None:
    if index_given:
        return int(gold) if gold.isdigit() and int(gold) < len(options) else None
    letter = choice_letter(gold)
    if letter is not None:
        return LETTERS.index(letter) if LETTERS.index(letter) < len(options) else None
    return option_with_text(gold, options)


def build(problem: str, gold: str, field_options: Sequence[str] | None, *, seed: int, shuffle: bool,
          index_given: bool = False) -> Built | None:
    """The multiple-choice form of one record, or None when it is not multiple choice.

    Raises ValueError (naming the fix) for options given in a field that cannot be used."""
    if field_options is not None:
        options = [str(o).strip() for o in field_options]
        if len(options) < 2 or len(options) > len(LETTERS) or not all(options):
            raise ValueError(f"choices: needs 2 to {len(LETTERS)} non-empty options, got {field_options!r}")
        shown = parse_options(problem)
        if shown is not None and shown[1] == options:  # already rendered with these options: keep it
            stem, shuffle = shown[0], False
        else:
            stem = problem
    elif (parsed := parse_options(problem)) is not None:
        stem, options = parsed
    elif (inline := parse_inline_options(problem)) is not None and option_with_text(gold, inline[1]) is not None:
        stem, options = inline  # a text gold only: see the module's docstring
    else:
        return None
    index = _gold_index(gold, options, index_given and field_options is not None)
    if index is None:
        if field_options is None:
            return None  # lettered lines, but the gold is none of them: graded as written
        what = "an index" if index_given else "a letter or the text of one option"
        raise ValueError(f"the gold answer {gold!r} is not {what} of {len(options)} choices {options!r}")
    order = list(range(len(options)))
    if shuffle:
        random.Random(f"{seed}\x00{stem}").shuffle(order)
    shown_options = tuple(options[i] for i in order)
    return Built(render(stem, shown_options), LETTERS[order.index(index)], shown_options)
