"""The steady-state mode (`[evolution] mode = "steady"`): no generation barrier, checkpoints in
virtual generations, the same run when completion order is the same, and a kill that loses
nothing and evaluates nothing twice. The kill and the CLI's stop message run `ge`; the other runs
are in-process (tests/support/harness.py), scored by ``FakeExecutor``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.engine.test_reproducibility import snapshot
from tests.reliability.support import llm_config
from tests.support.cli import ge_here, here_json
from tests.support.harness import FakeExecutor, resume_engine, run_engine, size_score
from tests.support.openai_server import serve, status
from tests.support.seeds import CodeWriter, template_seed

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
STEADY = {
    "mode": "steady",
    "generations": 3,
    "initial_population": 4,
    "population": 4,
    "elites": 3,
    "crossover_probability": 0.5,
    "seed": 5,
}


def _one_slot(seed: Path) -> Path:
    toml = (seed / "ge.toml").read_text()
    (seed / "ge.toml").write_text(toml.replace("slots = 2", "slots = 1"))
    return seed


def test_children_are_planned_before_their_generation_barrier_and_checkpointed(
    tmp_path: Path,
) -> None:
    seed = template_seed(tmp_path / "seed", **STEADY)
    run_dir = tmp_path / "run"
    slow = FakeExecutor(size_score, delay_s=0.3)  # each evaluation takes 0.3 s
    summary = run_engine(seed, run_dir, executor=slow.factory)
    assert summary["finished"] and summary["stop_reason"] == "completed 3 generations"
    assert summary["generation"] == 3
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        records = [index.get_generation(g) for g in range(4)]
        events = index.events()
        variants = {v.id: v for v in index.variants()}
    finally:
        index.close()
    assert all(records), "every virtual generation is checkpointed"
    finished = {e.data["generation"]: e.id for e in events if e.kind == "generation_finished"}
    planned = [e for e in events if e.kind == "child_planned"]
    assert len(planned) == 4 * 4, "one stored draw per child of each virtual generation"
    started = [e.data for e in events if e.kind == "generation_started"]
    assert [d["generation"] for d in started] == [0, 1, 2, 3]
    assert all(d["mode"] == "steady" for d in started)
    # No barrier: children of generation g + 1 are drawn before generation g is finished.
    early = [
        e for e in planned if e.data["generation"] > 0 and e.id < finished[e.data["generation"] - 1]
    ]
    assert early, "every draw waited for the previous generation"
    for g in range(1, 4):
        record = records[g]
        assert record is not None
        children = [v.id for v in variants.values() if v.generation == g]
        # the population = the archive it started from (the previous generation's SPEA2
        # elites) + its children; the archive is a subset of the previous population
        assert set(record.population) == set(record.elites) | set(children)
        assert set(record.elites) <= set(records[g - 1].population)
        assert 1 <= len(record.elites) <= STEADY["elites"]
    for v in variants.values():  # parents were evaluated members of the population
        for parent in v.parents:
            assert variants[parent].status == "evaluated", (v.id, parent)
    status = here_json("status", str(run_dir), cwd=tmp_path)
    assert status["generation"] == 3 and status["finished"]


def test_two_steady_runs_with_one_slot_are_the_same_run(tmp_path: Path) -> None:
    """With one slot and proposals ready before the slot frees (the offline operators), every
    evaluation ends in the same order, so every draw sees the same population: the same
    variants, metrics, checkpoints and trees."""
    runs = []
    for name in ("run_alpha", "run_beta"):
        seed = _one_slot(template_seed(tmp_path / f"seed_{name}", **STEADY))
        summary = run_engine(seed, tmp_path / name, executor=FakeExecutor(size_score, 1).factory)
        assert summary["finished"], summary
        runs.append(snapshot(tmp_path / name))
    assert any(row[2] == "offline-crossover" for row in runs[0]["variants"])
    for key in runs[0]:
        assert runs[0][key] == runs[1][key], key


def test_a_kill_loses_nothing_and_evaluates_nothing_twice(tmp_path: Path) -> None:
    """SIGKILL inside the transaction of the 9th recorded evaluation (its child is committed,
    not evaluated), then `ge resume`: that child is evaluated, no child is evaluated twice, every
    stored draw made its child, and every virtual generation is checkpointed."""
    seed = template_seed(tmp_path / "seed", **STEADY)
    run_dir = tmp_path / "run"
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(ROOT)}
    args = ["run", str(seed), "--run-dir", str(run_dir), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability.killpoint", "evaluation", "9", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    db = sqlite3.connect(f"file:{run_dir / 'index.sqlite'}?mode=ro", uri=True)
    try:
        unevaluated = {
            vid
            for (vid,) in db.execute(
                "SELECT id FROM variants WHERE id NOT IN (SELECT variant_id FROM evaluations)"
            )
        }
        drawn = db.execute("SELECT count(*) FROM events WHERE kind = 'child_planned'").fetchone()
    finally:
        db.close()
    assert unevaluated, "the kill left a committed child without its evaluation"
    assert drawn[0] > 0
    summary = here_json("resume", str(run_dir), cwd=tmp_path)
    assert summary["finished"], summary
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        runs = {}
        for ev in index.evaluations():
            if ev.stage == "evaluate":
                runs[ev.variant_id] = runs.get(ev.variant_id, 0) + 1
        variants = index.variants()
        assert all(v.status in ("evaluated", "failed") for v in variants)
        assert unevaluated <= set(runs), "the child committed before the kill was evaluated"
        assert max(runs.values()) == 1, "no child was evaluated twice"
        assert [g.generation for g in map(index.get_generation, range(4)) if g] == [0, 1, 2, 3]
        draws = [e.data for e in index.events("child_planned")]
        keys = [(d["generation"], d["index"]) for d in draws]
        assert len(keys) == len(set(keys)) == 16, "each draw stored once: replayed, not redrawn"
    finally:
        index.close()
    doctor = ge_here("doctor", str(run_dir), "--json", cwd=tmp_path)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["ok"], doctor.stdout


def test_an_llm_error_stops_a_steady_run_and_resume_continues(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", **STEADY)
    failing = True
    writer = CodeWriter()

    def responder(request: dict) -> object:
        return status(401) if failing else writer(request)

    with serve(responder=responder) as server:
        llm_config(seed, server.base_url)
        proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        message = " ".join(proc.stderr.split())
        assert "the LLM calls keep failing" in message and "ge resume" in message
        failing = False
        summary = resume_engine(tmp_path / "run", executor=FakeExecutor(size_score).factory)
    assert summary["finished"] and summary["generation"] == 3 and summary["evaluated"] > 8


def test_the_budget_ends_a_steady_run_with_its_last_generation_recorded(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", **STEADY)
    with serve(responder=CodeWriter()) as server:
        llm_config(seed, server.base_url)
        toml = (
            (seed / "ge.toml")
            .read_text()
            .replace(
                'models = ["openai/test-model"]',
                'models = [{ model = "openai/priced", input_cost_per_token = 0.001, '
                "output_cost_per_token = 0.001 }]\nbudget_usd = 1.5",
            )
        )
        (seed / "ge.toml").write_text(toml)
        summary = run_engine(seed, tmp_path / "run", executor=FakeExecutor(size_score).factory)
    assert summary["finished"] and "budget" in summary["stop_reason"], summary
    assert summary["cost_usd"] <= 1.5 + 4 * 0.2 + 1e-9
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        for v in index.variants():  # every evaluated child is in its generation's checkpoint
            record = index.get_generation(v.generation)
            if v.operator != "seed" and v.status == "evaluated":
                assert record is not None and v.id in record.population, v.id
    finally:
        index.close()
