"""The import graph of camu/ and orchestrator/: no cycles anywhere, and the orchestrator's layers depend one
way, in the order a job flows (cli and its commands -> driver -> execution -> worker -> record -> job). Every
import counts, module-level, inside functions and under ``TYPE_CHECKING``: a cycle hidden in a function is still a
cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Lowest first: a module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("orchestrator", "orchestrator.secrets", "orchestrator.progress", "orchestrator.lifecycle",
     "orchestrator.files", "orchestrator.inputs", "orchestrator.tables", "orchestrator.pareto"),
    ("orchestrator.job",),
    ("orchestrator.errors",),
    ("orchestrator.record",),
    ("orchestrator.worker",),
    ("orchestrator.execution",),
    ("orchestrator.driver",),
    ("orchestrator.cli", "orchestrator.commands", "orchestrator.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project modules it imports (``from pkg import mod`` resolves to the module)."""
    files = {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int | None:
    found = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "orchestrator" and module.startswith(prefix + ".")):
                found = i
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
            for m, deps in sorted(graph.items()) for d in sorted(deps)
            if d.startswith("orchestrator") and (layer(m) or 0) < (layer(d) or 0)]


def test_no_import_cycle_in_camu_or_orchestrator() -> None:
    assert cycles(import_graph(("camu", "orchestrator"))) == []


def test_every_orchestrator_module_has_a_layer() -> None:
    graph = import_graph(("orchestrator",))
    assert [m for m in graph if layer(m) is None] == []


def test_orchestrator_layers_depend_one_way() -> None:
    assert upward_imports(import_graph(("orchestrator",))) == []


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_layer_check_sees_an_upward_import() -> None:
    graph = {"orchestrator.record.tracking": {"orchestrator.driver.pipeline"}, "orchestrator.driver.pipeline": set()}
    assert upward_imports(graph) == [("orchestrator.record.tracking (layer 3) imports orchestrator.driver.pipeline "
                                     "(layer 6)")]
