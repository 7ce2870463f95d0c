"""Problems with gold answers: load them from JSONL/JSON/Parquet files or ``datasets`` sources, write them.

Every record that cannot be used is reported as ``file:line: reason``: ``on_bad_record: fail`` stops with
the first few, ``skip`` leaves them out, counts them in the ``LoadReport`` and logs a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any, ClassVar, Literal

from longshort.core.config import CONFIG_KEY
from longshort.core.errors import LongshortError
from longshort.core.jsonl import json_error_text
from longshort.data import choices
from longshort.data.answers import MultipleChoice
from longshort.data.presets import PRESETS, PROBLEM_FIELDS, REQUIRED_FIELDS, BadRecord, Preset, preset_for

__all__ = ["PRESETS", "LoadReport", "Problem", "ProblemSource", "load_problems", "write_jsonl"]

log = logging.getLogger("longshort")
_EXAMPLES = 5  # bad records quoted in an error or a report


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str  # gold final answer (LaTeX or plain text; a letter for multiple choice)
    choices: tuple[str, ...] = ()  # multiple choice: the options in the order the problem shows them
    solution: str | None = None  # reference solution
    long_cot: str | None = None  # a long chain of thought, when the source has one
    source: str = ""  # where it came from: a file name or hub data set name
    meta: dict[str, Any] = field(default_factory=dict, hash=False)  # the record's other keys

    @property
    def gold(self) -> str | MultipleChoice:
        """What the verifier compares with: the answer, or for multiple choice the letter with its options."""
        return MultipleChoice(self.answer, self.choices) if self.choices else self.answer


@dataclass
class ProblemSource:
    """Where problems come from (a config section such as ``data.train`` or an eval set)."""

    NEEDS: ClassVar[tuple[str, ...]] = ()  # Problem fields beyond problem and answer that every record must give

    path: str = ""  # a local file/directory, or a Hugging Face hub data set name
    format: Literal["auto", "jsonl", "json", "parquet", "hf"] = "auto"
    preset: str | None = None  # field layout (see PRESETS); None: from the hub name or file name
    split: str | None = None  # for datasets sources; None: the only split there is
    subset: str | None = None  # datasets config name, e.g. "gpqa_diamond"
    fields: dict[str, str] = field(default_factory=dict)  # Problem field -> record key, over the preset
    on_bad_record: Literal["fail", "skip"] = "fail"
    limit: int | None = field(default=None, metadata={"ge": 1})  # keep the first N good problems
    seed: int = 0  # seeds the order of multiple-choice options (see data/choices.py)
    shuffle_choices: bool = True  # False: options keep the source's order (positions may give the answer away)
    key: str = field(default="", repr=False, metadata={CONFIG_KEY: True})  # e.g. "chunk.source": hints name it

    def fix(self, name: str) -> str:
        """The full dotted key of this source's setting ``name`` (``chunk.source.fields``), for a message."""
        return f"{self.key}.{name}" if self.key else name

    def validate(self) -> None:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset: unknown preset {self.preset!r}; accepted: {', '.join(PRESETS)}")
        for name, key in self.fields.items():
            if name not in PROBLEM_FIELDS:
                raise ValueError(f"fields: unknown Problem field {name!r}; accepted: {', '.join(PROBLEM_FIELDS)}")
            if not isinstance(key, str) or not key:
                raise ValueError(f"fields.{name}: the record key must be a non-empty string, got {key!r}")


@dataclass
class LongCoTSource(ProblemSource):
    """Problems with their long CoTs (``chunk.source``): a record without one is a bad record, named up front."""

    NEEDS: ClassVar[tuple[str, ...]] = ("long_cot",)


@dataclass
class LoadReport:
    """What a load read and left out; log ``summary()``."""

    source: str
    preset: str
    records: int = 0  # records read, good and bad
    loaded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    examples: list[str] = field(default_factory=list)  # the first few "file:line: reason"
    limit: int | None = None
    not_read: int = 0  # records after the limit was reached (left out on purpose, not bad)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"{self.source}: {self.loaded} problems loaded of {self.records} records (preset {self.preset})"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
            text += f"; {self.n_skipped} bad records skipped ({reasons}); first: " + "; ".join(self.examples)
        if self.not_read:
            text += (f"; {self.not_read} more record{'s' * (self.not_read > 1)} left out by limit: {self.limit} "
                     "(raise or remove the limit to use them)")
        return text


# ------------------------------------------------------------------------------------------------ readers
# Each yields (location, record or BadRecord) for every record, in order.


def _read_jsonl(path: Path, shown: str, src: ProblemSource) -> Iterator[tuple[str, object]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue  # blank lines hold no record
            loc = f"{shown}:{lineno}"
            try:
                text = raw.decode("utf-8-sig").rstrip("\r\n")  # the newline is not part of the record
            except UnicodeDecodeError as exc:
                yield loc, BadRecord("not_utf8", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                                 f"{exc.start + 1}); re-encode the file as UTF-8")
                continue
            try:
                yield loc, json.loads(text)
            except json.JSONDecodeError as exc:
                where = (f"{exc.msg} at the end of the line (column {exc.pos + 1}): the record is cut off"
                         if exc.pos >= len(text.rstrip()) else json_error_text(exc, exc.pos + 1))
                yield loc, BadRecord("invalid_json", f"invalid JSON: {where}")


def _read_json(path: Path, shown: str, src: ProblemSource) -> Iterator[tuple[str, object]]:
    """A JSON array of records, each located at the line where it starts; other JSON is read as JSON lines."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LongshortError(f"{shown}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                             "re-encode the file as UTF-8") from exc
    space = re.compile(r"\s*")
    pos = space.match(text).end()
    if not text.startswith("[", pos):
        yield from _read_jsonl(path, shown, src)
        return
    decoder, line, counted = json.JSONDecoder(), 1, 0
    pos = space.match(text, pos + 1).end()
    while not text.startswith("]", pos):
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:  # one broken element breaks the array: nothing after it can be read
            raise LongshortError(f"{shown}:{exc.lineno}: invalid JSON: {json_error_text(exc)}; "
                                 "fix the file (a broken array element cannot be skipped)") from exc
        yield f"{shown}:{line}", record
        pos = space.match(text, pos).end()
        if text.startswith(",", pos):
            pos = space.match(text, pos + 1).end()
        elif not text.startswith("]", pos):
            line = text.count("\n", 0, pos) + 1
            raise LongshortError(f"{shown}:{line}: invalid JSON: expected ',' or ']' after an array element")


def _read_parquet(path: Path, shown: str, src: ProblemSource) -> Iterator[tuple[str, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise LongshortError(f"{shown}: not a readable Parquet file ({exc}); check the file or set format:") from exc
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield f"{shown} row {row}", record


def _read_hf(path: Path, shown: str, src: ProblemSource) -> Iterator[tuple[str, object]]:
    import datasets

    try:
        if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json")):
            data = datasets.load_from_disk(str(path))  # a directory written by save_to_disk
        else:
            data = datasets.load_dataset(src.path, src.subset, split=src.split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "could not load"
        what = "" if path.exists() else "no such local file or directory, and "
        hint = ("give a local file or directory instead, or download it first (e.g. `hf download "
                f"--repo-type dataset {src.path} --local-dir DIR`, then path: DIR)")
        raise LongshortError(f"{shown}: {what}could not load it with datasets ({type(exc).__name__}: {exc}); "
                             f"{hint}") from exc
    split = src.split
    if isinstance(data, datasets.DatasetDict):
        if split is None and len(data) == 1:
            split = next(iter(data))
        if split not in data:
            raise LongshortError(f"{shown}: {'no split ' + repr(split) if split else 'several splits'}; "
                                 f"set split: to one of {', '.join(data)}")
        data = data[split]
    where = f"{shown}[{split}]" if split else shown
    for row, record in enumerate(data, 1):
        yield f"{where} row {row}", record


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet, "hf": _read_hf}
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _format_of(src: ProblemSource, path: Path) -> str:
    if src.format == "hf" or path.is_dir():
        return "hf"
    if not path.is_file():
        if src.format != "auto" or path.suffix.lower() in _SUFFIX_FORMATS or src.path.startswith((".", "/", "~")):
            raise LongshortError(f"{src.path}: file not found; check path: (relative paths start at "
                                 f"{os.getcwd()})")
        return "hf"  # a name like "openai/gsm8k"
    if src.format != "auto":
        return src.format
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LongshortError(f"{src.path}: cannot tell the format from the extension {path.suffix!r}; "
                             f"set format: to one of {', '.join(_READERS)}")
    return fmt


# ---------------------------------------------------------------------------------------------- records


def _answer_text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRecord("wrong_type", f"answer is {value}, not a usable number")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_TYPES: dict[str, tuple[type, ...]] = {"id": (str, int), "answer": (str, int, float), "meta": (dict,),
                                       "choices": (list,)}


def _to_values(record: object, mapping: dict[str, str], preset: Preset, src: ProblemSource) -> dict[str, Any]:
    """The Problem fields of one record (without the default id/source), or BadRecord."""
    if not isinstance(record, dict):
        raise BadRecord("not_object", f"expected an object with named fields, got {type(record).__name__}")
    values: dict[str, Any] = {}
    needed = (*REQUIRED_FIELDS, *src.NEEDS)
    blank = {name: key for name, key in mapping.items() if name in needed and (
        record.get(key) is None or (isinstance(record.get(key), str) and not record[key].strip()))}
    if preset.finish is not None:  # a preset may build a needed field from other keys (openr1's long CoT)
        blank = {n: k for n, k in blank.items() if n in REQUIRED_FIELDS}
    if blank:  # every one at once: a wrong preset misses several
        reason = "missing_field" if any(record.get(k) is None for k in blank.values()) else "empty_field"
        which = ", ".join(f"'{key}' (for {name})" for name, key in blank.items())
        fix = ", ".join(f"{name}: <key>" for name in blank)
        raise BadRecord(reason, f"{'missing or empty' if len(blank) > 1 else reason.replace('_', ' ')} {which}; "
                                f"record keys: {', '.join(map(str, record)) or 'none'}; map them with "
                                f"{src.fix('fields')}: {{{fix}}} or choose a {src.fix('preset')} "
                                f"({', '.join(PRESETS)})")
    for name, key in mapping.items():
        value = record.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        allowed = _TYPES.get(name, (str,))
        if isinstance(value, bool) or not isinstance(value, allowed):
            expected = " or ".join("object" if t is dict else t.__name__ for t in allowed)
            raise BadRecord("wrong_type", f"field '{key}' is {type(value).__name__}, expected {expected}")
        values[name] = _answer_text(value) if name == "answer" else str(value) if name == "id" else value
    used = set(mapping.values()) | set(preset.consumes)
    values["meta"] = {**{k: v for k, v in record.items() if k not in used}, **values.get("meta", {})}
    if preset.finish is not None:
        preset.finish(values, record, src.seed)
    if not values["answer"]:
        raise BadRecord("empty_field", "the gold answer is empty")
    for name in src.NEEDS:
        if not values.get(name):
            raise BadRecord("missing_field", f"no {name} in this record; record keys: {', '.join(map(str, record))}; "
                                             f"map it with {src.fix('fields')}: {{{name}: <key>}}")
    _multiple_choice(values, isinstance(record.get(mapping.get("answer", "")), int), src)
    return values


def _multiple_choice(values: dict[str, Any], index_given: bool, src: ProblemSource) -> None:
    """A multiple-choice record becomes lettered, shuffled options and a letter (data/choices.py)."""
    try:
        built = choices.build(values["problem"], values["answer"], values.pop("choices", None), seed=src.seed,
                              shuffle=src.shuffle_choices, index_given=index_given)
    except ValueError as exc:
        raise BadRecord("bad_choices", f"{exc}; give choices as a list of option texts and the answer as a letter, "
                                       "the right option's text, or its 0-based index") from None
    if built is not None:
        values.update(problem=built.problem, answer=built.letter, choices=built.options)


def load_problems(src: ProblemSource, head: int | None = None) -> tuple[list[Problem], LoadReport]:
    """Read ``src`` into Problems; bad records fail the load or are skipped and counted (``on_bad_record``).
    ``head``: read only that many records (``longshort check`` parses a source's opening records)."""
    try:
        src.validate()
    except ValueError as exc:
        raise LongshortError(f"problem source {src.path!r}: {src.key + '.' if src.key else ''}{exc}") from exc
    if not src.path:
        raise LongshortError(f"problem source: path is empty; set {src.fix('path')}: to a JSONL/JSON/Parquet file, "
                             "a directory, or a Hugging Face data set name")
    path = Path(src.path).expanduser()
    records = _READERS[_format_of(src, path)](path, src.path, src)
    if head is not None:
        records = islice(records, head)
    first = next(records, None)
    preset = PRESETS[src.preset] if src.preset else preset_for(src.path, first[1] if first else None)
    mapping = {**preset.fields, **src.fields}
    name = path.name if path.exists() else src.path
    stem = (path.stem if path.is_file() else path.name) + (f"-{src.split}" if src.split else "")
    report = LoadReport(source=src.path, preset=preset.name, limit=src.limit)
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}  # id -> where
    for index, (loc, record) in enumerate(chain([first] if first else [], records)):
        report.records += 1
        try:
            if isinstance(record, BadRecord):
                raise record
            values = _to_values(record, mapping, preset, src)
            values.setdefault("id", f"{stem}-{index}")
            values.setdefault("source", name)
            if values["id"] in first_seen:
                raise BadRecord("duplicate_id", f"duplicate id {values['id']!r} (first at {first_seen[values['id']]})")
        except BadRecord as bad:
            report.skipped[bad.reason] += 1
            if len(report.examples) < _EXAMPLES:
                report.examples.append(f"{loc}: {bad}")
            continue
        first_seen[values["id"]] = loc
        problems.append(Problem(**values))
        if src.limit is not None and len(problems) >= src.limit:
            report.not_read = sum(1 for _ in records)  # said, not silently dropped
            break
    report.loaded = len(problems)
    if report.skipped and src.on_bad_record == "fail":
        raise LongshortError(
            f"{src.path}: {report.n_skipped} bad record{'s' * (report.n_skipped > 1)} of {report.records} read:\n  " + "\n  ".join(report.examples)
            + "\nfix them, or set on_bad_record: skip to leave them out (they are counted and logged)"
        )
    if report.skipped:
        log.warning("%s", report.summary())
    elif report.not_read:
        log.info("%s", report.summary())
    if not problems:
        raise LongshortError(f"{src.path}: no usable problems ({report.records} records read)")
    return problems, report


def write_jsonl(problems: Iterable[Problem], path: str | os.PathLike) -> int:
    """Write problems in the project layout (``load_problems`` reads them back as they were); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for p in problems:
            record = {k: v for k, v in vars(p).items() if v is not None and (k not in ("meta", "choices") or v)}
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            count += 1
    os.replace(tmp, path)  # readers never see a half-written file
    return count
