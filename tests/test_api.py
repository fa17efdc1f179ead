"""The Python API (`guided_evolution.api`, docs/api.md) through its public calls: the views of a
run, a background run that is the very `ge run` (its own process holds the lock; `ge stop`,
SIGTERM and `ge resume` act on it as on the CLI's), errors as the CLI's one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import guided_evolution as ge
from guided_evolution.errors import ConfigError, GeError
from tests.support.cli import ge as ge_cli
from tests.support.seeds import template_seed


def test_importing_the_package_leaves_the_api_until_it_is_used() -> None:
    code = (
        "import sys, guided_evolution as g; print('guided_evolution.api' in sys.modules); "
        "g.open_run; print('guided_evolution.api' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_the_views_of_a_finished_run(template_run: Path, tmp_path: Path) -> None:
    run = ge.open_run(template_run)
    status = run.status
    assert status.run_state.state == "finished" and not run.live
    variants = run.variants()
    by_id = {v.id: v for v in variants}
    assert variants[0].operator == "seed" and len(by_id) == len(variants)
    front = run.front()
    assert front and all(by_id[row.id].metrics == row.metrics for row in front)
    assert {v.generation for v in run.variants(generation=1)} == {1}
    operator = variants[-1].operator
    assert {v.operator for v in run.variants(operator=operator)} == {operator}

    best = run.variant(front[0].id[:8])  # a prefix is enough, as on the command line
    assert best.id == front[0].id and best.metrics == front[0].metrics
    assert best.diff().diff == run.diff(best.id, "seed").diff
    other = next(v.id for v in variants if v.id != best.id and v.metrics is not None)
    assert (best.diff(other).from_, best.diff(other).to) == (other, best.id)
    assert best.lineage().nodes[-1].id == best.id or best.lineage().nodes[0].id == best.id
    assert "def " in best.source("model.py")

    exported = run.export(best.id, tmp_path / "best")
    assert exported.kind == "files" and "model.py" in exported.files
    assert (tmp_path / "best" / "model.py").read_bytes() == best.files()["model.py"]

    kinds = [e.kind for e in run.events()]
    assert "run_started" in kinds and kinds.count("run_finished") == 1
    evaluated = {e.variant for e in run.events("evaluated")}
    assert evaluated <= set(by_id) and {row.id for row in front} <= evaluated


def test_the_cli_prints_the_api_views(template_run: Path) -> None:
    run = ge.open_run(template_run)
    for view, data in (("best", run.best()), ("status", run.status)):
        out = ge_cli(view, str(template_run), "--json", cwd=template_run.parent)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == json.loads(json.dumps(data.to_json(), default=str)), view


def test_what_is_no_run_is_refused_in_one_line(tmp_path: Path) -> None:
    for path, said in ((tmp_path / "nowhere", "not found"), (tmp_path, "not a ge run directory")):
        with pytest.raises(GeError) as err:
            ge.open_run(path)
        assert said in err.value.one_line() and "ge run" in err.value.one_line()
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_refused_before_a_process_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="seed directory not found"):
        ge.run("missing", background=True)
    template_seed(tmp_path / "seed")
    with pytest.raises(ConfigError, match="population"):
        ge.run("seed", population=0, background=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]


def test_a_background_run_that_fails_raises_its_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    template_seed(tmp_path / "seed")
    (tmp_path / "seed" / "evaluate.py").write_text("import sys\nsys.exit(3)\n")
    run = ge.run("seed", run_dir="runs/bad", background=True)
    with pytest.raises(GeError, match="the seed failed its own evaluation: exit code 3") as err:
        list(run.follow(poll_s=0.1))
    assert err.value.exit_code == 2 and not run.live
    assert not (tmp_path / "runs" / "bad").exists()


def test_a_background_run_is_its_own_live_process_then_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template_run: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    template_seed(tmp_path / "seed", generations=2)
    run = ge.run("seed", run_dir="runs/a", background=True)
    seen, writers = [], set()
    for event in run.follow(poll_s=0.1):
        seen.append(event)
        if event.kind == "generation_started" and run.live:
            writers.add(run.status.run_state.pid)
    summary = run.wait()
    assert summary is not None and summary.finished and summary.generation == 2
    assert writers and str(os.getpid()) not in writers  # the lock is the child's, as `ge run`'s
    kinds = [e.kind for e in seen]
    assert kinds.count("run_finished") == 1 and kinds.count("generation_started") == 3
    assert sum(k == "evaluated" for k in kinds) == len(run.events("evaluated"))
    cli = json.loads(ge_cli("status", "runs/a", "--json", cwd=tmp_path).stdout)
    assert (cli["finished"], cli["evaluated"]) == (True, summary.evaluated)
    assert summary.front == [row.to_json() for row in run.front()]
    isolation = run.status.isolation_info.isolation or {}
    cli_run = ge.open_run(template_run).status.isolation_info.isolation or {}
    assert isolation.get("backend") and isolation.get("backend") == cli_run.get("backend")  # sandboxed alike
    assert isolation.get("layers") == cli_run.get("layers")


def test_ge_stop_finishes_a_background_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    template_seed(tmp_path / "seed", generations=40)
    run = ge.run("seed", run_dir="runs/long", background=True)
    said, writer = "", None
    for event in run.follow(poll_s=0.1):
        if event.kind == "generation_started" and not said:
            writer = run.status.run_state.pid
            out = ge_cli("stop", "runs/long", cwd=tmp_path)
            assert out.returncode == 0, out.stderr
            said = out.stdout
    summary = run.wait()
    assert summary is not None and "ge stop" in summary.stop_reason and summary.generation < 40
    assert writer not in (None, str(os.getpid())) and f"asked the run (pid {writer})" in said
    assert run.status.run_state.state == "finished"


def test_leaving_the_block_on_an_error_stops_the_run_resumably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    template_seed(tmp_path / "seed", generations=40)
    with pytest.raises(RuntimeError, match="boom"), ge.run("seed", run_dir="runs/r", background=True) as run:
        for event in run.follow(poll_s=0.1):
            if event.kind == "generation_started":
                raise RuntimeError("boom")
    assert not run.live and run.wait() is None  # interrupted at our request: no summary
    state = run.status.run_state
    assert state.state == "stopped" and "resume" in (state.fix or "")
    assert run.events("run_interrupted")
    resumed = ge.resume("runs/r", generations=run.status.generation + 1, quiet=True)
    assert resumed.summary is not None and resumed.summary.finished
    assert resumed.status.run_state.state == "finished"


def test_a_run_stopped_while_it_starts_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped before its run directory exists (the child starting, or evaluating the seed):
    SIGTERM either way, ``wait`` says so with None, and nothing is written (not even the
    child's output folder in the temp directory: it was left behind, empty, by a child stopped
    before it could write its outcome)."""
    monkeypatch.chdir(tmp_path)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    template_seed(tmp_path / "seed")
    created = False  # a run that got past its seed before the stop: runs/latest names it
    for delay in (0.0, 1.5):
        run = ge.run("seed", run_dir=f"runs/s{delay}", background=True)
        time.sleep(delay)
        try:
            run.stop()
        except GeError:  # this machine was quick: the run finished before the stop came
            assert run.wait(timeout=60) is not None and delay > 0
        else:  # None: stopped; a run in its last steps may still finish (quick machine only)
            assert run.wait(timeout=60) is None or delay > 0
        assert not run.live
        if run.path.exists():  # created before the stop came: a stopped or finished run
            assert (run.path / "config.json").exists() and delay > 0
            created = True
    assert not list(temp.glob("ge-background-*")), "the stopped children's output folders"
    runs = tmp_path / "runs"
    allowed = {"latest"} if created else set()
    assert not runs.exists() or {p.name for p in runs.iterdir() if not p.name.startswith("s")} <= allowed


def test_a_run_another_process_writes_is_followed_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    template_seed(tmp_path / "seed", generations=2)
    run = ge.run("seed", run_dir="runs/w", background=True)
    while not (run.path / "config.json").exists():
        assert run.live, "the run ended before it was created"
        time.sleep(0.05)
    watcher = ge.open_run("runs/w")  # knows nothing of the process: the lock says who writes
    kinds = [event.kind for event in watcher.follow(poll_s=0.1)]
    assert "run_finished" in kinds and not watcher.live and watcher.wait() is None
    summary = run.wait()
    assert summary is not None and kinds.count("evaluated") == len(watcher.events("evaluated"))
