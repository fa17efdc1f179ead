"""The paper's seed end to end through `ge run`: data in the seed directory, worker mode, CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.seeds import cpu_exquisitenet_seed


@pytest.mark.slow
def test_exquisitenet_seed_evolves_offline_on_tiny_cifar(tmp_path: Path) -> None:
    # CPU-sized: one short epoch; the command and the worker keep reading data from GE_SEED_DIR.
    seed = cpu_exquisitenet_seed(tmp_path / "exquisitenet_v2")
    summary = here_json(
        "run", str(seed), "--run-dir", str(tmp_path / "run"), "--generations", "0", "--initial-population", "2",
        cwd=tmp_path,
    )
    assert summary["finished"] and summary["evaluated"] >= 1, summary
    front = summary["front"]
    assert front and {"val_accuracy", "params", "test_accuracy"} <= set(front[0]["metrics"])
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        index_seed = index.get_meta("seed_variant")
        seed_eval = index.latest_evaluation(index_seed)
    finally:
        index.close()
    assert seed_eval.status == "ok" and seed_eval.metrics["params"] == 518_230  # the paper's network
    assert 0.0 <= seed_eval.metrics["val_accuracy"] <= 1.0
    # worker_check = true: the check stage is a forked child of the slot's warm worker too.
    log = next((tmp_path / "run" / "logs").glob(f"{index_seed}*.log")).read_text()
    assert "check via the worker of slot 0" in log and "evaluate via the worker of slot 0" in log
    # Where evaluations run is on record (and on a terminal, printed at the start).
    events = here_json("log", str(tmp_path / "run"), cwd=tmp_path)["events"]
    (executor,) = [e for e in events if e["kind"] == "executor"]
    assert executor["summary"] == "evaluating in 1 slot (no GPU); warm workers serve check and evaluate"
    assert executor["slots"] == 1 and executor["worker_stages"] == ["check", "evaluate"]
