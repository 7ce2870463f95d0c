"""Monte Carlo scoring on a real tiny model: exact prefixes, cache hits, resume after a kill, Ray actors, report."""

from __future__ import annotations

import json
import shutil

import pytest
from builders import run_dir_with_task, task_records, tiny_model_dir
from transformers import AutoTokenizer

from longshort.cluster.engine_pool import EnginePoolConfig, LocalEnginePool, open_engine_pool, split_even
from longshort.core.errors import LongshortError
from longshort.data.protocol import Message, prompt_ids, render
from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.engines.hf.engine import HFEngine
from longshort.recipes.longshort.chunking.config import ChunkConfig
from longshort.recipes.longshort.chunking.thoughts import chunk_text, run_chunk
from longshort.recipes.longshort.scoring.rollouts import (
    RolloutCache,
    ScoreConfig,
    model_content_id,
    prefix_cuts,
)
from longshort.recipes.longshort.scoring.score_stage import run_score
from longshort.recipes.longshort.scoring.summary import separation

N_COTS = 6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def chunked_run(tmp_path_factory, model):
    """A run dir with task data, the tiny model as base model, and chunked CoTs."""
    run = run_dir_with_task(tmp_path_factory.mktemp("run"), task_records(N_COTS), model)
    run_chunk(ChunkConfig(rules="cues"), run)
    return run


def small(**kw) -> ScoreConfig:
    return ScoreConfig(**{"n_rollouts": 2, "max_tokens": 12, "batch_cots": 2, "report": False, **kw})


def copy_run(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    shutil.rmtree(dst / "score", ignore_errors=True)
    return dst


class Interrupted(KeyboardInterrupt):
    pass


class KillAfter:
    """A real engine that is 'killed' (raises like Ctrl-C) on generate call number ``after + 1``."""

    def __init__(self, backend, after: int):
        self.backend, self.after, self.calls = backend, after, 0

    def __call__(self, requests):
        self.calls += 1
        if self.calls > self.after:
            raise Interrupted
        return self.backend(requests)


def test_prefixes_are_exact_token_prefixes_of_the_trained_layout(model):
    tok = AutoTokenizer.from_pretrained(str(model))
    for rec in task_records(10):
        ch = chunk_text(rec["long_cot"], ChunkConfig(rules="cues"))
        ids, cuts = prefix_cuts(tok, ch)
        assert ids == tok.encode(rec["long_cot"], add_special_tokens=False)
        assert cuts == sorted(cuts) and len(cuts) == len(ch.thoughts) + 1 and cuts[-1] <= len(ids)
        for k, b in enumerate(ch.boundaries()):
            assert tok.decode(ids[: cuts[k]]) == rec["long_cot"][:b]  # byte-level BPE: no straddling token here
        # the prompt of the last prefix + the tail is the SFT rendering of the whole answer, minus its EOS
        head = prompt_ids([Message("user", rec["problem"])], tok, "assistant")
        full = render([Message("user", rec["problem"]), Message("assistant", rec["long_cot"])], tok).ids
        assert head + ids == full[:-1]


def test_score_end_to_end_then_cache_hit(chunked_run, model, tmp_path):
    run = copy_run(chunked_run, tmp_path / "run")
    first = run_score(small(report=True, report_cots=3), run)
    lines = [json.loads(x) for x in first.path.read_text().splitlines()]
    assert len(lines) == N_COTS and first.stats.cached == 0
    assert first.stats.rollouts == sum((len(r["thoughts"]) + 1) * 2 for r in lines)
    for r in lines:
        assert len(r["successes"]) == len(r["thoughts"]) + 1
        for t in r["thoughts"]:
            assert -1 <= t["importance"] <= 1 and 0 <= t["acc_after"] <= 1 and t["tokens"] > 0
        assert "teacher" in r  # carried along for evaluation only
    assert first.summary["positives"] > 0 and 0 <= first.summary["auc"] <= 1
    html = (run / "score" / "report.html").read_text()
    assert html.count('class="cot"') == 3 and html.count("data:image/png;base64") == 2 and "Step 1:" in html
    # a re-run generates nothing and writes the same scores
    engine = LocalEnginePool(HFEngine(str(model), seed=0))
    again = run_score(small(), run, backend=engine)
    assert engine.calls == 0 and again.stats.cached == N_COTS and again.stats.rollouts == 0
    assert again.path.read_text() == first.path.read_text()
    # changing N (or the seed, sampling, coupling, model, CoT) is a cache miss
    more = run_score(small(n_rollouts=3), run, backend=engine)
    assert more.stats.cached == 0 and engine.calls == N_COTS // 2
    coupled = run_score(small(couple_context=4), run, backend=engine)
    assert coupled.stats.cached == 0 and engine.calls == N_COTS


def test_killed_run_resumes_where_it_stopped(chunked_run, model, tmp_path):
    reference = run_score(small(), copy_run(chunked_run, tmp_path / "ref"))
    run = copy_run(chunked_run, tmp_path / "run")
    engine = LocalEnginePool(HFEngine(str(model), seed=0))
    with pytest.raises(Interrupted):
        run_score(small(), run, backend=KillAfter(engine, after=1))  # dies in the second batch of 2 CoTs
    cache = RolloutCache(run / "score" / "cache" / "rollouts.jsonl")
    assert len(cache.entries) == 2
    with (run / "score" / "cache" / "rollouts.jsonl").open("a") as f:
        f.write('{"key": "half-writ')  # a line torn by the kill
    resumed = KillAfter(engine, after=99)
    res = run_score(small(), run, backend=resumed)
    assert resumed.calls == 2 and res.stats.cached == 2  # only the 4 missing CoTs, in 2 batches
    assert res.path.read_text() == reference.path.read_text()  # same seeds: identical to an uninterrupted run
    assert len(RolloutCache(run / "score" / "cache" / "rollouts.jsonl").entries) == N_COTS


def test_model_content_id(model, tmp_path):
    copy = shutil.copytree(model, tmp_path / "copy")
    assert model_content_id(copy) == model_content_id(model)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("silu", "gelu"))
    assert model_content_id(copy) != model_content_id(model)
    with pytest.raises(LongshortError, match="no model files"):
        model_content_id(tmp_path / "copy" / ".." / "copy" / "..")


def test_missing_inputs_are_clear(tmp_path, model):
    with pytest.raises(LongshortError, match="longshort chunk"):
        run_score(small(), tmp_path)
    with pytest.raises(LongshortError, match="importance"):
        bad = small()
        bad.importance.w_effect = bad.importance.w_cost = 0.0
        run_score(bad, tmp_path)


def test_separation_on_hand_made_records():
    teacher = {"thoughts": [{"text": "a", "tag": "essential"}, {"text": "b", "tag": "redundant"},
                            {"text": "c", "tag": "error"}, {"text": "d", "tag": "correction"}],
               "cover": [[0], [1], [2], [3]]}
    rec = {"teacher": teacher, "thoughts": [{"importance": v} for v in (0.5, -0.2, -0.9, 0.1)]}
    sep = separation([rec])
    assert sep["auc"] == 1.0 and sep["positives"] == 2 and sep["negatives"] == 1
    assert sep["mean_error"] == -0.9


def test_ray_actors_give_the_same_results_as_local(model):
    import ray

    tok = AutoTokenizer.from_pretrained(str(model))
    reqs = [GenerationRequest(prompt_ids([Message("user", r["problem"])], tok, "assistant"),
                              SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=i), request_id=str(i))
            for i, r in enumerate(task_records(5))]
    local = open_engine_pool(EnginePoolConfig(), model)
    want = [[s.token_ids for s in r.samples] for r in local(reqs)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = open_engine_pool(EnginePoolConfig(workers=2, threads_per_worker=1), model)
        got = remote(reqs)
        assert [r.request_id for r in got] == [str(i) for i in range(5)]
        assert [[s.token_ids for s in r.samples] for r in got] == want
        remote.close()
    finally:
        ray.shutdown()
    assert split_even([1, 1, 1, 1, 1], 2) == [(0, 3), (3, 5)]
    assert split_even([5, 1, 1], 3) == [(0, 1), (1, 2), (2, 3)]
    assert split_even([1], 4) == [(0, 1)]
