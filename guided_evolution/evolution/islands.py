"""Islands (``[evolution.islands] count = K > 1``): K populations evolved apart, with migration. Pure.

``population``, ``elites`` and ``initial_population`` are the run's totals, split evenly over the
islands (the first ``total % K`` get one more), so a generation costs the same with or without
islands; each island plans from its own population only (its SPEA2 elites, tournaments and EoT
teachers), with an ``EvolutionConfig`` copy holding its shares (``island_configs``).

Migration follows generation ``g`` when ``g > 0`` and ``g % islands.migration_interval == 0``: each
island sends copies of its ``islands.migration_size`` best (NSGA-II Pareto rank, then crowding distance,
then population order) that the destination does not hold already to one destination: the next island on a ring, or a derangement drawn from
an RNG seeded by (run seed, g), so no island sends to itself. A migrant keeps its id and lineage
and is appended to the destination's population; every island chooses from its population
before any migrant arrives, so the result does not depend on the order of the islands.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.scoring import ObjectiveSpec, Scored
from guided_evolution.evolution.selection import rank_crowding_order


@dataclass(frozen=True)
class Move:
    """The migrants one island sends to another after a generation."""

    source: int
    dest: int
    variants: tuple[str, ...]

    def as_event(self) -> dict[str, object]:
        """The move as the ``migration`` event lists it."""
        return {"from": self.source, "to": self.dest, "variants": list(self.variants)}


def shares(total: int, k: int) -> list[int]:
    """``total`` split over ``k`` islands: the first ``total % k`` get one more."""
    return [total // k + (1 if i < total % k else 0) for i in range(k)]


def island_configs(evo: EvolutionConfig) -> list[EvolutionConfig]:
    """Each island's configuration: ``evo`` with its share of the run's ``population``,
    ``elites`` and ``initial_population`` (``[evo]`` itself with one island)."""
    k = evo.islands.count
    if k == 1:
        return [evo]
    sizes = zip(
        shares(evo.population, k),
        shares(evo.elites, k),
        shares(evo.initial_population, k),
        strict=True,
    )
    return [
        evo.model_copy(update={"population": p, "elites": e, "initial_population": i})
        for p, e, i in sizes
    ]


def migrates_after(generation: int, evo: EvolutionConfig) -> bool:
    """Whether migration follows ``generation``."""
    return (
        evo.islands.count > 1
        and evo.islands.migration_size > 0
        and generation > 0
        and generation % evo.islands.migration_interval == 0
    )


def destinations(k: int, topology: str, seed: int, generation: int) -> list[int]:
    """Island ``i`` sends to ``destinations(...)[i]``: ``i + 1`` (mod ``k``) on a ``ring``; for
    ``random``, a uniformly drawn derangement (no island sends to itself) from an RNG seeded by
    (run seed, generation)."""
    if topology == "ring" or k < 2:
        return [(i + 1) % k for i in range(k)]
    rng = random.Random(f"ge:{seed}:{generation}:migration")
    while True:
        order = rng.sample(range(k), k)
        if all(order[i] != i for i in range(k)):
            return order


def best(
    population: Sequence[Scored],
    n: int,
    objectives: Sequence[ObjectiveSpec],
    held: Sequence[str] = (),
) -> list[str]:
    """The ids of the ``n`` best of ``population`` (NSGA-II rank, then crowding, then order)
    that are not in ``held`` (what the destination has already)."""
    have = set(held)
    ranked = [s.id for s in rank_crowding_order(population, objectives) if s.id not in have]
    return ranked[:n]


def migrate(
    islands: Sequence[Sequence[str]],
    scored: Sequence[Sequence[Scored]],
    evo: EvolutionConfig,
    objectives: Sequence[ObjectiveSpec],
    generation: int,
) -> tuple[list[list[str]], list[Move]]:
    """The islands' populations after migration, and the moves made.

    ``scored[i]`` is island ``i``'s selectable members (its population's valid variants).
    """
    targets = destinations(len(islands), evo.islands.migration_topology, evo.seed, generation)
    moves = [
        Move(i, targets[i], tuple(best(scored[i], evo.islands.migration_size, objectives, islands[targets[i]])))
        for i in range(len(islands))
    ]
    after = [list(members) for members in islands]
    for move in moves:
        after[move.dest] = list(dict.fromkeys([*after[move.dest], *move.variants]))
    return after, [m for m in moves if m.variants]
