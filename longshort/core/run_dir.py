"""Every path inside ``runs/<name>/``, in one place. Stages join these to the run directory; config keys that
point elsewhere (a ``path``/``data``/``model`` key left empty means the run's own file) go through ``resolve``."""

from __future__ import annotations

from pathlib import Path

# toy bootstrap (the embedded default's long-CoT base model and its task data)
BOOTSTRAP = "bootstrap"
BASE_MODEL = "bootstrap/base_model"
TRAIN_DATA = "bootstrap/data/train.jsonl"
EVAL_DATA = "bootstrap/data/eval.jsonl"
DEV_DATA = "bootstrap/data/dev.jsonl"  # what the stages check their outcome on (core/checks.py)
BOOTSTRAP_EVAL = "bootstrap/eval.json"
BOOTSTRAP_EVAL_SAMPLES = "bootstrap/eval_samples.jsonl"  # the base model's answer to every test problem
BOOTSTRAP_CHECK_SAMPLES = "bootstrap/check_samples.jsonl"  # ... and to the dev problems of its outcome check
# Long⊗Short analysis
THOUGHTS = "chunk/thoughts.jsonl"
JUDGE = "judge"  # score.judge: pair: the judge pair's cold start and SFT
JUDGE_PAIR = "judge/sft"
SCORES = "score/scores.jsonl"
SCORE_CACHE = "score/cache"
DIALOGUES = "coldstart/dialogues.jsonl"
# training stages
SFT_EVAL = "sft/eval.json"
RL = "rl"
RL_CHECKPOINTS = "rl/checkpoints"
RL_EVAL = "rl/eval.json"
# evaluation and export
EVAL = "eval"
EVAL_RESULTS = "eval/results.json"
EVAL_TABLE = "eval/table.md"
EXPORT = "export"
# run bookkeeping
CONFIG = "config.yaml"
PIPELINE_STATE = "pipeline.json"
STAGE_DONE, STAGE_STARTED = ".complete.json", ".started.json"  # inside a stage's folder
STAGE_CHECKS = "checks.json"  # inside a stage's folder: its outcome checks (core/checks.py)


def role_model(stage: str, role: str) -> str:
    """The exported HF model of ``role`` after ``stage`` (``sft/long/model``, ``rl/short/model`` ...)."""
    return f"{stage}/{role}/model"


def role_dir(stage: str, role: str) -> str:
    """A role's working folder inside a training stage (checkpoints, then ``model``)."""
    return f"{stage}/{role}"


def model_path(run_dir: str | Path, path: str) -> Path:
    """An eval system's model: absolute as given; relative, inside the run directory when it is there or nowhere
    yet (a stage makes it: ``sft/long/model``), else as given from the working directory (``models/mine``)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    inside = Path(run_dir) / p
    return inside if inside.exists() or not p.exists() else p


def resolve(run_dir: str | Path, path: str | None, default: str) -> Path:
    """A configured path, or ``default`` inside the run directory when it is empty/None. A relative path that
    exists inside the run directory means that one (``bootstrap/init_model``), else it is taken as given."""
    if not path:
        return Path(run_dir) / default
    inside = Path(run_dir) / path
    return inside if not Path(path).is_absolute() and inside.exists() else Path(path)
