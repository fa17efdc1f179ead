"""Loading a resumed run's evaluated variants into the front at once (``selection.distinct_front``,
used by the progress line and the early-stop rules) leaves exactly the front that adding them one
by one leaves: same members, same order, the first of equal points (issue 29: 100,000 variants)."""

from __future__ import annotations

import random

import pytest

from guided_evolution.engine.progress import Progress
from guided_evolution.evolution.scoring import Scored, dominates
from guided_evolution.evolution.selection import distinct_front


def one_by_one(points: list[Scored], objectives: list[tuple[str, str]]) -> list[Scored]:
    front: list[Scored] = []
    for p in points:
        if any(dict(f.metrics) == dict(p.metrics) or dominates(f, p, objectives) for f in front):
            continue
        front = [f for f in front if not dominates(p, f, objectives)] + [p]
    return front


@pytest.mark.parametrize("k", [1, 2, 3])
def test_at_once_equals_one_by_one(k: int) -> None:
    rng = random.Random(k)
    objectives = [(f"o{i}", rng.choice(["max", "min"])) for i in range(k)]
    for trial in range(200):
        n = rng.randint(0, 60)
        points = [
            Scored(f"v{trial}-{j}", {name: float(rng.randint(0, 6)) for name, _ in objectives})
            for j in range(n)
        ]
        assert distinct_front(points, objectives) == one_by_one(points, objectives)


def test_progress_load_keeps_what_best_would_keep() -> None:
    objectives = [("acc", "max"), ("size", "min")]
    rng = random.Random(3)
    points = [Scored(f"v{j}", {"acc": rng.randint(0, 9) / 10, "size": rng.randint(1, 9)}) for j in range(500)]
    loaded, added = Progress(objectives), Progress(objectives)
    loaded.load(points[:250])
    loaded.load(points[250:])
    for p in points:
        added.best(p)
    assert [p.id for p in loaded.front] == [p.id for p in added.front]
