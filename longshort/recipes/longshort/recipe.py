"""The Long⊗Short recipe (arXiv 2505.11827) as the framework sees it: two trainable roles, its config sections,
its stages. Everything else (engines, trainers, weight sync, the RL loop, eval) is shared machinery."""

from __future__ import annotations

from longshort.cluster.topology import topology_config_class
from longshort.core.stage import Recipe, RoleSpec
from longshort.recipes.longshort.stages import STAGES, preflight

ROLE_SPECS = {
    "long": RoleSpec(trainable=True, help="writes the few important thoughts (R1-Distill in the paper)"),
    "short": RoleSpec(trainable=True, help="writes the rest concisely and gives the answer (an Instruct model)"),
}

PairTopology = topology_config_class(ROLE_SPECS, "PairTopology")

RECIPE = Recipe(
    name="longshort",
    help="Long⊗Short: a long-thought and a short-thought model take turns; SFT then multi-turn RL of both",
    roles=ROLE_SPECS,
    sections={
        "bootstrap": "longshort.toy.bootstrap:BootstrapConfig",  # the embedded default's long-CoT base model
        "chunk": "longshort.recipes.longshort.chunking.config:ChunkConfig",
        "score": "longshort.recipes.longshort.scoring.rollouts:ScoreConfig",
        "coldstart": "longshort.recipes.longshort.coldstart.dialogues:ColdstartConfig",
        "sft": "longshort.recipes.longshort.pair_sft:PairSFTConfig",  # SFT of the pair on the cold-start dialogues
        "topology": PairTopology,  # Ray actors per role
        "rl": "longshort.rl.loop:RLConfig",
        "eval": "longshort.eval.runner:EvalConfig",  # benchmark table of models and pairs (`longshort eval`)
        "export": "longshort.recipes.longshort.export:ExportConfig",  # the shipped pair (`longshort export`)
    },
    stages=STAGES,
    default_config="configs/tiny.yaml",
    preflight=preflight,
    export_format="longshort-pair",
    solve="longshort.recipes.longshort.solve:solve_cmd",
    oracle="longshort.recipes.longshort.recipe:oracle_data",
)


def oracle_data(cfg, models: dict[str, str]) -> str:
    """A pair SFT'd (then RL'd) on a cold start ranked by the teacher's tags learned from what only the synthetic
    task has; ranked by importance or at random it did not."""
    trained = any(p.startswith(("sft/", "rl/")) for p in models.values())
    return "cold start ranked by the teacher's tags" if trained and cfg.coldstart.rank_by == "tags" else ""
