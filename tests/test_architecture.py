"""The structure ARCHITECTURE.md promises, checked on the source: no import cycle (between modules
or between packages, function-local and ``if TYPE_CHECKING:`` imports included), imports that
follow the data flow (the stages never import ``engine``, ``inspection`` never imports ``engine``,
``evolution`` does no I/O, and no import, ``TYPE_CHECKING`` or not, points back up the flow),
short functions, modules of one job."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "guided_evolution"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500
LONG_REASON = "is long because"  # a module over the limit says why in its docstring

# The flow's layers (ARCHITECTURE.md's data flow): a module imports its own layer's packages or
# lower ones, never a higher one. Top-level modules not named here (errors, fsutil, termsafe,
# config) are the base every package may use.
LAYERS = {
    "guided_evolution.evolution": 1,  # the stages
    "guided_evolution.llm": 1,
    "guided_evolution.runstore": 1,
    "guided_evolution.evaluation": 1,
    "guided_evolution.engine": 2,  # drives the stages
    "guided_evolution.inspection": 2,  # reads what runstore wrote
    "guided_evolution.tracking": 2,  # follows a run as inspection reads it; the engine starts it
    "guided_evolution.serve": 2,  # `ge serve`: reads runs as inspection does
    "guided_evolution.seedinit": 3,  # the CLI and what only it uses
    "guided_evolution.api": 3,  # the Python API, under the CLI
    "guided_evolution": 3,  # the package's __init__ re-exports the API
    "guided_evolution.cli": 3,
    "guided_evolution.__main__": 3,
}
STAGES = ("evolution", "llm", "runstore", "evaluation")
# evolution/ is pure: no I/O of its own (its prompt files are package data, read by prompts.py).
EVOLUTION_NEVER = (
    *(f"guided_evolution.{p}" for p in ("runstore", "evaluation", "llm", "engine", "inspection")),
    *("subprocess", "sqlite3", "asyncio", "socket", "shutil", "threading", "multiprocessing"),
    *("urllib", "http", "pygit2", "litellm", "openai", "httpx"),
)


@functools.cache
def _modules() -> dict[str, Path]:
    """Module name -> source file of the package (one walk of the tree per session)."""
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


@functools.cache
def _parsed(path: Path) -> ast.Module:
    """The syntax tree of one source file, parsed once for all the checks (never changed)."""
    return ast.parse(path.read_text(encoding="utf-8"))


@functools.cache
def _import_statements(path: Path) -> tuple[tuple[ast.Import | ast.ImportFrom, bool], ...]:
    """Every absolute import statement of a module, wherever it stands, and whether it is only
    under ``if TYPE_CHECKING:``."""
    tree = _parsed(path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    return tuple(
        (node, _type_checking_only(node, parents))
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        or (isinstance(node, ast.ImportFrom) and node.module and node.level == 0)
    )


def _imports(
    name: str, path: Path, modules: dict[str, Path], type_checking: bool = True
) -> set[str]:
    """The package's modules that ``name`` imports (``type_checking`` False: leaving out those
    imported only under ``if TYPE_CHECKING:``)."""
    found: set[str] = set()
    for node, only_typing in _import_statements(path):
        if only_typing and not type_checking:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            assert node.module is not None
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            # `from pkg import module` imports the module; `from module import name` only module
            targets = [t for t in targets if t in modules] or [node.module]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != "guided_evolution":
                found.add(target)
    return found


def _imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports, outside the package too (``a.b`` for ``from a.b``)."""
    names: set[str] = set()
    for node, _ in _import_statements(path):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.module:
            names.add(node.module)
    return names


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


def _layer(module: str) -> int:
    return LAYERS.get(_package_of(module), 0)


def _edges(type_checking: bool | None = None) -> list[tuple[str, str]]:
    """(importer, imported) of every import between the package's modules; ``type_checking``
    True: only those under ``if TYPE_CHECKING:``, False: only the others, None: all."""
    modules = _modules()
    out = []
    for name, path in modules.items():
        found = _imports(name, path, modules)
        if type_checking is not None:
            plain = _imports(name, path, modules, type_checking=False)
            found = found - plain if type_checking else plain
        out += [(name, target) for target in sorted(found)]
    return out


def test_the_checks_see_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "guided_evolution.engine.driver" in graph
    assert "guided_evolution.runstore.git_store" in graph["guided_evolution.runstore.recording"]
    assert _cycles(graph) == []


def test_the_checks_see_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport guided_evolution.config\n"
        "if TYPE_CHECKING:\n    from guided_evolution.engine.driver import Engine\n"
    )
    modules = _modules()
    assert _imports("m", source, modules) == {
        "guided_evolution.config",
        "guided_evolution.engine.driver",
    }
    assert _imports("m", source, modules, type_checking=False) == {"guided_evolution.config"}
    assert _layer("guided_evolution.engine.driver") > _layer("guided_evolution.runstore.records")


def test_no_import_cycle_between_packages() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        mine = _package_of(name)
        others = {_package_of(t) for t in _imports(name, path, modules)} - {mine}
        graph.setdefault(mine, set()).update(others)
    assert _cycles(graph) == []


def test_imports_follow_the_flow() -> None:
    """No import, ``if TYPE_CHECKING:`` ones included, points up the flow (a stage importing
    the engine, the engine importing the CLI, ...)."""
    up = [f"{a} -> {b}" for a, b in _edges() if _layer(b) > _layer(a)]
    assert up == []


def test_no_type_checking_import_points_back() -> None:
    """An ``if TYPE_CHECKING:`` import is for annotations only: it may not point up the flow
    nor close a cycle that the module graph without it does not show (both counted here)."""
    typing_only = _edges(type_checking=True)
    up = [f"{a} -> {b}" for a, b in typing_only if _layer(b) > _layer(a)]
    plain: dict[str, set[str]] = {}
    for a, b in _edges(type_checking=False):
        plain.setdefault(a, set()).add(b)
    closing = []
    for a, b in typing_only:
        graph = {k: set(v) for k, v in plain.items()}
        graph.setdefault(a, set()).add(b)
        if any(a in component for component in _cycles(graph)):
            closing.append(f"{a} -> {b}")
    assert (up, closing) == ([], [])


def test_the_stages_and_inspection_never_import_the_engine() -> None:
    engine = "guided_evolution.engine"
    readers = (*(f"guided_evolution.{p}" for p in STAGES), "guided_evolution.inspection", "guided_evolution.serve")
    found = [
        f"{a} -> {b}"
        for a, b in _edges()
        if _package_of(a) in readers and _package_of(b) == engine
    ]
    assert found == []


def test_the_cli_is_a_thin_layer_over_the_api() -> None:
    """cli.py reaches the engine, the store and the inspection readers only through
    ``guided_evolution.api``; of inspection it renders with ``terminal`` only."""
    modules = _modules()
    used = _imports("guided_evolution.cli", modules["guided_evolution.cli"], modules)
    assert "guided_evolution.api" in used
    below = ("engine", "runstore", "evaluation", "llm", "evolution")
    rendering = ("guided_evolution.inspection", "guided_evolution.inspection.terminal")
    direct = sorted(
        m for m in used
        if _package_of(m) in {f"guided_evolution.{p}" for p in below}
        or (_package_of(m) == "guided_evolution.inspection" and m not in rendering)
    )  # fmt: skip
    assert direct == [], "cli.py: go through guided_evolution.api"


@pytest.mark.parametrize(
    "name", [m for m in sorted(_modules()) if m.startswith("guided_evolution.evolution")]
)
def test_evolution_does_no_io(name: str) -> None:
    imported = _imported_names(_modules()[name])
    found = sorted(
        m for m in imported if any(m == bad or m.startswith(bad + ".") for bad in EVOLUTION_NEVER)
    )
    assert found == [], f"{name} is pure (ARCHITECTURE.md): no I/O, no asyncio, no other stage"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_functions_are_short(name: str) -> None:
    tree = _parsed(_modules()[name])
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
    docstring = ast.get_docstring(_parsed(_modules()[name])) or ""
    assert LONG_REASON in docstring, f"{name}: split it, or say in its docstring why it {LONG_REASON} ..."
