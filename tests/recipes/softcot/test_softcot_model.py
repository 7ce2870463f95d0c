"""The SoftCoT composite on real tiny models of two widths: where the soft thoughts go, what they leave unchanged,
the errors a malformed batch gets, and the model directory (only the projection is written)."""

from __future__ import annotations

import json

import pytest
import torch
from builders import build_tokenizer

from longshort.core.errors import LongshortError
from longshort.data.protocol import Message, prompt_ids
from longshort.recipes.softcot.model import SoftCoTModel, softcot_model, write_spec
from longshort.recipes.softcot.prompts import PromptConfig, assistant_prompt, llm_prompt


def _model_dir(path, hidden: int, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, num_attention_heads=1, num_key_value_heads=1,
                      head_dim=64, intermediate_size=128, num_hidden_layers=1, max_position_embeddings=128,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("softcot-model")
    llm, assistant = _model_dir(root / "llm", 128, 0), _model_dir(root / "assistant", 64, 1)
    spec_dir = root / "init"
    write_spec(spec_dir, assistant=str(assistant), llm=str(llm), assistant_slot="<|pad|>", llm_slot="<|pad|>", seed=3)
    return {"root": root, "llm": llm, "assistant": assistant, "init": spec_dir, "tok": build_tokenizer()}


def _batch(tok, n: int, problems=("what is two plus two ?", "the cat sat on the mat and the dog")):
    cfg, slot = PromptConfig(llm="{problem} {thoughts} ."), tok.pad_token_id
    llm = [llm_prompt(tok, cfg, p, n, slot) for p in problems]
    asst = [assistant_prompt(tok, cfg, p, n, slot) for p in problems]
    pad = lambda rows: torch.tensor([r + [slot] * (max(map(len, rows)) - len(r)) for r in rows])  # noqa: E731
    mask = lambda rows: torch.tensor([[1] * len(r) + [0] * (max(map(len, rows)) - len(r)) for r in rows])  # noqa: E731
    return pad(llm), mask(llm), pad(asst), mask(asst)


def test_without_thoughts_the_composite_is_the_llm_exactly(pair):
    from transformers import AutoModelForCausalLM

    model = softcot_model(pair["init"])
    llm = AutoModelForCausalLM.from_pretrained(pair["llm"])
    ids, mask, _, _ = _batch(pair["tok"], 0)
    assert torch.equal(model(ids, mask).logits, llm(input_ids=ids, attention_mask=mask).logits)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["projection.weight", "projection.bias"]
    assert model.projection.in_features == 64 and model.projection.out_features == 128


def test_thoughts_replace_only_the_placeholders_in_order(pair):
    model = softcot_model(pair["init"])
    tok = pair["tok"]
    ids, mask, a_ids, a_mask = _batch(tok, 3)
    with torch.no_grad():
        model.projection.weight.zero_()
        model.projection.bias.copy_(torch.arange(128.0))
    emb = model.embed(ids, mask, a_ids, a_mask)
    plain = model.llm.get_input_embeddings()(ids)
    slots = (ids == tok.pad_token_id) & mask.bool()
    assert slots.sum(1).tolist() == [3, 3]
    assert torch.equal(emb[slots], torch.arange(128.0).expand(6, 128))
    assert torch.equal(emb[~slots], plain[~slots])
    # the states come from the assistant at its own placeholders: a different problem gives different thoughts
    t = model.soft_thoughts(a_ids, a_mask)
    assert t.shape == (2, 3, 128)


def test_prompts_put_n_placeholders_where_thoughts_go_and_none_for_the_llm_alone(pair):
    tok = pair["tok"]
    cfg = PromptConfig()
    plain = llm_prompt(tok, cfg, "what is two plus two ?", 0, tok.pad_token_id)
    assert plain == prompt_ids([Message("user", "what is two plus two ?")], tok, "assistant")
    with_thoughts = llm_prompt(tok, cfg, "what is two plus two ?", 4, tok.pad_token_id)
    cut = len(plain) - 2  # before <|end_turn|><|assistant|>
    assert with_thoughts == plain[:cut] + [tok.pad_token_id] * 4 + plain[cut:]
    asst = assistant_prompt(tok, cfg, "what is two plus two ?", 4, tok.pad_token_id)
    assert asst == plain + [tok.pad_token_id] * 4
    with pytest.raises(ValueError, match="thoughts"):
        PromptConfig(llm="{problem}").validate()
    with pytest.raises(ValueError, match=r"assistant: .* uses \['thoughts'\]"):
        PromptConfig(assistant="{problem} {thoughts}").validate()
    PromptConfig(llm="{problem} in \\boxed{{}}: {thoughts}").validate()  # literal braces doubled


def test_malformed_batches_are_refused_naming_the_row(pair):
    model = softcot_model(pair["init"])
    ids, mask, a_ids, a_mask = _batch(pair["tok"], 2)
    a_mask2 = a_mask.clone()
    a_mask2[1, (a_ids[1] == pair["tok"].pad_token_id).nonzero()[0]] = 0  # row 1 loses a placeholder
    with pytest.raises(LongshortError, match="assistant prompt row 1 has 1 placeholders, row 0 has 2"):
        model.embed(ids, mask, a_ids, a_mask2)
    _, _, a3, m3 = _batch(pair["tok"], 3)
    with pytest.raises(LongshortError, match="the LLM prompt has 2 placeholders but the assistant's has 3"):
        model.embed(ids, mask, a3, m3)


def test_the_model_dir_holds_the_projection_only_and_reloads_bit_exact(pair, tmp_path):
    from safetensors.torch import load_file

    model = softcot_model(pair["init"])
    with torch.no_grad():
        model.projection.weight.normal_()
    model.save_pretrained(tmp_path / "out")
    weights = load_file(str(tmp_path / "out" / "projection.safetensors"))
    assert sorted(weights) == ["bias", "weight"]
    assert json.loads((tmp_path / "out" / "softcot.json").read_text())["llm"] == str(pair["llm"].resolve())
    again = softcot_model(tmp_path / "out")
    assert torch.equal(again.projection.weight, model.projection.weight)
    # a fresh one from the spec's seed is the same initial projection every time (the untrained control)
    assert torch.equal(softcot_model(pair["init"]).projection.weight, SoftCoTModel(
        again.assistant, again.llm, assistant_slot_id=0, llm_slot_id=0, seed=3).projection.weight)
    with pytest.raises(LongshortError, match="has no softcot.json"):
        softcot_model(pair["llm"])


def test_generation_reads_the_thoughts_of_the_problem_it_is_given(pair):
    """N = 0 generates what the LLM alone does (the shared HF engine on plain ids); with thoughts, the control that
    hands the assistant other problems changes the answers, so the table's control is a real one."""
    from longshort.engines.base import GenerationRequest, SamplingParams
    from longshort.engines.hf.engine import HFEngine
    from longshort.recipes.softcot.infer import generate

    model, tok, cfg = softcot_model(pair["init"]), pair["tok"], PromptConfig()
    problems = ["what is two plus two ?", "the cat sat on the mat", "long thoughts explore"]
    alone = generate(model, tok, tok, cfg, problems, 0, temperature=0.0, max_new_tokens=8)
    plain = HFEngine(model.llm, tok).generate([GenerationRequest(prompt_ids([Message("user", p)], tok, "assistant"),
                                                                 SamplingParams(temperature=0.0, max_tokens=8))
                                               for p in problems])
    assert [a.text for a in alone] == [r.samples[0].text for r in plain]
    with torch.no_grad():
        model.projection.weight.normal_(std=2.0)
    own = generate(model, tok, tok, cfg, problems, 2, temperature=0.0, max_new_tokens=8)
    other = generate(model, tok, tok, cfg, problems, 2, temperature=0.0, max_new_tokens=8,
                     assistant_reads=problems[1:] + problems[:1])
    assert [a.text for a in own] != [a.text for a in other]
    assert all(1 <= a.tokens <= 8 for a in own)
