"""The Hawkeye recipe (arXiv 2504.00424) as the framework sees it: a trainable planner that writes a concise CoT,
a frozen responder that answers from it, GRPO on the planner with a length penalty. Engines, trainers, weight
sync, the RL loop and eval are shared machinery."""

from __future__ import annotations

from longshort.cluster.topology import topology_config_class
from longshort.core.stage import Recipe
from longshort.recipes.hawkeye.config import ROLE_SPECS
from longshort.recipes.hawkeye.stages import STAGES

HawkeyeTopology = topology_config_class(ROLE_SPECS, "HawkeyeTopology")

RECIPE = Recipe(
    name="hawkeye",
    help="Hawkeye: a planner writes a concise CoT, a small frozen responder answers; GRPO on the planner",
    roles=ROLE_SPECS,
    sections={
        "bootstrap": "longshort.toy.bootstrap:BootstrapConfig",  # the embedded default's long-CoT base model
        "hawkeye": "longshort.recipes.hawkeye.config:HawkeyeConfig",
        "topology": HawkeyeTopology,  # Ray actors per role (the responder: engines only)
        "rl": "longshort.recipes.hawkeye.config:HawkeyeRLConfig",
        "eval": "longshort.eval.runner:EvalConfig",
        "export": "longshort.recipes.hawkeye.export:HawkeyeExportConfig",
    },
    stages=STAGES,
    default_config="configs/hawkeye-tiny.yaml",
    export_format="longshort-hawkeye",
    solve="longshort.recipes.hawkeye.solve:solve_cmd",
    oracle="longshort.recipes.hawkeye.recipe:oracle_data",
)

TAGGED_STYLES = ("essential", "plain", "compact")  # planner styles made from the teacher's tags ("concise": not)


def oracle_data(cfg, models: dict[str, str]) -> str:
    """A planner warmed up (then RL'd) on the teacher's tagged essential thoughts, and the responder the run trained
    (its CoTs include those thoughts), learned from what only the synthetic task has."""
    notes = []
    planner, warmup = models.get("planner", ""), cfg.hawkeye.warmup
    if planner.startswith(("warmup/", "rl/")) and warmup.enabled and set(warmup.styles) & set(TAGGED_STYLES):
        notes.append("planner warm-up on the teacher's tags")
    if models.get("responder") == "responder/model" and cfg.hawkeye.responder_model is None:
        notes.append("responder taught on tagged thoughts among its CoTs")
    return "; ".join(notes)
