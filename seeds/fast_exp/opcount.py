"""The evaluator's side of operation counting: the weights, and the replay of a candidate's graph.

`tracer.py` runs the candidate in a child process and writes the graph of the operations its
`fast_exp` applied to the input. `replay` checks every node of that graph against the contract
(an allowed operation, float32 or integer results, elementwise shapes, scalar constants only),
computes it on the evaluator's own points with this process's numpy, and counts the weighted
operations that the output depends on (`WEIGHTS` lives here only: the child never sees it). The
output and its cost are functions of the graph alone, so what the child process claims or
changes in itself cannot raise a score: a forged graph is scored on what it computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tracer
from rules import Escape

# The weight of one operation on one element. Divisions and square roots cost what they cost
# in hardware relative to an add or multiply (latency ~4x on current x86 and ARM float32 units).
WEIGHTS: dict[str, int] = {
    **dict.fromkeys(
        (
            "add", "subtract", "multiply", "negative", "positive", "absolute", "square",
            "floor", "ceil", "rint", "trunc", "ldexp", "frexp", "copysign", "sign",
            "minimum", "maximum", "fmin", "fmax",
            "less", "less_equal", "greater", "greater_equal", "equal", "not_equal",
            "logical_and", "logical_or", "logical_xor", "logical_not",
            "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "left_shift", "right_shift",
            "astype", "where",
        ),
        1,
    ),
    **dict.fromkeys(
        ("divide", "floor_divide", "remainder", "fmod", "reciprocal", "sqrt", "divmod"), 4
    ),
    "clip": 2,  # a minimum and a maximum
    "view": 0,  # reinterpreting float32 bits as int32 (or back) costs nothing
}  # fmt: skip
MAX_NODES = 2048  # an honest candidate records a few dozen operations
_VALUE_DTYPES = tracer.FLOAT_DTYPES + tracer.INT_DTYPES
_CONSTANT_DTYPES = {d.name for d in _VALUE_DTYPES} | {"float64", "float16"}
__all__ = ["WEIGHTS", "Escape", "Tape", "replay"]


@dataclass
class Tape:
    """The operations the output depends on, counted, and their weighted total."""

    counts: dict[str, int] = field(default_factory=dict)
    cost: int = 0

    def add(self, name: str, weight: int, times: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + times
        self.cost += weight * times

    def summary(self) -> str:
        return ", ".join(f"{name} {n}" for name, n in sorted(self.counts.items()))


def _power_cost(exponent: int) -> int:
    """Multiplications of square-and-multiply for x ** exponent."""
    return exponent.bit_length() - 1 + bin(exponent).count("1") - 1


def _bad(what: str) -> Escape:
    return Escape(f"the tracer's graph is malformed ({what})")


def _constant(ref: list[Any]) -> Any:
    """A scalar constant of the graph (["c", kind, value]) as numpy would have seen it."""
    if len(ref) != 3 or not isinstance(ref[1], str):
        raise _bad("a constant")
    kind, raw = ref[1], ref[2]
    if kind == "float" and isinstance(raw, str):
        return np.float32(float.fromhex(raw))  # a Python float: a float32 constant
    if kind == "int" and type(raw) is int:
        return raw
    if kind == "bool" and type(raw) is bool:
        return raw
    if kind in _CONSTANT_DTYPES and isinstance(raw, (str, int)) and not isinstance(raw, bool):
        number = float.fromhex(raw) if isinstance(raw, str) else raw
        return np.dtype(kind).type(number)
    raise _bad(f"a constant of kind {kind!r}")


def _operand(ref: Any, values: list[Any]) -> Any:
    """An earlier node's value, one output of a multi-output node, or a scalar constant."""
    if type(ref) is int and 0 <= ref < len(values) and not isinstance(values[ref], tuple):
        return values[ref]
    if isinstance(ref, list) and len(ref) == 2 and all(type(v) is int for v in ref):
        node, item = ref
        if 0 <= node < len(values) and isinstance(values[node], tuple) and 0 <= item < 2:
            return values[node][item]
    if isinstance(ref, list) and ref and ref[0] == "c":
        return _constant(ref)
    raise _bad(f"an operand {str(ref)[:40]}")


def _compute(op: str, node: dict[str, Any], args: list[Any]) -> Any:
    """One node's operation on its operands; Escape for one the contract does not allow."""
    if op == "power":
        exponent = args[1] if len(args) == 2 else None
        if type(exponent) is int and 1 <= exponent <= tracer.MAX_POWER:
            return args[0] ** exponent
        raise Escape(f"x ** {exponent!r}: only constant integer powers 1..{tracer.MAX_POWER}")
    if op in tracer.EXP_LIKE:
        raise Escape(f"np.{op} computes an exponential itself: build exp from + - * / instead")
    if op not in WEIGHTS:
        raise Escape(f"np.{op} is not an allowed operation (see the op table in README.md)")
    if op in ("astype", "view"):
        target = np.dtype(str(node.get("dtype")))
        allowed = _VALUE_DTYPES if op == "astype" else tracer.VIEW_DTYPES
        if len(args) != 1 or target not in allowed or not isinstance(args[0], np.ndarray):
            raise Escape(f".{op}({target}) is not allowed here")
        if op == "view" and args[0].dtype not in tracer.VIEW_DTYPES:
            raise Escape(f".view of {args[0].dtype} is not allowed")
        return args[0].astype(target) if op == "astype" else args[0].view(target)
    function = getattr(np, op)
    arity = 3 if op in ("where", "clip") else function.nin
    if len(args) != arity:
        raise _bad(f"np.{op} with {len(args)} operands")
    return function(*args)


def _checked(op: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype not in _VALUE_DTYPES:
        raise Escape(f"np.{op} produced a {value.dtype} intermediate: keep every value float32")
    if value.shape != shape:
        raise Escape(f"np.{op} does not act elementwise on the input")
    return value


def _last_uses(nodes: list[Any], out: Any) -> dict[int, int]:
    """Node index -> the index of the last node using it (the output's: past the end)."""
    last: dict[int, int] = {}
    for index, node in enumerate(nodes, 1):
        for ref in node.get("args", []) if isinstance(node, dict) else []:
            if type(ref) is int or (isinstance(ref, list) and ref and type(ref[0]) is int):
                last[ref if type(ref) is int else ref[0]] = index
    for ref in (out,):
        if type(ref) is int or (isinstance(ref, list) and ref and type(ref[0]) is int):
            last[ref if type(ref) is int else ref[0]] = len(nodes) + 1
    return last


def _live_cost(nodes: list[dict[str, Any]], out: Any) -> Tape:
    """The weighted count of the operations the output depends on (dead code costs nothing)."""
    tape, stack, seen = Tape(), [out], set()
    while stack:
        ref = stack.pop()
        index = ref if type(ref) is int else ref[0] if isinstance(ref, list) and ref else None
        if type(index) is not int or index == 0 or index in seen:
            continue
        seen.add(index)
        node = nodes[index - 1]
        if node["op"] == "power":
            tape.add("multiply", WEIGHTS["multiply"], _power_cost(node["args"][1][2]))
        else:
            tape.add(node["op"], WEIGHTS[node["op"]])
        stack.extend(node["args"])
    return tape


def replay(graph: Any, x: np.ndarray) -> tuple[np.ndarray, Tape]:
    """The float32 output of the candidate's graph on `x` and the cost of what it depends on.

    Raises Escape for a violation the tracer saw or a node outside the contract."""
    if not isinstance(graph, dict):
        raise _bad("not an object")
    violations = graph.get("violations")
    if violations:
        raise Escape(str(violations[0])[:500])
    nodes, out = graph.get("nodes"), graph.get("out")
    if not isinstance(nodes, list) or len(nodes) > MAX_NODES:
        raise Escape(f"fast_exp applied more than {MAX_NODES} operations (or none could be read)")
    last, values = _last_uses(nodes, out), [x]
    with np.errstate(all="ignore"):
        for index, node in enumerate(nodes, 1):
            if not isinstance(node, dict) or not isinstance(node.get("args"), list):
                raise _bad(f"node {index}")
            op = str(node.get("op"))
            args = [_operand(ref, values) for ref in node["args"]]
            result = _compute(op, node, args)
            if isinstance(result, tuple):
                values.append(tuple(_checked(op, r, x.shape) for r in result))
            else:
                values.append(_checked(op, result, x.shape))
            for ref in node["args"]:
                used = ref if type(ref) is int else ref[0] if type(ref[0]) is int else None
                if used and last.get(used) == index:
                    values[used] = None  # freed: no later node uses it
        y = _operand(out, values)
    if isinstance(y, np.ndarray):
        return y.astype(np.float32), _live_cost(nodes, out)
    return np.full(x.shape, y, dtype=np.float32), Tape()
