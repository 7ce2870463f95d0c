"""The trainer builds any nn.Module through a model factory: a composite model (a frozen causal LM plus a trainable
input shift that takes an extra forward input) trains only its own parameter, and exports as safetensors."""

from __future__ import annotations

import pytest
import torch
from builders import build_model_dir
from safetensors.torch import load_file

from longshort.core.errors import LongshortError
from longshort.training.batch import Batch
from longshort.training.models import MODEL_FACTORIES, model_factory
from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
from longshort.training.trainer import Trainer, TrainerConfig


class ShiftedLM(torch.nn.Module):
    """A frozen LM whose input embeddings get a trainable shift, scaled per row by an extra input."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm.requires_grad_(False)
        self.shift = torch.nn.Parameter(torch.zeros(lm.config.hidden_size))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, scale=None):
        emb = self.lm.get_input_embeddings()(input_ids)
        emb = emb + self.shift * (scale[:, None, None] if scale is not None else 1.0)
        return self.lm(inputs_embeds=emb, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)


def shifted_lm(model_dir, **kwargs):
    from transformers import AutoModelForCausalLM

    return ShiftedLM(AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs))


def test_a_factory_model_trains_only_its_trainable_part(tmp_path):
    model_dir = build_model_dir(tmp_path / "lm")
    MODEL_FACTORIES.register("shifted", shifted_lm)
    init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
    try:
        t = Trainer(model_dir, TrainerConfig(lr=5e-2, total_steps=30, model_factory="shifted"))
        lm_before = {k: v.clone() for k, v in t.module.lm.state_dict().items()}
        ids = torch.tensor([[5, 9, 13, 17, 21, 25, 29, 33]] * 2)
        batch = Batch(ids, torch.ones_like(ids), model_inputs={"scale": torch.tensor([1.0, 0.5])})
        losses = [t.step([batch]).loss for _ in range(30)]
        assert losses[-1] < 0.9 * losses[0]  # the shift alone learns the sequence a little
        assert t.module.shift.abs().sum() > 0
        assert all(torch.equal(v, t.module.lm.state_dict()[k]) for k, v in lm_before.items())  # the LM stayed frozen
        out = t.export(tmp_path / "export")
        saved = load_file(str(out / "model.safetensors"))
        assert torch.equal(saved["shift"], t.module.shift.detach().cpu()) and "lm.model.embed_tokens.weight" in saved
        t.close()
    finally:
        shutdown_rank()
        MODEL_FACTORIES.unregister("shifted")


def test_unknown_factory_names_the_choices():
    with pytest.raises(LongshortError, match="model_factory 'nope' is unknown; accepted: causal_lm"):
        model_factory("nope")
    with pytest.raises(LongshortError, match="model_factory 'no.such.module:fn' cannot be imported"):
        model_factory("no.such.module:fn")


def test_a_damaged_weights_file_is_named_when_loading_fails(tmp_path):
    import shutil

    from longshort.engines.hf.engine import HFEngine
    from longshort.training.models import causal_lm

    model_dir = build_model_dir(tmp_path / "m")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # a cut-off copy
    for load in (causal_lm, lambda d: HFEngine(str(d))):
        with pytest.raises(LongshortError, match=rf"cannot load model {broken}: weights file {weights} \(.*\) is "
                                                 r"damaged; rerun the stage that wrote it"):
            load(broken)
    with pytest.raises(LongshortError, match=rf"cannot load model {tmp_path / 'none'}: "):
        causal_lm(tmp_path / "none")  # no directory at all: the plain message
