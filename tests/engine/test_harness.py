"""The in-process engine harness (tests/support/harness.py) runs what `ge run` runs, and its fakes
reach the real store and index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guided_evolution.engine.proposer import NoChild
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import run_json
from tests.support.harness import (
    FakeExecutor,
    Intercepted,
    intercepting,
    resume_engine,
    run_engine,
    size_score,
)
from tests.support.seeds import template_seed


def _variants(run: Path) -> list[tuple[str, int, str, tuple[str, ...]]]:
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        return sorted((v.id, v.generation, v.operator, tuple(v.parents)) for v in index.variants())


def test_the_harness_makes_the_run_ge_run_makes(template_run: Path, tmp_path: Path) -> None:
    """The same seed and config: the same variants, counts and front as the CLI's run."""
    seed = template_seed(tmp_path / "seed", generations=1)
    cli = run_json("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert _variants(tmp_path / "run") == _variants(template_run)
    mine = resume_engine(template_run)  # finished: the summary of the run as it is
    for key in ("generation", "children", "evaluated", "failed", "finished", "objectives"):
        assert mine[key] == cli[key], key
    assert [row["id"] for row in mine["front"]] == [row["id"] for row in cli["front"]]


def test_the_fake_executor_scores_and_fails_through_the_real_index(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    def score(files: dict[str, str]) -> dict[str, float | str] | str:
        seen.append(files)
        return "too long" if len(seen) % 3 == 0 else size_score(files)

    fake = FakeExecutor(score)
    seed = template_seed(tmp_path / "seed", generations=2)
    done = run_engine(seed, tmp_path / "run", executor=fake.factory)
    assert done["finished"] and done["generation"] == 2
    assert len(fake.requests) == done["evaluated"] + done["failed"]  # the seed too
    assert done["failed"] == len(fake.requests) // 3 > 0
    assert all("model.py" in files and "evaluate.py" in files for files in seen)
    with RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True) as index:
        evaluations = index.latest_evaluations()
        executors = index.events("executor")
    assert executors[0].data["executor"] == "fake"
    for request, files in zip(fake.requests, seen, strict=True):
        ev = evaluations[request.variant_id]
        if ev.status == "ok":
            assert ev.metrics == size_score(files)
        else:
            assert ev.failure_reason == "too long"


def test_an_intercepted_proposer_rejects_children_as_the_engine_records_them(
    tmp_path: Path,
) -> None:
    def hook(plan: Any, child: Any) -> Any:
        if plan.index % 2:
            raise NoChild("odd plan", child.operator)
        return child

    made: list[Intercepted] = []
    fake = FakeExecutor(size_score)
    seed = template_seed(tmp_path / "seed", generations=1)
    done = run_engine(
        seed, tmp_path / "run", executor=fake.factory, proposer=intercepting(hook, made)
    )
    (proposer,) = made
    odd = [p for p in proposer.plans if p.index % 2]
    assert odd and done["children"] == len(proposer.plans) - len(odd)
    with RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True) as index:
        rejected = index.events("proposal_rejected")
    assert sorted((e.data["generation"], e.data["plan"]) for e in rejected) == sorted(
        (p.generation, p.index) for p in odd
    )
    assert {e.data["reason"] for e in rejected} == {"odd plan"}
