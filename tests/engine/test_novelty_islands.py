"""Novelty rejection compares within the island (issue 25 item 9): with ``[evolution.islands]``,
each island has its own archive (the variants born there, those that migrated in, its plans'
parents), as the islands are meant to evolve apart. Before, one archive served every island, so a
proposal could be rejected as a near-duplicate of a variant another island made.

An offline fast_exp run with 2 islands and a novelty distance that catches often (the offline
search climbs by one-token refinements): every near-duplicate found names a variant of the
proposal's own island, and the same run without islands still finds near-duplicates (the check
is not vacuous). In-process, scored by ``FakeExecutor`` (novelty is decided before evaluation).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.support.harness import FakeExecutor, run_engine
from tests.support.seeds import copy_seed, evolution_lines

FAST_EXP = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp"


def _score(files: dict[str, str]) -> dict[str, float | str]:
    chars = float(len(files["approx.py"]))
    return {"accuracy": -chars / 1000.0, "ops": chars, "heldout_accuracy": -chars / 1000.0}


def _run(tmp_path: Path, name: str, **evolution: Any) -> Path:
    seed = copy_seed(FAST_EXP, tmp_path / f"seed-{name}")
    extra = "".join(f"\n{line}" for line in evolution_lines(evolution))
    text = (seed / "ge.toml").read_text().replace("[evolution]", f"[evolution]{extra}", 1)
    (seed / "ge.toml").write_text(text)
    run_dir = tmp_path / f"run-{name}"
    summary = run_engine(
        seed, run_dir, executor=FakeExecutor(_score).factory, model="offline", generations=5,
        population=8, initial_population=8,
    )  # fmt: skip
    assert summary["finished"]
    return run_dir


def _rows(run_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(run_dir / "index.sqlite")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _homes(run_dir: Path, before: int) -> dict[str, set[int]]:
    """Each variant's islands before generation ``before``: birth (the seed: every island's
    ancestor), and checkpoints (migrants)."""
    homes: dict[str, set[int]] = {}
    for vid, island, operator in _rows(run_dir, "SELECT id, island, operator FROM variants"):
        homes.setdefault(vid, set()).update({0, 1} if operator == "seed" else {island or 0})
    for generation, islands in _rows(run_dir, "SELECT generation, islands FROM generations"):
        if generation < before:
            for k, members in enumerate(json.loads(islands or "[]")):
                for vid in members:
                    homes.setdefault(vid, set()).add(k)
    return homes


def test_near_duplicates_are_found_within_the_proposals_island(tmp_path: Path) -> None:
    novelty = {"novelty_distance": 0.05, "novelty_retries": 1}
    islands = {"islands": 2, "migration_interval": 2, "migration_size": 1}
    run_dir = _run(tmp_path, "islands", **novelty, **islands)
    events = [
        json.loads(d)
        for (d,) in _rows(run_dir, "SELECT data FROM events WHERE kind = 'near_duplicate'")
    ]
    assert len(events) >= 5, events
    for event in events:
        homes = _homes(run_dir, event["generation"])
        assert event["island"] in homes[event["variant"]], event
    assert {e["island"] for e in events} == {0, 1}
    single = _run(tmp_path, "single", **novelty)
    assert _rows(single, "SELECT COUNT(*) FROM events WHERE kind = 'near_duplicate'")[0][0] >= 5
