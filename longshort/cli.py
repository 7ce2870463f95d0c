"""The `longshort` command line. Each subcommand is one entry in COMMANDS; only working stages are listed."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from longshort import __version__
from longshort.core.errors import LongshortError

log = logging.getLogger("longshort")

CONFIG_HELP = "run config YAML (default: the embedded tiny default, same as ray_configs/tiny.yaml)"
OVERRIDES_HELP = "dotted overrides, e.g. sft.lr=3e-4 tracking.mode=disabled"


@dataclass(frozen=True)
class Command:
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help=CONFIG_HELP)
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)


def _split_config(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """`longshort X a.b=1` has no config file: argparse puts the override in `config`."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    return config, overrides


def _load(args: argparse.Namespace):
    from longshort.pipeline.run_config import TINY_CONFIG, load_run_config

    config, overrides = _split_config(args)
    return load_run_config(config or TINY_CONFIG, overrides)


def _config_show(args: argparse.Namespace) -> int:
    from longshort.core.config import dump_yaml
    from longshort.tracking.tracker import scrub

    cfg = _load(args)
    print(dump_yaml(scrub(cfg)), end="")
    return 0


def _config_cmd_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="print the fully resolved config (defaults + file + overrides)")
    _config_args(show)


def _bootstrap(args: argparse.Namespace) -> int:
    from longshort.pipeline.commands import bootstrap_stage

    return bootstrap_stage(_load(args))


def _analysis(args: argparse.Namespace, stage: str) -> int:
    from longshort.pipeline.commands import analysis_stage

    return analysis_stage(_load(args), stage)


def _run_args(p: argparse.ArgumentParser) -> None:
    from longshort.pipeline.runner import STAGES

    _config_args(p)
    p.add_argument("--restart-from", choices=list(STAGES), metavar="STAGE",
                   help=f"rerun this stage and every later one even if complete ({', '.join(STAGES)})")


def _run(args: argparse.Namespace) -> int:
    from longshort.pipeline.commands import pipeline_stage

    return pipeline_stage(_load(args), args.restart_from)


def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a Hugging Face hub name or a local model directory")
    p.add_argument("out", help="new directory for the prepared model and tokenizer")
    p.add_argument("--dtype", default="auto", help="auto | bf16 | fp16 | fp32 (default: the checkpoint's)")


def _prepare(args: argparse.Namespace) -> int:
    from longshort.training.model_prep import prepare_model

    s = prepare_model(args.source, args.out, args.dtype)
    print(f"{args.out}: {s['added_tokens']} protocol tokens added (vocab {s['vocab_before']} -> {s['vocab_after']})")
    return 0


def _rl_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint (exactly)")


def _rl(args: argparse.Namespace) -> int:
    from longshort.rl.loop import rl_stage

    return rl_stage(_load(args), resume=args.resume)


def _export(args: argparse.Namespace) -> int:
    from longshort.recipes.longshort.export import export_stage

    return export_stage(_load(args))


def _solve_args(p: argparse.ArgumentParser) -> None:
    from longshort.recipes.longshort.solve import add_args

    add_args(p)


def _solve(args: argparse.Namespace) -> int:
    from longshort.recipes.longshort.solve import solve_cmd

    return solve_cmd(args)


def _eval(args: argparse.Namespace) -> int:
    from longshort.eval.runner import eval_stage

    return eval_stage(_load(args))


COMMANDS: dict[str, Command] = {
    "run": Command("the whole pipeline: bootstrap → chunk → score → coldstart → sft → rl → eval → export; complete "
                   "stages are skipped, an interrupted one resumes", _run_args, _run),
    "config": Command("inspect run configs", _config_cmd_args, _config_show),
    "prepare-model": Command("add the pair protocol's tokens and chat template to a hub checkpoint (once, before "
                             "training it)", _prepare_args, _prepare),
    "bootstrap": Command(
        "generate the synthetic task, build tokenizer + tiny model, SFT the long-CoT base model, evaluate it",
        _config_args,
        _bootstrap,
    ),
    **{
        name: Command(help_text, _config_args, lambda args, _n=name: _analysis(args, _n))
        for name, help_text in {
            "chunk": "split long CoTs into thoughts (rules, or an engine's grouping validated) → runs/<name>/chunk/",
            "score": "Monte Carlo importance of each thought from prefix rollouts (cached, resumable) → runs/<name>/score/",
            "coldstart": "turn scored CoTs into long/short dialogues that verify → runs/<name>/coldstart/",
            "sft": "SFT the long and the short model on their own turns of the dialogues, then evaluate the pair",
        }.items()
    },
    "rl": Command("multi-turn RL of the long/short pair on Ray: both policies roll out together and both update",
                  _rl_args, _rl),
    "eval": Command("evaluate models and pairs on benchmarks (eval.systems x eval.benchmarks) → runs/<name>/eval/",
                    _config_args, _eval),
    "export": Command("write the trained pair as two HF model dirs + manifest + model card → runs/<name>/export/",
                      _config_args, _export),
    "solve": Command("run an exported pair on problems (text, stdin or --file): every turn, then the answer",
                     _solve_args, _solve),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longshort",
        description="Train a long-thought and a short-thought LLM to reason together (Long⊗Short) on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"longshort {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_args(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except LongshortError as e:
        print(f"longshort: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("longshort: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
