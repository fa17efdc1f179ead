"""NSGA-II ranking in plain tuples (``selection.ranks_and_crowding``) must be deap's, member for
member: the parents a run draws depend on every rank, every crowding distance and the order of
ties at a front's ends."""

from __future__ import annotations

import random

import pytest
from deap import base, tools
from deap.tools.emo import assignCrowdingDist

from guided_evolution.evolution.scoring import Scored
from guided_evolution.evolution.selection import (
    nsga2_parents,
    rank_crowding_order,
    ranks_and_crowding,
)


def _deap(rows: list[tuple[float, ...]], weights: tuple[float, ...]) -> tuple[list, list]:
    fitness = type("F", (base.Fitness,), {"weights": weights})

    class Ind:
        def __init__(self, row: tuple[float, ...]) -> None:
            self.fitness = fitness(row)

    inds = [Ind(row) for row in rows]
    ranks = {}
    for rank, front in enumerate(tools.sortNondominated(inds, len(inds))):
        assignCrowdingDist(front)
        for ind in front:
            ranks[id(ind)] = rank
    return [ranks[id(i)] for i in inds], [i.fitness.crowding_dist for i in inds]


@pytest.mark.parametrize("objectives", [1, 2, 3])
def test_ranks_and_crowding_are_deaps_with_ties_and_duplicates(objectives: int) -> None:
    for trial in range(300):
        rng = random.Random(trial)
        weights = tuple(rng.choice([1.0, -1.0]) for _ in range(objectives))
        grid = rng.choice([1, 3, 10, 10_000])  # coarse grids: many equal values and rows
        rows = [
            tuple(rng.randint(0, grid) / 7 for _ in range(objectives))
            for _ in range(rng.randint(1, 45))
        ]
        signed = [tuple(w * v for w, v in zip(weights, row, strict=True)) for row in rows]
        assert ranks_and_crowding(rows, signed) == _deap(rows, weights), trial


def test_a_front_peeled_in_deaps_order_keeps_its_ties_at_the_ends() -> None:
    # Four fronts; equal rows and equal values on one objective, where the crowding distance's
    # infinite ends depend on the order of the members within their front.
    rows = [(1.0, 5.0), (2.0, 4.0), (2.0, 4.0), (0.5, 5.0), (1.0, 4.0), (3.0, 1.0), (0.0, 0.0),
            (1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (0.5, 4.0)]  # fmt: skip
    ranks, crowding = ranks_and_crowding(rows, rows)
    assert (ranks, crowding) == _deap(rows, (1.0, 1.0))
    assert ranks == [0, 0, 0, 1, 1, 1, 3, 2, 1, 0, 2]
    assert crowding[1] == crowding[2] == 0.5  # the equal rows sit inside their front's order


def test_parents_and_order_do_not_depend_on_deaps_fitness_objects() -> None:
    rng = random.Random(5)
    pop = [Scored(f"v{i}", {"acc": rng.randint(0, 9) / 9, "size": float(rng.randint(1, 5))})
           for i in range(60)]  # fmt: skip
    objectives = [("acc", "max"), ("size", "min")]
    order = rank_crowding_order(pop, objectives)
    rows = [(p.metrics["acc"], p.metrics["size"]) for p in pop]
    ranks, crowding = _deap(rows, (1.0, -1.0))
    expected = sorted(range(len(pop)), key=lambda i: (ranks[i], -crowding[i], i))
    assert [p.id for p in order] == [pop[i].id for i in expected]
    drawn = nsga2_parents(pop, 40, objectives, random.Random(1))
    assert drawn == nsga2_parents(pop, 40, objectives, random.Random(1))
    mean_rank = sum(ranks[int(p.id[1:])] for p in drawn) / len(drawn)
    assert mean_rank < sum(ranks) / len(ranks)  # tournaments on rank favour the better fronts
