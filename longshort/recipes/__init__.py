"""Training recipes, one folder each. A recipe declares its roles, config sections and stages
(``longshort.core.stage.Recipe``); recipes never import each other. Register a new one here (or with
``RECIPES.register`` from your own package) and select it with ``recipe: NAME`` in a run config."""

from longshort.core.registry import Registry
from longshort.core.stage import Recipe

RECIPES: Registry[Recipe] = Registry("recipe", {"longshort": "longshort.recipes.longshort.recipe:RECIPE",
                                                  "hawkeye": "longshort.recipes.hawkeye.recipe:RECIPE",
                                                  "softcot": "longshort.recipes.softcot.recipe:RECIPE"},
                                     check=lambda r: isinstance(r, Recipe))
DEFAULT_RECIPE = "longshort"
