"""Shared pieces for the thought-analysis tests: task records, and a real tiny model + tokenizer on disk.

The model is randomly initialised (a stock Qwen2 with the task tokenizer); it generates garbage, which is what
the fallback/rejection tests need, and it exercises the real engine and tokenizer everywhere else.
"""

from __future__ import annotations

from pathlib import Path

from longshort.task import TaskConfig, generate, write_jsonl
from longshort.tiny import TinyModelConfig, TokenizerConfig, build_model, save_pretrained, task_texts, train_tokenizer


def task_records(n: int = 40, seed: int = 0, **task) -> list[dict]:
    train, _ = generate(TaskConfig(seed=seed, n_train=n, n_eval=0, **task))
    return train


def tiny_model_dir(path: Path, records: list[dict] | None = None, layers: int = 1) -> Path:
    """A tiny random Qwen2 + the task tokenizer (protocol tokens, chat template) saved to ``path``."""
    import torch

    torch.set_num_threads(2)
    records = records or task_records(200)
    tok = train_tokenizer(task_texts(records, 200), TokenizerConfig(vocab_size=400))
    model = build_model(TinyModelConfig(layers=layers, intermediate=128, max_positions=512), tok)
    return save_pretrained(model, tok, path)


def run_dir_with_task(root: Path, records: list[dict], model_dir: Path | None = None) -> Path:
    """A run directory laid out like ``longshort bootstrap`` leaves it (data + optionally the base model)."""
    write_jsonl(records, root / "bootstrap" / "data" / "train.jsonl")
    if model_dir is not None:
        (root / "bootstrap").mkdir(parents=True, exist_ok=True)
        link = root / "bootstrap" / "base_model"
        if not link.exists():
            link.symlink_to(model_dir, target_is_directory=True)
    return root
