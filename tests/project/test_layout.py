"""The shape the code promises a newcomer: short functions, an import graph without cycles.

These read the source (no imports), so they are cheap and catch a regression in review
terms: a function that grew past a screen, or two modules that import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mqttspool"
MAX_FUNCTION_LINES = 40


def _modules() -> dict[str, ast.Module]:
    trees = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        trees[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return trees


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module, known: set[str]) -> set[str]:
    """mqttspool modules imported anywhere in ``tree`` except under ``if TYPE_CHECKING``."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {m for m in (f"{node.module}.{a.name}" for a in node.names) if m in known}
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        stack.extend(ast.iter_child_nodes(node))
    return {m for m in found if m in known}


def test_no_function_is_longer_than_a_screen() -> None:
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    trees = _modules()
    known = set(trees)
    # A package's __init__ importing its own submodules lazily is not a cycle of design;
    # a submodule importing its package's names is what the graph checks.
    graph = {
        name: {m for m in _imports(tree, known) if m != name and not m.startswith(f"{name}.")}
        for name, tree in trees.items()
    }
    assert _cycle(graph) is None


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_cycle_finder_itself(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert _cycle(graph) == expected


MAX_MODULE_LINES = 500


def _long_modules(package: Path, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """Modules under ``package`` longer than ``limit`` lines, by path relative to it."""
    return {
        p.relative_to(package).as_posix(): n
        for p in sorted(package.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit
    }


def test_every_module_fits_one_concern() -> None:
    """mqttspool/ is split by concern: no module over ~500 lines."""
    assert _long_modules(PACKAGE) == {}


def test_the_module_size_rule_counts_lines(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "fits.py").write_text("x = 1\n" * MAX_MODULE_LINES, encoding="utf-8")
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
    assert _long_modules(tmp_path) == {"sub/long.py": MAX_MODULE_LINES + 1}
