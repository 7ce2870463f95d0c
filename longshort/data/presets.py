"""Field layouts ("presets") of public problem sets, and the fixes each layout needs.

A preset maps ``Problem`` fields to record keys and may finish a record with a hook (GSM8K keeps its
final answer after ``####``; GPQA's wrong answers become the options of a multiple-choice question). Adding a data set
with a new layout is one entry in ``PRESETS``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longshort.core.errors import LongshortError

log = logging.getLogger("longshort")

# Problem fields a record can fill; "problem" and "answer" must be present and non-empty.
PROBLEM_FIELDS = ("id", "problem", "answer", "choices", "solution", "long_cot", "source", "meta")
REQUIRED_FIELDS = ("problem", "answer")


class BadRecord(Exception):
    """One record that cannot become a Problem; ``reason`` is a short code used to count skips."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# A hook gets the mapped values (answer already a string, "meta" a dict), the raw record and the shuffle
# seed; it edits the values in place and raises BadRecord for a record its layout cannot use.
Finish = Callable[[dict[str, Any], Mapping[str, Any], int], None]


@dataclass(frozen=True)
class Preset:
    name: str
    fields: Mapping[str, str]  # Problem field -> record key
    aliases: tuple[str, ...] = ()  # hub data set names with this layout
    file_pattern: str | None = None  # regex on the lower-cased file name, for auto-detection
    finish: Finish | None = None
    consumes: tuple[str, ...] = field(default=())  # other record keys the hook reads (kept out of meta)


def _amc(values: dict[str, Any], record: Mapping[str, Any], seed: int) -> None:
    # AMC answers come as floats ("27.0"); the gold answer is the integer.
    if re.fullmatch(r"-?\d+\.0*", values["answer"]):
        values["answer"] = values["answer"].split(".")[0]


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def _gsm8k(values: dict[str, Any], record: Mapping[str, Any], seed: int) -> None:
    # "worked solution ... #### 1,234": the gold answer is the number after ####, the solution the text
    # before it, without the <<48/2=24>> calculator annotations (noise a model should not learn to write).
    body, sep, final = values["answer"].rpartition("####")
    if not sep:
        raise BadRecord("bad_format", "answer has no final '#### N' line (GSM8K layout)")
    final = final.strip().replace(",", "")
    if not final:
        raise BadRecord("empty_field", "nothing after '####' in the answer (GSM8K layout)")
    values["answer"] = final
    values.setdefault("solution", _CALCULATOR.sub("", body).strip() or None)


_GPQA_WRONG = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


def _gpqa(values: dict[str, Any], record: Mapping[str, Any], seed: int) -> None:
    # The right option first, then the wrong ones: the loader shuffles them (data/choices.py) and letters them.
    options = [values["answer"]]
    for key in _GPQA_WRONG:
        option = record.get(key)
        if not isinstance(option, str) or not option.strip():
            raise BadRecord("missing_field", f"missing or empty field '{key}' (GPQA layout)")
        options.append(option)
    values["choices"] = options


def _openr1(values: dict[str, Any], record: Mapping[str, Any], seed: int) -> None:
    # OpenR1-Math rows carry several R1 generations with math-verify verdicts: the long CoT is the first verified
    # one, so thought scoring starts from a chain that reaches the gold answer.
    gens, ok = record.get("generations"), record.get("correctness_math_verify")
    if not isinstance(gens, list) or not isinstance(ok, list) or len(gens) != len(ok):
        raise BadRecord("missing_field", "needs 'generations' and 'correctness_math_verify' lists of equal length "
                                         "(OpenR1-Math layout)")
    good = [g for g, v in zip(gens, ok, strict=True) if v is True and isinstance(g, str) and g.strip()]
    if not good:
        raise BadRecord("no_verified_cot", "no generation is marked correct by math-verify (OpenR1-Math layout)")
    values["long_cot"] = good[0]


def _math_layout(name: str, pattern: str, aliases: tuple[str, ...], id_key: str = "id", finish=None) -> Preset:
    fields = {"id": id_key, "problem": "problem", "answer": "answer", "solution": "solution"}
    return Preset(name, fields, aliases, pattern, finish)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _math_layout("math500", r"math[-_]?500", ("HuggingFaceH4/MATH-500",), id_key="unique_id"),
        _math_layout("aime24", r"aime[-_]?(?:20)?24", ("HuggingFaceH4/aime_2024",)),
        _math_layout("aime25", r"aime[-_]?(?:20)?25", ("yentinglin/aime_2025",)),
        _math_layout("amc23", r"amc[-_]?(?:20)?23", ("AI-MO/aimo-validation-amc",), finish=_amc),
        Preset("gsm8k", {"problem": "question", "answer": "answer"}, ("openai/gsm8k", "gsm8k"), r"gsm[-_]?8k",
               _gsm8k),
        Preset(
            "gpqa",
            {"id": "Record ID", "problem": "Question", "answer": "Correct Answer", "solution": "Explanation"},
            ("Idavidrein/gpqa",),
            r"gpqa",
            _gpqa,
            consumes=_GPQA_WRONG,
        ),
        Preset("mmlu", {"problem": "question", "answer": "answer", "choices": "choices"}, ("cais/mmlu",), r"mmlu"),
        Preset("openr1", {"id": "uuid", "problem": "problem", "answer": "answer", "solution": "solution"},
               ("open-r1/OpenR1-Math-220k",), r"openr1", _openr1, consumes=("generations", "correctness_math_verify")),
        # The project's own layout (what write_jsonl writes): field names are the Problem's.
        Preset("longshort", {f: f for f in PROBLEM_FIELDS}),
    )
}
_ALIASES = {alias.lower(): p for p in PRESETS.values() for alias in p.aliases}


def preset_for(path: str, first_record: object) -> Preset:
    """The preset a source without one uses: a hub alias, else the one preset its file name matches, else
    the project's layout. A name match whose keys the first record lacks, while it has the project's
    ``problem``/``answer`` keys, is a file written by ``write_jsonl`` (say gsm8k_train.jsonl): project layout."""
    name = path.rstrip("/")
    if name.lower() in _ALIASES:
        return _ALIASES[name.lower()]
    base = Path(name).name.lower()
    matches = [p for p in PRESETS.values() if p.file_pattern and re.search(p.file_pattern, base)]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise LongshortError(f"{path}: the file name fits several presets ({names}); set preset: to one of them")
    if not matches:
        return PRESETS["longshort"]
    preset = matches[0]
    if isinstance(first_record, dict):
        wanted = [preset.fields[f] for f in REQUIRED_FIELDS]
        if not all(k in first_record for k in wanted) and all(k in first_record for k in REQUIRED_FIELDS):
            log.info("%s: named like preset %s but written in the project layout; reading it as such", path,
                     preset.name)
            return PRESETS["longshort"]
    log.info("%s: using preset %s (from the file name)", path, preset.name)
    return preset
