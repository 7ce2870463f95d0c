"""The synthetic long-CoT task: determinism, exact thought layout, tags, lengths, corrections, difficulty."""

from __future__ import annotations

import hashlib
import json
import re
import statistics

import pytest
from builders import ROOT

from longshort.toy.task import (
    _HESITATIONS,
    CORRECTION_RE,
    SEP,
    TAGS,
    Op,
    TaskConfig,
    dev_split,
    generate,
    main,
    problem_key,
    read_jsonl,
    think_body,
    write_jsonl,
)

EXPR = re.compile(r"(\d+) ([+\-×]) (\d+) = (\d+)")
KIND = {"+": "add", "-": "sub", "×": "mul"}


def _apply(a: int, sym: str, b: int) -> int:
    return Op(KIND[sym], b).apply(a)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    train, held_out = generate(TaskConfig(seed=3, n_train=600, n_eval=100, error_rate=0.3))
    return train + held_out


def test_deterministic_by_seed():
    cfg = TaskConfig(seed=7, n_train=50, n_eval=10)
    assert generate(cfg) == generate(TaskConfig(seed=7, n_train=50, n_eval=10))
    other, _ = generate(TaskConfig(seed=8, n_train=50, n_eval=10))
    assert [r["problem"] for r in other] != [r["problem"] for r in generate(cfg)[0]]


def test_record_fields_and_eval_held_out():
    train, held_out = generate(TaskConfig(seed=1, n_train=300, n_eval=50))
    assert len(train) == 300 and len(held_out) == 50
    for r in train[:5]:
        assert {"id", "problem", "answer", "solution", "long_cot", "thoughts", "source", "meta"} <= set(r)
    key = lambda r: (r["meta"]["start"], str(r["meta"]["ops"]))  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in held_out}
    assert len({key(r) for r in held_out}) == len(held_out)
    assert len({r["id"] for r in train + held_out}) == 350


def test_thoughts_concatenate_to_the_think_body(records):
    for r in records:
        assert r["long_cot"].startswith("<think>\n")
        assert SEP.join(t["text"] for t in r["thoughts"]) == think_body(r["long_cot"])
        assert r["long_cot"].endswith(f"\\boxed{{{r['answer']}}}.")
        assert r["solution"].endswith(f"\\boxed{{{r['answer']}}}.")
        assert all(t["tag"] in TAGS and t["text"] and SEP not in t["text"] for t in r["thoughts"])
        assert not any(tag in r["long_cot"] + r["problem"] for tag in TAGS)  # the tags never reach a model


def test_every_tag_occurs_and_essential_steps_carry_the_state(records):
    seen = {t["tag"] for r in records for t in r["thoughts"]}
    assert seen == set(TAGS)
    for r in records:
        # Replay the chain: each essential step starts from the current value and computes the next one.
        value, step = r["meta"]["start"], 0
        for t in r["thoughts"]:
            exprs = EXPR.findall(t["text"])
            if t["tag"] == "essential":
                (a, sym, b, c), = exprs
                assert int(a) == value and _apply(int(a), sym, int(b)) == int(c)
                value, step = int(c), step + 1
            elif t["tag"] == "correction":
                value = int(exprs[-1][3])  # the corrected (and redone) state
                step += 1 + len(exprs) - 1
        assert str(value) == r["answer"]


def test_corrections_fix_a_planted_error(records):
    planted = [r for r in records if r["meta"]["error_step"]]
    assert 0.2 < len(planted) / len(records) < 0.4  # error_rate 0.3
    assert any(r["meta"]["delay"] for r in planted) and any(not r["meta"]["delay"] for r in planted)
    for r in planted:
        m, tags = r["meta"], [t["tag"] for t in r["thoughts"]]
        assert tags.count("correction") == 1 and tags.count("error") == 1 + m["delay"]
        errors = [t["text"] for t in r["thoughts"] if t["tag"] == "error"]
        fix = r["thoughts"][tags.index("correction")]["text"]
        assert f"= {m['wrong_value']}." in errors[0] and f"= {m['right_value']}, not {m['wrong_value']}" in fix
        assert tags.index("correction") > max(i for i, t in enumerate(tags) if t == "error")
        assert [bool(CORRECTION_RE.search(t["text"])) for t in r["thoughts"]] == [t == "correction" for t in tags]
        # Without the correction, continuing from the error chain's value gives a wrong final answer.
        value = int(EXPR.findall(errors[-1])[0][3])
        for kind, arg in m["ops"][m["error_step"] + m["delay"]:]:
            value = Op(kind, arg).apply(value)
        assert str(value) != r["answer"]
        # ... and with it the answer is right: it equals the clean computation.
        value = m["start"]
        for kind, arg in m["ops"]:
            value = Op(kind, arg).apply(value)
        assert str(value) == r["answer"]


def test_long_cot_several_times_longer_than_concise(records):
    ratio = statistics.mean(len(r["long_cot"].split()) / len(r["solution"].split()) for r in records)
    assert 3.0 <= ratio <= 6.0, ratio


def test_difficulty_knobs():
    easy, _ = generate(TaskConfig(seed=0, n_train=300, n_eval=0, min_steps=2, max_steps=2, max_value=20))
    hard, _ = generate(TaskConfig(seed=0, n_train=300, n_eval=0, min_steps=5, max_steps=5, max_value=999))
    assert {r["meta"]["steps"] for r in easy} == {2} and {r["meta"]["steps"] for r in hard} == {5}
    assert statistics.mean(len(r["long_cot"]) for r in hard) > 1.8 * statistics.mean(len(r["long_cot"]) for r in easy)
    nums = lambda rs: [int(n) for r in rs for n in re.findall(r"\d+", r["solution"])]  # noqa: E731
    assert max(nums(easy)) <= 20 and max(nums(hard)) > 100


def test_r1_habit_dials_set_hesitations_and_final_passes():
    def count(cfg: TaskConfig) -> tuple[float, float]:
        recs, _ = generate(cfg)
        hes = statistics.mean(sum(t["text"] in _HESITATIONS for t in r["thoughts"]) / r["meta"]["steps"] for r in recs)
        final = statistics.mean("go over the whole chain" in r["long_cot"] for r in recs)
        return hes, final

    hes, final = count(TaskConfig(seed=0, n_train=300, n_eval=0, hesitation=1.0, reverify=1.0))
    assert hes > 0.95 and final == 1.0  # a step redone inside a correction has no hesitation of its own
    assert count(TaskConfig(seed=0, n_train=300, n_eval=0, hesitation=0.0, reverify=0.0)) == (0.0, 0.0)
    hes, final = count(TaskConfig(seed=0, n_train=300, n_eval=0))  # None: 0.4 and 0.5 x redundancy (0.7)
    assert 0.2 < hes < 0.36 and 0.28 < final < 0.42


def test_checks_per_step_sets_the_redundant_thoughts_after_each_step():
    def checks(cfg: TaskConfig) -> set[int]:
        """Redundant thoughts between each clean step and the next thought that is not redundant."""
        out = set()
        for r in generate(cfg)[0]:
            tags = [t["tag"] for t in r["thoughts"]]
            for i, tag in enumerate(tags[:-1]):
                if tag == "essential":
                    j = i + 1
                    while j < len(tags) and tags[j] == "redundant":
                        j += 1
                    out.add(j - i - 1 - (j == len(tags)))  # the closing "So the final number" is not a check
        return out

    dials = dict(seed=0, n_train=200, n_eval=0, redundancy=1.0, hesitation=0.0, reverify=0.0)
    assert checks(TaskConfig(**dials, checks_per_step=3)) == {3}
    assert checks(TaskConfig(**dials, checks_per_step=0)) == {0}


def test_the_default_task_data_is_pinned():
    """Every documented number rests on this data: a change to the generator must be deliberate (update the digest
    and the docs' numbers together). The digest is of seed 0's data at 2000 training and 200 held-out problems."""
    records = generate(TaskConfig(seed=0, n_train=2000, n_eval=200))
    digest = hashlib.sha1(json.dumps(records, sort_keys=True).encode()).hexdigest()
    assert digest == "705445a911065e41348cde97ba259e149bb70cec"


def test_the_dev_split_is_distinct_deterministic_and_leaves_train_and_eval_as_they_were():
    cfg = TaskConfig(seed=0, n_train=2000, n_eval=200, n_dev=300)
    train, held_out = generate(cfg)
    assert (train, held_out) == generate(TaskConfig(seed=0, n_train=2000, n_eval=200, n_dev=0))  # its own stream
    dev = dev_split(cfg, train, held_out)
    assert len(dev) == 300 and dev == dev_split(TaskConfig(seed=0, n_train=2000, n_eval=200, n_dev=300), train,
                                                held_out)
    keys = [problem_key(r) for r in dev]
    assert len(set(keys)) == 300 and not set(keys) & {problem_key(r) for r in train + held_out}
    assert [r["id"] for r in dev[:2]] == ["dev-000000", "dev-000001"] and all(r["solution"] for r in dev)
    assert dev_split(TaskConfig(seed=1, n_dev=5), train, held_out) != dev[:5]
    # a small, easy task runs out of problems outside train and eval: fewer dev problems, no error
    easy = TaskConfig(seed=0, n_train=400, n_eval=20, n_dev=500, min_steps=1, max_steps=1, max_value=10,
                      max_operand=2, max_factor=2)
    few = dev_split(easy, *generate(easy))
    assert len(few) < 500 and len({problem_key(r) for r in few}) == len(few)


def test_config_validation():
    with pytest.raises(ValueError, match="min_steps"):
        TaskConfig(min_steps=4, max_steps=2).validate()
    with pytest.raises(ValueError, match="max_factor"):
        TaskConfig(max_value=10, max_factor=6).validate()
    with pytest.raises(ValueError, match="n_eval"):
        generate(TaskConfig(n_train=0, n_eval=5000, min_steps=1, max_steps=1, max_value=10, max_operand=1,
                            max_factor=2))


def test_jsonl_loads_as_problems(tmp_path):
    from longshort.data.problems import ProblemSource, load_problems

    train, _ = generate(TaskConfig(seed=0, n_train=20, n_eval=0))
    path = write_jsonl(train, tmp_path / "train.jsonl")
    assert read_jsonl(path) == train
    problems, report = load_problems(ProblemSource(path=str(path)))
    assert report.loaded == 20 and not report.n_skipped
    p = problems[0]
    assert (p.id, p.answer, p.long_cot, p.solution) == (train[0]["id"], train[0]["answer"], train[0]["long_cot"],
                                                       train[0]["solution"])
    assert p.meta["thoughts"] == train[0]["thoughts"]


def test_cli_regenerates_the_sample(tmp_path, capsys):
    out = tmp_path / "sample.jsonl"
    main(["--out", str(out), "--n", "5", "--seed", "0"])
    assert read_jsonl(out) == generate(TaskConfig(seed=0, n_train=5, n_eval=0))[0]


def test_committed_sample_matches_the_generator():

    sample = ROOT / "coldstart_data" / "sample.jsonl"
    assert read_jsonl(sample) == generate(TaskConfig(seed=0, n_train=20, n_eval=0))[0], (
        "coldstart_data/sample.jsonl is stale: python -m longshort.toy.task --out coldstart_data/sample.jsonl --n 20 --seed 0"
    )
