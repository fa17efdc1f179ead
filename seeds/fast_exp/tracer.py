"""The candidate's side of fast_exp's evaluation: run `fast_exp` once and write what it computed.

    python tracer.py CANDIDATE_DIR      # the JSON graph on stdout (the candidate's prints: stderr)

evaluate.py starts this script as a child process; nothing the evaluator holds (its grids, the
operation weights, its modules) exists in this process. The candidate is imported with an
`import` that gives it only `math` and a numpy facade (numpy's ufuncs, `where`, `clip`, the scalar
types and constants; no submodules such as `np.f2py`, no file readers such as `np.fromfile`).
`fast_exp` gets a `Traced` placeholder holding a few random float32 values, not the evaluator's
points, and no shape. Each operation on it is recorded as a node of a graph: the operation's
name, its operands (earlier nodes or scalar constants) and, for `astype`/`view`, the type. The
graph is the only thing the evaluator takes from here: it replays the graph on its own points
with its own numpy and weights (`opcount.replay`). A candidate that took this process over could
write any graph, and would be scored on what that graph computes; arrays cannot be constants
of the graph, so no table of values can be smuggled in. Escapes seen here (a Python float made
of a traced value, an `if` on it, indexing, np.exp, ...) are listed in the graph's
`violations` and reject the candidate with their reason.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODULE = "approx"
PLACEHOLDER_POINTS = 8  # random values the placeholder holds (dtype rules, early errors only)
# The operations the graph may contain (opcount.WEIGHTS gives each its cost in the evaluator).
ALLOWED_OPS = frozenset(
    {"add", "subtract", "multiply", "negative", "positive", "absolute", "square",
     "floor", "ceil", "rint", "trunc", "ldexp", "frexp", "copysign", "sign",
     "minimum", "maximum", "fmin", "fmax",
     "less", "less_equal", "greater", "greater_equal", "equal", "not_equal",
     "logical_and", "logical_or", "logical_xor", "logical_not",
     "bitwise_and", "bitwise_or", "bitwise_xor", "invert", "left_shift", "right_shift",
     "astype", "where", "divide", "floor_divide", "remainder", "fmod", "reciprocal", "sqrt",
     "divmod", "clip", "view"}
)  # fmt: skip
# Ufuncs that compute an exponential (or a power with a variable exponent): the thing to build.
EXP_LIKE = frozenset(
    {"exp", "exp2", "expm1", "power", "float_power", "logaddexp", "logaddexp2",
     "sinh", "cosh", "tanh"}
)  # fmt: skip
MAX_POWER = 16  # x ** n is allowed for integer constants 1 <= n <= MAX_POWER
FLOAT_DTYPES = (np.dtype(np.float32),)
_INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)
INT_DTYPES = tuple(np.dtype(t) for t in _INTS)
VIEW_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.int32, np.uint32))
FACADE_NAMES = frozenset(
    {"where", "clip", "pi", "e", "inf", "nan", "finfo", "iinfo", "dtype", "float16", "float32",
     "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool_"}
)  # fmt: skip


class Escape(Exception):
    """The candidate left the counted contract; the message says how and what to do instead."""


@dataclass
class Graph:
    """The operations recorded so far (node 0 is the input) and the contract violations."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> Escape:
        """Record the violation (even if the candidate catches the exception) and return it."""
        self.violations.append(reason)
        return Escape(reason)

    def add(self, op: str, args: list[Any], **extra: Any) -> int:
        self.nodes.append({"op": op, "args": args, **extra})
        return len(self.nodes)


def constant(value: Any, graph: Graph) -> list[Any]:
    """A scalar operand as the graph writes it: ["c", kind, value]; an array is an escape."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool):
        return ["c", "bool", value]
    if isinstance(value, int):
        return ["c", "int", value]
    if isinstance(value, float):
        return ["c", "float", value.hex()]  # a Python float: a float32 constant (as before)
    if isinstance(value, np.generic) and value.dtype in FLOAT_DTYPES + INT_DTYPES + (
        np.dtype(np.float64),
        np.dtype(np.float16),
    ):
        raw = float(value).hex() if value.dtype.kind == "f" else int(value)
        return ["c", value.dtype.name, raw]
    raise graph.fail(
        f"a {type(value).__name__} operand: only the traced input and scalar constants may be "
        "combined (no arrays, lists or tables of values)"
    )


class Traced:
    """The placeholder `fast_exp` computes on: each operation becomes a node of the graph."""

    __slots__ = ("_graph", "_node", "_values")
    __array_priority__ = 1000

    def __init__(self, values: np.ndarray, graph: Graph, node: Any) -> None:
        self._values = values
        self._graph = graph
        self._node = node

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        graph, name = self._graph, ufunc.__name__
        if method != "__call__":
            raise graph.fail(
                f"np.{name}.{method} works across elements: only elementwise operations are allowed"
            )
        if kwargs:
            raise graph.fail(
                f"np.{name} with keyword arguments ({', '.join(kwargs)}): "
                "call it with positional arguments only"
            )
        if name in ("power", "float_power") and isinstance(inputs[0], Traced) and len(inputs) == 2:
            return self._power(inputs[0], inputs[1])
        if name in EXP_LIKE:
            raise graph.fail(
                f"np.{name} computes an exponential itself: build exp from "
                "+ - * / and the allowed operations instead"
            )
        if name not in ALLOWED_OPS:
            raise graph.fail(
                f"np.{name} is not an allowed operation (see the op table in README.md)"
            )
        return self._record(name, lambda: ufunc(*(_raw(v) for v in inputs)), inputs)

    def _record(self, name: str, compute: Any, inputs: Any, **extra: Any) -> Any:
        """Check the operands (scalar constants only), compute, check the result's dtype, add
        the node, wrap the result(s)."""
        args = [self._ref(v) for v in inputs]
        result = compute()
        if isinstance(result, tuple):
            node = self._graph.add(name, args, outputs=len(result), **extra)
            return tuple(self._checked(name, r, [node, i]) for i, r in enumerate(result))
        checked = self._checked(name, result, None)
        checked._node = self._graph.add(name, args, **extra)
        return checked

    def _ref(self, value: Any) -> Any:
        return value._node if isinstance(value, Traced) else constant(value, self._graph)

    def _checked(self, name: str, result: Any, node: Any) -> Traced:
        values = np.asarray(result)
        if values.dtype not in FLOAT_DTYPES + INT_DTYPES:
            raise self._graph.fail(
                f"np.{name} produced a {values.dtype} intermediate: keep every value float32 "
                "(no np.float64 constants or arrays; float32 with an int32/int64 array gives "
                "float64: convert the integers with .astype(np.float32) first)"
            )
        if values.shape != self._values.shape:
            raise self._graph.fail(
                f"np.{name} changed the shape: only elementwise operations are allowed"
            )
        return Traced(values, self._graph, node)

    def _power(self, base: Traced, exponent: Any) -> Traced:
        if isinstance(exponent, (int, np.integer)) and 1 <= exponent <= MAX_POWER:
            with np.errstate(all="ignore"):
                values = base._values ** int(exponent)
            return self._record("power", lambda: values, (base, int(exponent)))
        raise self._graph.fail(
            f"x ** {_describe(exponent)}: only constant integer powers 1..{MAX_POWER} are "
            "allowed (a variable exponent is an exponential)"
        )

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        name = getattr(func, "__name__", str(func))
        if kwargs:
            raise self._graph.fail(
                f"np.{name} with keyword arguments ({', '.join(kwargs)}): "
                "call it with positional arguments only"
            )
        if (
            name in ("where", "clip")
            and len(args) == 3
            and any(isinstance(a, Traced) for a in args)
        ):
            return self._record(name, lambda: func(*(_raw(a) for a in args)), args)
        raise self._graph.fail(
            f"np.{name} is not an allowed operation on the input (allowed numpy "
            "functions: where, clip and the ufuncs of README.md's op table)"
        )

    def astype(self, dtype: Any) -> Traced:
        """A conversion (float32 <-> integer), counted as one operation."""
        target = np.dtype(dtype)
        if target not in FLOAT_DTYPES + INT_DTYPES:
            raise self._graph.fail(f".astype({target}): only float32 and integer types are allowed")
        values = self._values.astype(target)
        return self._record("astype", lambda: values, (self,), dtype=target.name)

    def view(self, dtype: Any) -> Traced:
        """Reinterpreting the bits (float32 <-> int32/uint32), free."""
        target = np.dtype(dtype)
        if target not in VIEW_DTYPES or self._values.dtype not in VIEW_DTYPES:
            raise self._graph.fail(
                f".view({target}) of {self._values.dtype}: only float32, int32 "
                "and uint32 may be reinterpreted as each other"
            )
        values = self._values.view(target)
        return self._record("view", lambda: values, (self,), dtype=target.name)

    @property
    def dtype(self) -> np.dtype:
        return self._values.dtype

    def _escape(self, what: str) -> Escape:
        return self._graph.fail(
            f"{what} on the traced input: the value would leave the counted float32 arrays "
            "(no math.* functions, float()/int(), Python if/loops over elements or indexing; "
            "no table lookups; use np.where and whole-array arithmetic)"
        )

    def __float__(self) -> float:
        raise self._escape("conversion to a Python float (math.* or float())")

    def __int__(self) -> int:
        raise self._escape("conversion to a Python int")

    def __index__(self) -> int:
        raise self._escape("use as an index")

    def __complex__(self) -> complex:
        raise self._escape("conversion to complex")

    def __bool__(self) -> bool:
        raise self._escape("a truth value (a Python if/while/and/or on an array)")

    def __len__(self) -> int:
        raise self._escape("len()")

    def __iter__(self) -> Any:
        raise self._escape("iteration over elements")

    def __getitem__(self, key: Any) -> Any:
        raise self._escape("indexing or slicing")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise self._escape("item assignment")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise self._escape("conversion to a plain numpy array")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise self._graph.fail(
            f"x.{name} is not available on the traced input (only astype, view, dtype and "
            "the arithmetic operators; the input's size and values are not the candidate's)"
        )

    __hash__ = None  # type: ignore[assignment]


def _binary(ufunc: np.ufunc, reflected: bool = False) -> Any:
    def method(self: Traced, other: Any) -> Any:
        args = (other, self) if reflected else (self, other)
        return self.__array_ufunc__(ufunc, "__call__", *args)

    return method


def _unary(ufunc: np.ufunc) -> Any:
    def method(self: Traced) -> Any:
        return self.__array_ufunc__(ufunc, "__call__", self)

    return method


_BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.divide,
    "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "and": np.bitwise_and,
    "or": np.bitwise_or, "xor": np.bitwise_xor, "lshift": np.left_shift, "rshift": np.right_shift,
}  # fmt: skip
for _name, _ufunc in _BINARY.items():
    setattr(Traced, f"__{_name}__", _binary(_ufunc))
    setattr(Traced, f"__r{_name}__", _binary(_ufunc, reflected=True))
_COMPARE = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
            "eq": np.equal, "ne": np.not_equal}  # fmt: skip
for _name, _ufunc in _COMPARE.items():
    setattr(Traced, f"__{_name}__", _binary(_ufunc))
for _name, _ufunc in {"neg": np.negative, "pos": np.positive, "abs": np.absolute,
                      "invert": np.invert}.items():  # fmt: skip
    setattr(Traced, f"__{_name}__", _unary(_ufunc))


def _raw(value: Any) -> Any:
    """The values of a traced operand; a Python float as a float32 constant; others as they are."""
    if isinstance(value, Traced):
        return value._values
    if type(value) is float:
        return np.float32(value)
    return value


def _describe(value: Any) -> str:
    return "a traced value" if isinstance(value, Traced) else repr(value)


def facade(graph: Graph) -> types.ModuleType:
    """The `numpy` the candidate imports: numpy's ufuncs and FACADE_NAMES, nothing else."""
    module = types.ModuleType("numpy", "numpy's ufuncs, where, clip, scalar types and constants")
    for name, value in vars(np).items():  # not getattr: that would import numpy's submodules
        if not name.startswith("_") and (isinstance(value, np.ufunc) or name in FACADE_NAMES):
            setattr(module, name, value)

    def missing(name: str) -> Any:
        raise graph.fail(
            f"np.{name} is not an allowed operation (fast_exp sees numpy's ufuncs, where, clip, "
            "the scalar types and constants; see the op table in README.md)"
        )

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module


def load(directory: Path, graph: Graph) -> Any:
    """The candidate's `fast_exp`, imported with only `math` and the numpy facade."""
    path = directory / f"{MODULE}.py"
    allowed = {"numpy": facade(graph), "math": math}

    def restricted_import(name: str, globals_: Any = None, locals_: Any = None,
                          fromlist: Any = (), level: int = 0) -> Any:  # fmt: skip
        if level or name not in allowed:
            raise graph.fail(f"imports {name}: only numpy and math may be imported")
        return allowed[name]

    module = types.ModuleType(MODULE)
    module.__dict__["__builtins__"] = {**vars(builtins), "__import__": restricted_import}
    try:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    except Exception as exc:  # a broken candidate: one line, not a traceback
        raise Escape(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    function = module.__dict__.get("fast_exp")
    if not callable(function):
        raise Escape(f"{path.name} defines no function fast_exp(x)")
    return function


def trace(directory: Path) -> dict[str, Any]:
    """Import the candidate, run `fast_exp` once on the placeholder: the graph as JSON data."""
    graph = Graph()
    rng = np.random.default_rng()
    values = rng.uniform(-87.0, 88.0, PLACEHOLDER_POINTS).astype(np.float32)
    try:
        function = load(directory, graph)
        with np.errstate(all="ignore"):
            result = function(Traced(values, graph, 0))
        out = result._node if isinstance(result, Traced) else constant(result, graph)
    except Escape as exc:
        return {"violations": [*graph.violations, str(exc)][:1], "nodes": [], "out": None}
    except Exception as exc:
        reason = f"fast_exp raised {type(exc).__name__}: {exc}"
        return {"violations": [*graph.violations, reason][:1], "nodes": [], "out": None}
    return {"violations": graph.violations[:1], "nodes": graph.nodes, "out": out}


def main() -> int:
    directory = Path(sys.argv[1])
    result = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the candidate's prints go to stderr, the graph alone to stdout
    graph = trace(directory)
    result.write(json.dumps(graph, allow_nan=False))
    result.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
