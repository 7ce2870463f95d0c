"""LoRA through peft in the trainer: only the adapter trains, what leaves the trainer (weight stream, export) is the
merged model under the base model's names, and a checkpoint holds the adapter and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from builders import build_model_dir, build_tokenizer, toy_examples
from safetensors.torch import load_file

from longshort.core.config import build
from longshort.core.errors import LongshortError
from longshort.training import lora
from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
from longshort.training.sft_data import collate, tokenize_examples
from longshort.training.trainer import Trainer, TrainerConfig

LORA = lora.LoraSettings(rank=4, alpha=8.0)


@pytest.fixture
def rank():
    init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
    yield
    shutdown_rank()


def _batches(n=6):
    tok = build_tokenizer()
    data, _ = tokenize_examples(toy_examples(n), tok, 64, "drop")
    return tok, [collate(data, list(range(n)), tok.pad_token_id, packed=False)]


def _cfg(**kw) -> TrainerConfig:
    return TrainerConfig(**{"lr": 1e-2, "total_steps": 4, "precision": "fp32", "lora": LORA, **kw})


def test_only_the_adapter_trains_and_the_export_is_the_merged_model(tmp_path, rank):
    from transformers import AutoModelForCausalLM

    model_dir = build_model_dir(tmp_path / "m")
    base = load_file(str(model_dir / "model.safetensors"))
    tok, batches = _batches()
    t = Trainer(model_dir, _cfg())
    trained = {n for n, p in t.module.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n or "trainable_tokens_delta" in n for n in trained)
    protocol = lora.protocol_token_ids(model_dir)
    assert len(protocol) == 10  # the protocol's tokens: their embedding rows train (train_tokens: protocol)
    in_optimizer = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in t.module.parameters() if p.requires_grad}
    losses = [t.step(batches).loss for _ in range(3)]
    assert losses[-1] < losses[0]  # the adapter learns

    # The stream the engines get: the base model's names and shapes, adapted weights changed, the rest the base's.
    specs = t.param_specs()
    stream = {n: w.clone() for n, w in t.iter_full_params()}
    assert [s[0] for s in specs] == list(stream) and all(tuple(stream[n].shape) == shape for n, _, shape in specs)
    assert set(stream) <= set(base) | {"lm_head.weight"}
    changed = {n for n, w in stream.items() if not torch.equal(w, base[n])}
    assert "model.embed_tokens.weight" in changed and all(n.endswith("_proj.weight") for n in changed - {
        "model.embed_tokens.weight"})
    rows = (stream["model.embed_tokens.weight"] != base["model.embed_tokens.weight"]).any(-1).nonzero().flatten()
    assert set(rows.tolist()) <= set(protocol)  # only the protocol tokens' rows moved
    proj = next(n for n in changed if n.endswith("_proj.weight"))
    assert torch.equal(t._plain_model().get_submodule(proj.rsplit(".", 1)[0]).base_layer.weight,
                       base[proj])  # merging made a new tensor: the frozen base is untouched

    out = t.export(tmp_path / "export", tok)
    _, batch = _batches(2)
    trainer_logits = t.forward_logits(batch[0])
    t.close()
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    logits = merged(input_ids=batch[0].input_ids, attention_mask=batch[0].attention_mask).logits
    torch.testing.assert_close(logits, trainer_logits, rtol=1e-4, atol=1e-4)
    # The adapter beside it, naming its base; merged onto that base it is the same model.
    meta = json.loads((out / lora.ADAPTER_DIR / "adapter_config.json").read_text())
    assert meta["r"] == 4 and meta["base_model_name_or_path"] == str(model_dir.resolve())
    again = lora.load_merged(out / lora.ADAPTER_DIR, dtype=torch.float32)
    torch.testing.assert_close(again(input_ids=batch[0].input_ids, attention_mask=batch[0].attention_mask).logits,
                               trainer_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_a_checkpoint_holds_the_adapter_and_resumes_exactly(tmp_path, zero_stage):
    model_dir = build_model_dir(tmp_path / "m")
    _, batches = _batches()
    runs = {}
    for name in ("straight", "resumed"):
        init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
        t = Trainer(model_dir, _cfg(zero_stage=zero_stage))
        losses = [t.step(batches).loss for _ in range(2)]
        if name == "resumed":
            ckpt = t.save_checkpoint(tmp_path / "ckpt", {"step": 2})
            t.close()
            shutdown_rank()
            init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
            t = Trainer(model_dir, _cfg(zero_stage=zero_stage))
            assert t.load_checkpoint(ckpt) == {"step": 2}
        losses += [t.step(batches).loss for _ in range(2)]
        runs[name] = (losses, {n: w.clone() for n, w in t.iter_full_params()})
        t.close()
        shutdown_rank()
    assert runs["resumed"][0] == pytest.approx(runs["straight"][0], rel=1e-6)
    for n, w in runs["straight"][1].items():
        torch.testing.assert_close(runs["resumed"][1][n], w, rtol=1e-6, atol=1e-7)
    # The checkpoint is the adapter and its optimizer state, not the model (a tied head's second name included).
    (states,) = (tmp_path / "ckpt").rglob("*model_states.pt")
    module = torch.load(states, weights_only=False, map_location="cpu")["module"]
    assert module and all(lora.is_adapter_param(k) for k in module), sorted(module)[:5]


def test_bad_lora_settings_are_named(tmp_path, rank):
    with pytest.raises(LongshortError, match=r"sft.long.lora.target_modules: qq_proj not in this model .* q_proj"):
        Trainer(build_model_dir(tmp_path / "m"), _cfg(lora=build(lora.LoraSettings, {"target_modules": ["qq_proj"]},
                                                                 "sft.long.lora")))
    with pytest.raises(LongshortError, match=r"sft.long.lora.target_modules.*accepted: all-linear"):
        build(lora.LoraSettings, {"target_modules": "everything"}, "sft.long.lora")


def test_lora_is_set_per_role_in_a_run_config_and_reaches_the_trainer_config():
    from longshort.pipeline.run_config import load_run_config

    cfg = load_run_config(None, ["sft.long.lora.rank=8", "rl.lora.short.target_modules=[q_proj,v_proj]",
                                 "bootstrap.sft.lora.alpha=4"])
    assert cfg.sft.long.trainer_config(10).lora == lora.LoraSettings(rank=8)
    assert cfg.sft.long.lora.key == "sft.long.lora" and cfg.sft.short.lora is None
    assert cfg.rl.lora["short"].target_modules == ["q_proj", "v_proj"] and cfg.rl.lora["short"].key == "rl.lora.short"
    assert cfg.bootstrap.sft.lora.alpha == 4.0
    with pytest.raises(LongshortError, match=r"rl.lora': responder is not a trainable role; accepted: planner"):
        load_run_config(None, ["recipe=hawkeye", "rl.lora.responder.rank=4"])
    with pytest.raises(LongshortError, match=r"sft.long.lora.rank.*must be >= 1"):
        load_run_config(None, ["sft.long.lora.rank=0"])
    with pytest.raises(LongshortError, match=r"softcot.train.*sft.lora: SoftCoT trains only its projection"):
        load_run_config(None, ["recipe=softcot", "softcot.train.sft.lora.rank=4"])
