"""What an answer is: the final answer pulled out of a model's text, one normalisation of plain text, multiple-choice
golds, and whether an answer is math at all.

``extract_answer`` takes the last ``\\boxed{}``, else the text after an "answer is"-style cue. A multiple-choice gold
(``MultipleChoice``: the letter and the options as shown) is graded by letter, the option's text accepted too. Text
answers are compared after one normalisation applied to both sides; math-verify is only for two math answers
(``is_math``): it reads any number inside text, so "10^-11 eV" would equal "10^-4 eV" (both parse as 10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
# ---------------------------------------------------------------------------------------------------- extraction

_BOX_CMD = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")
# Cues that introduce a final answer; the last one in the text wins.
_CUE = re.compile(
    r"final\s+answer\s*\**\s*(?:is\b|:)|the\s+answer\s+is\b|answer\s*\**\s*:|####",
    re.IGNORECASE,
)
_MATH_SPANS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


def clean(ans: str) -> str:
    """Strip what surrounds an answer but is not part of it: spaces, ``$``, a final period."""
    ans = ans.strip()
    while ans and (ans[-1] in ".$" or ans[0] == "$"):
        ans = (ans[:-1] if ans[-1] in ".$" else ans[1:]).strip()
    return ans


def _braced(text: str, start: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[start]``, nested braces allowed; None if unclosed."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{ \} \\) never opens or closes the group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def _box_content(text: str, end: int) -> str | None:
    """Argument of a ``\\boxed`` command ending at ``end``: ``{...}`` or a single token (``\\boxed 5``)."""
    rest = text[end:]
    stripped = rest.lstrip()
    if stripped.startswith("{"):
        return _braced(text, end + len(rest) - len(stripped))
    if stripped is rest:  # "\boxedx" is not a box
        return None
    token = re.match(r"[^\s$]+", stripped)
    return token.group(0) if token else None


def _after_cue(text: str) -> str | None:
    """The answer written right after a cue: a math span if one opens it, else the rest of the sentence."""
    text = text.lstrip(" \t*:")
    for open_, close in _MATH_SPANS:
        if text.startswith(open_):
            end = text.find(close, len(open_))
            if end > 0:
                return clean(text[len(open_) : end]) or None
    line = text.split("\n", 1)[0]
    stop = _SENTENCE_END.search(line)
    return clean((line[: stop.start()] if stop else line).strip().strip("*")) or None  # "**42**" in markdown


def extract_answer(text: str) -> str | None:
    """The final answer in ``text``: the last complete ``\\boxed{}`` (or ``\\fbox``, ``\\framebox``), else the text
    after the last cue ("final answer is", "the answer is", "Answer:", "####"); None when there is neither."""
    for m in reversed(list(_BOX_CMD.finditer(text))):
        content = _box_content(text, m.end())
        if content is not None and clean(content):
            return clean(content)
    for m in reversed(list(_CUE.finditer(text))):
        answer = _after_cue(text[m.end() :])
        if answer:
            return answer
    return None


# ---------------------------------------------------------------------------------------------- multiple choice

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_GOLD_LETTER = re.compile(r"\(?([A-J])\)?")
_PRED_LETTER = re.compile(r"\(?([A-Ja-j])\)?(?=$|[\s.:,)])")
_PRED_NUMBER = re.compile(r"\(?(\d{1,2})\)?\.?")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")


def _unwrap(ans: str) -> str:
    return clean(_TEXT_WRAPPER.sub(r"\1", ans))


def choice_letter(gold: str) -> str | None:
    """The option letter if ``gold`` is a multiple-choice answer ("C", "(C)", "\\text{(C)}"), else None."""
    m = _GOLD_LETTER.fullmatch(_unwrap(gold))
    return m.group(1) if m else None


def plain_text(ans: str) -> str:
    """An answer as plain text: text wrappers removed, runs of spaces ignored, no final period. Case is kept: it
    carries meaning in names ("(2S,3R)" vs "(2s,3r)") and in math."""
    return " ".join(_unwrap(ans).split())


def picked_letter(answer: str) -> str | None:
    """The option a prediction picks: "C", "(c)", "C) 42", "\\textbf{C.} because"."""
    m = _PRED_LETTER.match(_unwrap(answer))
    return m.group(1).upper() if m else None


def option_with_text(answer: str, options) -> int | None:
    """The index of the one option whose text is ``answer`` (both after ``plain_text``); None if none or several."""
    texts = [plain_text(o) for o in options]
    said = plain_text(answer)
    return texts.index(said) if texts.count(said) == 1 else None


@dataclass(frozen=True)
class MultipleChoice:
    """A multiple-choice gold answer: the right option's ``letter`` and the ``options`` in the order shown (A, B, ...).
    Its ``str`` is the letter, so records, tables and logs show what the model is asked to write."""

    letter: str
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.letter not in LETTERS[: len(self.options)]:
            raise ValueError(f"multiple choice: letter {self.letter!r} is not one of the {len(self.options)} options")

    def __str__(self) -> str:
        return self.letter

    @property
    def text(self) -> str:
        return self.options[LETTERS.index(self.letter)]

    def picked(self, answer: str) -> str | None:
        """The letter ``answer`` picks: an option's text (after ``plain_text``), else a letter, else an option's
        number ("2", "(2)": the second shown; copies that number their options teach models to answer so) when no
        option is itself a number; None if none of these."""
        if (index := option_with_text(answer, self.options)) is not None:
            return LETTERS[index]
        letter = picked_letter(answer)
        if letter is not None:
            return letter if letter in LETTERS[: len(self.options)] else None
        number = _PRED_NUMBER.fullmatch(_unwrap(answer))
        if number is None or any(_NUMBER.fullmatch(plain_text(o)) for o in self.options):
            return None
        k = int(number.group(1))
        return LETTERS[k - 1] if 1 <= k <= len(self.options) else None


# ------------------------------------------------------------------------------------------------- math or text

_LATEX_CMD = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+")  # \begin{pmatrix}: no words
_WORD = re.compile(r"[A-Za-z]{3,}")


# Text that math-verify would read as arithmetic: a range ("110-130", "5-10 nm": not a subtraction), a reaction or
# transition ("1S0 -> 3P0 + s"), a formula or term symbol ("H2SO4", "3S1": an element or state letter, then a digit).
_RANGE = re.compile(r"\s*-?\d+(?:\.\d+)?\s*[-\u2013]\s*\d+(?:\.\d+)?(?:\s+[A-Za-z\u00b0%\u00b5]+)?\s*")
_NOTATION = re.compile(r"[A-Z][a-z]?\d|->|<-|\u2192|\u21cc|\\(?:long)?(?:right|left|leftright)arrow|\\rightleftharpoons")


def is_math(answer: str) -> bool:
    """Is ``answer`` math (a number, expression, set, interval, ...) rather than words? Text is two or more words
    of three letters or more, or one such word with no digit or operator ("Evelyn", "odd", "yes"), or a range,
    a reaction or a formula (``_RANGE``, ``_NOTATION``): compared as text, never evaluated. LaTeX commands
    (``\\frac``, ``\\infty``) are not words; ``\\text{}`` contents are."""
    if _RANGE.fullmatch(answer) or _NOTATION.search(answer):
        return False
    bare = _LATEX_CMD.sub(" ", _TEXT_WRAPPER.sub(r" \1 ", answer))
    words = _WORD.findall(bare)
    if len(words) >= 2:
        return False
    if len(words) == 1:
        return bool(re.search(r"[0-9+\-*/^=<>()\[\]]", bare))
    return True


_BARE_NEGATIVE_POWER = re.compile(r"\^\s*(-\s*\d+(?:\.\d+)?)")


def brace_exponents(answer: str) -> str:
    """``10^-11`` as ``10^{-11}``: math-verify reads a bare negative power as ``10^{-1}`` times 1, so ``10^-11``
    equalled ``10^-4`` (plain-text copies of physics answers write powers so)."""
    return _BARE_NEGATIVE_POWER.sub(r"^{\1}", answer)
