"""The hall of fame's crowding distances are deap's, computed without deap individuals."""

from __future__ import annotations

import random

import pytest
from deap import base
from deap.tools.emo import assignCrowdingDist

from guided_evolution.evolution.scoring import Scored
from guided_evolution.evolution.selection import HallOfFame, crowding_distances, pareto_front

OBJECTIVES = [("acc", "max"), ("size", "min")]


class _Ind:
    def __init__(self, fitness: base.Fitness) -> None:
        self.fitness = fitness


def _deap_crowding(rows: list[tuple[float, ...]]) -> list[float]:
    fitness = type("F", (base.Fitness,), {"weights": (1.0,) * len(rows[0])})
    inds = [_Ind(fitness(row)) for row in rows]
    assignCrowdingDist(inds)
    return [ind.fitness.crowding_dist for ind in inds]


@pytest.mark.parametrize("grid", [None, 3, 1])  # continuous, many ties, all equal
@pytest.mark.parametrize("nobj", [1, 2, 3])
def test_crowding_distances_equal_deaps(grid: int | None, nobj: int) -> None:
    rng = random.Random(7 * nobj + (grid or 0))
    for size in (1, 2, 3, 9, 40):
        rows = [
            tuple(float(rng.randrange(grid)) if grid else rng.random() for _ in range(nobj))
            for _ in range(size)
        ]
        assert crowding_distances(rows) == _deap_crowding(rows)
    assert crowding_distances([]) == []


def _reference_update(items: list[Scored], pop: list[Scored], maxsize: int) -> list[str]:
    """The hall of fame's rule written with deap's individuals (what ge did before)."""
    merged = {item.id: item for item in items}
    for item in pop:
        merged.pop(item.id, None)
        merged[item.id] = item
    front = pareto_front(list(merged.values()), OBJECTIVES)
    while len(front) > maxsize:
        rows = [(s.metrics["acc"], s.metrics["size"]) for s in front]
        distances = _deap_crowding(rows)
        lowest = min(distances)
        del front[max(i for i, d in enumerate(distances) if d == lowest)]
    return [s.id for s in front]


@pytest.mark.parametrize("grid", [None, 4, 1])  # continuous, ties, all equal
def test_hall_of_fame_trims_as_with_deaps_crowding(grid: int | None) -> None:
    rng = random.Random(grid or 0)
    hof, mirror, trimmed = HallOfFame(8, OBJECTIVES), [], 0

    def point() -> dict[str, float]:  # on a trade-off: larger accuracy, larger size
        x = float(rng.randrange(grid)) if grid else rng.random()
        return {"acc": x, "size": x + (0.0 if grid else rng.random() * 0.01)}

    for gen in range(6):
        pop = [Scored(f"g{gen}-{i}", point()) for i in range(30)]
        expected = _reference_update(mirror, pop, 8)
        trimmed += len(pareto_front([*mirror, *pop], OBJECTIVES)) > 8
        hof.update(pop)
        assert [s.id for s in hof.items] == expected
        mirror = hof.items
    assert trimmed == 6  # every generation's front was over the size: the trimming was tested
