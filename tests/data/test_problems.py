"""Problem loading: presets on the real benchmark files, every input format, and bad records."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from builders import benchmark_file

from longshort.core.errors import LongshortError
from longshort.data.problems import PRESETS, Problem, ProblemSource, load_problems, write_jsonl


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "preset", "rows", "first_answer"),
    [
        ("math500.jsonl", "math500", 500, r"\left( 3, \frac{\pi}{2} \right)"),
        ("aime24.jsonl", "aime24", 30, "33"),  # an integer in the file
        ("aime25.jsonl", "aime25", 30, "70"),
        ("amc23.jsonl", "amc23", 40, "27"),  # 27.0 in the file
        ("gsm8k_test.jsonl", "gsm8k", 1319, "18"),
    ],
)
def test_benchmarks_load_with_detected_preset(name, preset, rows, first_answer):
    problems, report = load_problems(ProblemSource(path=str(benchmark_file(name))))
    assert (report.preset, report.records, report.loaded, report.n_skipped) == (preset, rows, rows, 0)
    assert len(problems) == rows and problems[0].answer == first_answer
    assert len({p.id for p in problems}) == rows and problems[0].id == f"{Path(name).stem}-0"
    assert all(p.source == name and p.problem.strip() and p.answer for p in problems)


def test_amc_answers_are_integers():
    problems, _ = load_problems(ProblemSource(path=str(benchmark_file("amc23.jsonl"))))
    assert all(re.fullmatch(r"-?\d+", p.answer) for p in problems), [p.answer for p in problems]


def test_gsm8k_preset_splits_worked_solution_and_final_answer():
    path = benchmark_file("gsm8k_test.jsonl")
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    problems, _ = load_problems(ProblemSource(path=str(path)))
    for p, r in zip(problems, raw, strict=True):
        final = r["answer"].rsplit("####", 1)[1].strip()
        assert p.problem == r["question"]
        assert p.answer == final.replace(",", "") and re.fullmatch(r"-?\d+", p.answer)
        assert "####" not in p.solution and "<<" not in p.solution and p.solution
    commas = [p for p, r in zip(problems, raw, strict=True) if "," in r["answer"].rsplit("####", 1)[1]]
    assert commas and commas[0].answer.isdigit()  # "#### 2,125" -> "2125"
    assert problems[0].solution.endswith("She makes 9 * 2 = $18 every day at the farmer’s market.")


def _gpqa_rows(n: int) -> list[dict]:
    return [
        {"Record ID": f"rec{i}", "Question": f"Which value does item {i} take?", "Correct Answer": f"right {i}",
         "Incorrect Answer 1": f"wrong {i}a", "Incorrect Answer 2": f"wrong {i}b", "Incorrect Answer 3": f"wrong {i}c",
         "Explanation": f"because {i}", "Subdomain": "Physics"}
        for i in range(n)
    ]


def test_gpqa_becomes_seeded_multiple_choice(tmp_path):
    path = _jsonl(tmp_path / "gpqa_diamond.jsonl", _gpqa_rows(60))
    problems, report = load_problems(ProblemSource(path=str(path)))
    assert report.preset == "gpqa"
    for i, p in enumerate(problems):
        options = re.findall(r"^\(([A-D])\) (.*)$", p.problem, re.M)
        assert [letter for letter, _ in options] == list("ABCD")
        assert dict(options)[p.answer] == f"right {i}" == p.gold.text
        assert p.choices == tuple(text for _, text in options)
        assert sorted(text for _, text in options) == sorted([f"right {i}", f"wrong {i}a", f"wrong {i}b", f"wrong {i}c"])
        assert (p.id, p.solution, p.meta["Subdomain"]) == (f"rec{i}", f"because {i}", "Physics")
        assert "Incorrect Answer 1" not in p.meta
    letters = Counter(p.answer for p in problems)
    assert len(letters) == 4 and min(letters.values()) >= 5  # the gold letter is spread over A-D
    again, _ = load_problems(ProblemSource(path=str(path)))
    assert again == problems  # same seed: same order
    reseeded, _ = load_problems(ProblemSource(path=str(path), seed=1))
    assert sum(a.answer != b.answer for a, b in zip(problems, reseeded, strict=True)) > 20


def test_project_layout_round_trips_through_write_jsonl(tmp_path):
    problems = [
        Problem("p1", "What is 1+1?", "2", solution="1+1=2", long_cot="<think>one and one</think>", source="gen",
                meta={"level": 1, "tags": ["easy"]}),
        Problem("p2", "Name the capital of France.", r"\text{Paris}"),
    ]
    # named like a preset, but holding the project layout: read as such
    path = tmp_path / "out" / "gsm8k_train.jsonl"
    assert write_jsonl(problems, path) == 2
    loaded, report = load_problems(ProblemSource(path=str(path)))
    assert report.preset == "longshort"
    assert loaded[0] == problems[0]
    assert loaded[1] == Problem("p2", "Name the capital of France.", r"\text{Paris}", source="gsm8k_train.jsonl")


def test_fields_override_and_limit(tmp_path):
    rows = [{"uid": f"u{i}", "question": f"q{i}?", "final": i, "notes": "x"} for i in range(10)]
    src = ProblemSource(path=str(_jsonl(tmp_path / "custom.jsonl", rows)), fields={"problem": "question",
                        "answer": "final", "id": "uid"}, limit=3)
    problems, report = load_problems(src)
    assert [(p.id, p.problem, p.answer, p.meta) for p in problems] == [
        (f"u{i}", f"q{i}?", str(i), {"notes": "x"}) for i in range(3)
    ]
    assert (report.records, report.loaded, report.not_read) == (3, 3, 7)
    assert "7 more records left out by limit: 3" in report.summary()


def _bad_file(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"id": "a", "problem": "ok 1", "answer": "1"}),  # 1
        '{"id": "b", "problem": "broken", ',  # 2 invalid JSON
        json.dumps(["not", "an", "object"]),  # 3
        json.dumps({"id": "c", "answer": "3"}),  # 4 missing problem
        json.dumps({"id": "d", "problem": "  ", "answer": "4"}),  # 5 empty problem
        json.dumps({"id": "e", "problem": "q", "answer": ["5"]}),  # 6 wrong type
        "",  # 7 blank: no record
        json.dumps({"id": "a", "problem": "again", "answer": "7"}),  # 8 duplicate id
        json.dumps({"id": 9, "problem": "ok 2", "answer": 2.5}),  # 9
        json.dumps({"id": "f", "problem": "flag", "answer": True}),  # 10 wrong type (bool)
    ]
    raw = "\n".join(lines).encode() + b'\n{"id": "g", "problem": "caf\xe9", "answer": "1"}\n'  # 11 Latin-1 byte
    path = tmp_path / "problems.jsonl"
    path.write_bytes(raw)
    return path


def test_bad_records_fail_with_file_and_line(tmp_path):
    path = _bad_file(tmp_path)
    with pytest.raises(LongshortError) as err:
        load_problems(ProblemSource(path=str(path)))
    text = str(err.value)
    assert "8 bad records of 10 read" in text and "on_bad_record: skip" in text
    for line in (2, 3, 4, 5, 6):
        assert f"{path}:{line}: " in text
    assert f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes at the end of the line " \
           "(column 34): the record is cut off" in text
    assert "invalid JSON" in text and "missing field 'problem'" in text and "empty field 'problem'" in text


def test_bad_records_skipped_are_counted_and_logged(tmp_path, caplog):
    path = _bad_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="longshort"):
        problems, report = load_problems(ProblemSource(path=str(path), on_bad_record="skip"))
    assert [(p.id, p.answer) for p in problems] == [("a", "1"), ("9", "2.5")]
    assert report.skipped == Counter(invalid_json=1, not_object=1, missing_field=1, empty_field=1, wrong_type=2,
                                     duplicate_id=1, not_utf8=1)
    assert (report.records, report.loaded, report.n_skipped) == (10, 2, 8)
    assert report.examples[0].startswith(f"{path}:2: invalid JSON")
    assert len(report.examples) == 5
    assert any("8 bad records skipped" in r.getMessage() for r in caplog.records)


def test_duplicate_and_utf8_messages(tmp_path):
    path = _bad_file(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[7] + lines[10])
    with pytest.raises(LongshortError) as err:
        load_problems(ProblemSource(path=str(path)))
    assert f"{path}:2: duplicate id 'a' (first at {path}:1)" in str(err.value)
    assert f"{path}:3: not valid UTF-8 (byte 0xe9" in str(err.value)


def test_an_unterminated_string_is_named_once_with_its_column(tmp_path):
    """json's own message ends in "at" ("Unterminated string starting at"): the column follows it, not "at at"."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"problem": "one", "answer": "1"}\n{"problem": "x", "answer": "2\n', encoding="utf-8")
    with pytest.raises(LongshortError) as err:
        load_problems(ProblemSource(path=str(path)))
    assert f"{path}:2: invalid JSON: Unterminated string starting at column 28" in str(err.value)
    assert "at at" not in str(err.value)


def test_json_array_reports_lines(tmp_path):
    path = tmp_path / "set.json"
    path.write_text('[\n  {"problem": "one", "answer": "1"},\n  {"problem": "two"},\n  {"problem": "3",\n'
                    '   "answer": 3}\n]\n', encoding="utf-8")
    with pytest.raises(LongshortError, match=rf"{re.escape(str(path))}:3: missing field 'answer'"):
        load_problems(ProblemSource(path=str(path)))
    problems, report = load_problems(ProblemSource(path=str(path), on_bad_record="skip"))
    assert [p.answer for p in problems] == ["1", "3"] and report.n_skipped == 1
    path.write_text('[{"problem": "one", "answer": "1"},\n {"problem": oops}]', encoding="utf-8")
    with pytest.raises(LongshortError, match=r"set.json:2: invalid JSON"):
        load_problems(ProblemSource(path=str(path), on_bad_record="skip"))


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"problem": ["a?", "b?", None], "answer": [1, 2, 3], "level": [1, 2, 3]}), path)
    problems, report = load_problems(ProblemSource(path=str(path), on_bad_record="skip"))
    assert [(p.id, p.answer, p.meta) for p in problems] == [("train-0", "1", {"level": 1}), ("train-1", "2",
                                                                                            {"level": 2})]
    assert report.examples == [f"{path} row 3: missing field 'problem' (for problem); record keys: problem, answer, "
                               f"level; map them with fields: {{problem: <key>}} or choose a preset "
                               f"({', '.join(PRESETS)})"]


def test_a_record_missing_several_fields_names_them_all_at_once(tmp_path):
    path = tmp_path / "r1.jsonl"
    path.write_text('{"question": "2+2?", "final": "4"}\n')
    with pytest.raises(LongshortError) as err:
        load_problems(ProblemSource(path=str(path)))
    text = str(err.value)
    assert "missing or empty 'problem' (for problem), 'answer' (for answer); record keys: question, final" in text
    assert "map them with fields: {problem: <key>, answer: <key>}" in text


def test_a_long_cot_source_needs_each_records_long_cot_named_with_the_rest(tmp_path):
    """chunk.source is a LongCoTSource: a record without its long CoT is a bad record, named with the other missing
    fields and the dotted fix, before any work (not a stage-time skip); OpenR1's preset builds it from generations."""
    from longshort.data.problems import LongCoTSource

    path = tmp_path / "dump.jsonl"
    path.write_text('{"question": "2+2?", "final": "4", "generation": "<think>2+2=4</think> 4"}\n')
    src = LongCoTSource(path=str(path), key="chunk.source")
    with pytest.raises(LongshortError) as err:
        load_problems(src)
    assert ("'problem' (for problem), 'answer' (for answer), 'long_cot' (for long_cot)" in str(err.value)
            and "chunk.source.fields: {problem: <key>, answer: <key>, long_cot: <key>}" in str(err.value))
    with pytest.raises(LongshortError, match=r"missing field 'long_cot' .*chunk.source.fields: \{long_cot: <key>\}"):
        load_problems(LongCoTSource(path=str(path), fields={"problem": "question", "answer": "final"}, key="chunk.source"))
    (p,), _ = load_problems(LongCoTSource(path=str(path), fields={"problem": "question", "answer": "final",
                                                                   "long_cot": "generation"}))
    assert p.long_cot.startswith("<think>")
    assert load_problems(ProblemSource(path=str(path), fields={"problem": "question", "answer": "final"}))[0]
    r1 = tmp_path / "openr1.jsonl"
    r1.write_text(json.dumps({"problem": "2+2?", "answer": "4", "generations": ["no", "yes 4"],
                              "correctness_math_verify": [False, True]}) + "\n")
    (p,), _ = load_problems(LongCoTSource(path=str(r1), preset="openr1"))
    assert p.long_cot == "yes 4"


def test_datasets_saved_to_disk(tmp_path):
    import datasets

    rows = {"question": ["2+2?", "3+3?"], "answer": ["so 4\n#### 4", "so 6\n#### 6"]}
    single = tmp_path / "gsm8k_saved"
    datasets.Dataset.from_dict(rows).save_to_disk(str(single))
    problems, report = load_problems(ProblemSource(path=str(single)))
    assert report.preset == "gsm8k" and [p.answer for p in problems] == ["4", "6"]
    both = tmp_path / "both"
    datasets.DatasetDict(train=datasets.Dataset.from_dict(rows), test=datasets.Dataset.from_dict(rows)).save_to_disk(
        str(both))
    with pytest.raises(LongshortError, match="set split: to one of train, test"):
        load_problems(ProblemSource(path=str(both), preset="gsm8k"))
    problems, _ = load_problems(ProblemSource(path=str(both), preset="gsm8k", split="test"))
    assert [p.id for p in problems] == ["both-test-0", "both-test-1"]


def test_unreachable_hub_name_says_how_to_fix(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network here: fail fast, not after retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LongshortError, match=r"HuggingFaceH4/MATH-500: no such local file or directory, and could not load it.*download it first"):
        load_problems(ProblemSource(path="HuggingFaceH4/MATH-500", split="test"))


@pytest.mark.parametrize(
    ("src", "message"),
    [
        (ProblemSource(path="x.jsonl", preset="nope"), "preset: unknown preset 'nope'; accepted: math500"),
        (ProblemSource(path="x.jsonl", fields={"question": "q"}), "fields: unknown Problem field 'question'"),
        (ProblemSource(path=""), "path is empty"),
        (ProblemSource(path="missing/problems.jsonl"), "missing/problems.jsonl: file not found"),
        (ProblemSource(path="aime24_and_aime25.jsonl"), "fits several presets \\(aime24, aime25\\)"),
    ],
)
def test_config_errors(src, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if src.path.startswith("aime"):
        _jsonl(tmp_path / src.path, [{"problem": "p", "answer": "1"}])
    with pytest.raises(LongshortError, match=message):
        load_problems(src)


def test_unknown_extension_and_empty_file(tmp_path):
    (tmp_path / "data.txt").write_text("{}", encoding="utf-8")
    with pytest.raises(LongshortError, match="set format: to one of jsonl, json, parquet, hf"):
        load_problems(ProblemSource(path=str(tmp_path / "data.txt")))
    problems, _ = load_problems(ProblemSource(path=str(_jsonl(tmp_path / "data.txt", [{"problem": "p", "answer": 1}])),
                                              format="jsonl"))
    assert problems[0].answer == "1"
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(LongshortError, match="no usable problems"):
        load_problems(ProblemSource(path=str(tmp_path / "empty.jsonl")))


def test_problem_is_hashable():
    assert len({Problem("a", "p", "1", meta={"x": [1]}), Problem("a", "p", "1", meta={"x": [1]})}) == 1


def test_openr1_layout_takes_the_first_verified_generation(tmp_path):
    rows = [{"uuid": "a", "problem": "1+1?", "answer": "2", "solution": "2",
             "generations": ["<think>wrong</think> 3", "<think>right</think> \\boxed{2}"],
             "correctness_math_verify": [False, True]},
            {"uuid": "b", "problem": "2+2?", "answer": "4", "solution": "4", "generations": ["<think>x</think> 5"],
             "correctness_math_verify": [False]}]
    path = _jsonl(tmp_path / "openr1_math.jsonl", rows)
    problems, report = load_problems(ProblemSource(path=str(path), on_bad_record="skip"))
    assert report.preset == "openr1" and [p.id for p in problems] == ["a"]
    assert problems[0].long_cot == "<think>right</think> \\boxed{2}" and "generations" not in problems[0].meta
    with pytest.raises(LongshortError, match=r"openr1_math.jsonl:2: .*no generation is marked correct"):
        load_problems(ProblemSource(path=str(path)))


def test_a_sources_hints_name_its_full_dotted_key(tmp_path):
    """A source loaded from a run config knows where it sits (`chunk.source`): the fix names `chunk.source.fields`."""
    from longshort.pipeline.run_config import load_run_config

    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "2+2?", "final": "4"}\n')
    cfg = load_run_config(None, [f"chunk.source.path={path}"])
    assert cfg.chunk.source.key == "chunk.source" and "key" not in yaml_dump(cfg)["chunk"]["source"]
    with pytest.raises(LongshortError, match=r"map them with chunk\.source\.fields: \{problem: <key>, answer: <key>, "
                                             r"long_cot: <key>\} or choose a chunk\.source\.preset"):
        load_problems(cfg.chunk.source)
    with pytest.raises(LongshortError, match=r"unknown key 'chunk\.source\.key'"):
        load_run_config(None, ["chunk.source.key=x"])
    from longshort.core.config import dump_yaml
    from longshort.core.redact import scrub

    saved = tmp_path / "config.yaml"  # what prepare_run writes into a run directory reloads (longshort compare)
    saved.write_text(dump_yaml(scrub(cfg)))
    assert load_run_config(saved).chunk.source == cfg.chunk.source


def yaml_dump(cfg) -> dict:
    import yaml

    from longshort.core.config import dump_yaml

    return yaml.safe_load(dump_yaml(cfg))
