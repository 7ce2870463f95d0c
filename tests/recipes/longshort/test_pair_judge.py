"""Importance to the pair (``score.judge: pair``): the judge stage trains a real pair from a random cold start, the
pair's dialogues from each CoT prefix give the scores, exactly reproducible and cached like the base-model judge's."""

from __future__ import annotations

import json
import shutil

import pytest
from builders import ScriptedEngine, run_dir_with_task, task_records, tiny_model_dir
from transformers import AutoTokenizer

from longshort.cluster.engine_pool import LocalEnginePool
from longshort.core.errors import LongshortError
from longshort.data.protocol import EOS, Message, prompt_ids
from longshort.engines.hf.engine import HFEngine
from longshort.pipeline.run_config import load_run_config
from longshort.recipes.longshort.chunking.config import ChunkConfig
from longshort.recipes.longshort.chunking.thoughts import run_chunk
from longshort.recipes.longshort.scoring.judge_stage import train_judge_pair
from longshort.recipes.longshort.scoring.rollouts import RolloutCache
from longshort.recipes.longshort.scoring.score_stage import run_score

N_COTS = 6
SMALL = ["score.judge=pair", "score.n_rollouts=2", "score.batch_cots=2", "score.report=false",
         "score.pair_judge.max_turn_tokens_long=24", "score.pair_judge.max_turn_tokens_short=24",
         "score.pair_judge.max_episode_tokens=64", "coldstart.ratio=0.3",
         "sft.long.max_steps=6", "sft.short.max_steps=6", "sft.long.micro_batch_size=2", "sft.short.micro_batch_size=2"]


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory):
    """A chunked run whose judge stage has run: the tiny base model SFT'd as long and short on a random cold start."""
    model = tiny_model_dir(tmp_path_factory.mktemp("model") / "m")
    run = run_dir_with_task(tmp_path_factory.mktemp("run"), task_records(N_COTS), model)
    run_chunk(ChunkConfig(rules="cues"), run)
    cfg = load_run_config(None, SMALL)
    pair = train_judge_pair(cfg, run)
    return run, cfg, pair


def pools(pair):
    return {r: LocalEnginePool(HFEngine(str(pair / r / "model"), seed=0)) for r in ("long", "short")}


def test_judge_stage_trains_the_pair_from_randomly_chosen_thoughts(judged_run):
    run, cfg, pair = judged_run
    assert all((pair / r / "model" / "config.json").exists() for r in ("long", "short"))
    summary = json.loads((run / "judge" / "coldstart" / "summary.json").read_text())
    assert summary["kept"] > 0
    chosen = [json.loads(x) for x in (run / "judge" / "thoughts.jsonl").read_text().splitlines()]
    assert len(chosen) == N_COTS and all(t["importance"] == 0 for r in chosen for t in r["thoughts"])
    # the judge's own cold start never touches the run's: coldstart/ and sft/ belong to the scored pair
    assert not (run / "coldstart").exists() and not (run / "sft").exists()


def test_pair_scores_are_reproducible_cached_and_independent_of_batching(judged_run, tmp_path):
    run, cfg, pair = judged_run
    run = shutil.copytree(run, tmp_path / "run", symlinks=True)
    engines = pools(pair)
    first = run_score(cfg.score, run, backend=engines)
    lines = [json.loads(x) for x in first.path.read_text().splitlines()]
    assert len(lines) == N_COTS and first.stats.rollouts == sum(len(r["thoughts"]) for r in lines) * 2
    for r in lines:
        assert r["successes"][0] == r["successes"][1] and r["thoughts"][0]["effect"] == 0  # the opening thought
        assert all(-1 <= t["importance"] <= 1 and t["tokens"] > 0 for t in r["thoughts"])
    again = run_score(cfg.score, run, backend={r: ScriptedEngine(lambda q: []).generate for r in engines})
    assert again.stats.cached == N_COTS and again.stats.rollouts == 0
    assert again.path.read_text() == first.path.read_text()
    # one CoT per call instead of two: the same dialogues (every request is seeded by its CoT, sample and turn)
    shutil.rmtree(run / "score")
    one = run_score(cfg.score.__class__(**{**vars(cfg.score), "batch_cots": 1}), run, backend=engines)
    assert one.path.read_text() == first.path.read_text()
    assert len(RolloutCache(run / "score" / "cache" / "rollouts.jsonl").entries) == N_COTS
    # the base-model judge keys its cache apart: nothing of the pair's is reused for it
    model = LocalEnginePool(HFEngine(str(run / "bootstrap" / "base_model"), seed=0))
    base = run_score(cfg.score.__class__(**{**vars(cfg.score), "judge": "base", "max_tokens": 8}), run, backend=model)
    assert base.stats.cached == 0


def test_the_thought_the_pair_needs_is_the_important_one(judged_run, tmp_path):
    """A short role that answers right only once the long turn holds one particular thought: that thought alone
    gets positive importance (the prompt it sees is the rendered dialogue, token in)."""
    run, cfg, pair = judged_run
    run = shutil.copytree(run, tmp_path / "run", symlinks=True)
    shutil.rmtree(run / "score", ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(str(pair / "short" / "model"))
    rec = json.loads((run / "chunk" / "thoughts.jsonl").read_text().splitlines()[0])
    need = 2  # the third thought
    key_text = rec["thoughts"][need].strip()
    eos = tok.convert_tokens_to_ids(EOS)

    def short_reply(req):
        seen = tok.decode(req.prompt_ids, skip_special_tokens=False)
        return tok.encode(str(rec["answer"]) if key_text in seen else "0", add_special_tokens=False) + [eos]

    short = ScriptedEngine(short_reply)
    score = cfg.score.__class__(**{**vars(cfg.score), "limit": 1})
    res = run_score(score, run, backend={"long": ScriptedEngine(lambda q: []).generate, "short": short.generate})
    (scored,) = [json.loads(x) for x in res.path.read_text().splitlines()]
    imp = [t["importance"] for t in scored["thoughts"]]
    assert imp[need] > 0 and all(v == 0 for k, v in enumerate(imp) if k != need)
    assert scored["successes"][need + 1 :] == [2] * (len(imp) - need)
    opening = "".join(rec["thoughts"][:1]).strip()
    first = short.calls[0][0].prompt_ids
    assert first == prompt_ids([Message("user", rec["problem"]), Message("long", opening)], tok, "short")


def test_a_missing_judge_pair_is_a_clear_error(judged_run, tmp_path):
    run, cfg, _ = judged_run
    score = cfg.score.__class__(**{**vars(cfg.score), "pair_judge": cfg.score.pair_judge.__class__(pair=str(tmp_path))})
    with pytest.raises(LongshortError, match="longshort judge"):
        run_score(score, run)


def test_a_second_round_judge_learns_from_the_base_models_choices(judged_run, tmp_path):
    """``pair_judge.rank_by: importance``: the judge stage scores with the base model first (into the run's cache,
    which the base-model judge then reuses), then builds its cold start from those scores."""
    run, _, _ = judged_run
    run = shutil.copytree(run, tmp_path / "run", symlinks=True)
    shutil.rmtree(run / "judge")
    cfg = load_run_config(None, [*SMALL, "score.pair_judge.rank_by=importance", "score.max_tokens=8"])
    pair = train_judge_pair(cfg, run)
    assert all((pair / r / "model" / "config.json").exists() for r in ("long", "short"))
    scored = [json.loads(x) for x in (run / "judge" / "score" / "scores.jsonl").read_text().splitlines()]
    assert len(scored) == N_COTS and len(RolloutCache(run / "score" / "cache" / "rollouts.jsonl").entries) == N_COTS
    base = cfg.score.__class__(**{**vars(cfg.score), "judge": "base"})
    assert run_score(base, run).stats.cached == N_COTS  # the judge's base-model scores, reused
