"""What a closed generation leaves (``guided_evolution.evolution.generations``, pure): the islands'
next populations, the hall of fame, steady mode's virtual generations. The runs that use them
are in tests/engine/test_engine.py, tests/engine/test_steady.py and tests/engine/test_islands.py."""

from __future__ import annotations

from collections.abc import Sequence

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.generations import (
    VirtualGenerations,
    archive,
    close_generation,
    close_virtual,
    next_islands,
)
from guided_evolution.evolution.scoring import Scored

OBJECTIVES = [("accuracy", "max"), ("size", "min")]
# The Pareto front is {a, c}: a is small, c accurate; b and the seed are dominated by a.
SCORES = {"seed": (1.0, 2.0), "a": (3.0, 1.0), "b": (2.0, 5.0), "c": (5.0, 9.0), "d": (4.0, 9.5)}


def score(ids: Sequence[str]) -> list[Scored]:
    """Every id in SCORES is selectable; the others (failed children) are not."""
    return [
        Scored(v, {"accuracy": SCORES[v][0], "size": SCORES[v][1]}) for v in ids if v in SCORES
    ]


def test_after_generation_0_each_island_holds_the_seed_and_its_children() -> None:
    children = [(1, "c"), (0, "a"), (1, "d"), (0, "a")]  # a repeated child counts once
    assert next_islands(0, "seed", [["x"], ["y"]], [(0, "late")], children) == [
        ["seed", "a"],
        ["seed", "c", "d"],
    ]


def test_later_islands_hold_their_elites_their_late_children_then_their_children() -> None:
    got = next_islands(3, "seed", [["a", "b"], ["c"]], [(1, "late"), (0, "b")], [(0, "n"), (1, "m")])
    assert got == [["a", "b", "n"], ["c", "late", "m"]]


def test_a_closed_generation_keeps_the_best_in_its_hall_of_fame_and_migrates_nothing_alone() -> None:
    evo = EvolutionConfig(hall_of_fame=2)
    closed = close_generation(
        2, "seed", [["b", "a"]], [], [(0, "c"), (0, "failed")], ["seed"], score, evo, OBJECTIVES
    )
    assert closed.population == ["b", "a", "c", "failed"]
    assert closed.islands == [closed.population]
    assert closed.elites == ["b", "a"]
    assert sorted(closed.hall_of_fame) == ["a", "c"]  # the front of the old hall and the new
    assert closed.moves == []


def test_the_archive_is_the_spea2_best_or_the_seed_when_nothing_is_selectable() -> None:
    assert sorted(archive(score(["a", "b", "c"]), None, 2, OBJECTIVES)) == ["a", "c"]
    seed = score(["seed"])[0]
    assert archive([], seed, 3, OBJECTIVES) == ["seed"]
    assert archive([], None, 3, OBJECTIVES) == []


def test_virtual_generations_close_in_order_once_drawn_and_resolved() -> None:
    evo = EvolutionConfig(initial_population=2, population=1)
    book: VirtualGenerations[str] = VirtualGenerations(evo, 0, [])
    first = book.get(0)
    assert (first.size, book.get(1).size) == (2, 1)
    book.drew(first, True)
    assert book.population_ids("seed") == ["seed"]  # nothing closed yet: drawn from the seed
    book.resolved(0, "outcome 0", "a")
    assert book.ready() is None  # one of its two draws made
    assert book.ready(force=True) is first  # cut short: closes with what it drew
    book.drew(first, False)  # a draw that made no plan
    assert book.ready() is first
    book.drew(book.get(1), True)
    book.resolved(1, "outcome 1", "b")
    assert book.population_ids("seed") == ["seed", "a", "b"]
    population, fame = close_virtual(first, ["a"], "seed", [], score, evo, OBJECTIVES)
    assert population == ["seed", "a"] and fame == ["a"]  # a dominates the seed
    book.closed(first, ["a"])
    assert book.closing == 1 and 0 not in book.open
    assert book.population_ids("seed") == ["a", "b"]  # generation 1's archive, then its fresh
    assert book.ready() is book.get(1)


def test_a_generation_that_drew_nothing_is_not_closed_even_when_forced() -> None:
    book: VirtualGenerations[str] = VirtualGenerations(EvolutionConfig(), 3, ["a"])
    assert book.ready(force=True) is None
    assert book.population_ids("seed") == ["a"]
