"""``longshort check CONFIG``: what would stop the run hours in, found in seconds before any work. Each check in
``CHECKS`` reads the config (and the files it names) and returns ``Finding``s; ``longshort run`` and every stage
command run them all first (``preflight``) and stop on any error, so a mistyped path fails now, not at stage six."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from longshort.core.errors import LongshortError
from longshort.data.problems import ProblemSource, load_problems
from longshort.pipeline.check_models import (
    HUB_ID,
    Finding,
    check_engines,
    check_eval_systems,
    check_models,
    hub_answer,
    hub_cached,
    producer,
    walk,
)
from longshort.training.sft import SFTConfig

log = logging.getLogger("longshort")
CheckFn = Callable[[object, Path], list[Finding]]
HEAD_RECORDS = 3  # records of each data source parsed under its preset


def check_vocabularies(cfg, run_dir: Path) -> list[Finding]:
    """The recipe's own preflight (e.g. a pair's checkpoints share one vocabulary), as a finding."""
    from longshort.recipes import RECIPES

    recipe = RECIPES.get(cfg.recipe)
    if recipe.preflight is None:
        return []
    try:
        recipe.preflight(cfg, run_dir)
    except LongshortError as exc:
        return [Finding(f"{recipe.name} preflight", str(exc))]
    return []


def _hub_data(key: str, name: str) -> Finding | None:
    if hub_cached(name, "dataset") is not None or (why := hub_answer(name, "dataset")) is None:
        return None
    return Finding(key, f"{name} is not on this machine and not in its Hugging Face cache, and {why}",
                   f"`hf download --repo-type dataset {name} --local-dir DIR` where the hub is reachable, then "
                   f"{key}: DIR")


def _problem_source(cfg, run_dir: Path, key: str, src: ProblemSource) -> Finding | None:
    local = Path(src.path).expanduser()
    if not src.path or (not local.is_absolute() and (producer(cfg, src.path) or (run_dir / src.path).exists())):
        return None  # the run's own data (a stage writes it)
    if not local.exists() and src.format in ("auto", "hf") and HUB_ID.match(src.path):
        return _hub_data(f"{key}.path", src.path)
    try:
        load_problems(replace(src, limit=None), head=HEAD_RECORDS)
    except LongshortError as exc:
        return Finding(f"{key}.path", str(exc).replace("\n", " "), "fix the file, its preset: or fields:")
    return None


def check_data(cfg, run_dir: Path) -> list[Finding]:
    """Every problem source exists and its first records parse under its preset; every ``data`` file exists."""
    found = []
    for key, value, name in walk(cfg):
        if isinstance(value, ProblemSource):
            found.append(_problem_source(cfg, run_dir, key, value))
        elif name == "data" and isinstance(value, str) and value and not producer(cfg, value):
            if not (Path(value).expanduser().exists() or (run_dir / value).exists()):
                found.append(Finding(key, f"{value} does not exist", "point it at the file, or leave it empty for "
                                     "the run's own (the stage before writes it)"))
    return [f for f in found if f is not None]


def check_output_dir(cfg, run_dir: Path) -> list[Finding]:
    """``output_dir`` (or the nearest folder above it that exists) takes a file: created, then deleted."""
    out = Path(cfg.output_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        return [Finding("output_dir", f"{out} is a file, not a directory", "choose a directory")]
    base = next(p for p in (out, *out.parents) if p.exists())
    try:
        with tempfile.NamedTemporaryFile(dir=base, prefix=".longshort-check-"):
            pass
    except OSError as exc:
        return [Finding("output_dir", f"{out} is not writable ({base}: {exc.strerror or exc})",
                        "choose a directory you can write, e.g. output_dir=runs")]
    return []


def cluster_address(cfg) -> str | None:
    """The remote Ray cluster this run joins (``topology.ray_address``, RAY_ADDRESS, or the Ray job it runs in)."""
    topology = getattr(cfg, "topology", None)
    address = getattr(topology, "ray_address", None) or os.environ.get("RAY_ADDRESS")
    if address and (urlparse(address if "://" in address else f"x://{address}").hostname or address) not in (
            "127.0.0.1", "localhost", "::1", "local"):
        return address
    return "this Ray job's cluster" if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ else None


def check_tracking(cfg, run_dir: Path) -> list[Finding]:
    """On a cluster, ``tracking.mode: auto`` without W&B credentials would quietly log offline on a node."""
    from longshort.tracking.wandb import resolve_mode, wandb_credentials

    try:
        resolve_mode(cfg.tracking.mode)
    except LongshortError as exc:
        return [Finding("tracking.mode", str(exc))]
    address = cluster_address(cfg)
    if cfg.tracking.mode != "auto" or address is None or os.environ.get("WANDB_MODE") or wandb_credentials():
        return []
    return [Finding("tracking.mode", f"auto on a cluster ({address}) without W&B credentials (WANDB_API_KEY, or a "
                    "netrc entry for api.wandb.ai) would log offline files on whichever node runs the driver",
                    "send the key with the job (`launch/submit.sh --env WANDB_API_KEY ...`), or say "
                    "tracking.mode=offline on purpose")]


def _gpus_asked(cfg) -> list[tuple[str, float]]:
    """(what asks, GPUs) for every topology role, every stage's engine workers and every SFT's ranks."""
    asks = []
    for key, value, name in walk(cfg):
        if hasattr(value, "gpus_per_engine") and hasattr(value, "standalone_engines"):
            gpus = value.ranks * value.gpus_per_rank + value.standalone_engines * value.gpus_per_engine
            if gpus:
                asks.append((f"{key} ({value.ranks} ranks x gpus_per_rank {value.gpus_per_rank:g} + "
                             f"{value.standalone_engines} engines x gpus_per_engine {value.gpus_per_engine:g})", gpus))
        elif name == "engines" and getattr(value, "workers", 0) and getattr(value, "gpus_per_worker", 0):
            asks.append((f"{key} (workers {value.workers} x gpus_per_worker {value.gpus_per_worker:g})",
                         value.workers * value.gpus_per_worker))
        elif isinstance(value, SFTConfig) and value.gpus_per_rank:  # None: one a rank where there are any
            asks.append((f"{key} (num_ranks {value.num_ranks} x gpus_per_rank {value.gpus_per_rank:g})",
                         value.num_ranks * value.gpus_per_rank))
    return asks


def available(cfg, resource: str = "GPU") -> tuple[float | None, str]:
    """(amount, where) of ``resource`` on the cluster the run will use; None when it cannot be asked quickly (a
    remote cluster, or a custom resource only a cluster declares)."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return sys.modules["ray"].cluster_resources().get(resource, 0.0), "the Ray cluster this process is connected to"
    if (address := cluster_address(cfg)) is not None:
        return None, f"the cluster at {address}"
    if resource != "GPU":
        return None, f"the cluster that declares the custom resource {resource!r}"
    import torch

    return float(torch.cuda.device_count()), "this machine (torch.cuda.device_count())"


def check_resources(cfg, run_dir: Path) -> list[Finding]:
    """The GPUs (or ``topology.accelerator``) the topology asks (all roles at once, the RL stage), each stage's
    engine workers and each SFT's ranks, against the cluster."""
    asks = _gpus_asked(cfg)
    if not asks:
        return []
    resource = getattr(getattr(cfg, "topology", None), "accelerator", "GPU")
    topo = [(k, g) for k, g in asks if k.startswith("topology.")]
    total, found = sum(g for _, g in topo), []
    have, where = available(cfg, resource)
    if topo and have is None:
        found.append(Finding("topology", f"{total:g} {resource} asked; {where} was not asked (the run's placement "
                             "groups check it when they start)", severity="warning"))
    elif total > have:
        found.append(Finding("topology", f"the roles ask {total:g} {resource} together "
                             f"({'; '.join(k for k, _ in topo)}); {where} has {have:g}",
                             "run on a cluster with that many (topology.ray_address), or lower num_ranks / "
                             "num_engines / gpus_per_rank / gpus_per_engine"))
    for k, g in asks:
        if not k.startswith("topology.") and have is not None and g > have:
            found.append(Finding(k.partition(" ")[0], f"{k.partition(' ')[2][1:-1]} asks {g:g} {resource}; {where} "
                                 f"has {have:g}", "lower workers / gpus_per_worker (an SFT: num_ranks / gpus_per_rank), "
                                 "or run on a cluster with them"))
    return found


CHECKS: dict[str, CheckFn] = {  # run in this order; a new check is one entry
    "models": check_models,
    "eval systems": check_eval_systems,
    "vocabularies": check_vocabularies,
    "engines": check_engines,
    "resources": check_resources,
    "data": check_data,
    "output_dir": check_output_dir,
    "tracking": check_tracking,
}


def run_checks(cfg, run_dir: Path) -> dict[str, list[Finding]]:
    """Every check's findings by name."""
    return {name: fn(cfg, run_dir) for name, fn in CHECKS.items()}


def report_lines(results: dict[str, list[Finding]]) -> list[str]:
    """One ``name: ok`` line per clean check, else one line per finding."""
    return [line for name, found in results.items()
            for line in ([f"{name}: ok"] if not found else [f"{name}: {f.line()}" for f in found])]


def errors(results: dict[str, list[Finding]]) -> list[Finding]:
    return [f for found in results.values() for f in found if f.severity == "error"]


def preflight(cfg, run_dir: Path) -> None:
    """Run every check before a command's work: warnings and notes are logged, errors raise one error listing all."""
    results = run_checks(cfg, run_dir)
    for f in (f for found in results.values() for f in found if f.severity != "error"):
        log.log(logging.WARNING if f.severity == "warning" else logging.INFO, "check: %s", f.line())
    if bad := errors(results):
        raise LongshortError(f"`longshort check` found {len(bad)} problem{'s' * (len(bad) > 1)} in the config; "
                             "nothing was run:\n  " + "\n  ".join(f.line() for f in bad))
