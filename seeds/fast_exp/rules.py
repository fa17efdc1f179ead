"""Static rules of a fast_exp candidate's source, checked before it runs (the ast only, no numpy).

They keep a candidate inside the contract that `tracer.py` records: no imports other than numpy and
math, no private attributes (`x._values`, `__class__`), no attribute assignment (monkey-patching),
no introspection or dynamic code (`eval`, `getattr`, `globals`, ...), and no frame or traceback
attributes (`gi_frame`, `f_back`, `tb_frame`, ...) that would reach the tracer's own state. They
are a first line only: whatever runs in the tracer's process, the evaluator scores the graph it
replays itself (`opcount.replay`), not anything that process says about costs or accuracy.
"""

from __future__ import annotations

import ast

ALLOWED_IMPORTS = frozenset({"numpy", "math"})
FORBIDDEN_NAMES = frozenset(
    {"eval", "exec", "compile", "getattr", "setattr", "delattr", "globals", "locals", "vars",
     "open", "breakpoint", "input", "type", "isinstance", "issubclass", "id", "dir", "object",
     "memoryview", "help"}
)  # fmt: skip
# Attributes of generators, coroutines, tracebacks and frames: the way from a value to its frame.
FRAME_ATTRIBUTES = frozenset(
    {"gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame",
     "ag_code", "ag_await", "tb_frame", "tb_next", "f_back", "f_globals", "f_locals",
     "f_builtins", "f_code"}
)  # fmt: skip


class Escape(Exception):
    """The candidate left the contract; the message says how and what to do instead."""


def _foreign_imports(node: ast.AST) -> str:
    """The modules other than numpy and math that an import statement imports ("" if none)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module or "."]
    else:
        return ""
    return ", ".join(n for n in names if n.split(".")[0] not in ALLOWED_IMPORTS)


def source_violations(source: str) -> list[str]:
    """The static rules the candidate's source breaks, as reasons (empty: none)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"the source does not parse: {exc.msg} (line {exc.lineno})"]
    out: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        bad = _foreign_imports(node)
        if bad:
            out.append(f"line {line}: imports {bad}: only numpy and math may be imported")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            out.append(f"line {line}: the private attribute .{node.attr} (no introspection)")
        if isinstance(node, ast.Attribute) and node.attr in FRAME_ATTRIBUTES:
            out.append(f"line {line}: the frame attribute .{node.attr} (no introspection)")
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.append(f"line {line}: assigns the attribute .{node.attr} (no monkey-patching)")
        if isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or node.id.startswith("__")):
            out.append(f"line {line}: uses {node.id} (no introspection or dynamic code)")
    return out
