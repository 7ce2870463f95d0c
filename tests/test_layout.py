"""The package's shape, as docs/architecture.md states it: layered folders, no import cycles, small modules, and
tests that mirror the package. (`lint-imports` checks the layer order itself in launch/test.sh.)"""

from __future__ import annotations

import itertools
from pathlib import Path

import grimp
from builders import ROOT

PACKAGE = ROOT / "longshort"


def test_no_top_level_modules_but_the_entry_points():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "cli.py"]


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("longshort")
    cycles = set()
    for mod in graph.modules:
        for dep in graph.find_modules_directly_imported_by(mod):
            if dep != mod and graph.find_shortest_chain(importer=dep, imported=mod):
                cycles.add(tuple(sorted((mod, dep))))
    assert sorted(cycles) == []


def test_tests_mirror_the_package():
    folders = {p.relative_to(ROOT / "tests") for p in (ROOT / "tests").rglob("test_*.py")}
    for rel in folders:
        if rel.parent != Path("."):
            assert (PACKAGE / rel.parent).is_dir(), f"tests/{rel} has no package folder longshort/{rel.parent}"
    tested = {rel.parts[0] for rel in folders if len(rel.parts) > 1}
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers - tested == set(), "a package folder without tests"


def test_recipes_are_independent_folders():
    recipes = [p for p in (PACKAGE / "recipes").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    graph = grimp.build_graph("longshort")
    for a, b in itertools.permutations(recipes, 2):
        assert not graph.chain_exists(importer=f"longshort.recipes.{a.name}", imported=f"longshort.recipes.{b.name}",
                                      as_packages=True)


def test_every_ray_start_goes_through_the_projects_start():
    """One way to start Ray (``cluster.reaper.start_ray``: loopback only, a token of its own, a reaper): a bare
    ``ray.init`` in the package or a bench script would listen on every interface."""
    import ast

    def calls_ray_init(path: Path) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "init"
                   and isinstance(n.func.value, ast.Name) and n.func.value.id == "ray"
                   for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))

    allowed = {ROOT / "longshort" / "cluster" / "reaper.py"}
    bare = [str(p.relative_to(ROOT)) for p in itertools.chain((ROOT / "longshort").rglob("*.py"),
                                                               (ROOT / "bench").glob("*.py"))
            if p not in allowed and calls_ray_init(p)]
    assert bare == []
    assert calls_ray_init(allowed.pop())  # the check sees the one real call
