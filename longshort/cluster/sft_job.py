"""Supervised fine-tuning as a Ray job: the data is checked and tokenized here (``training.sft.prepare_sft``), then
``training.sft.sft_rank`` runs on ``sft.num_ranks`` rank actors placed by ``rank_group.run_ranks``."""

from __future__ import annotations

from pathlib import Path

from longshort.cluster.actor_calls import sft_memory
from longshort.cluster.rank_group import RankPlacement, run_ranks
from longshort.cluster.topology import run_accelerator
from longshort.core.disk import full_disk_message, is_disk_full, size_of
from longshort.core.errors import LongshortError
from longshort.training.sft import Progress, SFTConfig, SFTResult, prepare_sft, sft_rank, sft_result
from longshort.training.sft_data import SFTExample, TokenizedSet


def sft_placement(cfg: SFTConfig, key: str = "sft") -> RankPlacement:
    """Where an SFT's ranks go: its section's keys, on devices of the run's ``topology.accelerator``."""
    return RankPlacement(cfg.num_ranks, cfg.cpus_per_rank, cfg.gpus_per_rank, cfg.threads_per_rank, cfg.placement,
                         run_accelerator(), key)


def run_sft(
    cfg: SFTConfig,
    data: str | Path | list[SFTExample] | TokenizedSet,
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    tracker=None,
    resume: bool = True,
    stop_after: int | None = None,
    metric_prefix: str = "sft/",
    key: str = "sft",
) -> SFTResult:
    """Fine-tune the model in ``model_dir`` (HF dir with a protocol tokenizer) on ``data``; export to ``out_dir/model``.

    ``data`` as ``prepare_sft`` takes it; ``tracker`` is any object with ``log(metrics: dict, step: int)``; ``key`` the
    config section named in errors (e.g. ``sft.long``). Several calls may run at once (threads): each job has its own
    actors.
    """
    job, stats = prepare_sft(cfg, data, model_dir, out_dir, resume=resume, stop_after=stop_after)
    progress = Progress(tracker, metric_prefix, cfg.progress)
    try:
        results = run_ranks(sft_rank, (job,), sft_placement(cfg, key), name=metric_prefix.rstrip("/"),
                            on_report=progress, memory=sft_memory(key))
    except LongshortError as e:  # a rank's write failed for space: say where, and what a checkpoint takes
        ckpts = sorted((Path(out_dir) / "checkpoints").glob("step-*"))
        need = size_of(ckpts[-1]) if ckpts else None
        if not is_disk_full(e, out_dir, need):
            raise
        raise LongshortError(f"{key}: " + full_disk_message(out_dir, need, "a checkpoint or the model")) from e
    finally:
        progress.close()
    return sft_result(results[0], stats)
