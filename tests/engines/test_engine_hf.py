"""HF engine: batching, agreement with transformers and with a teacher-forced forward pass, seeds, stops, weight sync."""

from __future__ import annotations

import functools
import random
import subprocess
import sys

import pytest
import torch
from builders import ROOT
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from longshort.core.errors import LongshortError
from longshort.data.protocol import EOS, add_protocol_tokens
from longshort.engines.base import GenerationRequest, SamplingParams
from longshort.engines.hf import engine as hf
from longshort.engines.hf import prefix
from longshort.engines.hf.engine import HFConfig, HFEngine, _Row
from longshort.engines.hf.kv_cache import GrowingLayer, new_cache
from longshort.engines.hf.sampling import pick
from longshort.engines.registry import engine_class, make_engine

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "1 + 1 = 2, 2 + 3 = 5; so x = 7 and y = 12.",
    "Let us think step by step about the problem.",
    "<think> a thought </think> the answer is 42",
] * 20
PROMPTS = ["the quick", "Let us think step by step about", "1 +", "so x = 7 and y"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # tiny matmuls: one thread is fastest, and steady on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(CORPUS, trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=bpe)
    add_protocol_tokens(t)
    t.eos_token = EOS
    t.padding_side = "left"
    return t


def tiny(tok, arch="qwen2", tie=True, seed=0):
    torch.manual_seed(seed)
    cls_cfg, cls_model = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[arch]
    cfg = cls_cfg(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
                  tie_word_embeddings=tie, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  bos_token_id=None)
    return cls_model(cfg).eval()


@pytest.fixture(scope="module")
def engine(tok):
    return HFEngine(tiny(tok), tok)


def reqs(tok, prompts=PROMPTS, **params):
    return [GenerationRequest(tok.encode(p), SamplingParams(**params), request_id=str(i)) for i, p in enumerate(prompts)]


def teacher_forced(model, prompt, gen, temperature=1.0):
    ids = torch.tensor([prompt + gen])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits / temperature, -1).gather(1, torch.tensor(gen)[:, None]).squeeze(1)


@pytest.mark.parametrize("chunk", [256, 3])  # 3: the KV buffer grows (and is copied) during generation
# compaction: 1.0 drops every finished row at once, 0.0 never (finished rows ride along dead), 0.75 the default
@pytest.mark.parametrize("compact_at", [1.0, 0.75, 0.0])
def test_batched_equals_one_by_one(engine, tok, monkeypatch, chunk, compact_at):
    monkeypatch.setattr(GrowingLayer, "chunk", chunk)
    monkeypatch.setattr(hf, "_COMPACT_AT", compact_at)
    # mixed lengths, limits (rows leave the batch at different steps) and greedy/sampled rows in one batch
    params = [dict(temperature=0, max_tokens=24), dict(temperature=1.0, max_tokens=7, seed=1),
              dict(temperature=0.8, max_tokens=30, seed=2, n=2), dict(temperature=0, max_tokens=12)]
    batch = [GenerationRequest(tok.encode(p), SamplingParams(**kw), str(i))
             for i, (p, kw) in enumerate(zip(PROMPTS, params, strict=True))]
    for req, res in zip(batch, engine.generate(batch), strict=True):
        alone = engine.generate([req])[0]
        assert res.request_id == req.request_id and res.prompt_ids == req.prompt_ids
        assert len(res.samples) == req.params.n
        for s, a in zip(res.samples, alone.samples, strict=True):
            assert s.token_ids == a.token_ids and len(s.token_ids) == req.params.max_tokens
            assert s.logprobs == pytest.approx(a.logprobs, abs=1e-5)


@pytest.mark.parametrize(("arch", "chunk"), [("qwen2", 256), ("llama", 256), ("qwen2", 5)])
def test_greedy_matches_transformers_generate(tok, arch, chunk, monkeypatch):
    monkeypatch.setattr(GrowingLayer, "chunk", chunk)
    model = tiny(tok, arch)
    ours = HFEngine(model, tok).generate(reqs(tok, temperature=0, max_tokens=24))
    batch = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model.generate(**batch, do_sample=False, max_new_tokens=24, pad_token_id=tok.pad_token_id)
    for row, res in zip(ref[:, batch.input_ids.shape[1] :].tolist(), ours, strict=True):
        s = res.samples[0]
        assert s.token_ids == row[: len(s.token_ids)]
        assert s.finish_reason == ("stop" if s.token_ids[-1] == tok.eos_token_id else "length")
        if s.finish_reason == "length":
            assert len(s.token_ids) == 24


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_logprobs_equal_teacher_forced_forward(engine, tok, temperature):
    results = engine.generate(reqs(tok, temperature=temperature, max_tokens=20, seed=3, n=2))
    for res in results:
        for s in res.samples:
            ref = teacher_forced(engine.model, res.prompt_ids, s.token_ids, temperature or 1.0)
            torch.testing.assert_close(torch.tensor(s.logprobs), ref, atol=1e-4, rtol=0)


def test_seeds_independent_of_batch_composition(engine, tok):
    target = GenerationRequest(tok.encode(PROMPTS[1]), SamplingParams(n=3, temperature=1.0, max_tokens=16, seed=11))
    alone = engine.generate([target])[0]
    others = reqs(tok, temperature=1.0, max_tokens=16, seed=5)
    mixed = engine.generate([others[3], others[0], target, others[2]])[2]
    assert [s.token_ids for s in mixed.samples] == [s.token_ids for s in alone.samples]
    small = HFEngine(engine.model, tok, max_batch_size=2).generate([*others, target])[-1]  # other chunking
    assert [s.token_ids for s in small.samples] == [s.token_ids for s in alone.samples]
    # n samples of one request differ from each other, and another seed gives other samples
    assert len({tuple(s.token_ids) for s in alone.samples}) == 3
    target.params.seed = 12
    assert [s.token_ids for s in engine.generate([target])[0].samples] != [s.token_ids for s in alone.samples]


def test_unseeded_requests_follow_the_engine_seed(tok, engine):
    a, b, c = (HFEngine(engine.model, tok, seed=s).generate(reqs(tok, temperature=1.0, max_tokens=16)) for s in (1, 1, 2))
    ids = [[s.token_ids for r in x for s in r.samples] for x in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize(("temperature", "top_p", "expected"), [
    (1.0, 1.0, [0.5, 0.25, 0.15, 0.1, 0.0]),
    (1.0, 0.8, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0, 0.0]),  # the nucleus: mass before a token < 0.8
    (0.5, 1.0, [0.25 / 0.345, 0.0625 / 0.345, 0.0225 / 0.345, 0.01 / 0.345, 0.0]),  # p ** (1 / T), renormalized
])
def test_sampler_draws_the_right_distribution(temperature, top_p, expected):
    rows = 20000
    logits = torch.tensor([[0.5, 0.25, 0.15, 0.1, 0.0]]).log().expand(rows, 5)
    tokens, logprobs = pick(logits, torch.full((rows,), temperature), torch.full((rows,), top_p),
                             [random.Random(i).random() for i in range(rows)])
    freq = torch.bincount(tokens, minlength=5).double() / rows
    torch.testing.assert_close(freq, torch.tensor(expected, dtype=torch.float64), atol=0.015, rtol=0)
    scaled = torch.log_softmax(logits[0] / temperature, -1)  # logprobs ignore top-p (base.py)
    torch.testing.assert_close(logprobs, scaled[tokens])


def test_coupled_samples_continue_identically_from_a_shared_context(engine, tok):
    """couple_context: a request whose prompt is another's prompt plus the first t tokens it sampled (same seed)
    continues exactly as that sample did; plain seeded streams do not (their draws are counted per step)."""
    for couple, expect_equal in ((6, True), (0, False)):
        params = dict(temperature=1.0, max_tokens=30, seed=7, n=3, couple_context=couple)
        first = engine.generate([GenerationRequest(tok.encode(PROMPTS[1]), SamplingParams(**params))])[0]
        same, t = [], 8
        for j, s in enumerate(first.samples):  # sample j of both requests has the same seed
            later = GenerationRequest(first.prompt_ids + s.token_ids[:t], SamplingParams(**params))
            cont = engine.generate([later])[0].samples[j].token_ids
            same.append(cont[: len(s.token_ids) - t] == s.token_ids[t:])
        assert all(same) if expect_equal else not any(same), (couple, same)


def test_coupled_sampling_draws_the_right_distribution():
    """Each coupled token is still an exact sample: the keyed uniforms are uniform (Kolmogorov-Smirnov distance),
    and inverting the CDF at them draws a known distribution."""
    rows = 20000
    keyed = [_Row(0, 0, [3, 1, 4, 1, 5], SamplingParams(couple_context=4), None, frozenset(), 1, 0,
                  key=random.Random(i).getrandbits(63)) for i in range(rows)]
    uniforms = [r.uniform() for r in keyed]
    ks = (torch.tensor(sorted(uniforms), dtype=torch.float64) - torch.arange(rows, dtype=torch.float64) / rows).abs()
    assert float(ks.max()) < 0.015  # 1.63 / sqrt(rows) = 0.0115 at the 1% level
    logits = torch.tensor([[0.5, 0.25, 0.15, 0.1, 0.0]]).log().expand(rows, 5)
    tokens, _ = pick(logits, torch.ones(rows), torch.ones(rows), uniforms)
    freq = torch.bincount(tokens, minlength=5).double() / rows
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0], dtype=torch.float64), atol=0.015,
                               rtol=0)


def test_tiny_top_p_is_greedy(engine, tok):
    greedy = engine.generate(reqs(tok, temperature=0, max_tokens=16))
    nucleus = engine.generate(reqs(tok, temperature=1.0, top_p=1e-6, max_tokens=16, seed=0))
    assert [r.samples[0].token_ids for r in greedy] == [r.samples[0].token_ids for r in nucleus]


def test_stop_ids_stop_strings_and_length(engine, tok):
    free = engine.generate(reqs(tok, [PROMPTS[0]], temperature=1.0, max_tokens=30, seed=7))[0].samples[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 30
    assert free.text == tok.decode(free.token_ids, skip_special_tokens=True)
    # stop token id: ends right after its first occurrence, the id kept
    stop_id = free.token_ids[9]
    first = free.token_ids.index(stop_id)
    s = engine.generate(reqs(tok, [PROMPTS[0]], temperature=1.0, max_tokens=30, seed=7,
                             stop_token_ids=[stop_id]))[0].samples[0]
    assert (s.token_ids, s.finish_reason) == (free.token_ids[: first + 1], "stop")
    # stop string: ends on the first token whose text completes it
    stop = free.text[len(tok.decode(free.token_ids[:12])) :][:3]
    assert len(stop) == 3
    s = engine.generate(reqs(tok, [PROMPTS[0]], temperature=1.0, max_tokens=30, seed=7, stop=[stop]))[0].samples[0]
    k = next(k for k in range(1, 31) if stop in tok.decode(free.token_ids[:k]))
    assert (s.token_ids, s.finish_reason) == (free.token_ids[:k], "stop")
    assert stop in s.text and s.logprobs == pytest.approx(free.logprobs[:k])
    # max_tokens
    s = engine.generate(reqs(tok, [PROMPTS[0]], temperature=1.0, max_tokens=5, seed=7, logprobs=False))[0].samples[0]
    assert (s.token_ids, s.finish_reason, s.logprobs) == (free.token_ids[:5], "length", None)


@pytest.mark.parametrize("tie", [True, False])
def test_update_weights_matches_the_trainer_model(tok, tie):
    eng = HFEngine(tiny(tok, tie=tie, seed=0), tok)
    trainer = tiny(tok, tie=tie, seed=1)
    before = eng.generate(reqs(tok, temperature=0, max_tokens=16))
    state = list(trainer.state_dict().items())
    if tie:  # a trainer's checkpoint of a tied model may carry only one of the two names
        state = [(k, v) for k, v in state if k != "lm_head.weight"]
    for start in range(0, len(state), 3):  # buckets of 3 tensors
        eng.update_weights(state[start : start + 3], version=start + 1)
    assert eng.weight_version == start + 1
    after = eng.generate(reqs(tok, temperature=0, max_tokens=16))
    batch = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = trainer.generate(**batch, do_sample=False, max_new_tokens=16, pad_token_id=tok.pad_token_id)
    for row, res in zip(ref[:, batch.input_ids.shape[1] :].tolist(), after, strict=True):
        s = res.samples[0]
        assert s.token_ids == row[: len(s.token_ids)]
        ref_lp = teacher_forced(trainer, res.prompt_ids, s.token_ids)
        torch.testing.assert_close(torch.tensor(s.logprobs), ref_lp, atol=1e-4, rtol=0)
    assert [r.samples[0].token_ids for r in after] != [r.samples[0].token_ids for r in before]
    head, emb = eng.model.get_output_embeddings().weight, eng.model.get_input_embeddings().weight
    assert torch.equal(head, trainer.get_output_embeddings().weight)
    assert (head.data_ptr() == emb.data_ptr()) == tie


def test_update_weights_only_lm_head_updates_tied_embedding(tok):
    eng = HFEngine(tiny(tok, tie=True, seed=0), tok)
    new = torch.randn_like(eng.model.lm_head.weight)
    eng.update_weights([("lm_head.weight", new)], version=3)
    assert torch.equal(eng.model.get_input_embeddings().weight, new)


def test_update_weights_rejects_bad_input_and_changes_nothing(tok):
    eng = HFEngine(tiny(tok, tie=True), tok)
    snapshot = {k: v.clone() for k, v in eng.model.state_dict().items()}
    good = ("model.norm.weight", torch.zeros(128))
    with pytest.raises(LongshortError, match=r"unknown parameter 'module.model.norm.weight'.*did you mean"):
        eng.update_weights([good, ("module.model.norm.weight", torch.zeros(128))], version=1)
    with pytest.raises(LongshortError, match=r"'model.norm.weight' has shape \(64,\).*\(128,\)"):
        eng.update_weights([("model.norm.weight", torch.zeros(64))], version=1)
    emb = eng.model.get_input_embeddings().weight
    with pytest.raises(LongshortError, match="tied"):
        eng.update_weights([("model.embed_tokens.weight", torch.zeros_like(emb)),
                            ("lm_head.weight", torch.ones_like(emb))], version=1)
    assert eng.weight_version == 0
    for k, v in eng.model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


def test_prompt_embeds_prefill_in_place_of_the_ids(engine, tok):
    """Soft tokens (SoftCoT): a request's ``prompt_embeds`` are what the prefill reads. The model's own embeddings
    give exactly the ids' samples, in a batch with plain requests; other embeddings give other tokens."""
    ids = tok.encode(PROMPTS[1])
    params = SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=3)
    own = engine.model.get_input_embeddings()(torch.tensor(ids)).detach()
    plain = engine.generate([GenerationRequest(ids, params)])[0]
    mixed = engine.generate([*reqs(tok, temperature=1.0, max_tokens=12, seed=5),
                             GenerationRequest(ids, params, prompt_embeds=own)])[-1]
    assert [s.token_ids for s in mixed.samples] == [s.token_ids for s in plain.samples]
    soft = own.clone()
    soft[-2:] = torch.randn(2, own.shape[1]) * 3
    greedy = SamplingParams(temperature=0.0, max_tokens=12)
    assert engine.generate([GenerationRequest(ids, greedy, prompt_embeds=soft)])[0].samples[0].token_ids != \
        engine.generate([GenerationRequest(ids, greedy)])[0].samples[0].token_ids
    with pytest.raises(LongshortError, match=r"prompt_embeds has shape \(3, 128\)"):
        engine.generate([GenerationRequest(ids, greedy, prompt_embeds=own[:3])])


def test_bad_requests_are_refused(engine, tok):
    cases = [({"top_p": 0.0}, "top_p"), ({"n": 0}, "'n'"), ({"temperature": -1.0}, "temperature"),
             ({"max_tokens": 0}, "max_tokens"), ({"stop": [""]}, "empty stop string")]
    for params, msg in cases:
        with pytest.raises(LongshortError, match=msg):
            engine.generate(reqs(tok, [PROMPTS[0]], **params))
    with pytest.raises(LongshortError, match="empty"):
        engine.generate([GenerationRequest([])])
    with pytest.raises(LongshortError, match="outside the model's vocabulary"):
        engine.generate([GenerationRequest([1, 10**6])])
    with pytest.raises(LongshortError, match="context"):
        engine.generate([GenerationRequest([1] * 256)])


def test_context_limit_ends_with_length(engine, tok):
    s = engine.generate([GenerationRequest([5] * 250, SamplingParams(temperature=0, max_tokens=50))])[0].samples[0]
    assert s.finish_reason == "length" and len(s.token_ids) <= 6


def test_sleep_wake_and_load_from_path(tmp_path, tok, engine):
    engine.model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = HFEngine.from_config(str(tmp_path), HFConfig(num_threads=1, max_batch_size=3))
    assert isinstance(make_engine("hf", model=str(tmp_path)), HFEngine)
    loaded.sleep()  # CPU: a no-op
    loaded.wake()
    a = loaded.generate(reqs(tok, temperature=1.0, max_tokens=12, seed=4))
    b = engine.generate(reqs(tok, temperature=1.0, max_tokens=12, seed=4))
    assert [(s.token_ids, s.text) for r in a for s in r.samples] == [(s.token_ids, s.text) for r in b for s in r.samples]


def test_registry_is_lazy_and_errors_clearly():
    assert engine_class("hf") is HFEngine
    # a fresh interpreter: this session's other tests may have imported vllm themselves
    code = "import sys, longshort.engines.registry as r; r.engine_class('hf'); assert 'vllm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    with pytest.raises(LongshortError, match="engine backend 'sglang' is unknown; accepted: .*hf.*vllm"):
        make_engine("sglang")


def test_generation_uses_no_deprecated_transformers_argument(engine, tok):
    """The KV cache goes in under the installed transformers' own name: no FutureWarning that the call breaks in a
    later release (`past_key_values` goes away in 5.40)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.generate(reqs(tok, temperature=1.0, max_tokens=8, seed=1))
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []


def test_loading_a_model_prints_no_progress_bar(tmp_path):
    """One line per stage on the console: Hugging Face's per-load "Loading weights" bar stays off."""
    import os
    import subprocess
    import sys

    from builders import ROOT, build_model_dir

    model_dir = build_model_dir(tmp_path / "m")
    code = "import sys; from longshort.engines.hf.engine import HFEngine; HFEngine(sys.argv[1])"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    out = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Loading weights" not in out.stderr


def test_prefix_groups_chains_branches_duplicates_and_own_embeddings():
    a, b = [1, 2, 3, 4, 5], [1, 2, 9]
    contexts = [[1, 2], a, [1, 2, 3], b, [1, 2, 3], [], [7], None, [1, 2, 3, 4, 5, 6]]
    root = prefix.group_by_prefix(contexts)
    assert root[1] == root[2] == root[4] == root[8] == 8  # a chain ends in its longest; duplicates share
    assert root[0] in (3, 8) and root[3] == 3  # a branch point goes with one branch, the other is its own root
    assert root[6] == 6 and root[7] == 7  # no relative; a row of embeddings shares with nothing
    assert root[5] != 5  # the empty context is everyone's prefix
    for i, r in enumerate(root):
        if contexts[i] is not None:
            assert contexts[r][: len(contexts[i])] == contexts[i]


def _prefill_batches(model, monkeypatch) -> list[int]:
    """The batch size of every forward call of more than one position (the prefills) on ``model``."""
    sizes = []
    forward = model.forward

    @functools.wraps(forward)  # keeps the signature the engine reads its cache argument's name from
    def spy(*args, **kwargs):
        x = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        if x.shape[1] > 1:
            sizes.append(x.shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    return sizes


@pytest.mark.parametrize("chunk", [256, 3])
@pytest.mark.parametrize("compact_at", [0.75, 1.0])
def test_prompts_that_are_prefixes_share_one_prefill_and_sample_as_alone(engine, tok, monkeypatch, chunk,
                                                                          compact_at):
    """The score stage's requests: every prefix of one text, n samples each. One prefill (of the longest) serves
    them all, and each row's tokens and logprobs are those it gets alone (its own prefill)."""
    monkeypatch.setattr(GrowingLayer, "chunk", chunk)
    monkeypatch.setattr(hf, "_COMPACT_AT", compact_at)
    full = tok.encode(" ".join(PROMPTS))
    cuts = [1, 2, len(full) // 2, len(full) - 1, len(full)]
    batch = [GenerationRequest(full[:c], SamplingParams(n=2, temperature=1.0, max_tokens=6 + i, seed=i, logprobs=True),
                               str(i)) for i, c in enumerate(cuts)]
    batch.append(GenerationRequest(full[:5], SamplingParams(temperature=0.0, max_tokens=9, logprobs=True), "greedy"))
    batch.append(GenerationRequest(tok.encode(PROMPTS[2]), SamplingParams(temperature=0.0, max_tokens=9), "other"))
    sizes = _prefill_batches(engine.model, monkeypatch)
    together = engine.generate(batch)
    assert sizes == [2]  # the longest prefix and the unrelated prompt; 11 rows in all
    for req, res in zip(batch, together, strict=True):
        alone = engine.generate([req])[0]
        for s, a in zip(res.samples, alone.samples, strict=True):
            assert s.token_ids == a.token_ids
            if req.params.logprobs:
                assert s.logprobs == pytest.approx(a.logprobs, abs=1e-5)
                ref = teacher_forced(engine.model, req.prompt_ids, s.token_ids, req.params.temperature or 1.0)
                torch.testing.assert_close(torch.tensor(s.logprobs), ref, atol=1e-4, rtol=0)


def test_sliding_window_layers_prefill_every_row(tok, monkeypatch):
    """A sliding-window layer keeps only its last positions, so a shorter row's prefix is not in a longer row's
    cache: nothing is shared, and rows still sample as alone."""
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                      use_sliding_window=True, sliding_window=4, max_window_layers=0,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    eng = HFEngine(Qwen2ForCausalLM(cfg).eval(), tok)
    assert not prefix.shares_layers(new_cache(eng.model.config))
    full = tok.encode(" ".join(PROMPTS))
    batch = [GenerationRequest(full[:c], SamplingParams(temperature=0.0, max_tokens=8), str(c)) for c in (1, 3, 9, 20)]
    sizes = _prefill_batches(eng.model, monkeypatch)
    together = eng.generate(batch)
    assert sizes == [4]  # the one-token prompt too (its context is empty: an all-pad row)
    for req, res in zip(batch, together, strict=True):
        assert res.samples[0].token_ids == eng.generate([req])[0].samples[0].token_ids
