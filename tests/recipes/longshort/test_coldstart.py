"""Cold-start dialogues, the pair protocol, and SFT + evaluation of the pair (real tokenizer, engines, DeepSpeed)."""

from __future__ import annotations

import json
import math

import pytest
from builders import run_dir_with_task, task_records, tiny_model_dir
from transformers import AutoTokenizer

from longshort.cluster.engine_pool import LocalEnginePool
from longshort.core.errors import LongshortError
from longshort.data.protocol import (
    END_TURN,
    EOS,
    PAIR_RULES,
    Message,
    check_pair_dialogue,
    render,
)
from longshort.data.verify import shared_verifier
from longshort.engines.hf.engine import HFEngine
from longshort.recipes.longshort.chunking.config import ChunkConfig
from longshort.recipes.longshort.chunking.thoughts import chunk_text, teacher_cover
from longshort.recipes.longshort.coldstart.compression import key_quantities, rewrite_check
from longshort.recipes.longshort.coldstart.dialogues import (
    ColdstartConfig,
    ColdstartStats,
    long_role_thoughts,
    run_coldstart,
    select_important,
    synthesize,
)
from longshort.recipes.longshort.coldstart.ranking import TAG_PRIORITY
from longshort.recipes.longshort.pair_sft import PairSFTConfig, run_pair, run_pair_sft
from longshort.recipes.longshort.scoring.summary import thought_tags
from longshort.toy.task import write_jsonl
from longshort.training.sft_data import load_sft_jsonl

IMPORTANT = {"essential": 0.5, "correction": 0.8, "error": -0.6, "redundant": -0.2}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def tok(model):
    return AutoTokenizer.from_pretrained(str(model))


SYNTHETIC = ChunkConfig(rules="cues")  # the embedded default's rule: one thought per teacher thought


def scored_like(rec: dict, importances: list[float] | None = None) -> dict:
    """A record in the layout of score/scores.jsonl (importances given, here: from the teacher's tags)."""
    ch = chunk_text(rec["long_cot"], SYNTHETIC)
    cover = teacher_cover(ch, rec["thoughts"])
    imps = importances or [max(IMPORTANT[rec["thoughts"][i]["tag"]] for i in cov) for cov in cover]
    return {"id": rec["id"], "problem": rec["problem"], "answer": rec["answer"], "solution": rec["solution"],
            "head": ch.head, "tail": ch.tail, "method": "rules", "n": 4, "acc0": 0.5,
            "thoughts": [{"text": t, "tokens": 1, "acc_after": 0.5, "effect": 0.0, "cost": 0.1, "importance": v}
                         for t, v in zip(ch.thoughts, imps, strict=True)],
            "teacher": {"thoughts": rec["thoughts"], "cover": cover}}


def test_teacher_dialogues_follow_the_protocol_and_verify(tok):
    recs = task_records(60, error_rate=0.5)
    scored = [scored_like(r) for r in recs]
    stats = ColdstartStats()
    dialogues = synthesize(scored, ColdstartConfig(ratio=0.5), shared_verifier(), stats=stats)
    assert stats.kept == len(dialogues) > 40 and stats.cots == 60
    assert sum(stats.dropped.values()) + stats.kept == 60
    labelled = 0
    for d in dialogues:
        rec = next(r for r in recs if r["id"] == d["id"])
        msgs = [Message(m["role"], m["content"]) for m in d["messages"]]
        assert check_pair_dialogue(msgs) is None
        r = render(msgs, tok)
        assert [s.role for s in r.spans] == ["user"] + [m.role for m in msgs[1:]]
        for span, m in zip(r.spans[1:], msgs[1:], strict=True):  # each turn's span is its text + terminator
            assert tok.decode(r.ids[span.start : span.end - 1]) == m.content
            assert r.ids[span.end - 1] == tok.convert_tokens_to_ids(EOS if span is r.spans[-1] else END_TURN)
        assert msgs[-1].content.endswith(rec["solution"].splitlines()[-1])  # ends with the boxed answer
        # every step's right value appears once: verbatim in a long turn or as the teacher's line in a short one
        long_text = "\n".join(m.content for m in msgs if m.role == "long")
        short_lines = [ln for m in msgs if m.role == "short" for ln in m.content.splitlines()]
        for i, line in enumerate(rec["solution"].splitlines()[:-1]):  # short lines name their step
            assert line in long_text or f"Step {i + 1}: {line}" in short_lines, (line, msgs)
        assert all(ln.startswith("Step ") or "\\boxed" in ln for ln in short_lines), short_lines
        labelled += sum(ln.startswith("Step ") for ln in short_lines)
        # the long role's turns hold important thoughts verbatim, nothing else
        kept = [t["text"].strip() for t in next(s for s in scored if s["id"] == d["id"])["thoughts"]
                if t["importance"] > 0]
        assert all(k in long_text for k in kept)
    assert labelled > 0  # the short role does compute some steps here
    # compression: the dialogues are much shorter than the CoTs they come from
    from longshort.recipes.longshort.coldstart.dialogues import token_summary

    assert token_summary(scored, dialogues, tok)["token_ratio"] < 0.7


def test_opening_promotion_wrong_answers_and_turn_limit():
    rec = task_records(1, seed=3, redundancy=1.0)[0]
    sc = scored_like(rec)
    n = len(sc["thoughts"])
    # nothing important before the last thought: the long role must still open, so the first thought moves to it
    imps = [-0.5] * (n - 1) + [0.9]
    stats = ColdstartStats()
    [d] = synthesize([scored_like(rec, imps)], ColdstartConfig(ratio=1 / n), shared_verifier(), stats=stats)
    assert stats.promoted_opening == 1 and d["messages"][1]["role"] == "long"
    assert d["messages"][1]["content"] == sc["thoughts"][0]["text"].strip()
    # a CoT whose final answer does not verify is dropped and counted
    bad = dict(sc, answer=str(int(rec["answer"]) + 1))
    stats = ColdstartStats()
    assert synthesize([bad], ColdstartConfig(), shared_verifier(), stats=stats) == []
    assert stats.dropped == {"unverified": 1}
    # a teacher solution whose steps cannot be found in the CoT is not guessed at
    odd = dict(sc, solution="1 + 1 = 2\n" + rec["solution"].splitlines()[-1])
    stats = ColdstartStats()
    assert synthesize([odd], ColdstartConfig(), shared_verifier(), stats=stats) == []
    assert stats.dropped == {"teacher_mismatch": 1}
    # alternating importance makes many turns: more than max_turns is dropped and counted
    # (every other essential step goes to the short role, everything else to the long one)
    tags = [rec["thoughts"][cov[0]]["tag"] for cov in teacher_cover(chunk_text(rec["long_cot"], SYNTHETIC), rec["thoughts"])]
    essential = [k for k, t in enumerate(tags) if t == "essential"]
    assert len(essential) >= 3
    alt = [-0.9 if k in essential[1::2] else 0.9 for k in range(n)]
    stats = ColdstartStats()
    out = synthesize([scored_like(rec, alt)], ColdstartConfig(select="threshold", threshold=0.0, max_turns=2),
                     shared_verifier(), stats=stats)
    assert out == [] and stats.dropped == {"too_many_turns": 1}
    assert select_important([0.1, 0.5, 0.5, -1.0], ColdstartConfig(ratio=0.5)) == {1, 2}
    assert select_important([0.1, -0.5], ColdstartConfig(select="threshold", threshold=0.0)) == {0}


def test_control_rankings_for_the_scorer_ablation():
    rec = task_records(1, seed=5, redundancy=1.0, error_rate=1.0)[0]
    sc = scored_like(rec, None)
    tags = thought_tags(sc)
    n = len(sc["thoughts"])
    cfg = ColdstartConfig(ratio=0.3, rank_by="tags")
    keep = long_role_thoughts(sc, cfg)
    assert len(keep) == math.ceil(0.3 * n)
    # tags: the correction first, then essential steps, errors, and redundant thoughts last
    prio = [max(TAG_PRIORITY[t] for t in tags[k]) for k in range(n)]
    assert any("correction" in tags[k] for k in keep)
    assert min(prio[k] for k in keep) >= max(prio[k] for k in range(n) if k not in keep)
    # random: as many thoughts, fixed by (seed, CoT id), different across seeds
    picks = [long_role_thoughts(sc, ColdstartConfig(ratio=0.3, rank_by="random", rank_seed=s)) for s in range(6)]
    assert all(len(p) == len(keep) for p in picks)
    assert picks[0] == long_role_thoughts(sc, ColdstartConfig(ratio=0.3, rank_by="random", rank_seed=0))
    assert len({frozenset(p) for p in picks}) > 1
    # the default ranks by the scorer's importance
    assert long_role_thoughts(sc, ColdstartConfig(ratio=0.3)) == select_important(
        [t["importance"] for t in sc["thoughts"]], ColdstartConfig(ratio=0.3))
    # dialogues build from each ranking; tags need the teacher record
    for rank_by in ("importance", "random", "tags"):
        assert synthesize([sc], ColdstartConfig(ratio=0.3, rank_by=rank_by), shared_verifier())
    bare = {k: v for k, v in sc.items() if k != "teacher"}
    with pytest.raises(LongshortError, match="carries no teacher tags"):
        long_role_thoughts(bare, cfg)
    # under a threshold (on importance) a control keeps as many thoughts per CoT as importance does, its own choice
    imp = [t["importance"] for t in sc["thoughts"]]
    thr = sorted(imp)[n // 2]
    by_imp = long_role_thoughts(sc, ColdstartConfig(select="threshold", threshold=thr))
    assert by_imp == {k for k, v in enumerate(imp) if v >= thr} and 0 < len(by_imp) < n
    for s in range(3):
        rand = long_role_thoughts(sc, ColdstartConfig(select="threshold", threshold=thr, rank_by="random", rank_seed=s))
        assert len(rand) == len(by_imp)
    oracle = long_role_thoughts(sc, ColdstartConfig(select="threshold", threshold=thr, rank_by="tags"))
    assert len(oracle) == len(by_imp) and any("correction" in tags[k] for k in oracle)


def test_cheapest_opening_promotion():
    rec = task_records(1, seed=3, redundancy=1.0)[0]
    n = len(scored_like(rec)["thoughts"])
    sc = scored_like(rec, [-0.5] * (n - 1) + [0.9])  # only the closing line is important
    for t in sc["thoughts"]:
        t["tokens"] = len(t["text"])
    texts = [t["text"].strip() for t in sc["thoughts"]]
    assert texts[0].startswith("Let me restate") and texts[2].startswith("Step 1:")
    opened = {}
    for promote in ("first", "cheapest"):
        stats = ColdstartStats()
        [d] = synthesize([sc], ColdstartConfig(ratio=1 / n, promote=promote), shared_verifier(), stats=stats)
        assert stats.promoted_opening == 1 and d["messages"][1]["role"] == "long"
        opened[promote] = d["messages"][1]["content"]
        body = "\n".join(m["content"] for m in d["messages"][1:])
        for line in rec["solution"].splitlines()[:-1]:  # no step is lost whichever thought opens
            assert line in body
    assert opened["first"] == texts[0]
    # "So far we have 6." is shorter, but the step before it would open as a short turn; the restatement and
    # the plan before step 1 compress to nothing, so step 1 is the cheapest thought that lets the long role open
    assert opened["cheapest"] == texts[2]


def test_rewrite_checks():
    stretch = "Hmm, let me verify: 36 + 2 = 38. Then 38 × 2 = 76, so far 76."
    assert key_quantities(stretch, "The answer is \\boxed{76}.") == {"38", "76"}
    assert rewrite_check("36 + 2 = 38, 38 × 2 = 76", stretch, "\\boxed{76}") is None
    assert rewrite_check("so we get 76", stretch, "\\boxed{76}") == "dropped_quantity"  # 38 was dropped
    assert rewrite_check("36 + 2 = 38, 38 × 2 = 77", stretch, "\\boxed{76}") == "dropped_quantity"
    assert rewrite_check("36 + 2 = 38, 38 × 2 = 76, 76 + 1 = 99", stretch, "\\boxed{76}") == "new_number"
    assert rewrite_check("36 + 2 = 38; ×2 = 76 (start 5)", stretch, "", problem="Start with 5.") is None
    assert rewrite_check(stretch + " more", stretch, "") == "not_shorter"
    assert rewrite_check("   ", "nothing here", "\\boxed{1}") == "empty"
    assert key_quantities("$x = 1,000.50$ and y = 2.0", "") == {"1000.5", "2"}


def test_engine_rewrites_that_drop_numbers_are_rejected_and_counted(model, tok):
    recs = task_records(4, seed=5)
    # the steps are the unimportant ones here, so every short stretch has equation results to keep
    scored = [scored_like(r, [0.5 if t["tag"] == "redundant" else -0.5 for t in r["thoughts"]]) for r in recs]
    cfg = ColdstartConfig(compression="engine", select="threshold", threshold=0.0)
    cfg.rewrite.max_tokens, cfg.rewrite.attempts = 12, 2
    stats = ColdstartStats()
    backend = LocalEnginePool(HFEngine(str(model), seed=0))
    out = synthesize(scored, cfg, shared_verifier(), backend, tok, stats)
    # a random model's rewrites never keep the equations' results
    assert out == [] and stats.dropped["rewrite_rejected"] == 4
    assert stats.rewrites == sum(stats.rewrites_rejected.values()) > 0 and backend.calls == 1
    assert set(stats.rewrites_rejected) <= {"empty", "not_shorter", "dropped_quantity", "new_number"}
    with pytest.raises(LongshortError, match="rewrite engine"):
        synthesize(scored, cfg, shared_verifier())
    # rewrite.on_rejected: verbatim keeps each rejected stretch as written: every CoT becomes a dialogue, counted
    cfg.rewrite.on_rejected = "verbatim"
    kept = ColdstartStats()
    out = synthesize(scored, cfg, shared_verifier(), LocalEnginePool(HFEngine(str(model), seed=0)), tok, kept)
    assert len(out) == 4 and kept.kept_verbatim == kept.summary()["stretches_kept_verbatim"] > 0
    assert not kept.dropped.get("rewrite_rejected")


def test_run_coldstart_writes_sft_ready_dialogues(tmp_path, model):
    run = run_dir_with_task(tmp_path, task_records(10), model)
    write_jsonl([scored_like(r) for r in task_records(10)], run / "score" / "scores.jsonl")
    res = run_coldstart(ColdstartConfig(), run)
    examples = load_sft_jsonl(res.path)
    assert len(examples) == res.summary["kept"] > 0
    assert all(ex.train_roles == ("long", "short") for ex in examples)
    summary = json.loads((run / "coldstart" / "summary.json").read_text())
    assert 0 < summary["token_ratio"] < 1 and summary["turns_per_dialogue"] >= 2
    with pytest.raises(ValueError, match="text"):
        ColdstartConfig(rewrite=type(ColdstartConfig().rewrite)(prompt="no placeholder")).validate()


def test_protocol_turn_rules(tok):
    eos, end = tok.convert_tokens_to_ids(EOS), tok.convert_tokens_to_ids(END_TURN)
    assert PAIR_RULES.turn_end("short", [5, eos], tok) == "finish"
    assert PAIR_RULES.turn_end("long", [5, eos], tok) == "handoff"  # only the short role finishes
    assert PAIR_RULES.turn_end("short", [5, end], tok) == "handoff"
    assert PAIR_RULES.turn_end("long", [5, 6], tok) == "cut" and PAIR_RULES.turn_end("short", [], tok) == "cut"
    assert PAIR_RULES.canonical("long", [5, eos], tok) == [5, end] and PAIR_RULES.canonical("short", [5, eos], tok) == [5, eos]
    u, lg, sh = Message("user", "q"), Message("long", "a"), Message("short", "b")
    assert check_pair_dialogue([u, lg, sh]) is None
    assert "expected 'long'" in check_pair_dialogue([u, sh])
    assert "last turn" in check_pair_dialogue([u, lg])
    assert "alternate" in check_pair_dialogue([u, lg, lg, sh])
    assert "max_turns" in check_pair_dialogue([u, lg, sh, lg, sh], max_turns=3)
    assert "user" in check_pair_dialogue([lg, sh])


def test_run_pair_keeps_the_rendered_layout(model, tok):
    engine = LocalEnginePool(HFEngine(str(model), seed=0))
    problems = [r["problem"] for r in task_records(4)]
    outs = run_pair(engine, engine, tok, problems, max_turns=4, max_turn_tokens=6)
    for o in outs:
        assert o.status in {"finished", "cut", "max_turns"} and 1 <= len(o.turns) <= 4
        assert [r for r, _ in o.turns] == ["long", "short", "long", "short"][: len(o.turns)]
        assert sum(o.tokens.values()) == sum(len(ids) for _, ids in o.turns)
        if o.status == "finished":
            assert o.turns[-1][0] == "short"


# parallel: both models train at once in spawned processes; the short model's metrics still follow the long one's
@pytest.mark.parametrize("parallel", [False, True])
def test_pair_sft_trains_both_roles_and_evaluates(tmp_path, model, parallel):
    from longshort.tracking.tracker import Tracker, TrackingConfig, read_metrics

    recs = task_records(16)
    run = run_dir_with_task(tmp_path, recs, model)
    write_jsonl(recs[:4], run / "bootstrap" / "data" / "dev.jsonl")  # the pair's eval reads dev, not test
    write_jsonl([scored_like(r) for r in recs], run / "score" / "scores.jsonl")
    run_coldstart(ColdstartConfig(), run)
    cfg = PairSFTConfig()
    for c in (cfg.long, cfg.short):
        c.max_steps, c.micro_batch_size, c.save_every = 2, 4, 0
    cfg.eval.max_turn_tokens, cfg.eval.max_tokens, cfg.eval.max_turns = 8, 16, 4
    cfg.parallel = parallel
    with Tracker(TrackingConfig(mode="disabled", backends=["jsonl"]), run) as tracker:
        res = run_pair_sft(cfg, run, tracker=tracker)
    rows = read_metrics(run / "metrics.jsonl")
    keys = [(r["step"], next(k for k in r if k.startswith(("sft_", "pair_eval/")))) for r in rows]
    steps = [s for s, _ in keys]
    assert steps == sorted(set(steps))  # one increasing counter (W&B drops a lower step): long, short, then the eval
    assert [k.split("/")[0] for _, k in keys] == ["sft_long", "sft_long", "sft_short", "sft_short", "pair_eval"]
    assert (res.long_model / "config.json").exists() and (res.short_model / "config.json").exists()
    ev = json.loads((run / "sft" / "eval.json").read_text())
    assert ev["problems"] == 4 and ev == res.eval
    assert 0 <= ev["pair_accuracy"] <= 1 and 0 < ev["base_tokens"] <= 16 and ev["pair_tokens"] > 0
    # each model only learned its own turns: the two exports differ from the base and from each other
    from safetensors.torch import load_file

    w = {k: load_file(str(d / "model.safetensors")) for k, d in
         (("base", model), ("long", res.long_model), ("short", res.short_model))}
    name = next(iter(w["base"]))
    assert not (w["long"][name] == w["base"][name]).all() and not (w["long"][name] == w["short"][name]).all()


def test_a_pair_trained_on_the_teachers_tags_is_marked_as_oracle_data():
    """`longshort compare`'s oracle column: a pair whose cold start was ranked by the tags learned from what only the
    synthetic task has; the base model of the same run, or a pair ranked by importance, did not."""
    from builders import ROOT

    from longshort.pipeline.run_config import load_run_config
    from longshort.recipes.longshort.recipe import oracle_data

    smoke = str(ROOT / "ray_configs" / "smoke.yaml")
    pair = {"long": "rl/long/model", "short": "rl/short/model"}
    tags = load_run_config(smoke, ["coldstart.rank_by=tags"])
    assert oracle_data(tags, pair) == "cold start ranked by the teacher's tags"
    assert oracle_data(tags, {"model": "bootstrap/base_model"}) == ""
    assert oracle_data(load_run_config(smoke), pair) == ""
