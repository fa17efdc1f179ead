"""Hints that work (issue 26 items 1 and 2): for an evaluator failure, a timeout and a missing
metric, each test does what ge's one line says, and only that, and the run then succeeds.

At the seed (before the run exists): the line names the change to make in the seed directory and
says to run the same `ge run` again; no run directory is left and ``runs/latest`` is not made.
In a generation (the run exists, its evaluator frozen): the line names the change and the exact
`ge resume RUN --reload-evaluator` command, which the test runs as printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.harness import FakeExecutor, run_engine, size_score
from tests.support.openai_server import serve, status
from tests.support.seeds import CodeWriter, template_seed

_CHANGED = "Path('model.py').read_text() != Path(os.environ['GE_SEED_DIR'], 'model.py').read_text()"
_ANCHOR = "    rng = random.Random(0)"


def _break_evaluator(seed: Path, body: str, only_children: bool) -> str:
    """Insert ``body`` (indented for main()) into the seed's evaluate.py, for the children only
    or for every variant; the original text, to restore it."""
    evaluate = seed / "evaluate.py"
    original = evaluate.read_text()
    guard = f"    if {_CHANGED}:\n" if only_children else "    if True:\n"
    evaluate.write_text(original.replace(_ANCHOR, guard + body + _ANCHOR, 1))
    return original


def _set_timeout(seed: Path, seconds: int) -> None:
    toml = (seed / "ge.toml").read_text()
    head, _, tail = toml.partition("[evaluator]")
    tail = re.sub(r"(?m)^timeout_s = .*$", f"timeout_s = {seconds}", tail, count=1)
    (seed / "ge.toml").write_text(f"{head}[evaluator]{tail}")


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The error line that ended a failed `ge` (its last line on stderr)."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), proc.stderr[-3000:]
    return line


def _seed_fails_then_rerun_works(tmp_path: Path, seed: Path, expect: list[str]) -> str:
    """`ge run SEED` fails at the seed with one line holding ``expect``; nothing is left."""
    line = _one_line(ge_here("run", str(seed), cwd=tmp_path))
    for words in expect:
        assert words in line, line
    assert "run the same `ge run` again (no run directory was made)" in line
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").iterdir())
    return line


# --------------------------------------------------------------------------- at the seed


def test_a_misspelled_objective_names_what_was_written_and_leaves_no_run(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    toml = (seed / "ge.toml").read_text()
    (seed / "ge.toml").write_text(toml.replace('name = "score"', 'name = "scroe"', 1))
    _seed_fails_then_rerun_works(
        tmp_path,
        seed,
        ["wrote no metric 'scroe'", "it wrote: score, size (closest: 'score')",
         f"rename the objective in [[objectives]] of {seed / 'ge.toml'}"],
    )  # fmt: skip
    (seed / "ge.toml").write_text(toml)  # the hint: rename the objective
    summary = here_json("run", str(seed), cwd=tmp_path)
    assert summary["finished"] and summary["evaluated"] > 1
    assert (tmp_path / "runs" / "latest").resolve() == Path(summary["run_dir"])
    (seed / "ge.toml").write_text(toml.replace('name = "size"', 'name = "sise"', 1))
    line = _one_line(ge_here("run", str(seed), cwd=tmp_path))  # a second run, misspelled again
    assert "wrote no metric 'sise'" in line and "(closest: 'size')" in line, line
    assert (tmp_path / "runs" / "latest").resolve() == Path(summary["run_dir"])  # not moved
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        ["latest", Path(summary["run_dir"]).name]
    )


def test_a_seed_that_times_out_says_to_raise_timeout_s_and_leaves_no_run(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    _set_timeout(seed, 1)
    _break_evaluator(seed, "        import time\n        time.sleep(1.5)\n", only_children=False)
    _seed_fails_then_rerun_works(
        tmp_path, seed, ["the seed failed its own evaluation: timed out after 1 s",
                         f"raise timeout_s in [evaluator] of {seed / 'ge.toml'}"]
    )  # fmt: skip
    _set_timeout(seed, 60)  # the hint: raise timeout_s
    summary = here_json("run", str(seed), cwd=tmp_path)
    assert summary["finished"] and summary["evaluated"] > 1


def test_a_failing_seed_evaluator_says_what_to_fix_and_leaves_no_run(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    original = _break_evaluator(seed, "        sys.exit('evaluator bug')\n", only_children=False)
    line = _seed_fails_then_rerun_works(
        tmp_path, seed, ["exit code 1 (last output: evaluator bug)", "fix the evaluator"]
    )
    log = Path(re.search(r"see (\S+\.log);", line).group(1))  # the log outlives the scratch run
    assert "evaluator bug" in log.read_text()
    (seed / "evaluate.py").write_text(original)
    assert here_json("run", str(seed), cwd=tmp_path)["finished"]


# --------------------------------------------------------------------------- in a generation


def _follow_resume_hint(tmp_path: Path, line: str, run: Path) -> dict:
    """Run the `ge resume ... --reload-evaluator` command the line names, exactly as printed."""
    found = re.search(r"`(ge resume [^`]*)`", line)
    assert found is not None, line
    words = shlex.split(found.group(1))
    assert words == ["ge", "resume", str(run), "--reload-evaluator"], words
    return here_json(*words[1:], cwd=tmp_path)


def _children_fail(tmp_path: Path, seed: Path, expect: list[str]) -> tuple[Path, str]:
    """The run stops on generation 0 with one line holding ``expect``; a plain `ge resume`
    (the frozen evaluator) stops the same way. The run and the last line."""
    run = tmp_path / "run"
    for command in (["run", str(seed), "--run-dir", str(run)], ["resume", str(run)]):
        line = _one_line(ge_here(*command, cwd=tmp_path))
        assert "every child of generation 0 failed its evaluation" in line, line
        for words in expect:
            assert words in line, line
    return run, line


def _assert_reloaded(run: Path, summary: dict, files: list[str], setting: str | None) -> None:
    """The run finished after one recorded reload that changed ``files`` and ``setting``."""
    assert summary["finished"] and summary["evaluated"] > 1, summary
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    try:
        (event,) = index.events("evaluator_reloaded")
    finally:
        index.close()
    data = event.data
    assert data["files_changed"] == files, data
    assert data["files_before"] != data["files_after"], data
    assert sorted(data["settings"]) == ([setting] if setting else []), data
    frozen = json.loads((run / "config.json").read_text())["config"]["evaluator"]
    if setting:  # the run's config holds the reloaded value from now on
        assert [frozen[setting]] == data["settings"][setting][1:], (frozen, data)
    shown = here_json("status", str(run), cwd=run.parent)["evaluator_reloads"]
    assert [r["files_changed"] for r in shown] == [files], shown
    text = " ".join(ge_here("status", str(run), cwd=run.parent, env={"COLUMNS": "400"}).stdout.split())
    assert f"(ge resume --reload-evaluator): files {data['files_before']} →" in text, text
    assert all(name in text for name in files) and (setting or "") in text, text


def test_children_whose_evaluator_fails_run_after_the_hinted_reload(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    original = _break_evaluator(seed, "        sys.exit('evaluator bug')\n", only_children=True)
    run, line = _children_fail(
        tmp_path, seed, ["exit code 1", f"fix the evaluator (its files in {seed}"]
    )
    (seed / "evaluate.py").write_text(original)  # the hint: fix the evaluator's files
    summary = _follow_resume_hint(tmp_path, line, run)
    _assert_reloaded(run, summary, ["evaluate.py"], None)


def test_children_that_time_out_run_after_the_hinted_reload(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    _set_timeout(seed, 1)
    _break_evaluator(seed, "        import time\n        time.sleep(1.5)\n", only_children=True)
    run, line = _children_fail(
        tmp_path, seed, ["timed out after 1 s", f"raise timeout_s in [evaluator] of {seed}"]
    )
    _set_timeout(seed, 60)  # the hint: raise timeout_s (the evaluator's files stay as they are)
    summary = _follow_resume_hint(tmp_path, line, run)
    _assert_reloaded(run, summary, ["ge.toml"], "timeout_s")  # ge.toml: a seed file
    ge_here("report", str(run), "-o", str(tmp_path / "report.html"), cwd=tmp_path)
    report = (tmp_path / "report.html").read_text()
    assert "evaluator reloaded" in report and "timeout_s 1.0 → 60.0" in report


def test_children_missing_a_metric_run_after_the_hinted_reload(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    body = "        Path(args.metrics).write_text(json.dumps({'score': 0.0}))\n        return 0\n"
    original = _break_evaluator(seed, body, only_children=True)
    run, line = _children_fail(tmp_path, seed, ["metric 'size' missing", "fix the evaluator"])
    (seed / "evaluate.py").write_text(original)  # the hint: make the evaluator write it
    summary = _follow_resume_hint(tmp_path, line, run)
    _assert_reloaded(run, summary, ["evaluate.py"], None)


# --------------------------------------------------------------------------- smaller items


def test_the_run_summary_counts_retried_llm_faults(tmp_path: Path) -> None:
    """`LLM calls 49 (0 errors)` hid the faults that a retry got past: the summary counts them."""
    seed = template_seed(tmp_path / "seed", generations=1)
    with serve([status(500), status(503)], responder=CodeWriter()) as server:
        summary = run_engine(
            seed,
            tmp_path / "run",
            executor=FakeExecutor(size_score).factory,
            model="openai/m",
            api_base=server.base_url,
        )
    assert summary["finished"] and summary["llm_retries"] == 2, summary
    status_json = json.loads(ge_here("status", str(tmp_path / "run"), "--json", cwd=tmp_path).stdout)
    assert status_json["llm_retries"] == 2, status_json
    text = ge_here("status", str(tmp_path / "run"), cwd=tmp_path).stdout
    assert "errors, 2 retried)" in text, text


def test_ge_run_on_a_file_names_its_folder(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    line = _one_line(ge_here("run", str(seed / "model.py"), cwd=tmp_path))
    assert "model.py/ge.toml" not in line
    assert f"{seed / 'model.py'} is a file: `ge run` takes the seed's directory" in line
    assert f"pass its folder: `ge run {seed}` (it holds ge.toml)" in line


def test_ge_doctor_defaults_to_the_latest_run(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    run = Path(here_json("run", str(seed), cwd=tmp_path)["run_dir"])
    proc = ge_here("doctor", "--json", cwd=tmp_path, env={"COLUMNS": "400"})  # rich wraps at 80
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] and f"run: {run} (the latest)" in proc.stderr


def test_sigterm_while_the_seed_is_evaluated_leaves_nothing_and_exits_143(tmp_path: Path) -> None:
    """The seed's evaluation waits for a file that never comes; SIGTERM then stops `ge run`
    with 128 + 15 and one line, and neither the run nor its temporary directory is left."""
    seed = template_seed(tmp_path / "seed", generations=1)
    wait = "        while not Path(os.environ['GE_SEED_DIR'], 'never').exists():\n"
    _break_evaluator(seed, wait + "            import time; time.sleep(0.05)\n", only_children=False)
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir", "run"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".run.creating-*/logs")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the seed's evaluation has started (its work tree and log)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "stopped: interrupted while the seed was evaluated, before the run was created "
        "(nothing was written) (run the same `ge run` again)"
    ), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]
