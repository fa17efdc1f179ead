"""Per-generation measures kept in the index (issue 29 item 1): the engine stores each closed
generation's; a reader recomputes none of them, and computes and stores those a run lacks (a run
of an earlier ge, an index rebuilt by `ge doctor`, a row that no longer matches its checkpoint).

The expected values are recomputed here from scratch: each member's files read from git, split
into segments and measured with `evolution.diversity` (one fresh cache per generation), its
latest evaluation scored, the valid members' Pareto front taken with `evolution.selection`.
"""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.config import ResolvedConfig
from guided_evolution.evolution import diversity
from guided_evolution.evolution.scoring import scored
from guided_evolution.evolution.selection import pareto_front
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.index_schema import SCHEMA_VERSION
from guided_evolution.runstore.rebuild import rebuild_index
from guided_evolution.runstore.run_index import RunIndex
from tests.support.harness import FakeExecutor, resume_engine, run_engine, view_json
from tests.support.seeds import template_seed


def _score(files: dict[str, str]) -> dict[str, float | str] | str:
    """Two objectives that disagree (a real front), and some failures (valid < population)."""
    text = files.get("model.py", "")
    crc = zlib.crc32(text.encode())
    if crc % 5 == 0:
        return "exit code 1"
    return {"score": (crc % 1000) / 1000.0, "size": float(len(text))}


def _run(tmp_path: Path, generations: int = 3, **evolution: Any) -> Path:
    seed = template_seed(tmp_path / "seed", generations=generations, **evolution)
    run_engine(seed, tmp_path / "run", executor=FakeExecutor(_score).factory)
    return tmp_path / "run"


def _expected(run: Path) -> dict[int, dict[str, Any]]:
    """Every checkpoint's measures, recomputed from git and the evaluations."""
    cfg = ResolvedConfig.model_validate_json((run / "config.json").read_text()).config
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    out = {}
    with (
        RunIndex.open(run / "index.sqlite", readonly=True) as index,
        GitStore.open(run / "repo.git") as store,
    ):
        for gen, population in index.populations().items():
            members = []
            for vid in population:
                raw = store.read_files(index.get_variant(vid).commit_sha)
                files = {p: raw[p].decode() for p in cfg.seed.files}
                members.append(diversity.split_segments(files, cfg.seed.files, cfg.seed.marker))
            found = diversity.measure(members, diversity.DistanceCache())
            valid = [
                s for v in population if (s := scored(v, index.latest_evaluation(v), objectives))
            ]
            out[gen] = {
                "members": population,
                "valid": len(valid),
                "front": [s.id for s in pareto_front(valid, objectives)],
                "distinct": found.distinct,
                "mean_distance": found.mean_distance,
                "sampled": found.sampled,
            }
    return out


def _stored(run: Path) -> dict[int, dict[str, Any]]:
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        return {
            g: {
                "members": m.members,
                "valid": m.valid,
                "front": m.front,
                "distinct": m.distinct,
                "mean_distance": m.mean_distance,
                "sampled": m.distance_sampled,
            }
            for g, m in index.generation_measures().items()
        }


def _status_diversity(run: Path) -> list[dict[str, Any]]:
    return view_json("status", run)["diversity"]


def _as_rows(expected: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "generation": g,
            "population": len(e["members"]),
            "valid": e["valid"],
            "front": len(e["front"]),
            "distinct": e["distinct"],
            "mean_distance": e["mean_distance"],
            "distance_sampled": e["sampled"],
        }
        for g, e in sorted(expected.items())
    ]


def test_the_engine_stores_every_generations_measures(tmp_path: Path) -> None:
    run = _run(tmp_path)
    expected = _expected(run)
    assert sorted(expected) == [0, 1, 2, 3]
    assert any(0 < len(e["front"]) < e["valid"] < len(e["members"]) for e in expected.values())
    assert _stored(run) == expected
    assert _status_diversity(run) == _as_rows(expected)


def test_steady_mode_stores_each_virtual_generations_measures(tmp_path: Path) -> None:
    run = _run(tmp_path, generations=2, mode="steady")
    expected = _expected(run)
    assert sorted(expected) == [0, 1, 2]
    assert _stored(run) == expected


def test_measures_after_resume(tmp_path: Path) -> None:
    run = _run(tmp_path, generations=1)
    resume_engine(run, executor=FakeExecutor(_score).factory, generations=3)
    expected = _expected(run)
    assert sorted(expected) == [0, 1, 2, 3]
    assert _stored(run) == expected


def test_after_a_rebuilt_index_the_first_read_measures_and_stores(tmp_path: Path) -> None:
    run = _run(tmp_path)
    before = _status_diversity(run)
    rebuild_index(run)
    assert _status_diversity(run) == before
    assert _stored(run) == _expected(run)


def _as_earlier_ge(run: Path) -> None:
    """The index as a ge of schema version 3 left it: no measures table."""
    db = sqlite3.connect(run / "index.sqlite")
    db.execute("DROP TABLE generation_measures")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()


def test_a_run_of_an_earlier_ge_gets_its_measures_on_first_read(tmp_path: Path) -> None:
    run = _run(tmp_path)
    expected = _expected(run)
    _as_earlier_ge(run)
    assert _stored(run) == {}
    assert _status_diversity(run) == _as_rows(expected)  # computed, and stored by this read
    assert _stored(run) == expected
    db = sqlite3.connect(run / "index.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3  # a reader migrates nothing
    db.close()
    with RunIndex.open(run / "index.sqlite") as index:  # the engine's open migrates over it
        assert (
            index.generation_measures()
            == RunIndex.open(run / "index.sqlite", readonly=True).generation_measures()
        )
    db = sqlite3.connect(run / "index.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_row_that_no_longer_matches_its_checkpoint_is_recomputed(tmp_path: Path) -> None:
    """A stored row is trusted only for the population it lists: one tampered with (here: a
    generation's front and distance rewritten for another population) is measured again."""
    run = _run(tmp_path)
    expected = _expected(run)
    db = sqlite3.connect(run / "index.sqlite")
    db.execute(
        "UPDATE generation_measures SET members = '[\"x\"]', front = '[\"x\"]',"
        " mean_distance = 0.999 WHERE generation = 2"
    )
    db.commit()
    db.close()
    assert _status_diversity(run) == _as_rows(expected)
    assert _stored(run) == expected


def test_a_reader_that_cannot_write_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path, generations=1)
    expected = _expected(run)
    _as_earlier_ge(run)
    uri = (run / "index.sqlite").resolve().as_uri()
    real = sqlite3.connect

    def read_only(target: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if isinstance(target, str) and target.startswith(uri) and "mode=rw" in target:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    assert _status_diversity(run) == _as_rows(expected)
    monkeypatch.undo()
    assert _stored(run) == {}
