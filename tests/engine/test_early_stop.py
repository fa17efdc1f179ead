"""Early stopping: ``[evolution] stop_at`` (a child reached a target), ``stop_after_stale`` (the
Pareto front did not change for N generations) and `ge stop` (asked from another process), each
recorded as the finish reason that `ge status` and the report show, and each resumable with
`ge resume RUN --generations N`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.engine.stopping import request_stop
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.harness import FakeExecutor, resume_engine, run_engine, size_score
from tests.support.seeds import template_seed


def _finishes(run: Path) -> list[dict[str, Any]]:
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    try:
        return [e.data for e in index.events("run_finished")]
    finally:
        index.close()


def _children(run: Path) -> list[tuple[int, dict[str, float]]]:
    """(generation, metrics) of every evaluated child."""
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    try:
        done = index.latest_evaluations()
        return [
            (v.generation, dict(done[v.id].metrics))
            for v in index.variants()
            if v.operator != "seed" and v.id in done and done[v.id].status == "ok"
        ]
    finally:
        index.close()


def test_stop_at_finishes_the_run_when_a_child_reaches_the_target_and_resume_goes_on(
    tmp_path: Path,
) -> None:
    # A reference run (offline, seed 1: deterministic) says when a child first gets smaller than
    # the seed; the same run with that size as the target must finish at that generation.
    reference = template_seed(tmp_path / "ref", generations=3)
    ref = here_json("run", str(reference), "--run-dir", str(tmp_path / "ref-run"), "--no-sandbox",
                   cwd=tmp_path)  # fmt: skip
    assert ref["finished"] and ref["generation"] == 3
    seed_size = 192.0
    smaller = sorted((g, m["size"]) for g, m in _children(tmp_path / "ref-run") if m["size"] < seed_size)
    assert smaller, "the offline run never made a smaller child: pick another target"
    gen = smaller[0][0]
    target = min(size for g, size in smaller if g == gen)

    seed = template_seed(tmp_path / "seed", generations=6, stop_at={"size": target})
    run = tmp_path / "run"
    summary = here_json("run", str(seed), "--run-dir", str(run), "--no-sandbox", cwd=tmp_path)
    assert summary["finished"] and summary["generation"] == gen, summary
    assert summary["stop_reason"].startswith(f"target reached: size = {target:g} <= {target:g}")
    assert _finishes(run) == [{"reason": summary["stop_reason"], "kind": "target", "targets": ["size"]}]
    assert max(g for g, _ in _children(run)) == gen  # nothing after the generation that reached it

    status = here_json("status", str(run), cwd=tmp_path)
    assert status["state"] == "finished" and status["stop_reason"] == summary["stop_reason"]
    text = " ".join(ge_here("status", str(run), cwd=tmp_path).stdout.split())  # unwrapped
    assert f"finished: target reached: size = {target:g}" in text, text
    report = tmp_path / "report.html"
    assert ge_here("report", str(run), "-o", str(report), cwd=tmp_path).returncode == 0
    assert "target reached: size" in report.read_text()

    # Extended, the run goes on: the target that stopped it once does not stop it again.
    resumed = here_json("resume", str(run), "--generations", str(gen + 2), cwd=tmp_path)
    assert resumed["finished"] and resumed["generation"] == gen + 2, resumed
    assert resumed["stop_reason"] == f"completed {gen + 2} generations"
    assert [f["kind"] for f in _finishes(run)] == ["target", "completed"]


@pytest.mark.parametrize("mode", ["generational", "steady"])
def test_a_seed_that_meets_the_target_finishes_the_run_before_any_child(
    tmp_path: Path, mode: str
) -> None:
    seed = template_seed(tmp_path / "seed", generations=3, mode=mode, stop_at={"score": -1e6})
    run = tmp_path / "run"
    summary = run_engine(seed, run, executor=FakeExecutor(lambda _f: {"score": 0.0, "size": 1.0}).factory)
    assert summary["finished"] and summary["children"] == 0, summary
    assert summary["stop_reason"].startswith("target reached: score = 0 >= -1e+06 (variant ")
    assert _finishes(run) == [{"reason": summary["stop_reason"], "kind": "target", "targets": ["score"]}]


def test_stop_at_must_name_a_selection_objective(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", stop_at={"accuracy": 0.9})
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "stop_at names 'accuracy'" in lines[0] and "score, size" in lines[0]
    assert not (tmp_path / "run").exists()


class _ImprovesThenStalls:
    """Metrics that improve with each new program until ``improving`` programs were seen (the
    seed included), then stay at the seed's: the front changes, then stalls."""

    def __init__(self, improving: int) -> None:
        self.improving = improving
        self.seen: dict[str, float] = {}

    def __call__(self, files: dict[str, str]) -> dict[str, float]:
        code = files["model.py"]
        if code not in self.seen:
            n = len(self.seen)
            self.seen[code] = float(n) if n < self.improving else 0.0
        return {"score": self.seen[code], "size": 1.0}


def test_stop_after_stale_counts_generations_without_a_new_front_point(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=12, stop_after_stale=2)
    run = tmp_path / "run"
    summary = run_engine(seed, run, executor=FakeExecutor(_ImprovesThenStalls(7)).factory)
    children = _children(run)
    last_change = max(children, key=lambda c: c[1]["score"])[0]
    assert summary["finished"] and summary["generation"] == last_change + 2, (summary, children)
    assert summary["stop_reason"].startswith("the Pareto front has not changed for 2 generations")
    assert f"last changed in generation {last_change}" in summary["stop_reason"]
    assert _finishes(run)[-1]["kind"] == "stale"


def test_stop_after_stale_in_steady_mode_counts_population_sized_generations(tmp_path: Path) -> None:
    seed = template_seed(
        tmp_path / "seed", generations=12, stop_after_stale=2, mode="steady", population=3
    )
    run = tmp_path / "run"
    summary = run_engine(seed, run, executor=FakeExecutor(lambda _f: {"score": 0.0, "size": 1.0}).factory)
    # every child ties the seed: virtual generations 0 (4 children) and 1 (3) leave the front as
    # it was; the children already drawn for generation 2 (at most max_pending = 2 * slots) end
    assert summary["finished"] and _finishes(run)[-1]["kind"] == "stale", summary
    assert "not changed for 2 generations" in summary["stop_reason"]
    assert 4 + 3 <= summary["children"] <= 4 + 3 + 4, summary
    status = here_json("status", str(run), cwd=tmp_path)
    assert status["state"] == "finished" and "Pareto front" in status["stop_reason"]


def _committed(run: Path) -> int:
    """How many children the live run has committed (0 while the index is not readable yet)."""
    status = ge_here("status", str(run), "--json", cwd=run.parent)
    return json.loads(status.stdout)["children"] if status.returncode == 0 else 0


def _gated(seed: Path) -> Path:
    """Children's evaluations wait until the returned file exists (the seed's does not)."""
    evaluate = seed / "evaluate.py"
    evaluate.write_text(
        evaluate.read_text().replace(
            "    rng = random.Random(0)",
            "    import time\n"
            "    seed_dir = Path(os.environ['GE_SEED_DIR'])\n"
            "    is_seed = Path('model.py').read_text() == (seed_dir / 'model.py').read_text()\n"
            "    while not is_seed and not (seed_dir / 'release').exists():\n"
            "        time.sleep(0.05)\n"
            "    rng = random.Random(0)",
        )
    )
    return seed / "release"


def test_ge_stop_from_another_process_finishes_a_live_run_after_its_generation(
    tmp_path: Path,
) -> None:
    seed = template_seed(tmp_path / "seed", generations=5)
    release = _gated(seed)
    run = tmp_path / "run"
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    live = subprocess.Popen(
        [sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir", str(run),
         "--no-sandbox", "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (run / "lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run / "lock").exists(), live.stderr.read() if live.poll() is not None else ""
        # Ask once generation 0's children are held: a request seen before the generation starts
        # is consumed there, and status no longer shows it while the generation runs.
        while _committed(run) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        asked = ge_here("stop", str(run), cwd=tmp_path)
        while "is starting" in asked.stderr and time.monotonic() < deadline:  # no pid yet
            time.sleep(0.05)
            asked = ge_here("stop", str(run), cwd=tmp_path)
        assert asked.returncode == 0, asked.stderr
        assert f"pid {live.pid}" in asked.stdout and f"kill {live.pid}" in asked.stdout
        assert live.poll() is None  # generation 0's children are still held
        status = here_json("status", str(run), cwd=tmp_path)
        assert status["state"] == "live" and "finishing after the generation" in status["stop_reason"]
        text = " ".join(ge_here("status", str(run), cwd=tmp_path).stdout.split())
        assert f"live (pid {live.pid}), finishing after the generation under way" in text, text
        release.touch()
        _out, err = live.communicate(timeout=120)
    finally:
        live.kill()
        live.wait()
    assert live.returncode == 0, err
    status = here_json("status", str(run), cwd=tmp_path)
    assert status["state"] == "finished" and status["stop_reason"] == "stopped by `ge stop`"
    assert status["generation"] == 0 and status["evaluated"] == status["children"] + 1
    assert _finishes(run)[-1] == {"reason": "stopped by `ge stop`", "kind": "stop"}
    assert not (run / "stop-request").exists()

    again = ge_here("stop", str(run), cwd=tmp_path)
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert again.returncode == 2 and len(lines) == 1 and "is not running" in lines[0], again.stderr

    resumed = here_json("resume", str(run), "--generations", "2", cwd=tmp_path)
    assert resumed["finished"] and resumed["stop_reason"] == "completed 2 generations", resumed


def test_ge_stop_in_steady_mode_stops_drawing_and_closes_what_was_drawn(tmp_path: Path) -> None:
    """The request is made as `ge stop` makes it (naming the lock holder: this process, which
    runs the engine in-process) once the fifth child is evaluated."""
    from guided_evolution.engine.stopping import request_stop

    run = tmp_path / "run"
    evaluated: list[int] = []

    def score(_files: dict[str, str]) -> dict[str, float]:
        evaluated.append(1)
        if len(evaluated) == 6:  # the seed, then five children
            request_stop(run, str(os.getpid()))
        return {"score": float(len(evaluated)), "size": 1.0}

    seed = template_seed(tmp_path / "seed", generations=10, mode="steady", population=3)
    summary = run_engine(seed, run, executor=FakeExecutor(score).factory)
    assert summary["finished"] and summary["stop_reason"] == "stopped by `ge stop`", summary
    # drawn before the request was seen: at most max_pending (2 * slots) more than the five
    assert 5 <= summary["children"] <= 5 + 4 and summary["evaluated"] == summary["children"] + 1
    assert summary["generation"] < 3
    assert not (run / "stop-request").exists()


def test_ge_stop_while_the_run_starts_is_kept_and_a_stale_request_is_not(tmp_path: Path) -> None:
    """`ge stop` once the run's lock names its process but before its loop began (here: while
    the run builds its executor) finishes the run before its next generation, "stopped by
    `ge stop`". Such a request was dropped as if stale, and the run went on to its last
    generation. A request left for an earlier process is still dropped."""
    seed = template_seed(tmp_path / "seed", generations=1)
    run = tmp_path / "run"
    assert run_engine(seed, run, executor=FakeExecutor(size_score).factory)["generation"] == 1
    fake = FakeExecutor(size_score)

    def asked_while_starting(_resolved: Any, _paths: Any) -> FakeExecutor:
        assert (run / "lock").read_text() == str(os.getpid())  # what `ge stop` reads
        request_stop(run, str(os.getpid()))
        return fake

    stopped = resume_engine(run, executor=asked_while_starting, generations=4)
    assert stopped["stop_reason"] == "stopped by `ge stop`", stopped
    assert stopped["generation"] == 1 and _finishes(run)[-1]["kind"] == "stop"
    assert not fake.requests, "no child of a later generation was evaluated"
    assert not (run / "stop-request").exists()

    request_stop(run, str(os.getpid()))  # asked after that session ended: nobody was running
    resumed = resume_engine(run, executor=FakeExecutor(size_score).factory, generations=3)
    assert resumed["finished"] and resumed["generation"] == 3, resumed
    assert resumed["stop_reason"] == "completed 3 generations"
