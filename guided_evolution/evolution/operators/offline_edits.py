"""The edit kinds of the offline operators, each a source-position edit of a segment's code
guided by ``ast`` (comments and formatting outside the edited spans survive): numeric literal
nudges, swaps of compatible torch calls (``offline_swaps``), and duplicating or dropping a
statement. Pure and deterministic given the ``random.Random``.
"""

from __future__ import annotations

import ast
import math
import random
from collections.abc import Callable

from guided_evolution.evolution.operators.offline_source import (
    Source,
    dotted_name,
    format_float,
    is_number,
    position,
    shorten,
)
from guided_evolution.evolution.operators.offline_swaps import swap_edit

# ints passed to these calls/keywords are dimensions or indices, not sizes: never nudged
_DIM_CALLS = frozenset(
    {
        "view", "reshape", "permute", "transpose", "size", "flatten", "unsqueeze", "squeeze",
        "cat", "stack", "split", "chunk", "softmax", "log_softmax", "argmax", "argmin", "Flatten",
        "movedim", "narrow", "select", "index_select", "gather", "repeat", "expand",
    }
)  # fmt: skip
_DIM_KEYWORDS = frozenset({"dim", "axis", "start_dim", "end_dim", "dims", "groups", "num_classes"})



# ---------------------------------------------------------------------------------------------
# operator: nudge numeric literals


def _skip_literal(node: ast.Constant, parents: dict[int, ast.AST], rng: random.Random) -> bool:
    parent = parents.get(id(node))
    if isinstance(parent, ast.UnaryOp) and isinstance(node.value, int):
        return True  # -1 and friends: usually an index or a dimension
    if node.value == 1 and type(node.value) is int and rng.random() < 0.5:
        return True  # often structural (a stride, a single channel)
    child: ast.AST = node
    while parent is not None:
        if isinstance(parent, ast.Subscript) and child is parent.slice:
            return rng.random() < (0.9 if node.value in (0, 1) else 0.5)
        if isinstance(parent, ast.arguments):  # a default value: judge it by the parameter name
            return _default_name(parent, node) in _DIM_KEYWORDS
        if isinstance(parent, ast.keyword) and parent.arg in _DIM_KEYWORDS:
            return True
        if isinstance(parent, ast.Call) and child is not parent.func:
            name = dotted_name(parent.func) or ""
            return name.rsplit(".", 1)[-1] in _DIM_CALLS and isinstance(node.value, int)
        if isinstance(parent, (ast.stmt, ast.Lambda)):
            return False
        child, parent = parent, parents.get(id(parent))
    return False


def _default_name(args: ast.arguments, default: ast.AST) -> str | None:
    positional = [*args.posonlyargs, *args.args]
    for arg, value in zip(
        positional[len(positional) - len(args.defaults) :], args.defaults, strict=True
    ):
        if value is default:
            return arg.arg
    for arg, value in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if value is default:
            return arg.arg
    return None


def _nudge_int(value: int, rng: random.Random, strength: float) -> int:
    step = max(1, round(abs(value) * 0.5 * min(strength, 2.0)))
    new = value + rng.choice((-1, 1)) * rng.randint(1, step)
    if value > 0 and new < 1:
        new = 1 if value != 1 else 2
    return new if new != value else value + 1


def _nudge_float(value: float, rng: random.Random, strength: float) -> str | None:
    for _ in range(5):
        new = value * math.exp(rng.gauss(0.0, 0.3 * max(strength, 0.05)))
        if 0 < abs(value) < 1 and abs(new) >= 1:  # probabilities, rates, momenta stay below 1
            new = math.copysign(abs(value) + (1 - abs(value)) * 0.5, value)
        text = format_float(new)
        if float(text) != value:
            return text
    return None


def _op_nudge(src: Source, rng: random.Random, strength: float) -> tuple[str, str] | None:
    parents = src.parents
    numbers = sorted(
        (n for n in src.nodes if is_number(n)),
        key=position,
    )
    candidates = [n for n in numbers if not _skip_literal(n, parents, rng)]  # type: ignore[arg-type]
    if not candidates:
        return None
    count = min(len(candidates), rng.randint(1, max(1, round(3 * strength))))
    chosen = sorted(rng.sample(candidates, count), key=position)
    edits: list[tuple[int, int, str]] = []
    changes: list[str] = []
    done: set[int] = set()
    for node in chosen:
        if id(node) in done:
            continue
        value = node.value  # type: ignore[attr-defined]
        old = src.src(node)
        if isinstance(value, int):
            new = str(_nudge_int(value, rng, strength))
            group = [node]
            if rng.random() < 0.5:  # keep e.g. channel counts consistent across layers
                group = [n for n in candidates if type(n.value) is int and n.value == value]  # type: ignore[attr-defined]
        else:
            text = _nudge_float(value, rng, strength)
            if text is None:
                continue
            new, group = text, [node]
        for member in group:
            if id(member) not in done:
                done.add(id(member))
                start, end = src.span(member)
                edits.append((start, end, new))
        where = f" ({len(group)} places)" if len(group) > 1 else ""
        changes.append(f"{old} -> {new}{where}")
    if not edits:
        return None
    noun = "literal" if len(changes) == 1 else "literals"
    return src.edit(edits), f"nudged {len(changes)} numeric {noun} ({', '.join(changes)})"



# ---------------------------------------------------------------------------------------------
# operator: duplicate or drop a statement


def _names_in(node: ast.AST) -> set[str]:
    out: set[str] = set()
    for sub in ast.walk(node):
        dotted = dotted_name(sub)
        if dotted:
            out.add(dotted)
    return out


def _is_self_update(stmt: ast.stmt) -> bool:
    """`x = f(x)`-style statements (and augmented assignments): removable or repeatable."""
    if isinstance(stmt, ast.AugAssign):
        return True
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = dotted_name(stmt.targets[0])
        return target is not None and target in _names_in(stmt.value)
    return False


def _is_call_statement(stmt: ast.stmt) -> bool:
    """A bare call such as `layers.append(...)`; not `super().__init__(...)`."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    return not any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "super"
        for n in ast.walk(stmt.value)
    )


def _whole_lines(src: Source, stmt: ast.stmt) -> tuple[int, int] | None:
    """Char span of the full lines the statement occupies, or None when it shares a line."""
    start, end = src.span(stmt)
    line_start = src.line_starts[stmt.lineno - 1]
    if src.text[line_start:start].strip():
        return None
    assert stmt.end_lineno is not None
    line_end = src.line_starts[stmt.end_lineno]  # start of the next line
    rest = src.text[end:line_end].strip()
    if rest and not rest.startswith("#"):
        return None
    return line_start, min(line_end, len(src.text))


def _op_statement(src: Source, rng: random.Random, strength: float) -> tuple[str, str] | None:
    if src.wrapped:
        return None
    options: list[tuple[str, ast.stmt, tuple[int, int]]] = []
    for node in src.nodes:
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
                continue
            for stmt in block:
                if not (_is_self_update(stmt) or _is_call_statement(stmt)):
                    continue
                span = _whole_lines(src, stmt)
                if span is None:
                    continue
                options.append(("duplicated", stmt, span))
                if len(block) >= 2:
                    options.append(("dropped", stmt, span))
    if not options:
        return None
    options.sort(key=lambda o: (position(o[1]), o[0]))
    action, stmt, (start, end) = rng.choice(options)
    lines = src.text[start:end]
    if action == "dropped":
        new = src.edit([(start, end, "")])
    elif lines.endswith("\n"):
        new = src.edit([(end, end, lines)])
    else:  # the last line of the text, without a newline
        new = src.edit([(end, end, "\n" + lines)])
    return new, f"{action} statement `{shorten(src.src(stmt))}`"



EDITS: dict[str, Callable[[Source, random.Random, float], tuple[str, str] | None]] = {
    "nudge": _op_nudge,
    "swap": swap_edit,
    "statement": _op_statement,
}
