"""The package's layering, read from its imports: dependencies point one way, no cycles.

Every import of a market_agent module counts for the direction of the layers: at module
level, under TYPE_CHECKING and inside functions (a deferred import is still a
dependency; it may only save start-up time, never hide a cycle). Cycles are looked for
among the imports that run: a name imported under TYPE_CHECKING for an annotation
creates no import-time dependency, but it must still point down the layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "market_agent"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: Lowest first. A module may import its own unit (the top-level module or package
#: it belongs to) and any unit of a lower layer; never a peer, never a higher layer.
LAYERS: list[set[str]] = [
    {PACKAGE, "errors", "models", "redact", "labels", "locks"},
    {"inputs", "render"},
    {"settings"},
    {"audit", "clients"},
    {"logs"},
    {"analysis"},
    {"actions"},
    {"state", "health"},
    {"listen"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}

Graph = Mapping[str, set[str]]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(
    tree: ast.AST, module: str, is_package: bool, known: set[str], *, runtime: bool = False
) -> set[str]:
    """The market_agent modules `tree` imports anywhere (a name that is a submodule
    counts as that submodule); with `runtime`, not those under `if TYPE_CHECKING:`."""
    package = module if is_package else module.rpartition(".")[0]
    skipped = _type_checking_only(tree) if runtime else set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        name = getattr(test, "id", None) or getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for statement in node.body:  # type: ignore[attr-defined]
                skipped.update(id(inner) for inner in ast.walk(statement))
    return skipped


def import_graph(root: Path = ROOT, *, runtime: bool = False) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    known = {module_name(path) for path in paths}
    graph = {}
    for path in paths:
        module = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        graph[module] = imported(tree, module, is_package, known, runtime=runtime) - {module}
    return graph


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def backwards(graph: Graph) -> list[str]:
    """Imports of a peer or of a higher layer, as "importer -> imported"."""
    found = []
    for source, targets in graph.items():
        for target in targets:
            same_unit = unit(source) == unit(target)
            if not same_unit and RANK[unit(target)] >= RANK[unit(source)]:
                found.append(f"{source} -> {target}")
    return sorted(found)


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def unplaced(modules: Iterable[str]) -> list[str]:
    return sorted({unit(module) for module in modules} - RANK.keys())


def test_every_unit_has_a_layer() -> None:
    assert unplaced(import_graph()) == []


def test_imports_point_down_the_layers() -> None:
    assert backwards(import_graph()) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(runtime=True)) == []


def test_type_checking_imports_count_for_layers_not_for_cycles() -> None:
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from market_agent.cli import x\n"
    )
    tree = ast.parse(source)
    known = {"market_agent.cli"}
    assert imported(tree, "market_agent.settings.core", False, known) == {"market_agent.cli"}
    assert imported(tree, "market_agent.settings.core", False, known, runtime=True) == set()


def test_deferred_imports_count(tmp_path: Path) -> None:
    source = "def late():\n    from market_agent.cli import main\n"
    tree = ast.parse(source)
    known = {"market_agent.cli", "market_agent.settings.core"}
    assert imported(tree, "market_agent.settings.core", False, known) == {"market_agent.cli"}


def test_a_backwards_import_is_caught() -> None:
    graph = {
        "market_agent.settings.core": {"market_agent.errors", "market_agent.actions.runner"},
        "market_agent.actions.runner": {"market_agent.settings.core"},
        "market_agent.audit.log": {"market_agent.clients.base"},  # peers
        "market_agent.clients.base": set(),
        "market_agent.errors": set(),
    }
    assert backwards(graph) == [
        "market_agent.audit.log -> market_agent.clients.base",
        "market_agent.settings.core -> market_agent.actions.runner",
    ]
    assert cycles(graph) == [["market_agent.actions.runner", "market_agent.settings.core"]]


def test_a_cycle_inside_one_package_is_caught() -> None:
    graph = {
        "market_agent.listen.a": {"market_agent.listen.b"},
        "market_agent.listen.b": {"market_agent.listen.c"},
        "market_agent.listen.c": {"market_agent.listen.a"},
    }
    assert backwards(graph) == []
    assert cycles(graph) == [
        ["market_agent.listen.a", "market_agent.listen.b", "market_agent.listen.c"]
    ]


def test_relative_imports_resolve(tmp_path: Path) -> None:
    tree = ast.parse("from . import journal\nfrom ..audit import log\n")
    known = {"market_agent.listen.journal", "market_agent.audit.log"}
    assert imported(tree, "market_agent.listen.http", False, known) == known
