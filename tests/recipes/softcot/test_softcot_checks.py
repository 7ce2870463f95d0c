"""SoftCoT's outcome checks on real tiny models: the assistant's check tells an assistant taught the dev problems'
solutions from an untrained one; the projection's check compares the LLM's target NLL with the soft thoughts against
the LLM alone (the same number as the LLM's own forward pass on its plain prompt)."""

from __future__ import annotations

import pytest
import torch
from builders import task_records, teach, tiny_model_dir

from longshort.core import checks
from longshort.data.protocol import Message
from longshort.pipeline.run_config import load_run_config
from longshort.recipes.softcot.checks import check_assistant, check_train
from longshort.recipes.softcot.config import ASSISTANT_MODEL, INIT_MODEL
from longshort.recipes.softcot.prompts import llm_prompt
from longshort.recipes.softcot.stages import write_init
from longshort.toy.task import write_jsonl

DEV = task_records(6, seed=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("softcot-checks")
    write_jsonl(DEV, root / "bootstrap" / "data" / "dev.jsonl")
    tiny_model_dir(root / "bootstrap" / "base_model")
    tiny_model_dir(root / ASSISTANT_MODEL)
    return root


def test_the_assistant_check_tells_a_taught_assistant_from_an_untrained_one(run, tmp_path):
    cfg = load_run_config(None, ["recipe=softcot", "softcot.assistant.check.n=6"])
    (untrained,) = check_assistant(cfg, run, run / ASSISTANT_MODEL)
    assert (untrained.stage, untrained.setting, untrained.n) == ("assistant",
                                                                 "softcot.assistant.check.min_token_accuracy", 6)
    assert untrained.value < 0.2 and not untrained.passed
    taught = tiny_model_dir(tmp_path / "taught")
    teach(taught, [([Message("user", r["problem"]), Message("assistant", r["solution"])], {"assistant"}) for r in DEV],
          steps=150, seed=0)
    (learned,) = check_assistant(cfg, run, taught)
    assert learned.value >= 0.9 and learned.passed and learned.details["nll"] < untrained.details["nll"]
    assert checks.stage_checks(run, "assistant") == [learned]  # the stage's file holds its latest check


def test_the_projection_check_measures_against_the_llm_alone(run):
    cfg = load_run_config(None, ["recipe=softcot", "softcot.train.check.n=6", "softcot.train.check.max_nll_ratio=0.5",
                                 "softcot.thoughts_train=2"])
    init = write_init(cfg, run)
    (found,) = check_train(cfg, run, init)
    assert (found.stage, found.direction, found.setting, found.n) == ("train", "max",
                                                                      "softcot.train.check.max_nll_ratio", 6)
    alone = found.details["nll_llm_alone"]
    assert found.threshold == pytest.approx(0.5 * alone) and found.passed == (found.value <= 0.5 * alone)
    assert found.details["nll_assistant_reads_another_problem"] > 0 and run / INIT_MODEL == init
    # the LLM alone is the base model's own forward pass on its plain prompt, no placeholders
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longshort.recipes.softcot.data import target_text
    from longshort.toy.stage import dev_problems

    base = run / "bootstrap" / "base_model"
    tok, llm = AutoTokenizer.from_pretrained(base), AutoModelForCausalLM.from_pretrained(base).eval()
    nll, count = 0.0, 0
    for p in dev_problems(run, cfg.softcot.train.check.dev, 6, "train", "k"):
        prompt = llm_prompt(tok, cfg.softcot.prompts, p.problem, 0, tok.pad_token_id)
        target = tok.encode(target_text(p, cfg.softcot.train.target), add_special_tokens=False) + [tok.eos_token_id]
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            logp = torch.log_softmax(llm(ids).logits[0, len(prompt) - 1 : -1].float(), -1)
        nll -= float(logp.gather(-1, ids[0, len(prompt):, None]).sum())
        count += len(target)
    assert alone == pytest.approx(nll / count, rel=1e-4)
