"""The bandits' arm tallies kept per generation in the index (issue 29): what `ge status` shows
equals the tally of every pull recomputed from scratch (``read_history`` over the whole index,
``bandit.tally``), on the first read (which stores the rows), on a later read (which uses them),
and after the records under a stored row changed (a re-evaluation, a variant removed), where the
row must not be trusted."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path
from typing import Any

from guided_evolution.config import ResolvedConfig
from guided_evolution.evolution.bandit import state_dict, tally
from guided_evolution.evolution.bandit_history import operator_arms, read_history
from guided_evolution.runstore.records import EvaluationRecord
from guided_evolution.runstore.run_index import RunIndex
from tests.support.harness import FakeExecutor, run_engine, view_json
from tests.support.seeds import template_seed


def _score(files: dict[str, str]) -> dict[str, float | str] | str:
    text = files.get("model.py", "")
    crc = zlib.crc32(text.encode())
    if crc % 5 == 0:
        return "exit code 1"
    return {"score": (crc % 1000) / 1000.0, "size": float(len(text))}


def _expected(run: Path) -> dict[str, Any]:
    cfg = ResolvedConfig.model_validate_json((run / "config.json").read_text()).config
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    offline = cfg.llm.offline
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        found = read_history(index, objectives, offline=offline)
    weights = {} if offline else {m.model: m.weight for m in cfg.llm.models}
    return {
        "models": state_dict(tally(weights, found.models)),
        "personas": state_dict(tally(operator_arms(cfg), found.personas)),
    }


def _shown(run: Path) -> dict[str, Any]:
    bandit = view_json("status", run)["bandit"]
    return {"models": bandit["models"], "personas": bandit["personas"]}


def _stored(run: Path) -> int:
    conn = sqlite3.connect(run / "index.sqlite")
    try:
        return conn.execute("SELECT count(*) FROM generation_tallies").fetchone()[0]
    finally:
        conn.close()


def _improving_variant(run: Path) -> tuple[str, int]:
    """A child of generation >= 1 counted as an improvement, and its generation."""
    cfg = ResolvedConfig.model_validate_json((run / "config.json").read_text()).config
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    from guided_evolution.evolution.bandit_history import improved

    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        latest = index.latest_evaluations()
        for v in index.variants():
            if v.generation >= 1 and v.parents and improved(v.id, v.parents, latest, objectives):
                return v.id, v.generation
    raise AssertionError("no improving child in the run")


def _bandit_seed(directory: Path, generations: int) -> Path:
    """The template seed, offline, with the bandit on (its arms: the offline edit classes)."""
    seed = template_seed(directory, generations=generations, initial_population=6, population=6)
    text = (seed / "ge.toml").read_text().replace("[llm]\n", '[llm]\nbandit = { kind = "ucb1" }\n')
    (seed / "ge.toml").write_text(text)
    return seed


def test_stored_tallies_equal_the_recomputed_ones_and_follow_changes(tmp_path: Path) -> None:
    seed = _bandit_seed(tmp_path / "seed", 4)
    run = tmp_path / "run"
    run_engine(seed, run, executor=FakeExecutor(_score).factory)
    expected = _expected(run)
    assert sum(a["pulls"] for a in expected["personas"]) > 0
    assert sum(a["improvements"] for a in expected["personas"]) > 0
    assert _shown(run) == expected  # the first read computes and stores
    assert _stored(run) >= 4
    assert _shown(run) == expected  # the next reads the rows

    # A re-evaluation that makes an improving child fail: its generation's row is stale.
    vid, _generation = _improving_variant(run)
    with RunIndex.open(run / "index.sqlite") as index:
        index.add_evaluation(EvaluationRecord(vid, "failed", attempt=2, failure_reason="exit code 1"))
    changed = _expected(run)
    assert changed != expected
    assert _shown(run) == changed

    # A variant removed (as a salvage does): its generation's count no longer matches.
    with RunIndex.open(run / "index.sqlite") as index:
        index.delete_variant(vid)
    assert _shown(run) == _expected(run)


def test_an_unwritable_index_still_shows_the_tallies(tmp_path: Path) -> None:
    seed = _bandit_seed(tmp_path / "seed", 2)
    run = tmp_path / "run"
    run_engine(seed, run, executor=FakeExecutor(_score).factory)
    expected = _expected(run)
    for path in (run / "index.sqlite", run):
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        assert _shown(run) == expected
    finally:
        run.chmod(0o755)
        (run / "index.sqlite").chmod(0o644)
