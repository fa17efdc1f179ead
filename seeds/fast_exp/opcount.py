"""Deterministic operation counting for fast_exp candidates: a tracing proxy and source rules.

A candidate gets a `Traced` float32 array instead of a numpy array. Every arithmetic operator and
every numpy ufunc applied to it goes through `Traced.__array_ufunc__`, which checks the operation
against `WEIGHTS`, runs it on the real float32 values and adds its weight to the `Tape`. All
operations are elementwise on the whole input, so the tape's total is the cost of one element.
Anything that would leave the counting (exp itself, converting to Python numbers, indexing or
looping over elements, float64 intermediates, reductions) is recorded as a violation and raised
as `Escape`. `source_violations` adds static rules on the candidate's source (no introspection,
no imports other than numpy and math, no attribute assignment) that keep the proxy honest.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
ALLOWED_IMPORTS = frozenset({"numpy", "math"})
FORBIDDEN_NAMES = frozenset(
    {"eval", "exec", "compile", "getattr", "setattr", "delattr", "globals", "locals", "vars",
     "open", "breakpoint", "input", "type", "isinstance", "issubclass", "id", "dir", "object",
     "memoryview", "help"}
)  # fmt: skip


class Escape(Exception):
    """The candidate left the counted contract; the message says how and what to do instead."""


@dataclass
class Tape:
    """Counts of the operations applied to traced values, and contract violations."""

    counts: dict[str, int] = field(default_factory=dict)
    cost: int = 0
    violations: list[str] = field(default_factory=list)

    def add(self, name: str, weight: int, times: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + times
        self.cost += weight * times

    def fail(self, reason: str) -> Escape:
        """Record the violation (even if the candidate catches the exception) and return it."""
        self.violations.append(reason)
        return Escape(reason)

    def summary(self) -> str:
        return ", ".join(f"{name} {n}" for name, n in sorted(self.counts.items()))


def _power_cost(exponent: int) -> int:
    """Multiplications of square-and-multiply for x ** exponent."""
    return exponent.bit_length() - 1 + bin(exponent).count("1") - 1


class Traced:
    """A float32 (or integer/bool) array whose operations are checked and counted on a Tape."""

    __slots__ = ("_tape", "_values")
    __array_priority__ = 1000

    def __init__(self, values: np.ndarray, tape: Tape) -> None:
        self._values = values
        self._tape = tape

    # -- the counted operations ---------------------------------------------------------------

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        tape = self._tape
        name = ufunc.__name__
        if method != "__call__":
            raise tape.fail(
                f"np.{name}.{method} works across elements: only elementwise operations are allowed"
            )
        if kwargs:
            raise tape.fail(
                f"np.{name} with keyword arguments ({', '.join(kwargs)}): "
                "call it with positional arguments only"
            )
        if name in ("power", "float_power") and _is_traced(inputs[0]) and len(inputs) == 2:
            return self._power(inputs[0], inputs[1])
        if name in EXP_LIKE:
            raise tape.fail(
                f"np.{name} computes an exponential itself: build exp from "
                "+ - * / and the allowed operations instead"
            )
        if name not in WEIGHTS:
            raise tape.fail(
                f"np.{name} is not an allowed operation (see the op table in README.md)"
            )
        return self._record(name, ufunc(*(_raw(v) for v in inputs)))

    def _record(self, name: str, result: Any) -> Any:
        """Check the result's shape and dtype, count the operation, wrap the result."""
        if isinstance(result, tuple):
            outs = tuple(self._checked(name, r) for r in result)
            self._tape.add(name, WEIGHTS[name])
            return outs
        out = self._checked(name, result)
        self._tape.add(name, WEIGHTS[name])
        return out

    def _checked(self, name: str, result: Any) -> Traced:
        values = np.asarray(result)
        if values.dtype not in FLOAT_DTYPES + INT_DTYPES:
            raise self._tape.fail(
                f"np.{name} produced a {values.dtype} intermediate: keep every value float32 "
                "(no np.float64 constants or arrays; float32 with an int32/int64 array gives "
                "float64: convert the integers with .astype(np.float32) first)"
            )
        if values.shape != self._values.shape:
            raise self._tape.fail(
                f"np.{name} changed the shape {self._values.shape} to "
                f"{values.shape}: only elementwise operations are allowed"
            )
        return Traced(values, self._tape)

    def _power(self, base: Traced, exponent: Any) -> Traced:
        if isinstance(exponent, (int, np.integer)) and 1 <= exponent <= MAX_POWER:
            with np.errstate(all="ignore"):
                values = base._values ** int(exponent)
            out = self._checked("power", values)
            self._tape.add("multiply", WEIGHTS["multiply"], _power_cost(int(exponent)))
            return out
        raise self._tape.fail(
            f"x ** {_describe(exponent)}: only constant integer powers "
            f"1..{MAX_POWER} are allowed (a variable exponent is an "
            "exponential)"
        )

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        tape = self._tape
        name = getattr(func, "__name__", str(func))
        if kwargs:
            raise tape.fail(
                f"np.{name} with keyword arguments ({', '.join(kwargs)}): "
                "call it with positional arguments only"
            )
        if name == "where" and len(args) == 3:
            return self._record("where", np.where(*(_raw(a) for a in args)))
        if name == "clip" and len(args) == 3 and _is_traced(args[0]):
            return self._record("clip", np.clip(*(_raw(a) for a in args)))
        raise tape.fail(
            f"np.{name} is not an allowed operation on the input (allowed numpy "
            "functions: where, clip and the ufuncs of README.md's op table)"
        )

    def astype(self, dtype: Any) -> Traced:
        """A conversion (float32 <-> integer), counted as one operation."""
        target = np.dtype(dtype)
        if target not in FLOAT_DTYPES + INT_DTYPES:
            raise self._tape.fail(f".astype({target}): only float32 and integer types are allowed")
        return self._record("astype", self._values.astype(target))

    def view(self, dtype: Any) -> Traced:
        """Reinterpreting the bits (float32 <-> int32/uint32), free."""
        target = np.dtype(dtype)
        if target not in VIEW_DTYPES or self._values.dtype not in VIEW_DTYPES:
            raise self._tape.fail(
                f".view({target}) of {self._values.dtype}: only float32, int32 "
                "and uint32 may be reinterpreted as each other"
            )
        return self._record("view", self._values.view(target))

    @property
    def dtype(self) -> np.dtype:
        return self._values.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._values.shape

    # -- escapes ---------------------------------------------------------------------------

    def _escape(self, what: str) -> Escape:
        return self._tape.fail(
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
        raise self._tape.fail(
            f"x.{name} is not available on the traced input (only astype, "
            "view, dtype, shape and the arithmetic operators)"
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


for _name, _ufunc in {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "truediv": np.divide,
    "floordiv": np.floor_divide,
    "mod": np.remainder,
    "pow": np.power,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "xor": np.bitwise_xor,
    "lshift": np.left_shift,
    "rshift": np.right_shift,
}.items():
    setattr(Traced, f"__{_name}__", _binary(_ufunc))
    setattr(Traced, f"__r{_name}__", _binary(_ufunc, reflected=True))
for _name, _ufunc in {
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "eq": np.equal,
    "ne": np.not_equal,
}.items():
    setattr(Traced, f"__{_name}__", _binary(_ufunc))
for _name, _ufunc in {
    "neg": np.negative,
    "pos": np.positive,
    "abs": np.absolute,
    "invert": np.invert,
}.items():
    setattr(Traced, f"__{_name}__", _unary(_ufunc))


def _is_traced(value: Any) -> bool:
    return isinstance(value, Traced)


def _raw(value: Any) -> Any:
    """The values of a traced operand; a Python float as a float32 constant; others as they are."""
    if isinstance(value, Traced):
        return value._values
    if type(value) is float:
        return np.float32(value)
    return value


def _describe(value: Any) -> str:
    return "a traced value" if isinstance(value, Traced) else repr(value)


def trace(function: Any, values: np.ndarray) -> tuple[np.ndarray, Tape]:
    """Run `function` once on the traced float32 `values`: its float32 output and the tape.

    Raises Escape for a violation (also one the candidate caught: the tape keeps it).
    """
    tape = Tape()
    with np.errstate(all="ignore"):
        result = function(Traced(values.astype(np.float32), tape))
        if tape.violations:
            raise Escape(tape.violations[0])
        if isinstance(result, Traced):
            out = result._values.astype(np.float32)
        elif isinstance(result, (int, float, np.number)):
            out = np.full(values.shape, result, dtype=np.float32)
        else:
            raise Escape(
                f"fast_exp returned {type(result).__name__}: return the traced array "
                "(or a number for a constant)"
            )
    return out, tape


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
    """Static rules of the candidate's source that keep the tracing honest, as reasons."""
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
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.append(f"line {line}: assigns the attribute .{node.attr} (no monkey-patching)")
        if isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or node.id.startswith("__")):
            out.append(f"line {line}: uses {node.id} (no introspection or dynamic code)")
    return out
