"""How a short-role turn is made from a stretch of thoughts, and what a valid compression must keep.

``TeacherCompressor`` uses the synthetic task's concise step lines; an engine rewrite (``REWRITE_PROMPT``) is
accepted only when ``rewrite_check`` finds every key quantity of the stretch kept and no number invented.
"""

from __future__ import annotations

import re

from longshort.core.errors import LongshortError
from longshort.data.protocol import THINK_CLOSE

REWRITE_PROMPT = (
    "Rewrite the reasoning below as briefly as possible. Keep every intermediate result, number and equation it "
    "computes; drop restatements, hesitation and re-checks. Write only the brief version.\n\n{text}"
)
_NUM = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_EQ_RESULT = re.compile(r"=\s*\$?\s*(-?\d+(?:,\d{3})*(?:\.\d+)?)")


def numbers(text: str) -> set[str]:
    """Numbers in ``text``, normalised (thousands separators and trailing decimal zeros removed)."""
    out = set()
    for m in _NUM.findall(text):
        m = m.replace(",", "")
        if "." in m:
            m = m.rstrip("0").rstrip(".")
        out.add(m)
    return out


def key_quantities(stretch: str, answer_text: str) -> set[str]:
    """What a rewrite of ``stretch`` must keep: each equation's result, and its numbers the answer uses."""
    results = numbers(" ".join(_EQ_RESULT.findall(stretch)))
    return results | (numbers(stretch) & numbers(answer_text))


def rewrite_check(rewrite: str, stretch: str, answer_text: str, problem: str = "") -> str | None:
    """Why a rewrite of ``stretch`` is rejected (None: accepted): ``empty``, ``not_shorter``, ``dropped_quantity``
    (a key quantity is missing) or ``new_number`` (a number found in neither the stretch, the problem nor the
    answer: an invented value would silently corrupt the data, since only the final answer is verified)."""
    if not rewrite.strip():
        return "empty"
    if len(rewrite.strip()) >= len(stretch.strip()):
        return "not_shorter"
    got = numbers(rewrite)
    if not key_quantities(stretch, answer_text) <= got:
        return "dropped_quantity"
    if not got <= numbers(stretch) | numbers(answer_text) | numbers(problem):
        return "new_number"
    return None


class TeacherCompressor:
    """The synthetic task's teacher: a stretch becomes the concise lines (``solution``) of the steps whose right
    equation first appears in it.

    Each concise line (``34 × 2 = 68``) is located in the thoughts in order, each search starting at the thought
    where the previous step was found; the thought holding a step's right equation first (the step itself, or the
    correction of a planted error) is where that step is done. A planted wrong step never holds the right
    equation, so it is compressed away.
    """

    def __init__(self, rec: dict, step_labels: bool = False):
        self.step_labels = step_labels
        lines = (rec.get("solution") or "").strip().splitlines()
        if len(lines) < 2 or "\\boxed" not in lines[-1]:
            raise LongshortError(f"coldstart: CoT {rec['id']!r} has no teacher solution (step lines, then a boxed "
                                 "answer line); compression 'teacher' is for the synthetic task, use "
                                 "coldstart.compression: engine for other data")
        self.lines, self.answer_line = lines[:-1], lines[-1]
        texts = [t["text"] for t in rec["thoughts"]]
        self.where: list[int] | None = []  # thought index of each step; None: a step was not found
        k = 0
        for line in self.lines:
            while k < len(texts) and line not in texts[k]:
                k += 1
            if k == len(texts):
                self.where = None
                break
            self.where.append(k)

    def compress(self, thought_ids: list[int]) -> str:
        """The concise lines of the steps done in these thoughts; with ``step_labels`` each names its step
        (``Step 2: 34 × 2 = 68``), which tells the short model where in the chain it is."""
        ids = set(thought_ids)
        return "\n".join(f"Step {i + 1}: {line}" if self.step_labels else line
                         for i, (line, k) in enumerate(zip(self.lines, self.where or [], strict=False)) if k in ids)


def answer_line(rec: dict) -> str | None:
    """The CoT's final answer sentence: the last line of the tail holding ``\\boxed``."""
    tail = rec["tail"]
    tail = tail.split(THINK_CLOSE, 1)[1] if THINK_CLOSE in tail else tail
    lines = [ln.strip() for ln in tail.splitlines() if "\\boxed" in ln]
    return lines[-1] if lines else None
