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
)
