"""A byte-identical duplicate proposal is a bandit pull with reward 0 (issue 25 item 9): its plan's
drawn arm and its last call's model, with its calls' cost (``bandit_duplicate`` events, counted by
``bandit_history.read_history`` once per plan). Before, a duplicate was recorded as the existing
variant and counted for nobody: an arm whose proposals repeat the run's code cost nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.engine.bandits import batch_ucb1
from guided_evolution.evolution.bandit import ArmStats, Pull
from guided_evolution.evolution.bandit_history import DUPLICATE, read_history
from guided_evolution.runstore.run_index import RunIndex
from tests.support.harness import FakeExecutor, run_engine, size_score
from tests.support.seeds import copy_seed, template_seed

FAST_EXP = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp"
OBJECTIVES = (("score", "max"),)


@dataclass
class _Row:
    id: str
    parents: list[str]
    generation: int = 1
    model: str = "m1"
    persona: str = "expert"
    eot_reflection: str | None = None


@dataclass
class _Call:
    id: int
    variant_id: str | None
    model: str
    cost_usd: float


@dataclass
class _Event:
    data: dict[str, Any]


@dataclass
class _Records:
    variants_: list[_Row]
    latest: dict[str, Any]
    calls_: list[_Call]
    events_: dict[str, list[_Event]] = field(default_factory=dict)

    def latest_evaluations(self) -> Mapping[str, Any]:
        return self.latest

    def calls(self) -> Sequence[Any]:
        return self.calls_

    def variants(self) -> Sequence[Any]:
        return self.variants_

    def events(self, kind: str) -> Sequence[Any]:
        return self.events_.get(kind, [])


@dataclass
class _Eval:
    metrics: dict[str, float]
    status: str = "ok"


def test_a_duplicate_is_a_zero_pull_of_its_model_and_arm_once_per_plan() -> None:
    records = _Records(
        [_Row("seed", [], generation=0, model="", persona=""), _Row("a", ["seed"])],
        {"seed": _Eval({"score": 0.0}), "a": _Eval({"score": 1.0})},
        [_Call(1, "a", "m1", 0.5), _Call(2, None, "m1", 0.25), _Call(3, None, "m2", 1.0)],
        {
            DUPLICATE: [
                _Event({"generation": 1, "plan": 3, "variant": "a", "arm": "mutation/hacker",
                        "calls": [2, 3]}),
                _Event({"generation": 1, "plan": 3, "variant": "a", "arm": "mutation/hacker",
                        "calls": [2, 3]}),  # a resumed run, again
                _Event({"generation": 1, "plan": 5, "variant": "a", "arm": None, "calls": [2]}),
                _Event({"generation": 2, "plan": 0, "variant": "a", "arm": "eot/-", "calls": []}),
            ]
        },
    )  # fmt: skip
    history = read_history(records, OBJECTIVES, before=2)
    assert history.models == [Pull("m1", 1.0, 0.5), Pull("m2", 0.0, 1.25), Pull("m1", 0.0, 0.25)]
    assert history.personas == [
        Pull("mutation/expert", 1.0, 0.5),
        Pull("mutation/hacker", 0.0, 1.25),
    ]
    everything = read_history(records, OBJECTIVES)
    assert Pull("eot/-", 0.0, 0.0) in everything.personas
    assert len(everything.models) == 3  # the later duplicate made no call: no model's pull


# --------------------------------------------------------------------------- a run


def _score(files: dict[str, str]) -> dict[str, float | str]:
    chars = float(len(files["approx.py"]))
    return {"accuracy": -chars / 1000.0, "ops": chars, "heldout_accuracy": -chars / 1000.0}


def _events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(run_dir / "index.sqlite")
    try:
        rows = db.execute("SELECT data FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    finally:
        db.close()
    return [json.loads(row[0]) for row in rows]


def test_an_offline_runs_duplicates_count_for_their_arms(tmp_path: Path) -> None:
    seed = copy_seed(FAST_EXP, tmp_path / "seed")
    config = seed / "ge.toml"
    config.write_text(
        config.read_text().replace("[llm]\n", '[llm]\nbandit = { kind = "ucb1" }\n', 1)
    )
    run_dir = tmp_path / "run"
    summary = run_engine(
        seed, run_dir, executor=FakeExecutor(_score).factory, model="offline", generations=6,
        population=8, initial_population=8,
    )  # fmt: skip
    assert summary["finished"]
    byte_identical = {
        (e["generation"], e["plan"]) for e in _events(run_dir, "duplicate") if "same" not in e
    }
    counted = _events(run_dir, DUPLICATE)
    assert byte_identical, "the offline search repeats itself: the check is not vacuous"
    assert {(e["generation"], e["plan"]) for e in counted} == byte_identical
    # a plan that only crossed over drew no arm (and offline, no model): nobody's pull
    assert {e["arm"] for e in counted} <= {None, "nudge", "swap", "statement"}, counted
    # the history counts them: every decided child with an arm, every rejected plan's drawn arm,
    # and every duplicate's (a read of the run's own index, not of made-up records)
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        history = read_history(index, (("accuracy", "max"), ("ops", "min")), offline=True)
        children = [
            v for v in index.variants()
            if v.parents and v.persona and v.id in index.latest_evaluations()
        ]  # fmt: skip
    finally:
        index.close()
    rejected = {(e["generation"], e["plan"]) for e in _events(run_dir, "bandit_rejected")}
    with_arm = [e for e in counted if e["arm"]]
    assert with_arm, counted
    assert len(history.personas) == len(children) + len(rejected) + len(with_arm)
    zero = [p for p in history.personas if p.reward == 0.0]
    assert {e["arm"] for e in with_arm} <= {p.arm for p in zero}


# --------------------------------------------------------------------------- UCB1 in a batch


def test_ucb1_spreads_one_generations_children_over_the_arms() -> None:
    """One state serves a generation's children; UCB1 is deterministic, so each child counts the
    picks before it (at the arm's mean): the generation does not explore one arm only."""
    fresh = [ArmStats("a", 0.5), ArmStats("b", 0.5), ArmStats("c", 0.5)]
    assert [batch_ucb1(fresh, i) for i in range(3)] == ["a", "b", "c"]
    tried = [ArmStats("nudge", 0.5, 1, 0.0), ArmStats("swap", 0.5, 1, 0.0),
             ArmStats("statement", 0.5, 4, 1.0)]  # fmt: skip
    picks = [batch_ucb1(tried, i) for i in range(4)]
    assert len(set(picks)) >= 2 and picks == [batch_ucb1(tried, i) for i in range(4)], picks
    good = [ArmStats("good", 0.5, 40, 36.0), ArmStats("bad", 0.5, 40, 2.0)]
    assert [batch_ucb1(good, i) for i in range(6)].count("good") >= 5


def test_an_offline_ucb1_run_does_not_stop_on_an_edit_that_applies_nowhere(tmp_path: Path) -> None:
    """The `ge init` seed offers no place for the offline 'swap' edit: before, UCB1 gave every
    child of a generation that arm once it led, every proposal was rejected and the run stopped
    (4 of the run seeds 1-7; now none)."""
    for run_seed in (2, 4, 6):
        seed = template_seed(
            tmp_path / f"seed{run_seed}", generations=3, initial_population=6, population=6,
            seed=run_seed,
        )  # fmt: skip
        text = (
            (seed / "ge.toml").read_text().replace("[llm]\n", '[llm]\nbandit = { kind = "ucb1" }\n')
        )
        (seed / "ge.toml").write_text(text)
        summary = run_engine(
            seed, tmp_path / f"run{run_seed}", executor=FakeExecutor(size_score).factory
        )
        assert summary["finished"]
