"""The import structure: no cycles among codepulse's modules, and the layer contracts of
pyproject.toml's [tool.importlinter] hold (what `uv run lint-imports` checks in CI).

Imports inside functions and under `if TYPE_CHECKING:` count: neither is a way around a layer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("codepulse", cache_dir=None, exclude_type_checking_imports=False)


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """The module groups that import each other in a cycle (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.find_modules_directly_imported_by(successor)))))
                    break
                if successor in on_stack:
                    low[module] = min(low[module], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == module:
                            break
                    if len(group) > 1 or module in graph.find_modules_directly_imported_by(module):
                        groups.append(group)
    return groups


def a_cycle(graph: grimp.ImportGraph, group: set[str]) -> str:
    """One shortest cycle through the group's first module, for the failure message."""
    start = min(group)
    best: tuple[str, ...] | None = None
    for imported in graph.find_modules_directly_imported_by(start) & group:
        chain = graph.find_shortest_chain(importer=imported, imported=start)
        if chain is not None and (best is None or len(chain) < len(best)):
            best = chain
    return " -> ".join((start, *(best or ())))


def test_the_cycle_finder_finds_cycles() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z", "a.w"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    graph.add_import(importer="a.w", imported="a.x")
    assert strongly_connected(graph) == [{"a.x", "a.y", "a.z"}]
    assert a_cycle(graph, {"a.x", "a.y", "a.z"}) == "a.x -> a.y -> a.z -> a.x"


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = [a_cycle(graph, group) for group in strongly_connected(graph)]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_layer_contracts_hold() -> None:
    # In a process of its own: import-linter renders its report with rich, which must not meet
    # the test process's captured, redirected output (it spun there under coverage).
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
