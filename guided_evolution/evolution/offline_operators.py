"""The built-in no-LLM baseline (``--model offline``): classic genetic-programming edits.

Mutation works on one segment's code with source-position edits guided by ``ast`` (so comments
and formatting outside the edited spans survive): numeric literal nudges, swaps between
compatible torch calls (activations, pooling, normalisation, optimisers) and duplicating or
dropping a statement. Crossover exchanges whole segments between two parents. Everything is
deterministic given the ``random.Random`` passed in.
"""

from __future__ import annotations

import ast
import math
import random
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guided_evolution.evolution.segments import Genome, Segment, differing_segments, parse_genome
from guided_evolution.evolution.splice import SpliceError, splice

OPERATORS = ("nudge", "swap", "statement")
_WEIGHTS = {"nudge": 0.45, "swap": 0.3, "statement": 0.25}

_ACT_MODULES = ("ReLU", "GELU", "SiLU", "ELU", "LeakyReLU", "Tanh", "Hardswish", "Mish")
_ACT_MODULES_INPLACE = frozenset({"ReLU", "SiLU", "ELU", "LeakyReLU", "Hardswish", "Mish"})
_ACT_FUNCS = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "hardswish", "mish")
_ACT_FUNCS_INPLACE = frozenset({"relu", "silu", "elu", "leaky_relu", "hardswish", "mish"})
_TORCH_ACTS = frozenset({"relu", "tanh"})  # torch.<name> activations (swapped via functional)
_FUNCTIONAL_PREFIXES = ("F", "functional", "nn.functional", "torch.nn.functional")
_POOL_RE = re.compile(r"(Adaptive)?(Max|Avg)Pool([123])d")
_FPOOL_RE = re.compile(r"(adaptive_)?(max|avg)_pool([123])d")
_NORM_RE = re.compile(r"(BatchNorm|InstanceNorm)([23])d")
_OPTIMISERS = {
    "SGD": frozenset({"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"}),
    "Adam": frozenset({"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}),
    "AdamW": frozenset({"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}),
    "RMSprop": frozenset({"lr", "alpha", "eps", "weight_decay", "momentum", "centered"}),
}
# ints passed to these calls/keywords are dimensions or indices, not sizes: never nudged
_DIM_CALLS = frozenset(
    {
        "view", "reshape", "permute", "transpose", "size", "flatten", "unsqueeze", "squeeze",
        "cat", "stack", "split", "chunk", "softmax", "log_softmax", "argmax", "argmin", "Flatten",
        "movedim", "narrow", "select", "index_select", "gather", "repeat", "expand",
    }
)  # fmt: skip
_DIM_KEYWORDS = frozenset({"dim", "axis", "start_dim", "end_dim", "dims", "groups", "num_classes"})


@dataclass(frozen=True)
class OfflineEdit:
    """A mutated segment body and what was done to it."""

    code: str  # the new segment body
    description: str  # e.g. "nudged 3 numeric literals; swapped ReLU -> GELU"


# ---------------------------------------------------------------------------------------------
# source handling


class _Source:
    """A segment's code, dedented, and wrapped in brackets when it is a fragment of a literal."""

    def __init__(self, text: str, wrap: tuple[str, str] = ("", "")) -> None:
        self.text = text
        self.wrap = wrap
        self.tree = ast.parse(text)
        self.line_starts = [0]
        for line in text.split("\n"):
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
        self._lines = text.split("\n")

    @property
    def wrapped(self) -> bool:
        return self.wrap != ("", "")

    @staticmethod
    def parse(code: str) -> _Source | None:
        dedented = textwrap.dedent(code)
        for prefix in ("", "(\n", "[\n", "{\n"):
            for suffix in ("", "\n)", "\n]", "\n}"):
                try:
                    return _Source(prefix + dedented + suffix, (prefix, suffix))
                except (SyntaxError, ValueError):
                    continue
        return None

    def offset(self, row: int, col: int) -> int:
        """Char offset of an ast (1-based row, utf-8 byte col) position."""
        line = self._lines[row - 1]
        return self.line_starts[row - 1] + len(
            line.encode("utf-8")[:col].decode("utf-8", "replace")
        )

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    def src(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.text[start:end]

    def edit(self, edits: Sequence[tuple[int, int, str]]) -> str:
        """The text with the (non-overlapping) spans replaced."""
        out = self.text
        for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
            out = out[:start] + new + out[end:]
        return out

    def unwrap(self, text: str) -> str:
        prefix, suffix = self.wrap
        return text[len(prefix) : len(text) - len(suffix)]


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    out: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            out[id(child)] = node
    return out


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _position(node: ast.AST) -> tuple[int, int]:
    return node.lineno, node.col_offset  # type: ignore[attr-defined]


def _short(text: str, limit: int = 60) -> str:
    line = text.strip().split("\n")[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# operator: nudge numeric literals


def _is_number(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
        and node.value != 0
        and math.isfinite(node.value)
    )


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
            name = _dotted(parent.func) or ""
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


def _format_float(value: float) -> str:
    text = f"{value:.3g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text


def _nudge_float(value: float, rng: random.Random, strength: float) -> str | None:
    for _ in range(5):
        new = value * math.exp(rng.gauss(0.0, 0.3 * max(strength, 0.05)))
        if 0 < abs(value) < 1 and abs(new) >= 1:  # probabilities, rates, momenta stay below 1
            new = math.copysign(abs(value) + (1 - abs(value)) * 0.5, value)
        text = _format_float(new)
        if float(text) != value:
            return text
    return None


def _op_nudge(src: _Source, rng: random.Random, strength: float) -> tuple[str, str] | None:
    parents = _parents(src.tree)
    numbers = sorted(
        (n for n in ast.walk(src.tree) if _is_number(n)),
        key=_position,
    )
    candidates = [n for n in numbers if not _skip_literal(n, parents, rng)]  # type: ignore[arg-type]
    if not candidates:
        return None
    count = min(len(candidates), rng.randint(1, max(1, round(3 * strength))))
    chosen = sorted(rng.sample(candidates, count), key=_position)
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
# operator: swap a call for a compatible one


@dataclass(frozen=True)
class _Swap:
    start: int
    end: int
    text: str
    description: str


def _simple_args(call: ast.Call) -> bool:
    return not any(isinstance(a, ast.Starred) for a in call.args) and all(
        k.arg is not None for k in call.keywords
    )


def _render_call(
    src: _Source,
    func: str,
    call: ast.Call,
    n_positional: int,
    keep: frozenset[str],
    replace: dict[int, str] | None = None,
) -> tuple[str, list[str]]:
    """`func(...)` keeping the first positional args and the keywords in `keep`; dropped names.

    `replace` maps id(argument node) -> new source for that argument.
    """
    replace = replace or {}

    def text(node: ast.expr) -> str:
        return replace.get(id(node), src.src(node))

    parts = [text(a) for a in call.args[:n_positional]]
    dropped = [f"arg {i + 1}" for i in range(n_positional, len(call.args))]
    for kw in call.keywords:
        if kw.arg in keep:
            parts.append(f"{kw.arg}={text(kw.value)}")
        else:
            dropped.append(str(kw.arg))
    return f"{func}({', '.join(parts)})", dropped


def _dropped_note(dropped: list[str]) -> str:
    return f" (dropped {', '.join(dropped)})" if dropped else ""


def _swap_activation_module(
    src: _Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap:
    target = rng.choice([a for a in _ACT_MODULES if a != name])
    keep = frozenset({"inplace"}) if target in _ACT_MODULES_INPLACE else frozenset()
    text, dropped = _render_call(src, f"{prefix}.{target}", call, 0, keep)
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}")


def _swap_activation_func(
    src: _Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap:
    target = rng.choice([a for a in _ACT_FUNCS if a != name])
    if prefix == "torch":
        prefix = "torch.nn.functional"
    keep = frozenset({"input", "inplace"} if target in _ACT_FUNCS_INPLACE else {"input"})
    text, dropped = _render_call(src, f"{prefix}.{target}", call, 1, keep)
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}")


def _swap_pool(src: _Source, call: ast.Call, prefix: str, name: str, functional: bool) -> _Swap:
    if functional:
        match = _FPOOL_RE.fullmatch(name)
        assert match is not None
        adaptive, kind, dim = match.groups()
        target = f"{adaptive or ''}{'avg' if kind == 'max' else 'max'}_pool{dim}d"
        n_pos, keep = (
            (2, {"input", "output_size"})
            if adaptive
            else (4, {"input", "kernel_size", "stride", "padding", "ceil_mode"})
        )
    else:
        match = _POOL_RE.fullmatch(name)
        assert match is not None
        adaptive, kind, dim = match.groups()
        target = f"{adaptive or ''}{'Avg' if kind == 'Max' else 'Max'}Pool{dim}d"
        n_pos, keep = (
            (1, {"output_size"})
            if adaptive
            else (3, {"kernel_size", "stride", "padding", "ceil_mode"})
        )
    text, dropped = _render_call(src, f"{prefix}.{target}", call, n_pos, frozenset(keep))
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}")


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    """A call's argument given by position or by keyword, if present."""
    if len(call.args) > position:
        return call.args[position]
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return None


def _eps(src: _Source, call: ast.Call) -> str:
    for kw in call.keywords:
        if kw.arg == "eps":
            return f", eps={src.src(kw.value)}"
    return ""


def _swap_norm(
    src: _Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap | None:
    start, end = src.span(call)
    if name == "GroupNorm":
        channels = _argument(call, 1, "num_channels")
        if channels is None:
            return None
        target = "BatchNorm2d"
        text = f"{prefix}.{target}({src.src(channels)}{_eps(src, call)})"
        return _Swap(start, end, text, f"swapped GroupNorm -> {target}")
    match = _NORM_RE.fullmatch(name)
    assert match is not None
    kind, dim = match.groups()
    channels = _argument(call, 0, "num_features")
    if channels is None:
        return None
    c = src.src(channels)
    if kind == "InstanceNorm":
        target = f"BatchNorm{dim}d"
        text = f"{prefix}.{target}({c}{_eps(src, call)})"
    elif dim == "2" and rng.random() < 0.5:
        target = "GroupNorm"
        groups = 1
        value = getattr(channels, "value", None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            groups = rng.choice([g for g in (1, 2, 4, 8, 16, 32) if value % g == 0])
        text = f"{prefix}.GroupNorm({groups}, {c}{_eps(src, call)})"
    else:
        target = f"InstanceNorm{dim}d"
        text = f"{prefix}.{target}({c}{_eps(src, call)}, affine=True)"
    return _Swap(start, end, text, f"swapped {name} -> {target}")


def _swap_optimiser(
    src: _Source, call: ast.Call, prefix: str, name: str, rng: random.Random
) -> _Swap:
    target = rng.choice([o for o in _OPTIMISERS if o != name])
    replace: dict[int, str] = {}
    note = ""
    lr = _argument(call, 1, "lr")
    value = getattr(lr, "value", None)
    adaptive_change = (name == "SGD") != (target == "SGD")
    if lr is not None and adaptive_change and _is_number(lr) and value > 0:  # type: ignore[operator]
        new_lr = _format_float(value * (0.1 if target != "SGD" else 10.0))  # type: ignore[operator]
        replace[id(lr)] = new_lr
        note = f" (lr {src.src(lr)} -> {new_lr})"
    keep = _OPTIMISERS[target] | {"params"}
    text, dropped = _render_call(src, f"{prefix}.{target}", call, 2, keep, replace)
    start, end = src.span(call)
    return _Swap(start, end, text, f"swapped {name} -> {target}{_dropped_note(dropped)}{note}")


def _swap_candidates(src: _Source) -> list[tuple[ast.AST, str]]:
    """(node, family) for every swappable call or activation class reference."""
    out: list[tuple[ast.AST, str]] = []
    calls: set[int] = set()
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Call) and _simple_args(node):
            family = _call_family(_dotted(node.func))
            if family:
                out.append((node, family))
                calls.add(id(node.func))
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Attribute) and id(node) not in calls:
            name = _dotted(node)
            if name and _call_family(name) == "act_module":
                out.append((node, "act_ref"))
    out.sort(key=lambda item: _position(item[0]))
    return out


def _call_family(name: str | None) -> str | None:
    if not name or "." not in name:
        return None
    prefix, last = name.rsplit(".", 1)
    nn_prefix = prefix == "nn" or prefix.endswith(".nn")
    if nn_prefix and last in _ACT_MODULES:
        return "act_module"
    if (prefix in _FUNCTIONAL_PREFIXES and last in _ACT_FUNCS) or (
        prefix == "torch" and last in _TORCH_ACTS
    ):
        return "act_func"
    if nn_prefix and _POOL_RE.fullmatch(last):
        return "pool"
    if prefix in _FUNCTIONAL_PREFIXES and _FPOOL_RE.fullmatch(last):
        return "fpool"
    if nn_prefix and (_NORM_RE.fullmatch(last) or last == "GroupNorm"):
        return "norm"
    if (prefix == "optim" or prefix.endswith(".optim")) and last in _OPTIMISERS:
        return "optim"
    return None


def _op_swap(src: _Source, rng: random.Random, strength: float) -> tuple[str, str] | None:
    candidates = _swap_candidates(src)
    rng.shuffle(candidates)
    for node, family in candidates:
        swap = _make_swap(src, node, family, rng)
        if swap is not None:
            return src.edit([(swap.start, swap.end, swap.text)]), swap.description
    return None


def _make_swap(src: _Source, node: ast.AST, family: str, rng: random.Random) -> _Swap | None:
    if family == "act_ref":
        prefix, name = (_dotted(node) or "").rsplit(".", 1)
        target = rng.choice([a for a in _ACT_MODULES if a != name])
        start, end = src.span(node)
        return _Swap(start, end, f"{prefix}.{target}", f"swapped {name} -> {target}")
    assert isinstance(node, ast.Call)
    prefix, name = (_dotted(node.func) or "").rsplit(".", 1)
    if family == "act_module":
        return _swap_activation_module(src, node, prefix, name, rng)
    if family == "act_func":
        return _swap_activation_func(src, node, prefix, name, rng)
    if family in ("pool", "fpool"):
        return _swap_pool(src, node, prefix, name, functional=family == "fpool")
    if family == "norm":
        if name == "GroupNorm" and "2d" not in src.text:
            return None
        return _swap_norm(src, node, prefix, name, rng)
    if family == "optim":
        return _swap_optimiser(src, node, prefix, name, rng)
    return None


# ---------------------------------------------------------------------------------------------
# operator: duplicate or drop a statement


def _names_in(node: ast.AST) -> set[str]:
    out: set[str] = set()
    for sub in ast.walk(node):
        dotted = _dotted(sub)
        if dotted:
            out.add(dotted)
    return out


def _is_self_update(stmt: ast.stmt) -> bool:
    """`x = f(x)`-style statements (and augmented assignments): removable or repeatable."""
    if isinstance(stmt, ast.AugAssign):
        return True
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = _dotted(stmt.targets[0])
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


def _whole_lines(src: _Source, stmt: ast.stmt) -> tuple[int, int] | None:
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


def _op_statement(src: _Source, rng: random.Random, strength: float) -> tuple[str, str] | None:
    if src.wrapped:
        return None
    options: list[tuple[str, ast.stmt, tuple[int, int]]] = []
    for node in ast.walk(src.tree):
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
    options.sort(key=lambda o: (_position(o[1]), o[0]))
    action, stmt, (start, end) = rng.choice(options)
    lines = src.text[start:end]
    if action == "dropped":
        new = src.edit([(start, end, "")])
    elif lines.endswith("\n"):
        new = src.edit([(end, end, lines)])
    else:  # the last line of the text, without a newline
        new = src.edit([(end, end, "\n" + lines)])
    return new, f"{action} statement `{_short(src.src(stmt))}`"


_OPS: dict[str, Callable[[_Source, random.Random, float], tuple[str, str] | None]] = {
    "nudge": _op_nudge,
    "swap": _op_swap,
    "statement": _op_statement,
}


# ---------------------------------------------------------------------------------------------
# public API


def offline_mutate(
    segment: Segment,
    rng: random.Random,
    strength: float = 1.0,
    operators: Sequence[str] = OPERATORS,
) -> OfflineEdit:
    """A random GP edit of the segment's code that parses and differs from it.

    `operators` restricts the operator classes ("nudge", "swap", "statement"); `strength`
    scales how many literals change and how far. SpliceError when no edit applies.
    """
    unknown = set(operators) - set(OPERATORS)
    if unknown:
        raise ValueError(f"unknown offline operators: {sorted(unknown)}")
    original = _Source.parse(segment.code)
    if original is None or not segment.code.strip():
        raise SpliceError("no applicable offline edit")
    base = _base_indent(segment.code)
    n_edits = 1 + sum(rng.random() < 0.3 * strength for _ in range(2))
    src = original
    done: list[str] = []
    pending = [op for op in OPERATORS if op in operators]  # each class at most once per edit
    tries = dict.fromkeys(pending, 2)  # a failed class is retried once (its draws are random)
    while pending and len(done) < n_edits:
        op = _weighted_pick(pending, rng)
        result = _OPS[op](src, rng, strength)
        candidate = None
        if result is not None and result[0] != src.text:
            try:
                candidate = _Source(result[0], src.wrap)
            except (SyntaxError, ValueError):
                candidate = None
        if candidate is None or result is None:
            tries[op] -= 1
            if tries[op] <= 0:
                pending.remove(op)
            continue
        src = candidate
        done.append(result[1])
        pending.remove(op)
    code = textwrap.indent(src.unwrap(src.text), base)
    if not done or code == segment.code or src.text == original.text:
        raise SpliceError("no applicable offline edit")
    if not code.endswith("\n"):
        code += "\n"
    return OfflineEdit(code, "; ".join(done))


def _base_indent(code: str) -> str:
    """The common indentation that textwrap.dedent removes."""
    for line, dedented in zip(code.split("\n"), textwrap.dedent(code).split("\n"), strict=True):
        if line.strip():
            return line[: len(line) - len(dedented)]
    return ""


def _weighted_pick(names: list[str], rng: random.Random) -> str:
    total = sum(_WEIGHTS[n] for n in names)
    x = rng.random() * total
    for name in names:
        x -= _WEIGHTS[name]
        if x < 0:
            return name
    return names[-1]


def offline_crossover(a: Genome, b: Genome, rng: random.Random) -> tuple[dict[str, str], str]:
    """Uniform crossover: each differing segment from `a` or `b` with p=0.5, spliced into `a`.

    With two or more differing segments the child always takes at least one from each parent.
    A segment of `b` that `splice` rejects in the mixed file stays as in `a`.
    """
    keys_b = {s.key for s in b.segments}
    keys = [k for k in differing_segments(a, b) if k in keys_b and k in a.keys]
    if not keys:
        return dict(a.files), "crossover: the parents' segments are identical; copied the first"
    take = [rng.random() < 0.5 for _ in keys]
    if len(keys) >= 2 and (all(take) or not any(take)):
        flip = rng.randrange(len(keys))
        take[flip] = not take[flip]
    wanted = [k for k, t in zip(keys, take, strict=True) if t]
    genome = a
    taken: list[str] = []
    for _ in range(2):  # a second pass for segments that depend on another one from b
        for key in wanted:
            if key in taken:
                continue
            try:
                files = splice(genome, key, b.segment(key).code)
            except SpliceError:
                continue
            genome = parse_genome(files, a.evolvable, a.marker)
            taken.append(key)
    kept = [k for k in keys if k not in taken]
    parts = [f"{', '.join(taken) or 'nothing'} from the second parent"]
    if kept:
        parts.append(f"{', '.join(kept)} from the first")
    rejected = [k for k in wanted if k not in taken]
    if rejected:
        parts.append(f"rejected {', '.join(rejected)}")
    return dict(genome.files), "uniform crossover: " + "; ".join(parts)
