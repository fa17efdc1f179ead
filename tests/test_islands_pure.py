"""Islands' pure rules (``guided_evolution.evolution.islands``): population shares, the migration
schedule, destinations and which migrants move. The end-to-end runs are in tests/test_islands.py;
these are fast and run under tools/mutation_test.sh."""

from __future__ import annotations

import pytest

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.islands import migrate
from guided_evolution.evolution.scoring import Scored

pytest.importorskip("numpy")

OBJECTIVES = [("accuracy", "max"), ("ops", "min")]


def test_an_island_sends_its_best_that_the_destination_does_not_hold_already() -> None:
    evo = EvolutionConfig(islands=2, migration_size=1, migration_interval=1)
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
