"""Multi-turn pair episodes: protocol transitions, exact token bookkeeping, per-role batching, reproducibility."""

from __future__ import annotations

import pytest
import torch
from builders import ScriptedEngine, build_run_dir, build_tokenizer

from longshort.core.errors import LongshortError
from longshort.data.protocol import END_TURN, EOS, Message, header_ids, prompt_ids
from longshort.engines.hf.engine import HFEngine
from longshort.rl.episodes import EpisodeConfig, PromptItem, request_seed, rollout
from longshort.rl.policy_loss import scaled_token_logprobs

torch.set_num_threads(1)
PROMPTS = [PromptItem("a", "what is two plus two ?", "4"), PromptItem("b", "the cat sat", "cat")]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_turns_alternate_and_every_span_is_exact(tok):
    et, eos = tok.convert_tokens_to_ids(END_TURN), tok.convert_tokens_to_ids(EOS)

    def long_reply(req):
        return _ids(tok, " think") + [et]

    def short_reply(req):
        turn = int(req.request_id.split("/")[-1])
        # problem "a": hand back once, then finish; problem "b": finish at once
        if req.request_id.split("/")[1] == "0" and turn == 1:
            return _ids(tok, " two") + [et]
        return _ids(tok, " it is four") + [eos]

    long_e, short_e = ScriptedEngine(long_reply), ScriptedEngine(short_reply)
    cfg = EpisodeConfig(max_turns=6, max_turn_tokens_long=16, max_turn_tokens_short=16, max_episode_tokens=200)
    eps, stats = rollout(PROMPTS, {"long": long_e.generate, "short": short_e.generate}, tok, cfg, group_size=2,
                         seed=7, step=3)
    assert [(e.group, e.sample) for e in eps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [e.status for e in eps] == ["finished"] * 4
    assert [[t.role for t in e.turns] for e in eps] == [["long", "short", "long", "short"]] * 2 + [["long", "short"]] * 2
    # one batched call per turn with every live episode of that role: long 4 then 2, short 4 then 2
    assert [len(c) for c in long_e.calls] == [4, 2] and [len(c) for c in short_e.calls] == [4, 2]
    assert stats.calls == {"long": 2, "short": 2}
    for e in eps:
        ids = list(e.ids[: e.prompt_len])
        for t in e.turns:  # the dialogue is exactly header + generated ids, turn after turn
            ids += header_ids(tok, t.role)
            assert t.start == len(ids)
            ids += e.ids[t.start : t.end]
            assert t.logprobs == pytest.approx([-0.1 * (k + 1) for k in range(t.length)])
        assert ids == e.ids
        assert e.answer_text == " it is four" and e.tokens() == sum(t.length for t in e.turns)
    # the prompt of a turn is the whole dialogue so far plus the role header
    first_short = short_e.calls[0][0]
    assert first_short.prompt_ids == eps[0].ids[: eps[0].turns[1].start]
    seeds = [r.params.seed for c in long_e.calls + short_e.calls for r in c]
    assert len(set(seeds)) == len(seeds) and seeds[0] == request_seed(7, 3, 0, 0, 0)


def test_cut_budget_max_turns_and_long_eos(tok):
    et, eos = tok.convert_tokens_to_ids(END_TURN), tok.convert_tokens_to_ids(EOS)
    word = _ids(tok, " the")[0]
    cfg = EpisodeConfig(max_turns=4, max_turn_tokens_long=5, max_turn_tokens_short=5, max_episode_tokens=100)
    gens = {"long": ScriptedEngine(lambda r: [word] * 10).generate, "short": ScriptedEngine(lambda r: [eos]).generate}
    (e,), _ = rollout(PROMPTS[:1], gens, tok, cfg, group_size=1)
    assert e.status == "cut" and len(e.turns) == 1 and e.turns[0].end_kind == "cut" and e.turns[0].length == 5

    tight = EpisodeConfig(max_turns=4, max_turn_tokens_long=5, max_turn_tokens_short=5, max_episode_tokens=7)
    gens = {"long": ScriptedEngine(lambda r: [word, word, et]).generate,
            "short": ScriptedEngine(lambda r: [word] * 10).generate}
    (e,), _ = rollout(PROMPTS[:1], gens, tok, tight, group_size=1)
    assert e.status == "budget" and e.tokens() == 7 and e.turns[1].length == 4  # the budget, not the turn limit

    gens = {"long": ScriptedEngine(lambda r: [word, eos]).generate,  # the long role's EOS means hand-off
            "short": ScriptedEngine(lambda r: [word, et]).generate}
    (e,), _ = rollout(PROMPTS[:1], gens, tok, cfg, group_size=1)
    assert e.status == "max_turns" and len(e.turns) == 4 and e.answer_text == ""
    assert e.turns[0].rewritten and e.turns[0].end_kind == "handoff" and e.ids[e.turns[0].end - 1] == et
    with pytest.raises(LongshortError, match="missing: short"):
        rollout(PROMPTS, {"long": gens["long"]}, tok, cfg, group_size=1)


def test_given_opening_turns_join_the_prompt(tok):
    """A prompt that opens with a given long turn: the short role speaks first, on exactly the rendered dialogue."""
    et, eos = tok.convert_tokens_to_ids(END_TURN), tok.convert_tokens_to_ids(EOS)
    opened = [PromptItem(p.problem_id, p.problem, p.answer, opening=(Message("long", "two plus two"),)) for p in PROMPTS]
    short = ScriptedEngine(lambda r: _ids(tok, " four") + [eos])
    cfg = EpisodeConfig(max_turns=4, max_turn_tokens_long=5, max_turn_tokens_short=5, max_episode_tokens=100)
    eps, stats = rollout(opened, {"long": ScriptedEngine(lambda r: [et]).generate, "short": short.generate}, tok, cfg,
                         group_size=2, seed=1)
    assert [[t.role for t in e.turns] for e in eps] == [["short"]] * 4 and stats.calls == {"long": 0, "short": 1}
    rendered = prompt_ids([Message("user", PROMPTS[0].problem), Message("long", "two plus two")], tok, "short")
    assert short.calls[0][0].prompt_ids == rendered and eps[0].prompt_len == len(rendered) - 1
    assert eps[0].answer_text == " four" and eps[0].tokens() == len(_ids(tok, " four")) + 1  # only the generated turn
    assert short.calls[0][0].params.seed == request_seed(1, 0, 0, 0, 1)  # turn numbers count the given turn
    mixed = [opened[0], PROMPTS[1]]
    with pytest.raises(LongshortError, match="same number"):
        rollout(mixed, {"long": short.generate, "short": short.generate}, tok, cfg, group_size=1)
    wrong = [PromptItem("a", "x", "1", opening=(Message("short", "hi"),))]
    with pytest.raises(LongshortError, match="turn rules"):
        rollout(wrong, {"long": short.generate, "short": short.generate}, tok, cfg, group_size=1)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    return build_run_dir(tmp_path_factory.mktemp("episodes"), steps=40) / "sft" / "long" / "model"


def test_real_engine_token_in_token_out(pair_dir):
    """HF engine: the episode holds the engine's ids verbatim; rollout logprobs equal the model's own (T=0.8);
    an episode does not depend on the batch it was generated in."""
    from transformers import AutoModelForCausalLM

    eng = HFEngine(str(pair_dir), seed=0, max_batch_size=64)
    small = HFEngine(str(pair_dir), seed=123, max_batch_size=3)  # other batching, other engine seed
    prompts = [PromptItem(f"p{i}", f"Begin with {i}. Add 2. What is the result?", str(i + 2)) for i in range(3)]
    cfg = EpisodeConfig(max_turns=4, max_turn_tokens_long=12, max_turn_tokens_short=20, max_episode_tokens=48,
                        temperature=0.8)
    eps, _ = rollout(prompts, {"long": eng.generate, "short": eng.generate}, eng.tokenizer, cfg, group_size=3, seed=1)
    again, _ = rollout(prompts, {"long": small.generate, "short": small.generate}, eng.tokenizer, cfg, group_size=3,
                       seed=1)
    assert [e.ids for e in eps] == [e.ids for e in again]
    assert len({tuple(e.ids) for e in eps}) > 1  # samples of a group differ
    model = AutoModelForCausalLM.from_pretrained(str(pair_dir), dtype=torch.float32).eval()
    for e in eps:
        with torch.no_grad():
            lp = scaled_token_logprobs(model(input_ids=torch.tensor([e.ids])).logits, torch.tensor([e.ids]), 0.8)[0]
        for t in e.turns:
            if not t.rewritten:
                torch.testing.assert_close(lp[t.start - 1 : t.end - 1], torch.tensor(t.logprobs), atol=2e-4, rtol=0)
