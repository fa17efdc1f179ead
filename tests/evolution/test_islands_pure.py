"""Islands' pure rules (``guided_evolution.evolution.islands``): population shares, the migration
schedule, destinations and which migrants move. The end-to-end runs are in tests/engine/test_islands.py;
these are fast and run under tools/mutation_test.sh."""

from __future__ import annotations

from collections import Counter

import pytest

from guided_evolution.config import EvolutionConfig
from guided_evolution.config_moved import migrate as migrate_config
from guided_evolution.evolution.islands import (
    Move,
    destinations,
    island_configs,
    migrate,
    migrates_after,
    shares,
)
from guided_evolution.evolution.scoring import Scored

pytest.importorskip("numpy")

OBJECTIVES = [("accuracy", "max"), ("ops", "min")]


def evo_config(**flat: object) -> EvolutionConfig:
    """An EvolutionConfig from flat knob names (islands=2 is [evolution.islands] count = 2)."""
    return EvolutionConfig.model_validate(migrate_config({"evolution": flat})["evolution"])


def test_an_island_sends_its_best_that_the_destination_does_not_hold_already() -> None:
    evo = evo_config(islands=2, migration_size=1, migration_interval=1)
    top, second = (
        Scored("top", {"accuracy": 7.0, "ops": 10.0}),
        Scored("b", {"accuracy": 6.0, "ops": 11.0}),
    )
    other = Scored("c", {"accuracy": 1.0, "ops": 30.0})
    # Island 0's best ("top") migrated to island 1 earlier: its next best goes instead.
    after, moves = migrate(
        [["top", "b"], ["c", "top"]], [[top, second], [other, top]], evo, OBJECTIVES, 1
    )
    assert [(m.source, m.dest, m.variants) for m in moves] == [(0, 1, ("b",)), (1, 0, ("c",))]
    assert after == [["top", "b", "c"], ["c", "top", "b"]]


def test_shares_split_a_total_evenly_the_first_islands_taking_the_rest() -> None:
    assert shares(7, 3) == [3, 2, 2]
    assert shares(6, 3) == [2, 2, 2]
    assert shares(2, 3) == [1, 1, 0]
    assert shares(5, 1) == [5]


def test_island_configs_hold_each_islands_shares_and_the_rest_of_the_run() -> None:
    one = evo_config(population=10)
    assert island_configs(one) == [one]
    evo = evo_config(islands=3, population=10, elites=4, initial_population=7, seed=5)
    configs = island_configs(evo)
    assert [(c.population, c.elites, c.initial_population) for c in configs] == [
        (4, 2, 3),
        (3, 1, 2),
        (3, 1, 2),
    ]
    assert all(c.seed == 5 and c.islands.count == 3 for c in configs)
    two = island_configs(evo_config(islands=2, population=5, elites=3, initial_population=4))
    assert [(c.population, c.elites, c.initial_population) for c in two] == [(3, 2, 2), (2, 1, 2)]


def test_migration_follows_every_interval_th_generation_after_the_first() -> None:
    evo = evo_config(islands=2, migration_interval=3, migration_size=1)
    assert [g for g in range(10) if migrates_after(g, evo)] == [3, 6, 9]
    assert not any(migrates_after(g, evo_config(islands=1)) for g in range(10))
    none = evo_config(islands=2, migration_interval=1, migration_size=0)
    assert not any(migrates_after(g, none) for g in range(10))
    every = evo_config(islands=2, migration_interval=1, migration_size=1)
    assert [g for g in range(4) if migrates_after(g, every)] == [1, 2, 3]


def test_a_move_as_its_event() -> None:
    move = Move(2, 0, ("a", "b"))
    assert move.as_event() == {"from": 2, "to": 0, "variants": ["a", "b"]}


def test_a_ring_sends_to_the_next_island_whatever_the_generation() -> None:
    for generation in range(1, 30):
        assert destinations(3, "ring", 0, generation) == [1, 2, 0]
        assert destinations(4, "ring", 7, generation) == [1, 2, 3, 0]
    assert destinations(1, "ring", 0, 1) == [0]
    assert destinations(1, "random", 0, 1) == [0]


def test_random_destinations_are_uniform_derangements_fixed_by_seed_and_generation() -> None:
    drawn = [tuple(destinations(4, "random", 0, g)) for g in range(1, 451)]
    assert all(all(d[i] != i for i in range(4)) and sorted(d) == [0, 1, 2, 3] for d in drawn)
    assert drawn == [tuple(destinations(4, "random", 0, g)) for g in range(1, 451)]
    counts = Counter(drawn)  # 9 derangements of 4, 50 expected each
    assert len(counts) == 9 and all(15 <= c <= 85 for c in counts.values()), counts
    assert drawn != [tuple(destinations(4, "random", 1, g)) for g in range(1, 451)]
    assert destinations(2, "random", 3, 1) == [1, 0]


def _line(island: int, n: int) -> list[Scored]:
    """``n`` variants of island ``island``, each dominating the next (v0 best)."""
    return [Scored(f"i{island}v{j}", {"accuracy": 10.0 - j, "ops": 1.0 + j}) for j in range(n)]


def test_migration_sends_the_best_migration_size_along_the_topology() -> None:
    scored = [_line(i, 3) for i in range(4)]
    islands = [[s.id for s in members] for members in scored]
    for size in (1, 2):
        evo = evo_config(islands=4, migration_size=size, migration_interval=1)
        after, moves = migrate(islands, scored, evo, OBJECTIVES, 2)
        sent = [tuple(f"i{i}v{j}" for j in range(size)) for i in range(4)]
        assert [(m.source, m.dest, m.variants) for m in moves] == [
            (i, (i + 1) % 4, sent[i]) for i in range(4)
        ]
        assert after[1] == [*islands[1], *sent[0]]
    for seed in (0, 1, 2):
        for generation in range(1, 8):
            evo = evo_config(
                islands=4, migration_size=1, migration_topology="random", seed=seed
            )
            _, moves = migrate(islands, scored, evo, OBJECTIVES, generation)
            targets = destinations(4, "random", seed, generation)
            assert [m.dest for m in moves] == targets
