"""``longshort check``'s model checks: every model a config names loads, every eval system can run, and every engine
fits its GPUs and its model's context. Keys are found by walking the config, not listed: a field named ``model``,
``init`` or ``*_model`` holds a model, an object with ``model_paths`` (an eval system) names several, and a field
``engines`` / a topology role sets an engine, so a new recipe's keys are checked without editing this file."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name (a hub model or data set)


@dataclass(frozen=True)
class Finding:
    """One thing a check found: the dotted config key, what is wrong, how to fix it. A ``note`` is expected (a stage
    of this run makes the file later): shown by ``longshort check``, only logged by the commands."""

    key: str
    message: str
    fix: str = ""
    severity: Literal["error", "warning", "note"] = "error"

    def line(self) -> str:
        return f"{self.severity}: {self.key}: {self.message}" + (f"; fix: {self.fix}" if self.fix else "")


def walk(obj: Any, key: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value, field name) of every field under ``obj``, depth first; list items as ``key[i]``."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            sub = f"{key}.{f.name}" if key else f.name
            yield sub, value, f.name
            yield from walk(value, sub)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield f"{key}[{i}]", item, ""
            yield from walk(item, f"{key}[{i}]")


def model_keys(cfg) -> dict[str, str]:
    """Every set model key (dotted key -> value), eval systems' roles excepted (``eval_systems`` checks those)."""
    out = {}
    for key, value, name in walk(cfg):
        parent = key.rpartition(".")[0]
        if (name in ("model", "init") or name.endswith("_model")) and isinstance(value, str) and value:
            if not hasattr(_node(cfg, parent), "model_paths"):
                out[key] = value
    return out


def _node(cfg, key: str):
    for k, value, _ in walk(cfg):
        if k == key:
            return value
    return cfg


def producer(cfg, path: str) -> str | None:
    """The stage of this recipe whose folder a relative path lies in (``sft/long/model`` -> ``sft``), or None."""
    from longshort.recipes import RECIPES

    parts = Path(path).parts
    return parts[0] if parts and parts[0] in RECIPES.get(cfg.recipe).stage_names else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


_HUB_DOWN: dict[str, str] = {}  # once the hub did not answer, it is not asked again


@cache
def hub_answer(name: str, kind: Literal["model", "dataset"]) -> str | None:
    """None when the hub has ``name``; else why it cannot be had (offline, unreachable, not there). Bounded: 3 s."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set, so the hub was not asked"
    if "why" in _HUB_DOWN:
        return _HUB_DOWN["why"]
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        (HfApi().model_info if kind == "model" else HfApi().dataset_info)(name, timeout=3)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        return f"the hub has no {kind} by that name for you ({type(exc).__name__}: a typo, or HF_TOKEN needed)"
    except Exception as exc:  # noqa: BLE001 - every network failure means "unreachable now"
        _HUB_DOWN["why"] = f"the hub is unreachable from here ({type(exc).__name__})"
        return _HUB_DOWN["why"]
    return None


def hub_cached(name: str, kind: Literal["model", "dataset"]) -> Path | None:
    """The local Hugging Face cache's folder of ``name``, when it holds a snapshot."""
    from huggingface_hub.constants import HF_HUB_CACHE

    folder = Path(HF_HUB_CACHE) / f"{kind}s--{name.replace('/', '--')}" / "snapshots"
    return folder if folder.is_dir() and any(folder.iterdir()) else None


@cache
def load_model(path: str) -> tuple[int | None, str | None]:
    """(max_position_embeddings or None, None) when ``path``'s config and tokenizer load from this machine alone,
    else (None, why not)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; all mean "does not load"
        return None, f"its config or tokenizer does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    text = getattr(config, "get_text_config", lambda: config)()
    return getattr(text, "max_position_embeddings", None), None


@dataclass(frozen=True)
class ModelRef:
    """Where a configured model string leads: a loadable ``path``, a stage's output, or a finding."""

    path: str | None = None  # loads from this machine (a directory, or a hub name in the cache)
    produced_by: str | None = None  # a stage of this run (or "another run") makes it
    finding: Finding | None = None


def resolve_model(cfg, run_dir: Path, key: str, value: str) -> ModelRef:
    """What ``value`` (of config key ``key``) is, without loading it."""
    from longshort.training.model_prep import resolve_source

    expanded = Path(value).expanduser()
    if value.endswith(".gguf"):
        try:
            resolve_source(value)
        except LongshortError as exc:
            return ModelRef(finding=Finding(key, str(exc), "install the package or give the .gguf file's path"))
        return ModelRef()
    for candidate in (run_dir / value, expanded) if not expanded.is_absolute() else (expanded,):
        if candidate.exists():
            return ModelRef(path=str(candidate))
    if expanded.is_absolute() or value.startswith(("./", "../", "~")):
        if value.startswith("../"):
            return ModelRef(produced_by="another run")
        return ModelRef(finding=Finding(key, f"{value} does not exist", "point it at a Hugging Face model directory "
                                        "(one `longshort prepare-model` wrote, e.g.)"))
    if (stage := producer(cfg, value)) is not None:
        return ModelRef(produced_by=stage)
    if HUB_ID.match(value):
        if hub_cached(value, "model") is not None:
            return ModelRef(path=value)
        why = hub_answer(value, "model")
        if why is None:
            return ModelRef()  # on the hub: downloaded when the stage loads it
        return ModelRef(finding=Finding(key, f"{value} is not on this machine and not in its Hugging Face cache, and "
                                        f"{why}", f"`hf download {value}` where the hub is reachable (same HF_HOME), "
                                        "or point the key at a local model directory"))
    return ModelRef(finding=Finding(key, f"{value} does not exist (not a directory here or under {run_dir}, not a "
                                    "hub name)", "point it at a Hugging Face model directory or a hub name org/name"))


def check_models(cfg, run_dir: Path) -> list[Finding]:
    """Every set model key resolves, and its config and tokenizer load."""
    found = []
    for key, value in model_keys(cfg).items():
        ref = resolve_model(cfg, run_dir, key, value)
        if ref.finding is not None:
            found.append(ref.finding)
        elif ref.path is not None and (why := load_model(ref.path)[1]) is not None:
            found.append(Finding(key, f"{value}: {why}", "re-run `longshort prepare-model` into that directory"))
    return found


def _planned(cfg, stage: str | None) -> bool:
    """Whether this run's pipeline runs ``stage`` (so what it makes will be there)."""
    return stage is not None and stage in (cfg.pipeline.stages or [])


def check_eval_systems(cfg, run_dir: Path) -> list[Finding]:
    """Each eval system whose model is not there today (``eval.missing: skip`` would leave it out silently)."""
    found = []
    for key, system, _ in walk(cfg):
        if not hasattr(system, "model_paths"):
            continue
        for role, path in system.model_paths.items():
            where, full = f"{key}.{role}", rd.model_path(run_dir, path)
            if (full / "config.json").exists():
                if (why := load_model(str(full))[1]) is not None:
                    found.append(Finding(where, f"eval system {system.name!r}: {path}: {why}"))
            elif Path(path).expanduser().is_absolute():
                found.append(Finding(where, f"eval system {system.name!r}: {path} does not exist, so eval would skip "
                                     "the system", "point it at a model directory, or remove the system"))
            else:
                maker = producer(cfg, path)
                how = (f"stage {maker} makes it" + ("" if _planned(cfg, maker) else ", and this run does not run it")
                       if maker else "another run makes it" if path.startswith("../") else "no stage makes it")
                found.append(Finding(where, f"eval system {system.name!r}: {full} is not there yet ({how}); eval skips "
                                     "the system while it is missing (eval.missing: skip)",
                                     severity="note" if _planned(cfg, maker) else "warning"))
            break  # one line per system: its first missing model
    return found


def _origins(cfg, run_dir: Path, path: str) -> list[tuple[str, str]]:
    """(how, loadable dir) of a model: itself when it loads, else for a stage output ``<stage>/<role>/model`` the
    role's configured start (a set ``*.<role>_model`` key): training keeps the base model's context limit."""
    full = rd.model_path(run_dir, path)
    if (full / "config.json").exists():
        return [(path, str(full))]
    parts = Path(path).parts
    if len(parts) < 2 or parts[-1] != "model":
        return []
    starts = {k: v for k, v in model_keys(cfg).items() if k.rpartition(".")[2] == f"{parts[-2]}_model"}
    return [(f"{path}, which starts from {k} = {v}", ref.path) for k, v in starts.items()
            if (ref := resolve_model(cfg, run_dir, k, v)).path is not None]


def _served(cfg, run_dir: Path, key: str) -> list[tuple[str, str]]:
    """(how, dir) of the models an engine section at ``key`` serves: model keys in its section and those around it,
    eval systems there, or for a topology role ``topology.<role>`` every set ``*.<role>_model`` key."""
    head, _, role = key.partition("topology.")
    keys = model_keys(cfg)
    if not head and role:
        named = {k: v for k, v in keys.items() if k.rpartition(".")[2] == f"{role}_model"}
    else:
        around = [key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1)]
        named = {k: v for k, v in keys.items() if k.rpartition(".")[0] in around}
        for sk, system, _ in walk(_node(cfg, around[0]) if around else cfg, around[0] if around else ""):
            if hasattr(system, "model_paths"):
                named.update({f"{sk}.{r}": p for r, p in system.model_paths.items()})
    out = []
    for k, v in named.items():
        ref = resolve_model(cfg, run_dir, k, v)
        out += [(f"{k} = {v}", ref.path)] if ref.path else [(f"{k} = {how}", d) for how, d in _origins(cfg, run_dir, v)]
    return out


def check_engines(cfg, run_dir: Path) -> list[Finding]:
    """Tensor parallel size within each engine's GPUs; vLLM ``max_model_len`` within its models' context."""
    found = []
    for key, value, name in walk(cfg):
        kwargs = getattr(value, "engine_kwargs", None)
        if not isinstance(kwargs, dict) or not (name == "engines" or hasattr(value, "gpus_per_engine")):
            continue
        kw = f"{key}.engine_kwargs"
        tp = int(kwargs.get("tensor_parallel_size", 1) or 1)
        if hasattr(value, "gpus_per_engine"):  # a topology role: standalone engines, or engines inside the ranks
            gk, gpus = ((f"{key}.gpus_per_engine", value.gpus_per_engine) if value.standalone_engines
                        else (f"{key}.gpus_per_rank", value.gpus_per_rank))
        else:
            gk, gpus = f"{key}.gpus_per_worker", value.gpus_per_worker if value.workers else None
        if tp > 1 and gpus is not None and gpus < tp:
            found.append(Finding(f"{kw}.tensor_parallel_size", f"{tp} GPUs per engine, but {gk} gives each engine "
                                 f"{gpus:g}", f"set {gk}: {tp}, or tensor_parallel_size: {max(1, int(gpus))}"))
        want = kwargs.get("max_model_len")
        if want is None:
            continue
        for how, path in _served(cfg, run_dir, key):
            limit = load_model(path)[0]
            if limit is not None and int(want) > limit:
                found.append(Finding(f"{kw}.max_model_len", f"{want} is over what the model at {path} allows "
                                     f"(max_position_embeddings {limit} in its config.json; served for {how})",
                                     f"set {kw}.max_model_len to at most {limit}"))
    return found
