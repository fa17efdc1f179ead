"""Every code reference in ARCHITECTURE.md and docs/*.md names something that exists, and
ARCHITECTURE.md stays a short map (at most ``MAX_MAP_BYTES``).

A reference is, in an inline code span (or, for paths and ``guided_evolution.…`` names, anywhere
outside one):

- a path: ``guided_evolution/…``, a path relative to the package (``evaluation/sandbox/wrap.py``,
  ``engine/``), a path from the repository's root (``tests/…``, ``prompts/novelty.txt``), or a bare
  ``name.py`` (some tracked file of that name); a markdown link's local target;
- a column of the run index (``variants.island``), checked against ``index_schema``'s tables;
- a dotted name whose first part is one of ours: ``guided_evolution.x.y``, a module or package
  (``plan.plan_child``, ``evaluation.contract.Executor``, ``sandbox.wrap.Sandbox``) or a class
  (``Recorder.commit``), each part resolved on the source with ``ast`` (nothing is imported);
- a bare ``CamelCase`` name (a class of ours, a builtin, or a foreign name listed in ``FOREIGN``)
  or a bare ``name()`` (a function or method defined somewhere in the package).

Prose stays prose: spans with spaces, file names with a data extension (``config.json``,
``ge.toml``), table names in brackets (``[llm.bandit]``), placeholders (``<id>``) and dotted names
whose first part is not ours (``os.O_NOFOLLOW``) are not references.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "guided_evolution"
MAP = ROOT / "ARCHITECTURE.md"
MAX_MAP_BYTES = 12_000
# pyproject's package-dir: the prompts ship as this package.
PACKAGE_DIRS = {f"{PACKAGE}.builtin_prompts": "prompts"}
DATA_EXTENSIONS = {
    *("json", "toml", "txt", "md", "sqlite", "log", "sh", "git", "lock", "out", "html", "cfg"),
    *("yaml", "yml", "pyc", "so", "tar", "gz", "csv", "patch", "diff", "svg", "png"),
}
# Names of other projects that the docs show in backticks (libraries, kernel, tools).
FOREIGN = {
    "AsyncOpenAI", "TreeBuilder", "GitPython", "GitDB", "BaseModel", "TYPE_CHECKING",
    "Levenshtein", "SIGKILL", "SIGTERM",
}  # fmt: skip

_SPAN = re.compile(r"(?<!`)`((?:[^`\n]|\n(?!\s*\n))+)`(?!`)")  # may wrap, not span a blank line
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_PATH_ANYWHERE = re.compile(r"(?<![\w/.-])(guided_evolution/[\w/]+(?:\.py)?)")
_DOTTED_ANYWHERE = re.compile(r"(?<![\w.])(guided_evolution(?:\.[A-Za-z_]\w*)+)")
_PY_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.py)\b")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_CALL = re.compile(r"^([A-Za-z_][\w.]*)\(.*\)$")
_CAMEL = re.compile(r"[A-Z][a-z0-9]+[A-Z]\w*|[A-Z]\w*[a-z]\w*")


@dataclass
class ClassInfo:
    """A class's own attributes (methods, class-level and ``self.`` assignments) and its bases."""

    attrs: set[str] = field(default_factory=set)
    bases: list[str] = field(default_factory=list)


@dataclass
class ModuleInfo:
    """What a module defines (an ``__init__`` also what it imports: its re-exports)."""

    path: Path
    names: set[str] = field(default_factory=set)
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, name)


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _class_info(node: ast.ClassDef) -> ClassInfo:
    info = ClassInfo(bases=[ast.unparse(b).split(".")[-1].split("[")[0] for b in node.bases])
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            info.attrs.add(item.name)
        info.attrs.update(_targets(item))
    for sub in ast.walk(node):
        for target in getattr(sub, "targets", [getattr(sub, "target", None)]):
            if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self":
                info.attrs.add(target.attr)
    return info


def _module_info(path: Path, name: str) -> ModuleInfo:
    info = ModuleInfo(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            info.names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            info.names.add(node.name)
            info.classes[node.name] = _class_info(node)
        elif isinstance(node, ast.ImportFrom) and path.name == "__init__.py" and node.module:
            for alias in node.names:
                info.imported[alias.asname or alias.name] = (node.module, alias.name)
        info.names.update(_targets(node))
        if isinstance(node, ast.If | ast.Try):  # names defined under a guard
            for sub in ast.walk(node):
                if isinstance(sub, ast.FunctionDef | ast.ClassDef):
                    info.names.add(sub.name)
                info.names.update(_targets(sub))
    return info


@dataclass
class Index:
    """Every module of the package, parsed, and the repository's tracked files."""

    modules: dict[str, ModuleInfo]
    files: set[str]  # repository-relative paths of the source tree
    tables: dict[str, set[str]]  # the run index's tables and their columns (``table.column``)

    @property
    def basenames(self) -> set[str]:
        return {f.rsplit("/", 1)[-1] for f in self.files}

    def by_last_part(self, part: str) -> list[str]:
        return [m for m in self.modules if m.rsplit(".", 1)[-1] == part]

    def classes_named(self, name: str) -> list[tuple[str, ClassInfo]]:
        return [(m, i.classes[name]) for m, i in self.modules.items() if name in i.classes]

    def functions(self) -> set[str]:
        found: set[str] = set()
        for info in self.modules.values():
            found |= info.names
            for cls in info.classes.values():
                found |= cls.attrs
        return found


@cache
def build_index(root: Path = ROOT) -> Index:
    """Parse the package under ``root`` (and list its files) once."""
    modules: dict[str, ModuleInfo] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = _module_info(path, name)
    skip = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
    files = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not skip.intersection(p.relative_to(root).parts)
    }
    schema = (root / PACKAGE / "runstore" / "index_schema.py").read_text(encoding="utf-8")
    tables = {
        name: set(re.findall(r"^\s+(\w+) [A-Z]", body, re.M))
        for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\);", schema, re.S)
    }
    return Index(modules, files, tables)


def _class_has(index: Index, cls: ClassInfo, attr: str, seen: frozenset[str] = frozenset()) -> bool:
    if attr in cls.attrs:
        return True
    for base in cls.bases:
        if base not in seen:
            for _, info in index.classes_named(base):
                if _class_has(index, info, attr, seen | {base}):
                    return True
    return False


def _resolve_in_module(index: Index, module: str, rest: list[str]) -> bool:
    """Does ``module`` (dotted, ours) have the attribute path ``rest``?"""
    if not rest:
        return True
    head, tail = rest[0], rest[1:]
    if f"{module}.{head}" in index.modules:
        return _resolve_in_module(index, f"{module}.{head}", tail)
    info = index.modules[module]
    if head in info.imported:
        source, name = info.imported[head]
        if source in index.modules:
            return _resolve_in_module(index, source, [name, *tail])
        return not tail
    if head not in info.names:
        return False
    if not tail:
        return True
    cls = info.classes.get(head)
    return cls is not None and len(tail) == 1 and _class_has(index, cls, tail[0])


def dotted_problem(index: Index, ref: str) -> str | None:
    """Why the dotted name ``ref`` names nothing of ours (None: it resolves, or is not ours)."""
    parts = ref.split(".")
    if parts[-1] in DATA_EXTENSIONS:
        return None  # a file name (config.json), not a dotted name
    if parts[0] == PACKAGE:
        prefix = ".".join(parts[:2])
        if prefix in PACKAGE_DIRS:
            target = ROOT / PACKAGE_DIRS[prefix]
            ok = target.joinpath(*parts[2:]).with_suffix(".txt").exists() if parts[2:] else True
            return None if ok else f"{ref}: nothing of that name"
        ok = _resolve_in_module(index, PACKAGE, parts[1:])
        return None if ok else f"{ref}: nothing of that name"
    if len(parts) == 2 and parts[1] in index.tables.get(parts[0], ()):
        return None  # a column of the run index (generations.islands)
    modules = index.by_last_part(parts[0])
    if modules:
        if any(_resolve_in_module(index, m, parts[1:]) for m in modules):
            return None
        return f"{ref}: {parts[0]} ({', '.join(modules)}) has no {'.'.join(parts[1:])}"
    classes = index.classes_named(parts[0])
    if classes:
        if len(parts) == 2 and any(_class_has(index, c, parts[1]) for _, c in classes):
            return None
        return f"{ref}: class {parts[0]} has no {'.'.join(parts[1:])}"
    if parts[0] in index.tables:
        return f"{ref}: the index's {parts[0]} table has no column {'.'.join(parts[1:])}"
    return None  # not ours (os.O_NOFOLLOW, torch.nn, e.g.)


def path_problem(index: Index, ref: str) -> str | None:
    """Why the path ``ref`` names no file or folder of the repository (None: it does, or it is
    not a path into the repository)."""
    if any(c in ref for c in "<>*{}$~ ") or "://" in ref:
        return None  # a placeholder, a glob, a URL
    clean = ref.strip("/").removeprefix("./")
    if not clean:
        return None
    first = clean.split("/", 1)[0]
    top = {f.split("/", 1)[0] for f in index.files}
    package_dirs = {f.split("/")[1] for f in index.files if f.startswith(f"{PACKAGE}/")}
    if "/" not in clean and "/" not in ref:
        if clean.endswith(".py"):
            ok = clean in index.basenames
            return None if ok else f"{ref}: no file of that name"
        return None
    if first in top:
        return None if clean in index.files else f"{ref}: no such path"
    if first in package_dirs:
        ok = f"{PACKAGE}/{clean}" in index.files
        return None if ok else f"{ref}: no such path under {PACKAGE}/"
    return None  # a run directory's path (repo.git/, slurm/), not the repository's


def span_problems(index: Index, span: str) -> list[str]:
    """The stale references in one inline code span."""
    text = " ".join(span.split())  # a span wrapped over lines reads as one line
    call = _CALL.match(text)
    if call:
        text = call.group(1)
    if " " in text or text.startswith("["):
        return [p for p in (path_problem(index, m) for m in _PY_PATH.findall(text)) if p]
    if "/" in text or text.endswith(".py"):
        problem = path_problem(index, text)
        return [problem] if problem else []
    if _DOTTED.fullmatch(text):
        problem = dotted_problem(index, text)
        return [problem] if problem else []
    if call and re.fullmatch(r"[a-z_]\w*", text):
        known = text in index.functions() or hasattr(builtins, text)
        return [] if known else [f"{text}(): no function of that name"]
    if _CAMEL.fullmatch(text) and "_" not in text:
        known = bool(index.classes_named(text)) or text in index.functions()
        ok = known or hasattr(builtins, text) or text in FOREIGN
        return [] if ok else [f"{text}: no class of that name (a foreign one goes in FOREIGN)"]
    return []


def problems(index: Index, markdown: str, base: Path = ROOT) -> list[str]:
    """Every stale reference of a markdown text (``base``: its folder, for relative links)."""
    found: list[str] = []
    for fence in _FENCE.findall(markdown):
        found += [p for p in (path_problem(index, m) for m in _PY_PATH.findall(fence)) if p]
    prose = _FENCE.sub("", markdown)
    for target in _LINK.findall(prose):
        local = "://" not in target and not target.startswith("mailto:")
        if local and not (base / target).exists():
            found.append(f"{target}: the link's target does not exist")
    for span in _SPAN.findall(prose):
        found += span_problems(index, span)
    outside = _SPAN.sub("", prose)
    found += [p for p in (path_problem(index, m) for m in _PATH_ANYWHERE.findall(outside)) if p]
    found += [p for p in (dotted_problem(index, m) for m in _DOTTED_ANYWHERE.findall(outside)) if p]
    return found


def _documents() -> list[Path]:
    return [MAP, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reference_names_something_that_exists(doc: Path) -> None:
    assert doc.exists(), f"{doc.relative_to(ROOT)} is missing"
    assert problems(build_index(), doc.read_text(encoding="utf-8"), doc.parent) == []


def test_the_map_is_short() -> None:
    size = len(MAP.read_bytes())
    assert size <= MAX_MAP_BYTES, f"ARCHITECTURE.md is {size} bytes; move detail to docs/"


def test_the_map_names_every_module() -> None:
    text = MAP.read_text(encoding="utf-8")
    package = ROOT / PACKAGE
    modules = [
        p.relative_to(package)
        for p in sorted(package.rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py") and "templates" not in p.parts
    ]
    assert [str(m) for m in modules if f"`{m.name}`" not in text] == []


def test_the_design_notes_are_linked_from_the_map() -> None:
    text = MAP.read_text(encoding="utf-8")
    notes = sorted((ROOT / "docs").glob("*.md"))
    assert notes, "docs/ holds no design note"
    assert [n.name for n in notes if f"docs/{n.name}" not in text] == []


STALE = """
The one definition of a valid score is `selection.scored`; the bandit reads
`engine/bandit_history.py` and `guided_evolution/evaluation/sandbox_bwrap.py`; prompts may show
`Recorder.objective_metrics`; the slurm room starts at `guided_evolution.evaluation.slurm.launch`;
see `sandbox_exec.py`, `evaluation/sandbox/nowhere.py`, `RecorderOfOld` and `plan_everything()`;
`variants.no_such_column`;
[the note](docs/none.md). Outside a span: guided_evolution/engine/driverless.py. A wrapped span:
`python
benchmarks/nowhere.py --quick` (then `plan.plan_child`).
"""
FRESH = """
`scoring.scored`, `evolution/bandit_history.py`, `guided_evolution/evaluation/sandbox/bwrap.py`,
`RunReader.objective_metrics`, `guided_evolution.evaluation.slurm.executor.SlurmExecutor`,
`plan.plan_child(...)`, `evaluation.contract.Executor`, `Sandbox.wrap`, `record_variant()`,
`operators.child_from_reply`, `guided_evolution.builtin_prompts`, `tests/test_docs.py`,
`prompts/novelty.txt`, `templates/ge.toml`, `engine/`, [the map](ARCHITECTURE.md), `python
benchmarks/diversity.py` (then `Sandbox.probe`).
"""
PROSE = """
A run writes `config.json`, `index.sqlite` and `repo.git/` beside `ge.toml`; set `[llm.bandit]
kind` or `[evolution.islands] count`; `os.O_NOFOLLOW`, `torch.nn.ReLU`, `e.g.`, `v/<gen>/<id>`,
`prompts/mutate_<kind>_<persona>.txt`, `ge run --profile paper`, `GE_METRICS`, `slurm/`,
`python -m MODULE`, `TreeBuilder`, `ValueError`, `len()`, `generations.islands`, 3.5 s, i.e.
a sentence. e.g. more.
"""


def test_the_checker_names_each_stale_reference() -> None:
    found = problems(build_index(), STALE)
    named = [p.split(":", 1)[0] for p in found]
    assert named == [
        "docs/none.md",
        "selection.scored",
        "engine/bandit_history.py",
        "guided_evolution/evaluation/sandbox_bwrap.py",
        "Recorder.objective_metrics",
        "guided_evolution.evaluation.slurm.launch",
        "sandbox_exec.py",
        "evaluation/sandbox/nowhere.py",
        "RecorderOfOld",
        "plan_everything()",
        "variants.no_such_column",
        "benchmarks/nowhere.py",
        "guided_evolution/engine/driverless.py",
    ], found


def test_the_checker_passes_real_references_and_prose() -> None:
    assert problems(build_index(), FRESH) == []
    assert problems(build_index(), PROSE) == []
