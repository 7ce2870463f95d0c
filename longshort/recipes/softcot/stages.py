"""SoftCoT's pipeline as stage declarations: bootstrap (the embedded long-CoT model, which is the frozen LLM),
assistant (a smaller model taught on the task, then frozen), train (the projection only), eval (the LLM alone, the
untrained projection, the trained one with the assistant reading another problem, the trained one), export (the
projection, the model references, a manifest)."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.core.stage import Stage
from longshort.data.verify import shared_verifier
from longshort.recipes.softcot.checks import check_assistant, check_train
from longshort.recipes.softcot.config import ASSISTANT_MODEL, FACTORY, INIT_MODEL, TRAINED_MODEL
from longshort.toy.stage import bootstrap_stage

log = logging.getLogger("longshort")


def _problems(src, run_dir: Path, default: str, key: str) -> list:
    from longshort.data.problems import load_problems

    path = rd.resolve(run_dir, src.path or None, default)
    if not src.path and not path.exists():
        raise LongshortError(f"{key}: {path} does not exist; run `longshort bootstrap` first, or set {key}.path")
    problems, report = load_problems(replace(src, path=str(path)))
    if report.n_skipped:  # on_bad_record: skip
        log.warning("%s: %s", key, report.summary())
    return problems


def model_refs(cfg, run_dir: Path) -> dict[str, str]:
    """Where the two frozen models are: a local directory (absolute) or a hub id, as the config names them."""
    sc = cfg.softcot
    refs = {"llm": (sc.llm_model, rd.BASE_MODEL), "assistant": (sc.assistant_model, ASSISTANT_MODEL)}
    out = {}
    for role, (given, default) in refs.items():
        path = rd.resolve(run_dir, given, default)
        if given is None and not (path / "config.json").exists():
            stage = "bootstrap" if role == "llm" else "assistant"
            raise LongshortError(f"softcot: the {role} model {path} does not exist; run `longshort {stage}` first, "
                                 f"or set softcot.{role}_model")
        out[role] = str(path.resolve()) if path.exists() else given
    return out


def _uses_embedded(cfg) -> bool:
    sc = cfg.softcot
    return (sc.llm_model is None or sc.assistant_model is None or sc.train.data.path == ""
            or cfg.eval.data.path == "")


def _assistant(cfg, run_dir: Path, tracker, resume: bool) -> None:
    """A fresh smaller tiny model (the bootstrap's tokenizer) taught to write the concise solutions, then frozen."""
    from longshort.cluster.sft_job import run_sft
    from longshort.recipes.softcot.data import assistant_examples
    from longshort.toy.tiny import fresh_model_dir
    from longshort.training.sft import publish

    ac = cfg.softcot.assistant
    out = run_dir / "assistant"
    init = Path(ac.init) if ac.init else out / "init_model"
    if not ac.init:
        init, size = fresh_model_dir(ac.model, run_dir / rd.BASE_MODEL, init)
        if size:
            log.info("assistant: %s model, hidden %d, %.2fM parameters", ac.model.arch, ac.model.hidden, size / 1e6)
    problems = [p for p in _problems(ac.data, run_dir, rd.TRAIN_DATA, "softcot.assistant.data") if p.solution]
    if not problems:
        raise LongshortError("softcot.assistant.data: no problem has a solution; map the data's solution field")
    result = run_sft(ac.sft, assistant_examples(problems, ac.examples), init, out / "sft", tracker=tracker,
                     metric_prefix="assistant/sft/", key="softcot.assistant.sft")
    publish(result, run_dir / ASSISTANT_MODEL, "assistant")
    check_assistant(cfg, run_dir, run_dir / ASSISTANT_MODEL)


def write_init(cfg, run_dir: Path) -> Path:
    """The composite before training: ``softcot.json`` naming both models, the LLM's tokenizer and config."""
    from transformers import AutoConfig, AutoTokenizer

    from longshort.recipes.softcot.model import write_spec

    sc, refs = cfg.softcot, model_refs(cfg, run_dir)
    init = run_dir / INIT_MODEL
    if init.exists():
        shutil.rmtree(init)
    write_spec(init, assistant=refs["assistant"], llm=refs["llm"], assistant_slot=sc.prompts.assistant_slot,
               llm_slot=sc.prompts.llm_slot, layer=sc.layer, seed=sc.train.init_seed)
    AutoTokenizer.from_pretrained(refs["llm"]).save_pretrained(init)
    AutoConfig.from_pretrained(refs["llm"]).save_pretrained(init)
    return init


def _train(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from transformers import AutoTokenizer

    from longshort.cluster.sft_job import run_sft
    from longshort.recipes.softcot.data import projection_set
    from longshort.recipes.softcot.model import token_id
    from longshort.training.sft import publish

    sc, tc = cfg.softcot, cfg.softcot.train
    refs = model_refs(cfg, run_dir)
    init = write_init(cfg, run_dir)
    llm_tok, a_tok = AutoTokenizer.from_pretrained(refs["llm"]), AutoTokenizer.from_pretrained(refs["assistant"])
    slots = (token_id(a_tok, sc.prompts.assistant_slot, "softcot.prompts.assistant_slot"),
             token_id(llm_tok, sc.prompts.llm_slot, "softcot.prompts.llm_slot"))
    problems = _problems(tc.data, run_dir, rd.TRAIN_DATA, "softcot.train.data")
    if tc.skip_planted_errors:
        clean = [p for p in problems if p.meta.get("error_step") is None]
        if len(clean) < len(problems):
            log.info("softcot train: %d of %d problems have a planted wrong step in their CoT and are left out "
                     "(softcot.train.skip_planted_errors)", len(problems) - len(clean), len(problems))
        problems = clean
    if tc.examples:  # problems reused in order past the data's size, each use its own example
        problems = [replace(problems[i % len(problems)], id=f"{problems[i % len(problems)].id}#{i}")
                    for i in range(tc.examples)]
    data = projection_set(problems, llm_tok, a_tok, sc.prompts, sc.thoughts_train, tc.target, tc.sft.max_len, slots)
    sft = replace(tc.sft, model_factory=FACTORY)
    result = run_sft(sft, data, init, run_dir / "softcot" / "sft", tracker=tracker, metric_prefix="softcot/sft/",
                     key="softcot.train.sft")
    publish(result, run_dir / TRAINED_MODEL, "train")
    check_train(cfg, run_dir, run_dir / TRAINED_MODEL)


def _eval(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.softcot.evaluate import run_softcot_eval

    run_softcot_eval(cfg, run_dir, tracker, shared_verifier(cfg.verify))


def _eval_report(cfg, run_dir: Path) -> str:
    return (run_dir / rd.EVAL_TABLE).read_text(encoding="utf-8")


def _export(cfg, run_dir: Path, tracker, resume: bool) -> None:
    from longshort.recipes.softcot.export import run_export

    run_export(cfg.export, run_dir, cfg.softcot)


TRAIN_KEYS = tuple(f"softcot.{k}" for k in ("llm_model", "assistant_model", "thoughts_train", "layer", "prompts",
                                             "train"))
STAGES = (
    bootstrap_stage(_uses_embedded, "generate the synthetic task, build tokenizer + tiny model, SFT the long-CoT base "
                    "model (the frozen LLM), evaluate it"),
    Stage("assistant", "train the smaller assistant on the task's concise solutions (frozen afterwards) → "
          "runs/<name>/assistant/", ("softcot.assistant", "softcot.assistant_model"), (f"{ASSISTANT_MODEL}/config.json",),
          _assistant, needed=lambda cfg: cfg.softcot.assistant_model is None),
    Stage("train", "train the projection from the assistant's states to the LLM's embeddings (both models frozen) "
          "→ runs/<name>/softcot/", TRAIN_KEYS, (f"{TRAINED_MODEL}/projection.safetensors",), _train),
    Stage("eval", "the LLM alone, SoftCoT with the untrained projection and SoftCoT trained, over sampling seeds "
          "→ runs/<name>/eval/", ("eval", "softcot.thoughts_eval", "softcot.prompts"), (rd.EVAL_RESULTS,), _eval,
          report=_eval_report),
    Stage("export", "write the projection, the two model references and a manifest → runs/<name>/export/",
          ("export",), ("{export.out}/manifest.json",), _export),
)
