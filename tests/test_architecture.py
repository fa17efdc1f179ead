"""The structure ARCHITECTURE.md promises, checked on the source: no import cycle (between modules
or between packages, function-local imports included), short functions, modules of one job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "guided_evolution"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
LONG_REASON = "is long because"  # a module over the limit says why in its docstring


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "templates" in path.parts:
            continue  # the user's template seed, not ge's code
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            # `from pkg import module` imports the module; `from module import name` only module
            targets = [t for t in targets if t in modules] or [node.module]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != "guided_evolution":
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_the_checks_see_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "guided_evolution.engine.driver" in graph
    assert "guided_evolution.runstore.git_store" in graph["guided_evolution.runstore.recording"]
    assert _cycles(graph) == []


def test_no_import_cycle_between_packages() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        mine = _package_of(name)
        others = {_package_of(t) for t in _imports(name, path, modules)} - {mine}
        graph.setdefault(mine, set()).update(others)
    assert _cycles(graph) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_functions_are_short(name: str) -> None:
    tree = ast.parse(_modules()[name].read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"split these functions of {name}"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_long_modules_say_why(name: str) -> None:
    text = _modules()[name].read_text(encoding="utf-8")
    if len(text.splitlines()) <= MAX_MODULE_LINES:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert LONG_REASON in docstring, f"{name}: split it, or say in its docstring why it {LONG_REASON} ..."
