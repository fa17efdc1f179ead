"""Scores of variants, the one definition: which evaluations count, their objective values, and
who dominates whom. Pure Python (no deap, so that read-only commands start fast).

`objectives` is a sequence of `(name, "max" | "min")` pairs (or objects with `.name` and
`.direction`, such as the config's `Objective`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Protocol

_WEIGHT = {"max": 1.0, "min": -1.0}


class _NamedObjective(Protocol):
    name: str
    direction: str


ObjectiveSpec = tuple[str, str] | _NamedObjective


@dataclass(frozen=True)
class Scored:
    """A variant id and its evaluation metrics."""

    id: str
    metrics: Mapping[str, float]


_PLAIN = (float, int)  # exact types: a real number without the ABC check (bool is not one)


def objective_weights(objectives: Sequence[ObjectiveSpec]) -> tuple[tuple[str, float], ...]:
    """(name, +1.0 for max / -1.0 for min) per objective; ValueError on a malformed spec."""
    out: list[tuple[str, float]] = []
    for spec in objectives:
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            name, direction = spec
        elif hasattr(spec, "name") and hasattr(spec, "direction"):
            name, direction = spec.name, spec.direction
        else:
            raise ValueError(f"objective {spec!r} must be a (name, 'max'|'min') pair")
        if direction not in _WEIGHT:
            raise ValueError(f"objective {name!r}: direction {direction!r} must be 'max' or 'min'")
        out.append((str(name), _WEIGHT[direction]))
    if not out:
        raise ValueError("at least one objective is needed for selection")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"objective names must be unique, got {names}")
    return tuple(out)


def objective_values(item: Scored, weights: Sequence[tuple[str, float]]) -> tuple[float, ...]:
    """The objective values of one individual; ValueError if one is missing or not finite."""
    values = []
    for name, _ in weights:
        if name not in item.metrics:
            raise ValueError(f"variant {item.id}: metric {name!r} is missing")
        value = item.metrics[name]
        if type(value) not in _PLAIN and (isinstance(value, bool) or not isinstance(value, Real)):
            raise ValueError(f"variant {item.id}: metric {name!r} = {value!r} is not a number")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"variant {item.id}: metric {name!r} = {value} is not finite")
        values.append(value)
    return tuple(values)


class _Evaluation(Protocol):
    status: str
    metrics: Mapping[str, Any]


def scored(
    variant_id: str, evaluation: _Evaluation | None, objectives: Sequence[ObjectiveSpec]
) -> Scored | None:
    """The variant with its selection objectives as floats, or None when it cannot be selected.

    The one definition of a valid score: the evaluation succeeded and every objective is a finite
    real number (not a bool). Other metric names never enter the result.
    """
    return scorer(objectives)(variant_id, evaluation)


def scorer(
    objectives: Sequence[ObjectiveSpec],
) -> Callable[[str, _Evaluation | None], Scored | None]:
    """:func:`scored` for these ``objectives``, checked once (a run's 100,000 variants are
    scored with one)."""
    names = [name for name, _ in objective_weights(objectives)]

    def score(variant_id: str, evaluation: _Evaluation | None) -> Scored | None:
        if evaluation is None or evaluation.status != "ok" or not evaluation.metrics:
            return None
        values = _finite(evaluation.metrics, names)
        return Scored(variant_id, values) if len(values) == len(names) else None

    return score


def finite_values(
    metrics: Mapping[str, Any] | None, objectives: Sequence[ObjectiveSpec]
) -> dict[str, float]:
    """The objectives' values in ``metrics`` that are finite real numbers (not bools), as floats;
    the others, and every other metric name, are left out."""
    return _finite(metrics or {}, [name for name, _ in objective_weights(objectives)])


def _finite(metrics: Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name in names:
        value = metrics.get(name)
        real = type(value) in _PLAIN or (isinstance(value, Real) and not isinstance(value, bool))
        if real and math.isfinite(value):
            values[name] = float(value)
    return values


def dominates(a: Scored, b: Scored, objectives: Sequence[ObjectiveSpec]) -> bool:
    """True if `a` is no worse than `b` in every objective and strictly better in one."""
    weights = objective_weights(objectives)
    better = False
    for (_, w), x, y in zip(
        weights, objective_values(a, weights), objective_values(b, weights), strict=True
    ):
        if w * x < w * y:
            return False
        better = better or w * x > w * y
    return better


def better_somewhere(a: Scored, b: Scored, objectives: Sequence[ObjectiveSpec]) -> bool:
    """True if `a` is strictly better than `b` in at least one objective."""
    weights = objective_weights(objectives)
    pairs = zip(weights, objective_values(a, weights), objective_values(b, weights), strict=True)
    return any(w * x > w * y for (_, w), x, y in pairs)
