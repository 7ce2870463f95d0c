"""`longshort export` and `longshort solve` on a real tiny pair.

The pair is the task tokenizer + tiny Qwen2 of ``tiny_model_dir``, taught the protocol's format for a second
(``_teach_format``: the long role writes a thought and hands over, the short role answers in ``\\boxed{}``), so a
greedy dialogue has both roles' turns. Runtime: about 15 s.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from builders import _teach_format, problems, tiny_model_dir

from longshort.cli import main
from longshort.core.errors import LongshortError
from longshort.core.manifest import sha256
from longshort.data.protocol import (
    ADDED_TOKENS,
    CHAT_TEMPLATE,
    END_TURN,
    EOS,
    MAX_TURNS,
    PAD,
    SPECIAL_TOKENS,
    Message,
    prompt_ids,
    render,
)
from longshort.recipes.longshort.export import FORMAT_VERSION, MANIFEST, ExportConfig, load_pair, run_export

PROBLEM = "Begin with 3. Add 4. What is the result?"
EVAL_TABLE = "| system | tiny Acc | tiny Tokens |\n|---|---|---|\n| rl-pair | 0.500 | 21.0 |\n"
SOLVE = ["--max-turn-tokens", "24", "--max-turns", "4"]


def _pair(root: Path, stage: str, seeds: tuple[int, int] = (1, 2)) -> dict[str, Path]:
    """``root/<stage>/{long,short}/model``: the tiny model, each role taught the format with its own seed."""
    src = root.parent / "tiny"
    if not src.exists():
        tiny_model_dir(src)
    torch.set_num_threads(1)  # tiny matmuls: 2 threads on 2 busy shared cores were 40x slower (spin-waiting)
    dirs = {}
    for role, seed in zip(("long", "short"), seeds, strict=True):
        dirs[role] = Path(shutil.copytree(src, root / stage / role / "model"))
        _teach_format(dirs[role], problems(24, seed=seed), 40, seed=seed)
    return dirs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run with an SFT'd pair and an eval table."""
    root = tmp_path_factory.mktemp("export") / "demo"
    _pair(root, "sft")
    (root / "eval").mkdir()
    (root / "eval" / "results.json").write_text(json.dumps({"rl-pair": {"tiny": {"accuracy": 0.5, "n": 2}}}))
    (root / "eval" / "table.md").write_text(EVAL_TABLE)
    return root


@pytest.fixture(scope="module")
def exported(run) -> Path:
    return run_export(ExportConfig(), run)


def _logits(path: Path, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_export_writes_two_loadable_models_with_the_source_logits(run, exported):
    from transformers import AutoTokenizer, GenerationConfig

    assert exported == run / "export"
    assert {p.name for p in exported.iterdir()} == {"README.md", MANIFEST, "long", "short"}
    assert not list(run.glob(".tmp-*")), "the temporary export directory was left behind"
    manifest = json.loads((exported / MANIFEST).read_text())
    for role in ("long", "short"):
        d = exported / role
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json"):
            assert (d / name).is_file(), f"{role}/{name} missing"
        tok = AutoTokenizer.from_pretrained(str(d))
        ids = render([Message("user", PROBLEM), Message("long", "compute 3 + 4")], tok).ids
        assert torch.equal(_logits(d, ids), _logits(run / "sft" / role / "model", ids))
        gen = GenerationConfig.from_pretrained(str(d))
        eos, end_turn, pad = tok.convert_tokens_to_ids([EOS, END_TURN, PAD])
        assert gen.eos_token_id == [eos, end_turn] and gen.pad_token_id == pad
        assert manifest["models"][role]["files"] == {"model.safetensors": sha256(d / "model.safetensors")}
        assert manifest["models"][role]["source"] == str(run / "sft" / role / "model")
    # the two roles really are different models (else "logits equal the source" could not tell them apart)
    ids = [1, 2, 3]
    assert not torch.equal(_logits(exported / "long", ids), _logits(exported / "short", ids))


def test_chat_template_round_trips_through_the_exported_tokenizer(exported):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(exported / "short"))
    assert tok.chat_template == CHAT_TEMPLATE
    dialogue = [Message("user", PROBLEM), Message("long", "compute 3 + 4"), Message("short", "3 + 4 = 7 \\boxed{7}")]
    chat = [{"role": m.role, "content": m.content} for m in dialogue]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == f"<|user|>{PROBLEM}<|end_turn|><|long|>compute 3 + 4<|end_turn|><|short|>3 + 4 = 7 \\boxed{{7}}" \
                   "<|endoftext|>"
    assert tok(text, add_special_tokens=False).input_ids == render(dialogue, tok).ids
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert tok(prompt, add_special_tokens=False).input_ids == prompt_ids(dialogue[:1], tok, "assistant")


def test_manifest_lists_the_protocol_and_its_token_ids(run, exported):
    from transformers import AutoTokenizer

    manifest, long_dir, short_dir = load_pair(exported, verify_hashes=True)
    assert (long_dir, short_dir) == (exported / "long", exported / "short")
    tok = AutoTokenizer.from_pretrained(str(run / "sft" / "long" / "model"))
    proto = manifest["protocol"]
    assert proto["special_tokens"] == {t: tok.convert_tokens_to_ids(t) for t in [*SPECIAL_TOKENS, *ADDED_TOKENS]}
    assert proto["stop_tokens"]["handoff"]["id"] == tok.convert_tokens_to_ids(END_TURN)
    assert proto["stop_tokens"]["final"]["id"] == tok.convert_tokens_to_ids(EOS)
    assert proto["role_tokens"]["long"]["id"] == tok.convert_tokens_to_ids("<|long|>")
    assert proto["roles"] == ["long", "short"] and proto["first_role"] == "long"
    assert proto["max_turns"] == MAX_TURNS and proto["chat_template"] == CHAT_TEMPLATE
    assert manifest["format_version"] == FORMAT_VERSION and manifest["source_stage"] == "sft"
    assert manifest["run"] == "demo" and manifest["eval"] == {"rl-pair": {"tiny": {"accuracy": 0.5, "n": 2}}}
    card = (exported / "README.md").read_text()
    assert EVAL_TABLE.strip() in card and "longshort solve export" in card
    assert f"| `<\\|end_turn\\|>` | {tok.convert_tokens_to_ids(END_TURN)} |" in card


def test_load_pair_refuses_corrupt_or_newer_exports(exported, tmp_path):
    copy = Path(shutil.copytree(exported, tmp_path / "copy"))
    weights = copy / "short" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    load_pair(copy)  # hashes are only checked on request
    with pytest.raises(LongshortError, match=r"short/model.safetensors: sha256 differs"):
        load_pair(copy, verify_hashes=True)
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(LongshortError, match="newer than this longshort reads"):
        load_pair(copy)
    with pytest.raises(LongshortError, match="no manifest.json; make one with `longshort export"):
        load_pair(tmp_path)


def test_auto_picks_rl_over_sft_and_skips_an_incomplete_rl_pair(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run / "sft", other / "sft")
    shutil.copytree(run / "sft" / "long" / "model", other / "rl" / "long" / "model")  # rl: long only
    out = run_export(ExportConfig(out=str(tmp_path / "a")), other)
    assert json.loads((out / MANIFEST).read_text())["source_stage"] == "sft"
    assert "No evaluation in this run" in (out / "README.md").read_text()
    shutil.rmtree(other / "rl")
    rl = _pair(other, "rl", seeds=(3, 4))
    out = run_export(ExportConfig(out=str(tmp_path / "a")), other)  # replaces the earlier export in place
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source_stage"] == "rl" and manifest["models"]["short"]["source"] == str(rl["short"])
    ids = [5, 6, 7, 8]
    assert torch.equal(_logits(out / "short", ids), _logits(rl["short"], ids))
    out = run_export(ExportConfig(source="sft", out=str(tmp_path / "b"), dtype="bf16"), other)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source_stage"] == "sft" and manifest["models"]["long"]["dtype"] == "bfloat16"


def test_export_ends_with_the_commands_that_publish_each_model(run, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="longshort"):
        out = run_export(ExportConfig(source="sft", out=str(tmp_path / "pub")), run)
    for role in ("long", "short"):
        assert f"hf upload <your-namespace>/{run.name}-{role} {out / role} ." in caplog.text
    hf = Path(sys.executable).parent / "hf"  # huggingface_hub's CLI, installed with transformers
    done = subprocess.run([str(hf), "upload", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "REPO_ID [LOCAL_PATH] [PATH_IN_REPO]" in done.stdout


def test_an_export_that_hits_a_full_disk_leaves_the_previous_one_whole(run, exported, small_disk):
    """Exports are staged beside their target and renamed when complete: ENOSPC midway leaves the earlier export
    whole (its hashes verify) and no partial folder; with space freed the same export completes."""
    from longshort.core.disk import size_of

    mnt, resize = small_disk
    resize(int(size_of(exported) * 1.5))  # room for one export, not for a second beside it
    shutil.copytree(exported, mnt / "export")
    with pytest.raises(LongshortError) as err:  # safetensors says it in an error type of its own
        run_export(ExportConfig(source="sft", out=str(mnt / "export")), run)
    assert str(err.value).startswith(f"no space left on the device holding {mnt / 'export'} while writing export (")
    assert "MB written before it ran out" in str(err.value) and "run the same command again" in str(err.value)
    assert sorted(p.name for p in mnt.iterdir()) == ["export"]  # the staged copy is gone
    load_pair(mnt / "export", verify_hashes=True)  # the earlier export, whole
    resize(int(size_of(exported) * 3))
    out = run_export(ExportConfig(source="sft", out=str(mnt / "export")), run)
    load_pair(out, verify_hashes=True)


def test_missing_pair_names_the_paths_and_the_command(tmp_path):
    with pytest.raises(LongshortError) as e:
        run_export(ExportConfig(), tmp_path / "empty")
    msg = str(e.value)
    assert "rl/long/model" in msg and "sft/short/model" in msg and "`longshort sft`" in msg
    with pytest.raises(LongshortError, match=r"rl/long/model.*`longshort rl`"):
        run_export(ExportConfig(source="rl"), tmp_path / "empty")
    # through the CLI: exit status 2 and the message, no traceback
    r = subprocess.run([sys.executable, "-m", "longshort.cli", "export", f"output_dir={tmp_path}", "name=none",
                        "tracking.mode=disabled"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "no trained pair" in r.stderr and "Traceback" not in r.stderr


def test_solve_prints_both_roles_and_the_json_parses(exported, tmp_path, capsys, monkeypatch):
    assert main(["solve", str(exported), PROBLEM, *SOLVE]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"^long \(\d+ tokens\): ", shown, re.M) and re.search(r"^short \(\d+ tokens\): ", shown, re.M)

    assert main(["solve", str(exported), PROBLEM, *SOLVE, "--json"]) == 0
    (rec,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rec["problem"] == PROBLEM and rec["status"] == "finished"
    roles = [t["role"] for t in rec["turns"]]
    assert roles == ["long", "short", "long", "short"][: len(roles)] and roles[-1] == "short"
    assert all(t["tokens"] > 0 and t["text"] for t in rec["turns"])
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", rec["turns"][-1]["text"])
    assert boxed and rec["answer"] == boxed[-1].strip()
    for t in rec["turns"]:  # the human output shows the same turns
        assert f"{t['role']} ({t['tokens']} tokens): {t['text']}" in shown

    # stdin and --file (JSONL) give the same dialogue for the same problem
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROBLEM + "\n"))
    assert main(["solve", str(exported), "-", *SOLVE, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rec
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"problem": PROBLEM}) + "\n" + json.dumps({"problem": "Begin with 2. Add 2. What?"}))
    assert main(["solve", str(exported), "--file", str(jsonl), *SOLVE, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0] == rec and lines[1]["problem"] == "Begin with 2. Add 2. What?"


def test_solve_refuses_empty_input_with_a_clear_error(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    assert main(["solve", str(exported)]) == 2
    assert "stdin was empty" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "ok"}\n{"question": "no problem key"}\n')
    assert main(["solve", str(exported), "--file", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert main(["solve", str(tmp_path), "x"]) == 2
    assert "not an exported pair" in capsys.readouterr().err


def test_model_card_transformers_recipe_reproduces_solve(exported, capsys):
    """The README's plain-transformers loop (HF generate) gives the same turns as `longshort solve` (HF engine)."""
    card = (exported / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", card, re.S)
    code = code.replace('pair = "export"', f"pair = {str(exported)!r}").replace("max_new_tokens=256",
                                                                                 "max_new_tokens=24")
    code = code.replace("What is 12 + 7?", PROBLEM).replace(f"range({MAX_TURNS})", "range(4)")
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert main(["solve", str(exported), PROBLEM, *SOLVE, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert printed == [f"[{t['role']}] {t['text']}" for t in rec["turns"]]


def test_lora_pair_ships_its_adapters_and_solve_runs_them_like_the_merged_models(run, tmp_path, capsys):
    """An RL pair trained with LoRA (peft): `export.adapters` ships each adapter beside its merged model, naming its
    base; `solve --adapters` (base + adapter) answers exactly as the merged export does."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from longshort.training.batch import Batch
    from longshort.training.lora import LoraSettings
    from longshort.training.ranks import RankInfo, free_port, init_rank, shutdown_rank
    from longshort.training.trainer import Trainer, TrainerConfig

    root = tmp_path / "lora-run"
    tok = AutoTokenizer.from_pretrained(str(run / "sft" / "long" / "model"))
    ids = torch.tensor([tok.encode(PROBLEM)])
    for role in ("long", "short"):
        init_rank(RankInfo(0, 1, "127.0.0.1", free_port()))
        t = Trainer(run / "sft" / role / "model", TrainerConfig(lr=1e-4, precision="fp32", lora=LoraSettings(rank=2)))
        t.step([Batch(ids, torch.ones_like(ids))])
        t.export(root / "rl" / role / "model", tok)
        t.close()
        shutdown_rank()
    with pytest.raises(LongshortError, match="export.adapters: no role was trained with LoRA"):
        run_export(ExportConfig(adapters=True, out=str(tmp_path / "none")), run)
    out = run_export(ExportConfig(adapters=True), root)
    manifest = json.loads((out / MANIFEST).read_text())
    for role in ("long", "short"):
        entry = manifest["models"][role]["adapter"]
        assert entry["dir"] == f"{role}-adapter" and entry["base"] == str((run / "sft" / role / "model").resolve())
        assert (out / entry["dir"] / "adapter_model.safetensors").is_file()
        assert not any("lora" in k or "base_layer" in k for k in load_file(str(out / role / "model.safetensors")))
    from longshort.training.lora import load_merged

    logits = load_merged(out / "long-adapter")(input_ids=ids).logits
    torch.testing.assert_close(logits, _logits(out / "long", ids[0].tolist()), rtol=1e-5, atol=1e-5)
    records = {}
    for flag in ([], ["--adapters"]):
        assert main(["solve", str(out), PROBLEM, *SOLVE, "--json", *flag]) == 0
        records[bool(flag)] = json.loads(capsys.readouterr().out)
    assert records[True] == records[False] and records[True]["status"] == "finished"
