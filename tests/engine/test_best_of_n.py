"""The best-of-N control (``[evolution] strategy = "best_of_n"``): every child is a mutation of the
seed, generation after generation, with the plan sizes of an evolution run (the same budget), so
that a user can see whether evolution pays on the task."""

from __future__ import annotations

from pathlib import Path

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.seeds import template_seed


def test_best_of_n_makes_only_mutations_of_the_seed_at_the_planned_sizes(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=2, strategy="best_of_n", population=3)
    run = tmp_path / "run"
    summary = here_json("run", str(seed), "--run-dir", str(run), "--no-sandbox", cwd=tmp_path)
    assert summary["finished"] and summary["generation"] == 2, summary
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    try:
        seed_id = next(v.id for v in index.variants() if v.operator == "seed")
        children = [v for v in index.variants() if v.operator != "seed"]
        plans = [e.data["plans"] for e in index.events("generation_started")]
    finally:
        index.close()
    assert plans == [4, 3, 3]  # initial_population, then population per generation
    assert children and all(v.parents == [seed_id] for v in children), [
        (v.generation, v.operator, v.parents) for v in children
    ]
    assert {v.operator for v in children} == {"offline-mutation"}
    assert {v.generation for v in children} == {0, 1, 2}

    # the same seed and config evolved: children of children, and crossovers (what the control
    # leaves out), so the assertions above tell the two apart
    evolved = template_seed(tmp_path / "evolved", generations=2, population=3)
    here_json("run", str(evolved), "--run-dir", str(tmp_path / "evo"), "--no-sandbox", cwd=tmp_path)
    index = RunIndex.open(tmp_path / "evo" / "index.sqlite", readonly=True)
    try:
        rows = [v for v in index.variants() if v.operator != "seed"]
    finally:
        index.close()
    assert any(v.parents != [seed_id] for v in rows)


def test_best_of_n_is_refused_with_steady_mode_in_one_line(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", strategy="best_of_n", mode="steady")
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert 'strategy = "best_of_n" is for mode = "generational"' in lines[0]
