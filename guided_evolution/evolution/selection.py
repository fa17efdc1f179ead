"""Multi-objective selection on top of deap: NSGA-II parents, SPEA2 elites, a Pareto hall of fame.

Individuals are variant ids with their metrics (`Scored`). `objectives` is a sequence of
`(name, "max" | "min")` pairs (or objects with `.name` and `.direction`, such as the config's
`Objective`); pass only the objectives that select, never a test metric. Invalid variants (failed,
missing or non-finite metrics) are the caller's to drop: every function here raises `ValueError`
on such a metric rather than guess.

deap draws from the global `random` module; every call into deap that may draw runs with that
state saved, seeded from this module's own source of randomness, and restored afterwards, so the
results depend only on the arguments (and on the `rng` passed in) and never disturb other users
of `random`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

from guided_evolution.evolution.scoring import (
    ObjectiveSpec,
    Scored,
    objective_values,
    objective_weights,
)

if TYPE_CHECKING:  # deap pulls in numpy (~0.1 s, 25 MB): imported where selection runs
    from deap import base

_SPEA2_SEED = 0x5EA2


# --------------------------------------------------------------------------- deap adapters


class _Ind:
    """What deap selects: a fitness plus the position of the Scored it stands for."""

    __slots__ = ("fitness", "index", "rank")

    def __init__(self, fitness: base.Fitness, index: int) -> None:
        self.fitness = fitness
        self.index = index
        self.rank = 0


class _Ranked(NamedTuple):
    """A member of a population by position, with its NSGA-II rank and crowding distance."""

    index: int
    rank: int
    crowd: float


def _ranked(pop: Sequence[Scored], objectives: Sequence[ObjectiveSpec]) -> list[_Ranked]:
    weights = objective_weights(objectives)
    rows = [objective_values(item, weights) for item in pop]
    ranks, crowding = ranks_and_crowding(rows, [_sign(row, weights) for row in rows])
    return [_Ranked(i, r, c) for i, (r, c) in enumerate(zip(ranks, crowding, strict=True))]


def _wrap(
    pop: Sequence[Scored], objectives: Sequence[ObjectiveSpec], normalize: bool = False
) -> list[_Ind]:
    """deap individuals for `pop` (same order). `normalize` rescales each objective to [0, 1]
    over `pop`, which leaves dominance unchanged but makes distances scale-free."""
    from deap import base

    weights = objective_weights(objectives)
    fitness_cls = type("_Fitness", (base.Fitness,), {"weights": tuple(w for _, w in weights)})
    rows = [objective_values(item, weights) for item in pop]
    if normalize and rows:
        columns = list(zip(*rows, strict=True))
        lows = [min(col) for col in columns]
        spans = [max(col) - low for col, low in zip(columns, lows, strict=True)]
        rows = [
            tuple(
                (v - lo) / sp if sp > 0 else 0.0 for v, lo, sp in zip(row, lows, spans, strict=True)
            )
            for row in rows
        ]
    return [_Ind(fitness_cls(row), i) for i, row in enumerate(rows)]


@contextmanager
def _isolated_random(seed: int) -> Iterator[None]:
    """Run deap code with the global `random` seeded to `seed`, restoring its state afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def crowding_distances(rows: Sequence[tuple[float, ...]]) -> list[float]:
    """deap's ``assignCrowdingDist`` over objective value rows (the same sorts, in the same
    order, and the same sums: equal results), without making a deap individual per row, so
    that a hall of fame trimmed one member at a time costs O(n log n) per removal in plain
    tuples."""
    distances = [0.0] * len(rows)
    if not rows:
        return distances
    crowd = [(row, i) for i, row in enumerate(rows)]
    nobj = len(rows[0])
    for k in range(nobj):
        crowd.sort(key=lambda element: element[0][k])
        distances[crowd[0][1]] = math.inf
        distances[crowd[-1][1]] = math.inf
        if crowd[-1][0][k] == crowd[0][0][k]:
            continue
        norm = nobj * float(crowd[-1][0][k] - crowd[0][0][k])
        for prev, cur, nxt in zip(crowd[:-2], crowd[1:-1], crowd[2:], strict=False):
            distances[cur[1]] += (nxt[0][k] - prev[0][k]) / norm
    return distances


def _rank_and_crowd(inds: list[_Ind]) -> None:
    """Set `rank` (0 = first front) and `fitness.crowding_dist` on every individual."""
    ranks, crowding = ranks_and_crowding(
        [ind.fitness.values for ind in inds], [ind.fitness.wvalues for ind in inds]
    )
    for ind, rank, crowd in zip(inds, ranks, crowding, strict=True):
        ind.rank = rank
        ind.fitness.crowding_dist = crowd


def _dominance(fits: list[tuple[float, ...]]) -> tuple[list[int], list[list[int]]]:
    """For each distinct signed row: how many others dominate it, and the ones it dominates in
    ascending order (deap's ``sortNondominated`` pairs, visited in its order)."""
    count = [0] * len(fits)
    beaten: list[list[int]] = [[] for _ in fits]
    two = bool(fits) and len(fits[0]) == 2
    for i, a in enumerate(fits):
        a0, a1 = a if two else (0.0, 0.0)
        for j in range(i + 1, len(fits)):
            b = fits[j]
            if two:  # the common case, unrolled
                b0, b1 = b
                a_wins = a0 >= b0 and a1 >= b1
                b_wins = not a_wins and a0 <= b0 and a1 <= b1
            else:
                a_wins, b_wins = _signed_dominates(a, b), _signed_dominates(b, a)
            if a_wins:
                count[j] += 1
                beaten[i].append(j)
            elif b_wins:
                count[i] += 1
                beaten[j].append(i)
    return count, beaten


def ranks_and_crowding(
    rows: Sequence[tuple[float, ...]], signed: Sequence[tuple[float, ...]]
) -> tuple[list[int], list[float]]:
    """NSGA-II rank (0 = first front) and crowding distance of each row, equal to deap's
    ``sortNondominated`` then ``assignCrowdingDist`` per front (the same fronts, members in the
    same order, so the same ties at a front's ends), in plain tuples: a steady run ranks its
    population for every child (100 members: 0.85 ms, deap 4.4; ``benchmarks/selection_tournament.py``).

    ``rows`` are the objective values, ``signed`` the same signed so that larger is better
    (distinct rows are compared once: equal rows share a front)."""
    groups: dict[tuple[float, ...], list[int]] = {}
    for i, row in enumerate(signed):
        groups.setdefault(row, []).append(i)
    fits = list(groups)
    count, beaten = _dominance(fits)
    ranks, crowding = [0] * len(rows), [0.0] * len(rows)
    current, rank = [f for f in range(len(fits)) if count[f] == 0], 0
    while current:
        members = [i for f in current for i in groups[fits[f]]]
        for i, crowd in zip(members, crowding_distances([rows[i] for i in members]), strict=True):
            ranks[i], crowding[i] = rank, crowd
        following = []
        for f in current:
            for d in beaten[f]:
                count[d] -= 1
                if count[d] == 0:
                    following.append(d)
        current, rank = following, rank + 1
    return ranks, crowding


# --------------------------------------------------------------------------- public API


def pareto_front(pop: Sequence[Scored], objectives: Sequence[ObjectiveSpec]) -> list[Scored]:
    """The non-dominated members of `pop`, in input order (ties in every objective all stay).

    Exact in O(n log n + d f) (d distinct points, f: the front's distinct points), not deap's
    O(n^2): in decreasing lexicographic order of the signed values, whatever dominates a point
    comes before it, and a dominated dominator is dominated by a front point, so each distinct
    point is compared with the front found so far only (with two objectives, with the best second
    value seen so far). Members with equal values share their point's verdict."""
    weights = objective_weights(objectives)
    rows = [_signed(item, weights) for item in pop]
    front: list[tuple[float, ...]] = []
    best_second = -math.inf
    for row in sorted(set(rows), reverse=True):
        if len(row) == 2:  # an earlier point is >= in the first value: dominates if >= in the 2nd
            if row[1] > best_second:
                front.append(row)
                best_second = row[1]
        elif not any(_signed_dominates(f, row) for f in front):
            front.append(row)
    kept = set(front)
    return [item for item, row in zip(pop, rows, strict=True) if row in kept]


def distinct_front(pop: Sequence[Scored], objectives: Sequence[ObjectiveSpec]) -> list[Scored]:
    """The non-dominated members of `pop` in input order, the first of equal points only: the
    front that adding `pop` one by one (dropping a point equal to or dominated by a member,
    pushing out what it dominates) leaves, found in O(n log n) (:func:`pareto_front`)."""
    names = [name for name, _ in objective_weights(objectives)]
    seen: set[tuple[float, ...]] = set()
    out = []
    for item in pareto_front(pop, objectives):
        key = tuple(item.metrics[name] for name in names)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _signed(item: Scored, weights: tuple[tuple[str, float], ...]) -> tuple[float, ...]:
    """The signed objective values of ``item`` (larger is better); plain finite floats are
    taken as they are, anything else is checked (``objective_values``: ValueError)."""
    try:
        values = [item.metrics[name] for name, _ in weights]
    except KeyError:
        values = []
    if len(values) != len(weights) or not all(type(v) is float and v - v == 0 for v in values):
        values = list(objective_values(item, weights))
    return _sign(values, weights)


def _sign(values: Sequence[float], weights: tuple[tuple[str, float], ...]) -> tuple[float, ...]:
    """Objective values signed by their weights (larger is better)."""
    return tuple(w * v for (_, w), v in zip(weights, values, strict=True))


def _signed_dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is no smaller than ``b`` anywhere and larger somewhere (signed values: larger is
    better)."""
    return a != b and all(x >= y for x, y in zip(a, b, strict=True))


def spea2_elites(
    pop: Sequence[Scored], k: int, objectives: Sequence[ObjectiveSpec]
) -> list[Scored]:
    """SPEA2 environmental selection of `min(k, len(pop))` distinct members of `pop`.

    Objectives are rescaled to [0, 1] over `pop` first, so the density/truncation step is not
    dominated by the objective with the largest units (e.g. a parameter count next to an accuracy).
    """
    from deap import tools

    inds = _wrap(pop, objectives, normalize=True)
    if k <= 0 or not inds:
        return []
    with _isolated_random(_SPEA2_SEED):
        chosen = tools.selSPEA2(inds, min(k, len(inds)))
    return [pop[ind.index] for ind in chosen]


def nsga2_parents(
    pop: Sequence[Scored], n: int, objectives: Sequence[ObjectiveSpec], rng: random.Random
) -> list[Scored]:
    """`n` parents by binary tournament on NSGA-II rank, then crowding distance, then a coin flip.

    Like deap's selTournamentDCD, contestants are drawn from successive random permutations of
    `pop`, so every member takes part in about the same number of tournaments; unlike it, any
    `n >= 0` works for any population size (members repeat when `n` exceeds the population;
    deap needs `n <= len(pop)`, a multiple of 4 when equal), and two fronts meet on rank (deap:
    on dominance, so in ~18% of such pairs the worse front wins on crowding distance; see
    benchmarks/selection_tournament.py). Deterministic given the state of `rng`; the global
    `random` module is not used.
    """
    inds = _ranked(pop, objectives)
    if n <= 0 or not inds:
        return []
    if len(inds) == 1:
        return [pop[0]] * n

    def winner(a: _Ranked, b: _Ranked) -> _Ranked:
        if a.rank != b.rank:
            return a if a.rank < b.rank else b
        if a.crowd != b.crowd:
            return a if a.crowd > b.crowd else b
        return a if rng.random() < 0.5 else b

    queue: deque[_Ranked] = deque()
    chosen: list[Scored] = []
    while len(chosen) < n:
        if len(queue) < 2:
            perm = rng.sample(inds, len(inds))
            if queue and perm[0] is queue[-1]:  # never let an individual meet itself
                perm[0], perm[1] = perm[1], perm[0]
            queue.extend(perm)
        first, second = queue.popleft(), queue.popleft()
        chosen.append(pop[winner(first, second).index])
    return chosen


def rank_crowding_order(
    pop: Sequence[Scored], objectives: Sequence[ObjectiveSpec]
) -> list[Scored]:
    """`pop` best first: NSGA-II Pareto rank, then crowding distance (larger first), then the
    order of `pop` (so the result depends only on the arguments)."""
    inds = _ranked(pop, objectives)
    inds.sort(key=lambda ind: (ind.rank, -ind.crowd, ind.index))
    return [pop[ind.index] for ind in inds]


def dcd_parents(
    pop: Sequence[Scored], n: int, objectives: Sequence[ObjectiveSpec], rng: random.Random
) -> list[Scored]:
    """`n` parents by deap's selTournamentDCD, the GE paper's rule: pairwise dominance first,
    then crowding distance (within each NSGA-II front), then a coin flip.

    deap needs a list whose length is a multiple of 4 and at least `n`; `pop` is repeated in
    full as often as fits and the rest padded with distinct members drawn by `rng`, and the
    first `n` winners are kept. Deterministic given the state of `rng`.
    """
    from deap import tools

    inds = _wrap(pop, objectives)
    if n <= 0 or not inds:
        return []
    _rank_and_crowd(inds)
    size = -(-max(n, len(inds)) // 4) * 4
    padded = inds * (size // len(inds))
    while len(padded) < size:
        padded.extend(rng.sample(inds, min(len(inds), size - len(padded))))
    with _isolated_random(rng.getrandbits(64)):
        chosen = tools.selTournamentDCD(padded, size)
    return [pop[ind.index] for ind in chosen[:n]]


class HallOfFame:
    """The best variants ever seen: a Pareto front bounded at `maxsize`.

    `update` merges new variants (a known id takes its newest metrics), keeps the non-dominated
    set, and while it is larger than `maxsize` removes the most crowded member (smallest crowding
    distance, recomputed after each removal; among equals the most recently added goes first).
    """

    def __init__(self, maxsize: int, objectives: Sequence[ObjectiveSpec]) -> None:
        if maxsize < 1:
            raise ValueError(f"hall of fame size must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.objectives: tuple[Any, ...] = tuple(objectives)
        objective_weights(self.objectives)  # validate now
        self._items: list[Scored] = []

    def update(self, pop: Sequence[Scored]) -> None:
        """Merge `pop` into the hall of fame."""
        merged: dict[str, Scored] = {item.id: item for item in self._items}
        for item in pop:
            merged.pop(item.id, None)  # re-inserted at the end: newest
            merged[item.id] = item
        front = pareto_front(list(merged.values()), self.objectives)
        weights = objective_weights(self.objectives)
        rows = [objective_values(item, weights) for item in front]
        while len(front) > self.maxsize:
            distances = crowding_distances(rows)
            lowest = min(distances)
            drop = max(i for i, d in enumerate(distances) if d == lowest)
            del front[drop], rows[drop]
        self._items = front

    @property
    def items(self) -> list[Scored]:
        """The members, oldest first."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Scored]:
        return iter(list(self._items))

    def __contains__(self, variant_id: object) -> bool:
        return any(item.id == variant_id for item in self._items)
