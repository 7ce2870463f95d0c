"""``longshort export`` for SoftCoT: the trained projection (a small safetensors file), ``softcot.json`` naming the
two frozen models, the LLM's tokenizer, and a manifest. With ``include_models`` the two models are copied in beside
it (the embedded run's are a few MB) and referenced relatively; otherwise the manifest keeps their references (hub
ids or paths), for cluster runs whose models users already have."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from longshort import __version__
from longshort.core import run_dir as rd
from longshort.core.errors import LongshortError
from longshort.core.manifest import sha256
from longshort.recipes.softcot.config import TRAINED_MODEL
from longshort.recipes.softcot.model import SPEC, WEIGHTS

log = logging.getLogger("longshort")
FORMAT = "longshort-softcot"
MANIFEST = "manifest.json"


@dataclass
class SoftCoTExportConfig:
    """Config section ``export``."""

    out: str | None = None  # None: <run>/export
    include_models: bool = True  # copy both frozen models in (False: reference them)


def run_export(cfg: SoftCoTExportConfig, run_dir: str | Path, softcot) -> Path:
    from longshort.core.checkpoint_io import staged_dir

    run_dir = Path(run_dir)
    src = run_dir / TRAINED_MODEL
    if not (src / WEIGHTS).exists():
        raise LongshortError(f"export: {src / WEIGHTS} does not exist; run `longshort train` first")
    spec = json.loads((src / SPEC).read_text(encoding="utf-8"))
    out = Path(cfg.out) if cfg.out else run_dir / rd.EXPORT
    with staged_dir(out) as tmp:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.tmp", ".*"))
        models = {}
        for role in ("llm", "assistant"):
            ref = spec[role]
            if cfg.include_models and Path(ref).is_dir():
                shutil.copytree(ref, tmp / role, ignore=shutil.ignore_patterns("*.tmp", ".*"))
                spec[role] = role
            models[role] = {"source": ref, "included": spec[role] == role,
                            "sha256": {f.name: sha256(f) for f in sorted((tmp / role).glob("*.safetensors"))}
                            if spec[role] == role else {}}
        (tmp / SPEC).write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
        evals = run_dir / rd.EVAL_RESULTS
        manifest = {"format": FORMAT, "format_version": 1, "longshort_version": __version__, "run": run_dir.name,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": models,
                    "projection": {"file": WEIGHTS, "sha256": sha256(tmp / WEIGHTS)},
                    "thoughts": softcot.thoughts_eval, "layer": spec.get("layer", -1),
                    "prompts": asdict(softcot.prompts),
                    "eval": json.loads(evals.read_text())["results"] if evals.exists() else None}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("export: SoftCoT projection of run %s -> %s", run_dir.name, out)
    return out
