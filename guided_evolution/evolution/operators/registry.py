"""The operator registry: an ordered mapping name -> ``OperatorSpec``, read by the plan, the
proposer, the driver's call ordering, the bandit's arms, the index's allowed operators and the
reports' labels.

The order is part of the stored formats: the index's ``operator`` CHECK lists the stored names in
it (after ``seed``), the operator bandit's arms and the report's token rows follow it, and the plan
draws alternatives to a mutation in it. New operators go after the built-in ones.
"""

from __future__ import annotations

from collections.abc import Iterator

from guided_evolution.evolution.operators import crossover, eot, fix, mutation, offline, repropose
from guided_evolution.evolution.operators.spec import (
    ALTERNATIVE,
    FOLLOW_UP,
    PAIR,
    REPAIR,
    SINGLE,
    OperatorSpec,
    Role,
)

SEED = "seed"  # the stored operator of a run's seed (no spec: nothing makes it)

_SPECS: dict[str, OperatorSpec] = {}


def register(spec: OperatorSpec) -> OperatorSpec:
    """Add ``spec`` after the operators registered so far (its name must be new)."""
    if spec.name in _SPECS or spec.name == SEED:
        raise ValueError(f"an operator named {spec.name!r} is registered already")
    if spec.role in (SINGLE, PAIR, REPAIR) and not spec.offline:
        taken = [s.name for s in _SPECS.values() if s.role == spec.role and not s.offline]
        if taken:
            raise ValueError(f"the {spec.role} operator is {taken[0]}; add an alternative")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove an operator added by ``register`` (a built-in one cannot be removed)."""
    if any(s.name == name for s in BUILT_IN):
        raise ValueError(f"{name!r} is a built-in operator")
    _SPECS.pop(name, None)


def specs() -> Iterator[OperatorSpec]:
    """Every registered operator, in order."""
    return iter(list(_SPECS.values()))


def spec(name: str) -> OperatorSpec:
    """The operator named ``name``; ValueError naming the registered ones if there is none."""
    found = _SPECS.get(name)
    if found is None:
        raise ValueError(f"no operator {name!r}; registered: {', '.join(_SPECS)}")
    return found


def with_role(role: Role, offline_ops: bool = False) -> list[OperatorSpec]:
    """The operators of ``role`` (of the LLM set, or of the offline baseline), in order."""
    return [s for s in _SPECS.values() if s.role == role and s.offline == offline_ops]


def base(offline_ops: bool = False) -> OperatorSpec:
    """The base step on one parent: mutation (offline: offline-mutation)."""
    return with_role(SINGLE, offline_ops)[0]


def pair(offline_ops: bool = False) -> OperatorSpec:
    """The step on two parents: crossover (offline: offline-crossover)."""
    return with_role(PAIR, offline_ops)[0]


def repair() -> OperatorSpec:
    """The repair of a failed child: fix."""
    return with_role(REPAIR)[0]


def alternatives() -> list[OperatorSpec]:
    """What the plan may draw in place of a mutation (EoT, ...), in order."""
    return with_role(ALTERNATIVE)


def counterpart(name: str) -> OperatorSpec:
    """The offline operator that makes a step of ``name`` in an offline run."""
    found = spec(name)
    if found.offline:
        return found
    if found.counterpart is None:
        raise ValueError(f"the {name} operator has no offline counterpart")
    return spec(found.counterpart)


def stored_names() -> tuple[str, ...]:
    """The values a variant's operator may have: ``seed`` and every operator that makes children
    (a follow-up is stored as the operator it continues), in order."""
    return (SEED, *(s.name for s in _SPECS.values() if s.role != FOLLOW_UP))


def report_order() -> tuple[str, ...]:
    """The LLM operators' names in order: how reports order their rows by operator."""
    return tuple(s.name for s in _SPECS.values() if not s.offline and s.role != FOLLOW_UP)


def label(name: str) -> str:
    """What reports call the operator stored as ``name`` (an unregistered one: its name)."""
    found = _SPECS.get(name)
    return found.shown if found is not None else name


def llm_calls(name: str) -> int:
    """How many LLM calls one step of ``name`` makes (EoT: 2)."""
    return len(spec(name).calls)


BUILT_IN = (
    mutation.SPEC,
    crossover.SPEC,
    eot.SPEC,
    offline.MUTATION,
    offline.CROSSOVER,
    fix.SPEC,
    repropose.SPEC,
)
for _built_in in BUILT_IN:
    register(_built_in)
