"""``longshort export``: ship the trained pair as two Hugging Face model directories, a manifest and a model card.

``<out>/long`` and ``<out>/short`` load with plain ``from_pretrained`` (safetensors, tokenizer with the protocol's
chat template, generation config that stops at both turn terminators). ``manifest.json`` records what a caller
needs to run the pair without this package's code (roles, turn order, marker ids, which stop token hands back and
which one finishes) plus where the weights came from and their sha256; ``load_pair`` checks it. ``README.md`` is the
model card. The whole directory is built beside ``<out>`` and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from longshort import __version__
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.core.hub import upload_commands
from longshort.core.manifest import sha256
from longshort.data.protocol import (
    ADDED_TOKENS,
    CHAT_TEMPLATE,
    END_TURN,
    EOS,
    MAX_TURNS,
    PAD,
    PAIR_ROLES,
    ROLE_TOKENS,
    SPECIAL_TOKENS,
    special_ids,
)

log = logging.getLogger("longshort")

FORMAT = "longshort-pair"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
LAYOUT = ("<|user|>problem<|end_turn|><|long|>thought<|end_turn|><|short|>steps<|end_turn|>"
          "<|long|>thought<|end_turn|><|short|>steps \\boxed{answer}<|endoftext|>")
TURN_ORDER = ("roles alternate, long first: user, long, short, long, short, ...; only the short role finishes; "
              "role headers are written by the caller, never generated")


@dataclass
class ExportConfig:
    """Export of the trained pair (config section ``export``)."""

    source: Literal["auto", "rl", "sft"] = "auto"  # auto: rl/{long,short}/model when both are complete, else sft/
    out: str | None = None  # None: <run>/export
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: the dtype the source weights are stored in
    adapters: bool = False  # also ship each LoRA-trained role's adapter (<role>-adapter/) beside its merged model


# ---------------------------------------------------------------------------------------------- finding the pair


def _complete(model_dir: Path) -> bool:
    """An HF model directory with config, weights and a tokenizer (what ``from_pretrained`` needs)."""
    return ((model_dir / "config.json").is_file()
            and any(model_dir.glob("*.safetensors"))
            and any((model_dir / f).is_file() for f in _TOKENIZER_FILES))


def find_pair(run_dir: Path, source: str) -> tuple[str, dict[str, Path]]:
    """(stage, {role: model dir}) of the pair to export; ``auto`` prefers RL's pair over SFT's."""
    stages = ["rl", "sft"] if source == "auto" else [source]
    looked = []
    for stage in stages:
        dirs = {r: run_dir / rd.role_model(stage, r) for r in PAIR_ROLES}
        done = {r: _complete(d) for r, d in dirs.items()}
        if all(done.values()):
            return stage, dirs
        if any(done.values()):
            log.warning("export: the %s pair in %s is incomplete (%s); not using it", stage, run_dir / stage,
                        ", ".join(f"{r} {'ok' if ok else 'missing'}" for r, ok in done.items()))
        looked += [str(d) for d in dirs.values()]
    make = {"rl": "`longshort rl`", "sft": "`longshort sft`"}
    raise LongshortError(f"export: no trained pair (config.json + *.safetensors + tokenizer in both) at "
                         f"{', '.join(looked)}; make it with {' or '.join(make[s] for s in stages)} on this run "
                         f"(name {run_dir.name!r}), or set export.source")


# ---------------------------------------------------------------------------------------------- writing


def _export_role(src: Path, dst: Path, dtype: str) -> tuple[dict, dict[str, int], int]:
    """Write one role's HF directory; returns (manifest entry, protocol token ids, vocabulary size)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(src))
    ids = special_ids(tok)  # a clear error when the tokenizer lacks the protocol's markers
    tok.chat_template = CHAT_TEMPLATE
    want = "auto" if dtype == "auto" else getattr(torch, _TORCH_DTYPES[dtype])
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=want)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tok):
        raise LongshortError(f"export: {src} has {rows} embedding rows for a tokenizer of {len(tok)} tokens; the "
                             "model was not resized after adding the protocol tokens (protocol.add_protocol_tokens)")
    gen = model.generation_config if model.generation_config is not None else GenerationConfig()
    gen.eos_token_id = [ids[EOS], ids[END_TURN]]  # a turn ends at either; what each means is in the manifest
    gen.pad_token_id = ids[PAD]
    model.generation_config = gen
    model.save_pretrained(dst, safe_serialization=True)
    tok.save_pretrained(dst)
    files = {p.name: sha256(p) for p in sorted(dst.glob("*.safetensors"))}
    entry = {"dir": dst.name, "source": str(src), "architectures": list(model.config.architectures or []),
             "parameters": sum(p.numel() for p in model.parameters()), "dtype": str(model.dtype).replace("torch.", ""),
             "files": files}
    return entry, ids, len(tok)


def _export_adapters(sources: dict[str, Path], tmp: Path, models: dict[str, dict]) -> None:
    """``<role>-adapter/`` for each role trained with LoRA (its model directory holds ``adapter/``), in the manifest
    with the base model it adapts (``adapter_config.json``'s base_model_name_or_path: ``solve --adapters`` needs it)."""
    import shutil

    from longshort.training.lora import ADAPTER_DIR

    found = {r: src / ADAPTER_DIR for r, src in sources.items() if (src / ADAPTER_DIR / "adapter_config.json").is_file()}
    if not found:
        raise LongshortError(f"export.adapters: no role was trained with LoRA (no {ADAPTER_DIR}/ in "
                             f"{', '.join(str(s) for s in sources.values())}); set export.adapters: false, or train "
                             "with sft.<role>.lora / rl.lora.<role>")
    for role in sorted(set(sources) - set(found)):
        log.info("export.adapters: the %s role was trained without LoRA: its merged model only", role)
    for role, src in found.items():
        dst = tmp / f"{role}-adapter"
        shutil.copytree(src, dst)
        base = json.loads((dst / "adapter_config.json").read_text()).get("base_model_name_or_path")
        models[role]["adapter"] = {"dir": dst.name, "base": base,
                                   "files": {p.name: sha256(p) for p in sorted(dst.glob("*.safetensors"))}}


def protocol_manifest(ids: dict[str, int]) -> dict:
    """The collaboration protocol as data: enough to drive the pair with any inference stack."""
    return {
        "roles": list(PAIR_ROLES),
        "first_role": PAIR_ROLES[0],
        "turn_order": TURN_ORDER,
        "max_turns": MAX_TURNS,
        "layout": LAYOUT,
        "special_tokens": {t: ids[t] for t in [*SPECIAL_TOKENS, *ADDED_TOKENS]},
        "role_tokens": {r: {"token": t, "id": ids[t]} for r, t in ROLE_TOKENS.items()},
        "stop_tokens": {
            "handoff": {"token": END_TURN, "id": ids[END_TURN],
                        "meaning": "the turn ends and control passes to the other role"},
            "final": {"token": EOS, "id": ids[EOS],
                      "meaning": "the short role's final answer (a long-role EOS counts as a hand-back)"},
        },
        "pad": {"token": PAD, "id": ids[PAD]},
        "chat_template": CHAT_TEMPLATE,
    }


def _eval_summary(run_dir: Path) -> tuple[dict | None, str | None]:
    results, table = run_dir / rd.EVAL_RESULTS, run_dir / rd.EVAL_TABLE
    summary = None
    if results.is_file():
        try:
            summary = json.loads(results.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LongshortError(f"export: {results} is not valid JSON ({e}); re-run `longshort eval`") from e
    return summary, (table.read_text(encoding="utf-8") if table.is_file() else None)


def run_export(cfg: ExportConfig, run_dir: str | Path, tracker=None) -> Path:
    """Write the pair of ``run_dir`` to ``cfg.out`` (default ``<run>/export``); returns that directory."""
    from longshort.core.checkpoint_io import staged_dir

    run_dir = Path(run_dir)
    stage, sources = find_pair(run_dir, cfg.source)
    out = Path(cfg.out) if cfg.out else run_dir / rd.EXPORT
    t0 = time.perf_counter()
    models, role_ids, vocab = {}, {}, {}
    with staged_dir(out) as tmp:
        for role, src in sources.items():
            models[role], role_ids[role], vocab[role] = _export_role(src, tmp / role, cfg.dtype)
        if cfg.adapters:
            _export_adapters(sources, tmp, models)
        if role_ids["long"] != role_ids["short"] or vocab["long"] != vocab["short"]:
            raise LongshortError(f"export: {sources['long']} and {sources['short']} have different tokenizers "
                                 f"({vocab['long']} vs {vocab['short']} tokens); the pair must share one vocabulary")
        evals, table = _eval_summary(run_dir)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "longshort_version": __version__,
                    "run": run_dir.name, "source_stage": stage, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "dtype": cfg.dtype, "protocol": protocol_manifest(role_ids["long"]), "models": models,
                    "eval": evals}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(manifest, table, out.name), encoding="utf-8")
    log.info("export: %s pair of run %s -> %s (%.1fs)", stage, run_dir.name, out, time.perf_counter() - t0)
    log.info(upload_commands(out, sources, run_dir.name))
    if tracker is not None:
        tracker.log_artifact(out, "longshort_pair", "model")
        tracker.summary({"export/dir": str(out), "export/source_stage": stage})
    return out


# ---------------------------------------------------------------------------------------------- model card

STAGES = (
    ("bootstrap", "SFT of a long-CoT base model: the starting point of both roles"),
    ("chunk / score", "long CoTs split into thoughts; each thought's importance measured by Monte Carlo prefix rollouts"),
    ("coldstart", "dialogues built from the scored CoTs: the long role writes the important thoughts, the short role "
                  "the concise steps and the answer; only dialogues that reach the right answer are kept"),
    ("sft", "each model fine-tuned on its own role's turns of those dialogues"),
    ("rl", "multi-turn RL: both models roll out together, each is updated on its own tokens from the episodes' "
           "rewards"),
)

PLAIN_TRANSFORMERS = '''import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

pair = "{dir}"  # this directory
tok = AutoTokenizer.from_pretrained(f"{{pair}}/long")  # both roles share this tokenizer
models = {{r: AutoModelForCausalLM.from_pretrained(f"{{pair}}/{{r}}").eval() for r in ("long", "short")}}
eos, end_turn = tok.convert_tokens_to_ids(["{eos}", "{end_turn}"])
text = tok.apply_chat_template([{{"role": "user", "content": "What is 12 + 7?"}}], tokenize=False)
ids = tok(text, add_special_tokens=False).input_ids  # <|user|>problem<|end_turn|>
for turn in range({max_turns}):  # max_turns model turns
    role = ("long", "short")[turn % 2]  # the long role opens; roles alternate
    ids += tok.convert_tokens_to_ids([f"<|{{role}}|>"])  # the caller writes the role header
    x = torch.tensor([ids])
    with torch.no_grad():  # generation_config.json stops at <|end_turn|> and <|endoftext|>
        new = models[role].generate(x, attention_mask=torch.ones_like(x), max_new_tokens=256,
                                    do_sample=False)[0, len(ids):].tolist()
    print(f"[{{role}}]", tok.decode(new, skip_special_tokens=True))
    if not new or new[-1] not in (eos, end_turn):
        break  # cut by max_new_tokens: no answer
    if role == "short" and new[-1] == eos:
        break  # the short role's final answer
    ids += new[:-1] + [end_turn]  # hand over (a long-role <|endoftext|> counts as <|end_turn|>)
'''


def model_card(manifest: dict, table: str | None, dir_name: str = "export") -> str:
    """README.md of an export: what the pair is, how to run it, the protocol, training and the eval table."""
    proto, stage = manifest["protocol"], manifest["source_stage"]
    stop = proto["stop_tokens"]
    models = manifest["models"]
    escaped = {t.replace("|", "\\|"): i for t, i in proto["special_tokens"].items()}  # GFM cells split at any "|"
    tokens = "\n".join(f"| `{t}` | {i} |" for t, i in escaped.items())
    trained = [(s, what) for s, what in STAGES if s != "rl" or stage == "rl"]
    stages = "\n".join(f"{i}. **{s}**: {what}" for i, (s, what) in enumerate(trained, 1))
    code = PLAIN_TRANSFORMERS.format(dir=dir_name, eos=stop["final"]["token"], end_turn=stop["handoff"]["token"],
                                     max_turns=proto["max_turns"])
    evaluation = table.strip() if table else (
        "No evaluation in this run: run `longshort eval` before `longshort export` to include the benchmark table.")
    return f"""---
library_name: transformers
tags: [longshort, reasoning, long-short-pair]
---

# Long⊗Short pair: run `{manifest['run']}`

Two causal language models that solve a problem together by taking turns (Long⊗Short, arXiv 2505.11827):
the **long** model (`long/`, {models['long']['parameters']:,} parameters) writes the few thoughts that matter
most, the **short** model (`short/`, {models['short']['parameters']:,} parameters) writes concise steps and,
when it is done, the final `\\boxed{{}}` answer. Weights from the `{stage}` stage, exported by longshort
{manifest['longshort_version']} (manifest format {manifest['format_version']}); `manifest.json` lists the protocol,
token ids and the sha256 of every weight file.

## Run it with longshort

```bash
longshort solve {dir_name} "What is 12 + 7?"                 # prints every turn, then the answer
echo "What is 12 + 7?" | longshort solve {dir_name} --json    # one JSON object per problem
longshort solve {dir_name} --file problems.jsonl --backend vllm
```

## Run it with plain transformers

```python
{code}```

## Protocol

```
{proto['layout']}
```

- {proto['turn_order']}.
- `{stop['handoff']['token']}` (id {stop['handoff']['id']}): {stop['handoff']['meaning']}.
- `{stop['final']['token']}` (id {stop['final']['id']}): {stop['final']['meaning']}.
- At most {proto['max_turns']} model turns; a turn cut by the token limit, or running out of turns, means no answer.
- Each model's `tokenizer_config` carries the chat template (`apply_chat_template`), the same layout.

| token | id |
|---|---|
{tokens}

## Training

{stages}

## Evaluation

{evaluation}
"""


# ---------------------------------------------------------------------------------------------- reading


def load_pair(export_dir: str | Path, verify_hashes: bool = False) -> tuple[dict, Path, Path]:
    """(manifest, long dir, short dir) of an export, after checking its format version (and, with
    ``verify_hashes``, every weight file's sha256)."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    if not path.is_file():
        raise LongshortError(f"{export_dir} is not an exported pair: no {MANIFEST}; make one with "
                             "`longshort export CONFIG` (writes runs/<name>/export)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LongshortError(f"{path}: not valid JSON ({e}); export the pair again with `longshort export`") from e
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(version, int):
        raise LongshortError(f"{path}: not a {FORMAT} manifest (keys format/format_version); export the pair again "
                             "with `longshort export`")
    if version > FORMAT_VERSION:
        raise LongshortError(f"{path}: format_version {version} is newer than this longshort reads ({FORMAT_VERSION}, "
                             f"longshort {__version__}); upgrade longshort")
    dirs = {}
    for role in PAIR_ROLES:
        entry = manifest.get("models", {}).get(role)
        if not isinstance(entry, dict):
            raise LongshortError(f"{path}: key models.{role} is missing; export the pair again with `longshort export`")
        d = export_dir / entry.get("dir", role)
        if not (d / "config.json").is_file():
            raise LongshortError(f"{d} has no config.json ({path} lists it as the {role} model); the export is "
                                 "incomplete: export the pair again")
        if verify_hashes:
            for name, digest in entry.get("files", {}).items():
                if not (d / name).is_file():
                    raise LongshortError(f"{d / name} is missing (listed in {path}); export the pair again")
                if sha256(d / name) != digest:
                    raise LongshortError(f"{d / name}: sha256 differs from {path} (file changed or corrupt); "
                                         "export the pair again or copy it anew")
        dirs[role] = d
    return manifest, dirs["long"], dirs["short"]
