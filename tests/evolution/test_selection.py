"""Tests of guided_evolution.evolution.selection against deap and on the edge cases the original GE hit."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from deap import base, tools

from guided_evolution.config import Objective
from guided_evolution.evolution.scoring import Scored, better_somewhere, dominates
from guided_evolution.evolution.selection import (
    HallOfFame,
    nsga2_parents,
    pareto_front,
    rank_crowding_order,
    spea2_elites,
)

OBJ = (("acc", "max"), ("params", "min"))


def _pop(rng: random.Random, size: int, grid: int | None = None) -> list[Scored]:
    """Random variants; with `grid`, values come from a small integer grid (many ties)."""

    def value() -> float:
        return float(rng.randrange(grid)) if grid else rng.random()

    return [Scored(f"v{i:03d}", {"acc": value(), "params": value()}) for i in range(size)]


class _DeapInd:
    def __init__(self, fitness: base.Fitness, ident: str) -> None:
        self.fitness = fitness
        self.ident = ident


def _deap_inds(pop: list[Scored], objectives, scale: bool = False) -> list[_DeapInd]:
    weights = tuple(1.0 if d == "max" else -1.0 for _, d in objectives)
    fit = type("Fit", (base.Fitness,), {"weights": weights})
    rows = [tuple(s.metrics[n] for n, _ in objectives) for s in pop]
    if scale:
        cols = list(zip(*rows, strict=True))
        lo = [min(c) for c in cols]
        hi = [max(c) for c in cols]
        rows = [
            tuple((v - a) / (b - a) if b > a else 0.0 for v, a, b in zip(r, lo, hi, strict=True))
            for r in rows
        ]
    return [_DeapInd(fit(r), s.id) for s, r in zip(pop, rows, strict=True)]


# --------------------------------------------------------------------------- dominance / front


def test_dominates_follows_directions() -> None:
    a = Scored("a", {"acc": 0.9, "params": 100.0})
    b = Scored("b", {"acc": 0.8, "params": 200.0})
    assert dominates(a, b, OBJ)
    assert not dominates(b, a, OBJ)
    # maximising params too: a is better in acc, b in params, so neither dominates
    both_max = (("acc", "max"), ("params", "max"))
    assert not dominates(a, b, both_max) and not dominates(b, a, both_max)
    # minimising both: b wins on acc... and loses on params
    assert dominates(b, a, (("acc", "min"),))
    assert not dominates(a, a, OBJ)  # equal never dominates


def test_better_somewhere_follows_directions_and_ignores_ties() -> None:
    a = Scored("a", {"acc": 0.9, "params": 200.0})
    b = Scored("b", {"acc": 0.8, "params": 100.0})
    assert better_somewhere(a, b, OBJ) and better_somewhere(b, a, OBJ)  # acc vs params
    assert not better_somewhere(a, Scored("c", {"acc": 0.95, "params": 200.0}), OBJ)  # a tie
    assert not better_somewhere(a, a, OBJ)
    assert better_somewhere(b, a, (("acc", "min"),))


def test_objectives_from_config_objects() -> None:
    objs = (Objective(name="acc", direction="max"), Objective(name="params", direction="min"))
    a = Scored("a", {"acc": 0.9, "params": 1.0})
    b = Scored("b", {"acc": 0.5, "params": 2.0})
    assert dominates(a, b, objs)


@pytest.mark.parametrize("grid", [None, 4])
@pytest.mark.parametrize("directions", [("max", "min"), ("min", "min"), ("max", "max")])
def test_pareto_front_matches_deap(grid: int | None, directions: tuple[str, str]) -> None:
    objectives = tuple(zip(("acc", "params"), directions, strict=True))
    rng = random.Random(7)
    for size in range(0, 40, 3):
        pop = _pop(rng, size, grid)
        ours = [s.id for s in pareto_front(pop, objectives)]
        inds = _deap_inds(pop, objectives)
        theirs = tools.sortNondominated(inds, len(inds), first_front_only=True)[0] if inds else []
        assert sorted(ours) == sorted(i.ident for i in theirs)
        assert ours == sorted(ours)  # input order kept
        for x in pareto_front(pop, objectives):
            assert not any(dominates(y, x, objectives) for y in pop)


def test_direction_changes_the_front() -> None:
    pop = [
        Scored("small_bad", {"acc": 0.2, "params": 10.0}),
        Scored("big_good", {"acc": 0.9, "params": 1000.0}),
        Scored("mid", {"acc": 0.5, "params": 500.0}),
        Scored("dominated", {"acc": 0.4, "params": 600.0}),
    ]
    assert {s.id for s in pareto_front(pop, OBJ)} == {"small_bad", "big_good", "mid"}
    assert {s.id for s in pareto_front(pop, (("acc", "max"), ("params", "max")))} == {"big_good"}
    assert {s.id for s in pareto_front(pop, (("acc", "min"), ("params", "min")))} == {"small_bad"}


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("metrics", "fragment"),
    [
        ({"acc": math.nan, "params": 1.0}, "not finite"),
        ({"acc": 0.5, "params": math.inf}, "not finite"),
        ({"acc": 0.5}, "missing"),
        ({"acc": "0.5", "params": 1.0}, "not a number"),
        ({"acc": None, "params": 1.0}, "not a number"),
    ],
)
def test_invalid_metrics_raise_value_error(metrics: dict, fragment: str) -> None:
    pop = [Scored("good", {"acc": 0.1, "params": 1.0}), Scored("bad", metrics)]
    for call in (
        lambda: pareto_front(pop, OBJ),
        lambda: spea2_elites(pop, 1, OBJ),
        lambda: nsga2_parents(pop, 2, OBJ, random.Random(0)),
        lambda: HallOfFame(5, OBJ).update(pop),
        lambda: dominates(pop[0], pop[1], OBJ),
    ):
        with pytest.raises(ValueError, match=fragment) as err:
            call()
        assert "bad" in str(err.value)


def test_bad_objectives_raise_value_error() -> None:
    pop = [Scored("a", {"acc": 0.1})]
    with pytest.raises(ValueError, match="'max' or 'min'"):
        pareto_front(pop, (("acc", "maximize"),))
    with pytest.raises(ValueError, match="at least one objective"):
        pareto_front(pop, ())
    with pytest.raises(ValueError, match="unique"):
        pareto_front(pop, (("acc", "max"), ("acc", "min")))


# --------------------------------------------------------------------------- NSGA-II parents


def test_tournament_never_crashes_and_returns_n_members() -> None:
    rng = random.Random(3)
    for size in range(11):
        pop = _pop(rng, size, grid=3)  # ties and duplicates in objective space
        ids = {s.id for s in pop}
        for n in range(51):
            parents = nsga2_parents(pop, n, OBJ, rng)
            assert len(parents) == (n if pop else 0)
            assert all(p.id in ids for p in parents)
    assert nsga2_parents(_pop(rng, 4), -1, OBJ, rng) == []


def test_tournament_is_deterministic_and_leaves_global_random_alone() -> None:
    pop = _pop(random.Random(1), 9)
    random.seed(123)
    before = random.getstate()
    first = [p.id for p in nsga2_parents(pop, 30, OBJ, random.Random(42))]
    assert random.getstate() == before
    second = [p.id for p in nsga2_parents(pop, 30, OBJ, random.Random(42))]
    assert first == second
    others = {tuple(p.id for p in nsga2_parents(pop, 30, OBJ, random.Random(s))) for s in range(5)}
    assert len(others) > 1  # the rng does matter


def test_tournament_prefers_lower_rank() -> None:
    # a chain: v0 dominates v1 dominates ... v9; each tournament is won by the better of the two
    pop = [Scored(f"v{i}", {"acc": 1.0 - i / 10, "params": float(i)}) for i in range(10)]
    counts = Counter(p.id for p in nsga2_parents(pop, 1000, OBJ, random.Random(0)))
    assert counts["v9"] == 0  # the worst can only win against itself, which never happens
    assert counts["v0"] == 200  # the best is in exactly one of 5 pairs per pass, and wins it
    assert counts["v0"] > counts["v5"] > counts["v8"]
    # odd population sizes: the pair spanning two passes never pits a variant against itself
    three = pop[:3]
    assert all(p.id != "v2" for p in nsga2_parents(three, 301, OBJ, random.Random(5)))
    assert {p.id for p in nsga2_parents(pop[:2], 9, OBJ, random.Random(5))} == {"v0"}


def test_tournament_prefers_less_crowded_on_one_front() -> None:
    # one front; the two ends have infinite crowding distance, the middle ones are crowded
    pop = [Scored(f"v{i}", {"acc": i / 10, "params": float(i)}) for i in range(11)]
    counts = Counter(p.id for p in nsga2_parents(pop, 2000, OBJ, random.Random(0)))
    middle = sum(counts[f"v{i}"] for i in range(1, 10)) / 9
    assert counts["v0"] > 1.5 * middle and counts["v10"] > 1.5 * middle


@pytest.mark.parametrize("size", [3, 5, 7])
def test_tournament_contestants_come_from_whole_permutations_also_across_passes(size: int) -> None:
    """On a dominance chain the best wins every tournament it is in, so it is chosen as often as
    it takes part: a share 2/size of the contestants, to within one, when every pass is a whole
    permutation (odd sizes: a pass's last member meets the next pass's first, never itself)."""
    pop = [Scored(f"v{i}", {"acc": 1.0 - i / 10, "params": float(i)}) for i in range(size)]
    for seed in range(5):
        n = 3001
        counts = Counter(p.id for p in nsga2_parents(pop, n, OBJ, random.Random(seed)))
        assert abs(counts["v0"] - 2 * n / size) <= 2, (seed, counts)


def test_rank_crowding_order_is_rank_then_larger_crowding_then_input_order() -> None:
    # one front: the ends (infinite crowding) in input order, then the less crowded middle one
    a, b, c, d = (
        Scored(k, {"acc": x, "params": x}) for k, x in zip("abcd", (0, 1, 2, 10), strict=True)
    )
    dominated = Scored("e", {"acc": 0.0, "params": 11.0})
    order = rank_crowding_order([dominated, a, b, c, d], OBJ)
    assert [s.id for s in order] == ["a", "d", "c", "b", "e"]
    assert rank_crowding_order([], OBJ) == []


@pytest.mark.parametrize("shape", ["chain", "one front"])
def test_tournament_chooses_as_often_as_deap_where_deap_applies(shape: str) -> None:
    # deap's selTournamentDCD takes n == len(pop) only for a multiple of 4 and compares dominance
    # where we compare rank; on a chain (dominance is rank) and on one front (crowding distance
    # decides) of 8 both play every member in exactly two tournaments, so the counts agree.
    sign = -1 if shape == "chain" else 1
    pop = [Scored(f"v{i}", {"acc": 0.5 + sign * i / 16, "params": float(i)}) for i in range(8)]
    ours: Counter[str] = Counter()
    theirs: Counter[str] = Counter()
    trials = 400
    for seed in range(trials):
        ours.update(p.id for p in nsga2_parents(pop, 8, OBJ, random.Random(seed)))
        inds = _deap_inds(pop, OBJ)
        for front in tools.sortNondominated(inds, len(inds)):
            tools.emo.assignCrowdingDist(front)
        random.seed(seed)
        theirs.update(ind.ident for ind in tools.selTournamentDCD(inds, 8))
    for s in pop:
        assert abs(ours[s.id] - theirs[s.id]) / trials < 0.15, (s.id, ours, theirs)
    if shape == "chain":
        assert ours["v0"] == theirs["v0"] == 2 * trials and ours["v7"] == theirs["v7"] == 0


# --------------------------------------------------------------------------- SPEA2 elites


def _unit_pop(rng: random.Random, size: int) -> list[Scored]:
    """Random variants whose objectives already span exactly [0, 1]: rescaling is the identity."""
    pop = _pop(rng, size)
    pop[0] = Scored(pop[0].id, {"acc": 0.0, "params": 1.0})
    pop[-1] = Scored(pop[-1].id, {"acc": 1.0, "params": 0.0})
    return pop


def test_spea2_matches_deap_where_rescaling_changes_nothing() -> None:
    rng = random.Random(11)
    for size in (2, 5, 12, 30):
        pop = _unit_pop(rng, size)
        for k in (1, 3, 10, 40):
            ours = [s.id for s in spea2_elites(pop, k, OBJ)]
            random.seed(size * 100 + k)  # deap's pivots are random; the selection is not
            theirs = [i.ident for i in tools.selSPEA2(_deap_inds(pop, OBJ), min(k, size))]
            assert sorted(ours) == sorted(theirs), (size, k)
            assert len(ours) == len(set(ours)) == min(k, size)
    single = _pop(rng, 1)
    assert spea2_elites(single, 3, OBJ) == single


def _truncated(points: dict[str, tuple[float, float]], k: int) -> set[str]:
    """SPEA2's archive truncation as the paper (Zitzler, Laumanns, Thiele 2001) states it: while
    the archive is too large, drop the member whose ascending distances to the others are
    lexicographically smallest. Written here, independently of deap."""
    alive = set(points)

    def distances(i: str) -> list[float]:
        return sorted(math.dist(points[i], points[j]) for j in alive if j != i)

    while len(alive) > k:
        alive.remove(min(sorted(alive), key=distances))
    return alive


def test_spea2_truncates_a_large_front_like_the_paper_on_rescaled_objectives() -> None:
    rng = random.Random(3)
    for size in (8, 15, 30):
        # a trade-off: more accuracy costs more parameters, so (nearly) everyone is on the front
        us = [rng.random() for _ in range(size)]
        pop = [Scored(f"v{i:03d}", {"acc": u, "params": 1e6 * u + 50.0}) for i, u in enumerate(us)]
        front = {s.id for s in pareto_front(pop, OBJ)}
        assert len(front) == size
        lo, hi = min(us), max(us)
        unit = {s.id: ((u - lo) / (hi - lo),) * 2 for s, u in zip(pop, us, strict=True)}
        for k in (1, 2, 5, size - 1):
            assert {s.id for s in spea2_elites(pop, k, OBJ)} == _truncated(unit, k), (size, k)


def test_spea2_keeps_the_front_first_and_is_scale_free() -> None:
    rng = random.Random(5)
    pop = _pop(rng, 25)
    front = {s.id for s in pareto_front(pop, OBJ)}
    for k in range(1, 26):
        chosen = {s.id for s in spea2_elites(pop, k, OBJ)}
        assert chosen <= front if k <= len(front) else front <= chosen
    scaled = [
        Scored(s.id, {"acc": s.metrics["acc"], "params": 1e6 * s.metrics["params"]}) for s in pop
    ]
    assert [s.id for s in spea2_elites(scaled, 4, OBJ)] == [s.id for s in spea2_elites(pop, 4, OBJ)]
    assert spea2_elites(pop, 0, OBJ) == [] and spea2_elites([], 4, OBJ) == []


def test_spea2_leaves_global_random_alone() -> None:
    random.seed(9)
    before = random.getstate()
    spea2_elites(_pop(random.Random(2), 20), 15, OBJ)
    assert random.getstate() == before


# --------------------------------------------------------------------------- hall of fame


def test_hall_of_fame_unbounded_equals_front_of_everything() -> None:
    rng = random.Random(21)
    hof = HallOfFame(1000, OBJ)
    seen: list[Scored] = []
    for gen in range(8):
        batch = [Scored(f"g{gen}-{s.id}", s.metrics) for s in _pop(rng, 15, grid=6)]
        hof.update(batch)
        seen += batch
        assert sorted(s.id for s in hof.items) == sorted(s.id for s in pareto_front(seen, OBJ))


def test_hall_of_fame_is_bounded_non_dominated_and_keeps_extremes() -> None:
    rng = random.Random(4)
    objectives = (("acc", "max"), ("params", "min"), ("loss", "min"))
    hof = HallOfFame(6, objectives)
    seen: list[Scored] = []
    for gen in range(10):
        batch = [
            Scored(
                f"g{gen}-{i}", {"acc": rng.random(), "params": rng.random(), "loss": rng.random()}
            )
            for i in range(20)
        ]
        hof.update(batch)
        seen += batch
        items = hof.items
        assert 1 <= len(items) <= 6 == hof.maxsize
        assert len(hof) == len(items) == len({s.id for s in items})
        assert not any(dominates(a, b, objectives) for a in items for b in items)
        best_acc = max(seen, key=lambda s: s.metrics["acc"])
        assert best_acc.id in hof  # an extreme point has infinite crowding distance


def test_hall_of_fame_replaces_metrics_of_a_known_id() -> None:
    hof = HallOfFame(5, OBJ)
    hof.update([Scored("a", {"acc": 0.5, "params": 5.0}), Scored("b", {"acc": 0.6, "params": 6.0})])
    assert {s.id for s in hof} == {"a", "b"}
    hof.update([Scored("b", {"acc": 0.4, "params": 6.0})])  # re-evaluated: now dominated by a
    assert [s.id for s in hof] == ["a"]
    with pytest.raises(ValueError):
        HallOfFame(0, OBJ)
