"""The SoftCoT recipe (arXiv 2502.12134) as the framework sees it: a frozen assistant's hidden states, through a
trainable projection, become soft thought tokens in a frozen LLM's input. Only the projection trains (the shared SFT
trainer with a composite model factory); bootstrap, data, report and solve dispatch are shared machinery."""

from __future__ import annotations

from longshort.core.stage import Recipe
from longshort.recipes.softcot.config import ROLE_SPECS
from longshort.recipes.softcot.stages import STAGES

RECIPE = Recipe(
    name="softcot",
    help="SoftCoT: a frozen assistant's soft thoughts, projected into a frozen LLM's input; only the projection trains",
    roles=ROLE_SPECS,
    sections={
        "bootstrap": "longshort.toy.bootstrap:BootstrapConfig",  # the embedded default's LLM
        "softcot": "longshort.recipes.softcot.config:SoftCoTConfig",
        "eval": "longshort.recipes.softcot.config:SoftCoTEvalConfig",
        "export": "longshort.recipes.softcot.export:SoftCoTExportConfig",
    },
    stages=STAGES,
    default_config="configs/softcot-tiny.yaml",
    export_format="longshort-softcot",
    solve="longshort.recipes.softcot.solve:solve_cmd",
)
