"""The SLURM executor against a real single-node SLURM (slurmctld + slurmd started by the tests).

The time-limit job starts first, in the background. SLURM's time limits are whole minutes, and
slurmctld enforces them on a 30 s tick: once the job runs, the test moves its end time to the next
second (``scontrol update EndTime``, what an operator may do to a running job), so SLURM ends it
with TIMEOUT at the first tick, ~30 s after the cluster started, while the other tests run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.config import ResolvedConfig, parse_config
from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalRequest, EvalResult
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.slurm.executor import SlurmExecutor
from guided_evolution.evaluation.slurm.script import job_name, parse_time_limit
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunPaths
from tests.support.seeds import template_seed, write_config
from tests.support.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401

pytestmark = pytest.mark.timeout(240)

EVALUATOR = """\
import json, os, sys
run_dir = os.environ["GE_RUN_DIR"]
metrics = {
    "score": 2.5,
    "sees_run_dir": float(os.path.exists(os.path.join(run_dir, "secret.txt"))),
    "sees_secret_env": float("GE_TEST_API_KEY" in os.environ),
}
print("evaluated in", os.getcwd())
json.dump(metrics, open(os.environ["GE_METRICS"], "w"))
"""


def executor(cluster: SlurmCluster, run_dir: Path, **slurm: Any) -> SlurmExecutor:
    """A SlurmExecutor for ``run_dir`` (fast polling, short grace)."""
    settings = {"partition": cluster.partition, "poll_s": 0.2, "grace_s": 5, **slurm}
    cfg = parse_config(
        {
            "objectives": [{"name": "score", "direction": "max"}],
            "evaluator": {"command": "python evaluate.py"},
            "executor": {"kind": "slurm", "slurm": settings},
        }
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = ResolvedConfig(
        config=cfg,
        config_path=str(run_dir / "ge.toml"),
        seed_dir=str(run_dir),
        run_dir=str(run_dir),
        ge_version="test",
    )
    return SlurmExecutor(resolved, RunPaths(run_dir), Sandbox(SandboxPolicy()))


def unique_run_dir(tmp_path: Path) -> Path:
    """A run directory whose name (part of every job name) no other test uses."""
    return tmp_path / f"run-{tmp_path.name}"


def eval_request(
    run_dir: Path, vid: str, command: str = "python evaluate.py", check: str | None = None
) -> EvalRequest:
    """A variant tree under run_dir/work/<vid>, exported the way the engine does it."""
    work = run_dir / "work" / vid
    (work / ".ge").mkdir(parents=True, exist_ok=True)
    (work / "evaluate.py").write_text(EVALUATOR)
    return EvalRequest(
        variant_id=vid,
        workdir=work,
        run_dir=run_dir,
        command=command,
        check_command=check,
        timeout_s=120,
        check_timeout_s=30,
        metrics_path=work / ".ge" / "metrics.json",
        log_path=run_dir / "logs" / f"{vid}.log",
        objectives=("score",),
    )


def run(coro: Awaitable[Any], timeout: float = 60) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


def held_then_detached(cluster: SlurmCluster, run_dir: Path, vid: str) -> tuple[SlurmExecutor, str]:
    """A held (``--hold``) job submitted for ``vid``, then its evaluation cancelled and the
    executor closed without cancelling its jobs (as `--detach` does): the executor and the id
    of the job left queued."""
    first = executor(cluster, run_dir, extra_sbatch=["--hold"])
    name = job_name(run_dir.name, vid)

    async def submit_then_detach() -> str:
        task = asyncio.create_task(first.evaluate(eval_request(run_dir, vid)))
        jobs = await until(lambda: cluster.jobs(name), what="the held job")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await first.aclose(cancel=False)
        return jobs[0][0]

    return first, run(submit_then_detach())


# --------------------------------------------------------------------------- the slow one, early


class _Background:
    def __init__(self) -> None:
        self.result: EvalResult | None = None
        self.error: BaseException | None = None
        self.elapsed = 0.0
        self.thread: threading.Thread | None = None


@pytest.fixture(scope="module", autouse=True)
def time_limit_job(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Background | None]:
    """Starts, before the other tests, an evaluation that outlives its one-minute time limit."""
    try:
        cluster: SlurmCluster = request.getfixturevalue("slurm_cluster")
    except pytest.skip.Exception:
        yield None  # the tests that need SLURM skip with the reason
        return
    run_dir = tmp_path_factory.mktemp("time-limit") / "run-time-limit"
    ex = executor(cluster, run_dir, time_limit="00:00:01")
    req = eval_request(run_dir, "timelimit00000001", command="sleep 300")
    state = _Background()

    async def evaluate() -> EvalResult:
        task = asyncio.ensure_future(ex.evaluate(req))
        name = job_name(run_dir.name, req.variant_id)

        def running() -> list[tuple[str, str, str, str]]:
            return [j for j in cluster.jobs(name) if j[2] == "RUNNING"]

        job = (await until(running, timeout=60, what="the time-limit job running"))[0]
        soon = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 1))
        cluster.run("scontrol", "update", f"JobId={job[0]}", f"EndTime={soon}")
        return await task

    def target() -> None:
        start = time.monotonic()
        try:
            state.result = asyncio.run(asyncio.wait_for(evaluate(), 200))
        except BaseException as exc:  # reported by the test
            state.error = exc
        state.elapsed = time.monotonic() - start

    state.thread = threading.Thread(target=target, daemon=True)
    state.thread.start()
    yield state
    state.thread.join(timeout=1)


# --------------------------------------------------------------------------- tests


def test_time_limit_parsing() -> None:
    assert parse_time_limit("00:00:01") == 1
    assert parse_time_limit("90") == 5400
    assert parse_time_limit("1-02:00:00") == 26 * 3600
    assert parse_time_limit("UNLIMITED") is None
    with pytest.raises(GeError, match="time_limit"):
        parse_time_limit("1h")


def test_evaluation_through_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    run_dir = unique_run_dir(tmp_path)
    bin_dir = tmp_path / "env" / "bin"  # an "environment" that the setup snippet activates
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\necho python-of-the-setup\nexec {sys.executable} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    setup = f'echo "setup-ran-on-node key=${{GE_TEST_API_KEY:-absent}}"\nexport PATH={bin_dir}:$PATH'
    ex = executor(slurm_cluster, run_dir, setup=setup)
    (run_dir / "secret.txt").write_text("run directory content")
    req = eval_request(run_dir, "aaaa000000000001", check="python evaluate.py --help >/dev/null")
    os.environ["GE_TEST_API_KEY"] = "must-not-leak"
    try:
        result = run(ex.evaluate(req))
    finally:
        del os.environ["GE_TEST_API_KEY"]
    assert result.status == "ok", result.failure_reason
    assert result.metrics["score"] == 2.5
    assert result.metrics["sees_secret_env"] == 0.0
    if Sandbox(SandboxPolicy()).probe().backend == "bwrap":
        assert result.metrics["sees_run_dir"] == 0.0, "the sandbox hides the run dir inside the job"
    assert len(ex.submitted) == 1
    job_id = ex.submitted[0]
    shown = slurm_cluster.run("scontrol", "show", "job", job_id)
    assert f"JobName={job_name(run_dir.name, req.variant_id)}" in shown
    assert f"ge-{run_dir.name}-{req.variant_id}" in shown
    log = (run_dir / "logs" / f"{req.variant_id}.log").read_text()
    assert "evaluated in" in log
    assert "python-of-the-setup" in log, "the evaluator runs in the environment the setup activated"
    job_dir = next((run_dir / "slurm" / req.variant_id).iterdir())
    assert "setup-ran-on-node key=absent" in (job_dir / "job.out").read_text(), "no secrets in jobs"
    assert json.loads((job_dir / "metrics.json").read_text())["score"] == 2.5
    assert not (run_dir / "slurm" / f"{req.variant_id}.json").exists(), "record dropped when done"
    assert not (job_dir / "work").exists()


def test_check_stage_runs_locally_unless_configured(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    local = executor(slurm_cluster, tmp_path / "local")
    result = run(local.evaluate(eval_request(tmp_path / "local", "bbbb000000000001", check="exit 3")))
    assert (result.status, result.stage, result.failure_reason) == ("failed", "check", "exit code 3")
    assert local.submitted == [], "a failed local check submits no job"

    remote = executor(slurm_cluster, tmp_path / "remote", check_on_cluster=True)
    result = run(remote.evaluate(eval_request(tmp_path / "remote", "bbbb000000000002", check="exit 3")))
    assert (result.status, result.stage, result.failure_reason) == ("failed", "check", "exit code 3")
    assert len(remote.submitted) == 1


def test_failed_setup_is_a_failed_evaluation(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    ex = executor(slurm_cluster, unique_run_dir(tmp_path), setup="echo activating; false")
    result = run(ex.evaluate(eval_request(unique_run_dir(tmp_path), "cccc000000000001")))
    assert result.status == "failed"
    assert "setup snippet" in (result.failure_reason or "")
    assert "activating" in result.output_tail


def test_job_killed_without_trace_fails_instead_of_hanging(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """SIGKILL skips the script's trap: no exit file, no accounting, yet a bounded failure."""
    ex = executor(slurm_cluster, unique_run_dir(tmp_path), setup="kill -9 $$", grace_s=2)
    result = run(ex.evaluate(eval_request(unique_run_dir(tmp_path), "cccc000000000002")), timeout=45)
    assert result.status == "failed"
    assert "SIGKILL" in (result.failure_reason or ""), result.failure_reason


def test_sbatch_refusal_names_the_setting(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    ex = executor(slurm_cluster, unique_run_dir(tmp_path), partition="no-such-partition")
    with pytest.raises(GeError, match="sbatch refused") as info:
        run(ex.evaluate(eval_request(unique_run_dir(tmp_path), "dddd000000000001")))
    assert "partition" in info.value.one_line().lower()


def test_job_that_can_never_start_fails(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    run_dir = unique_run_dir(tmp_path)
    ex = executor(slurm_cluster, run_dir, partition="short", time_limit="00:05:00")
    result = run(ex.evaluate(eval_request(run_dir, "eeee000000000002")))
    assert result.status == "failed"
    assert "PartitionTimeLimit" in (result.failure_reason or ""), result.failure_reason
    assert not slurm_cluster.jobs(job_name(run_dir.name, "")), "cancelled, not left pending"


def test_scancel_from_outside_fails_the_evaluation(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    run_dir = unique_run_dir(tmp_path)
    ex = executor(slurm_cluster, run_dir)
    req = eval_request(run_dir, "eeee000000000001", command="echo started; sleep 120")

    async def scenario() -> EvalResult:
        task = asyncio.create_task(ex.evaluate(req))
        name = job_name(run_dir.name, req.variant_id)
        jobs = await until(
            lambda: [j for j in slurm_cluster.jobs(name) if j[2] == "RUNNING"], what="RUNNING"
        )
        slurm_cluster.run("scancel", jobs[0][0])
        return await task

    result = run(scenario())
    assert result.status == "failed"
    assert "cancelled" in (result.failure_reason or "")
    assert not slurm_cluster.jobs(job_name(run_dir.name, req.variant_id))


def test_resume_reattaches_to_a_queued_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    run_dir = unique_run_dir(tmp_path)
    vid = "ffff000000000001"
    name = job_name(run_dir.name, vid)
    first, job_id = held_then_detached(slurm_cluster, run_dir, vid)  # the job stays queued
    assert [j[2] for j in slurm_cluster.jobs(name)] == ["PENDING"]
    assert json.loads((run_dir / "slurm" / f"{vid}.json").read_text())["job_id"] == job_id

    second = executor(slurm_cluster, run_dir)  # `ge resume`: a new process, same run dir

    async def resume() -> EvalResult:
        task = asyncio.create_task(second.evaluate(eval_request(run_dir, vid)))
        await until(lambda: second.live_jobs, what="re-attachment")
        slurm_cluster.run("scontrol", "release", job_id)
        return await task

    result = run(resume())
    assert result.status == "ok", result.failure_reason
    assert second.submitted == [], "re-attached, not resubmitted"
    assert first.submitted == [job_id]


def test_a_detach_while_sbatch_answers_records_the_job_id(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """An sbatch that answers 2 s after the job is queued (a busy controller): a detach in
    between still leaves the job's id in the variant's record (it was left out before)."""
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "sbatch").write_text(
        f'#!/bin/sh\nout=$({shutil.which("sbatch")} "$@") || exit $?\nsleep 2\necho "$out"\n'
    )
    (slow / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow}{os.pathsep}{os.environ['PATH']}")
    run_dir = unique_run_dir(tmp_path)
    vid = "ffff000000000003"
    first, job_id = held_then_detached(slurm_cluster, run_dir, vid)  # before sbatch answered
    try:
        assert json.loads((run_dir / "slurm" / f"{vid}.json").read_text())["job_id"] == job_id
        assert first.submitted == [job_id]  # submitted by this instance (it was left out)
    finally:
        slurm_cluster.run("scancel", job_id)


def test_resume_resubmits_a_lost_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    run_dir = unique_run_dir(tmp_path)
    vid = "ffff000000000002"
    record = {"variant_id": vid, "job_id": "987654", "token": "0badc0de", "name": "x"}
    (run_dir / "slurm").mkdir(parents=True)
    (run_dir / "slurm" / f"{vid}.json").write_text(json.dumps(record))
    ex = executor(slurm_cluster, run_dir)
    result = run(ex.evaluate(eval_request(run_dir, vid)))
    assert result.status == "ok", result.failure_reason
    assert len(ex.submitted) == 1 and ex.submitted[0] != "987654"


def test_ctrl_c_cancels_the_jobs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    run_dir = unique_run_dir(tmp_path)
    ex = executor(slurm_cluster, run_dir, extra_sbatch=["--hold"])
    vid = "abab000000000001"
    name = job_name(run_dir.name, vid)

    async def interrupted() -> None:
        task = asyncio.create_task(ex.evaluate(eval_request(run_dir, vid)))
        await until(lambda: slurm_cluster.jobs(name), what="the held job")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ex.aclose()

    run(interrupted())
    assert not slurm_cluster.jobs(name), "scancel'ed"
    assert not (run_dir / "slurm" / f"{vid}.json").exists(), "a resume resubmits it"


def test_ctrl_c_while_sbatch_answers_cancels_the_job(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C after SLURM queued the job but before sbatch printed its id (an sbatch that is slow
    to answer): the job is found by its comment and cancelled, not left in the queue."""
    real = shutil.which("sbatch")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\n{real} "$@" > /dev/null\nexec sleep 60\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run_dir = unique_run_dir(tmp_path)
    ex = executor(slurm_cluster, run_dir, extra_sbatch=["--hold"])
    vid = "abab000000000002"
    name = job_name(run_dir.name, vid)

    async def interrupted() -> None:
        task = asyncio.create_task(ex.evaluate(eval_request(run_dir, vid)))
        await until(lambda: slurm_cluster.jobs(name), what="the held job")
        assert not task.done()  # sbatch has not answered
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ex.aclose()

    run(interrupted())
    assert not slurm_cluster.jobs(name), "scancel'ed"


def test_resume_waits_out_a_failing_squeue_for_an_unrecorded_job(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ge stopped after SLURM queued a job but before sbatch printed its id, then a resume whose
    squeue fails for 7 s (a busy controller): the queued job is found by its comment once squeue
    answers, not submitted a second time (a failing squeue was taken for "not queued": the
    flake of test_ge_resume_reattaches_after_kill_9)."""
    real_sbatch, real_squeue = shutil.which("sbatch"), shutil.which("squeue")
    assert real_sbatch is not None and real_squeue is not None
    mute, flaky = tmp_path / "mute", tmp_path / "flaky"
    mute.mkdir()
    flaky.mkdir()
    (mute / "sbatch").write_text(f'#!/bin/sh\n{real_sbatch} "$@" > /dev/null\nexec sleep 60\n')
    first_call = tmp_path / "first-lookup"
    (flaky / "squeue").write_text(
        "#!/bin/sh\n"
        'case " $* " in *" -n "*)\n'
        f"  [ -f {first_call} ] || date +%s > {first_call}\n"
        f'  if [ $(( $(date +%s) - $(cat {first_call}) )) -lt 7 ]; then\n'
        '    echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1\n'
        "  fi;;\n"
        "esac\n"
        f'exec {real_squeue} "$@"\n'
    )
    for shim in (mute / "sbatch", flaky / "squeue"):
        shim.chmod(0o755)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", f"{mute}{os.pathsep}{path}")
    run_dir = unique_run_dir(tmp_path)
    vid = "abab000000000003"
    # sbatch never answers: the record keeps no job id, as after kill -9
    _, job_id = held_then_detached(slurm_cluster, run_dir, vid)
    try:
        assert json.loads((run_dir / "slurm" / f"{vid}.json").read_text())["job_id"] is None
        monkeypatch.setenv("PATH", f"{flaky}{os.pathsep}{path}")
        second = executor(slurm_cluster, run_dir)

        async def resume() -> EvalResult:
            task = asyncio.create_task(second.evaluate(eval_request(run_dir, vid)))
            await until(lambda: second.live_jobs, timeout=60, what="re-attachment")
            slurm_cluster.run("scontrol", "release", job_id)
            try:
                return await task
            finally:
                await second.aclose(cancel=False)

        result = run(resume())
        assert first_call.exists(), "the resume looked the job up by its comment"
        assert second.submitted == [], "submitted a second time while squeue failed"
        assert result.status == "ok", result.failure_reason
    finally:
        slurm_cluster.run("scancel", job_id, check=False)


def test_max_queued_bounds_the_jobs_in_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    run_dir = unique_run_dir(tmp_path)
    ex = executor(slurm_cluster, run_dir, max_queued=2, extra_sbatch=["--hold"])
    assert ex.capacity == 2
    prefix = job_name(run_dir.name, "")
    seen: list[int] = []

    async def scenario() -> list[EvalResult]:
        tasks = [
            asyncio.create_task(ex.evaluate(eval_request(run_dir, f"cdcd00000000000{i}")))
            for i in range(4)
        ]
        await until(lambda: len(slurm_cluster.jobs(prefix)) >= 2, what="two queued jobs")
        for _ in range(5):  # several poll rounds: the other two stay out of SLURM
            seen.append(len(slurm_cluster.jobs(prefix)))
            await asyncio.sleep(ex.cfg.poll_s)
        while not all(t.done() for t in tasks):
            jobs = slurm_cluster.jobs(prefix)
            seen.append(len(jobs))
            held = [j[0] for j in jobs if j[3] == "JobHeldUser"]
            if held:
                slurm_cluster.run("scontrol", "release", *held, check=False)
            await asyncio.sleep(0.1)
        return [t.result() for t in tasks]

    results = run(scenario(), timeout=90)
    assert [r.status for r in results] == ["ok"] * 4
    assert max(seen) == 2 and seen[:5] == [2] * 5
    assert len(ex.submitted) == 4


def slurm_seed(directory: Path, cluster: SlurmCluster, **slurm: Any) -> Path:
    """The `ge init` seed, tiny, evaluated through SLURM."""
    seed = template_seed(directory)
    write_config(
        seed / "ge.toml",
        {
            "seed": {"files": ["model.py"]},
            "llm": {"models": ["offline"]},
            "evolution": {
                "initial_population": 2,
                "population": 2,
                "elites": 1,
                "hall_of_fame": 4,
                "generations": 1,
                "seed": 1,
            },
            "evaluator": {
                "command": "python evaluate.py",
                "check": "python evaluate.py --check",
                "timeout_s": 60,
            },
            "executor": {"kind": "slurm", "gpus": []},
            "executor.slurm": {
                "partition": cluster.partition,
                "time_limit": "00:05:00",
                "max_queued": 4,
                "poll_s": 0.2,
                "grace_s": 5,
                **slurm,
            },
        },
        [{"name": "score", "direction": "max"}, {"name": "size", "direction": "min"}],
    )
    return seed


def test_ge_run_through_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    seed = slurm_seed(tmp_path / "seed", slurm_cluster)
    proc = subprocess.run(
        [sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir",
         str(unique_run_dir(tmp_path)), "--json"],
        cwd=tmp_path,
        env={**os.environ, **slurm_cluster.env, "LITELLM_OFFLINE_MODE": "true"},
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["finished"] and summary["evaluated"] >= 3, summary
    assert summary["front"]
    job_dirs = list((unique_run_dir(tmp_path) / "slurm").glob("*/*/job.out"))
    assert len(job_dirs) >= summary["evaluated"], "every evaluation was a SLURM job"
    assert not list((unique_run_dir(tmp_path) / "slurm").glob("*.json")), "no job left behind"


def _held_child(cluster: SlurmCluster, run_dir: Path) -> list[tuple[str, str, str, str]]:
    """The run's held jobs; the seed's (held too) is released: `ge run` evaluates the seed before
    the run directory exists, in a directory of another name (``.RUN.creating-PID``)."""
    for job in cluster.jobs("ge-"):
        if run_dir.name in job[1] and not job[1].startswith(job_name(run_dir.name, "")):
            cluster.run("scontrol", "release", job[0], check=False)
    return cluster.jobs(job_name(run_dir.name, ""))


def test_ge_resume_reattaches_after_kill_9(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    # One job queued at a time: one child's job is held when ge is killed.
    seed = slurm_seed(tmp_path / "seed", slurm_cluster, extra_sbatch=["--hold"], max_queued=1)
    run_dir = unique_run_dir(tmp_path)
    env = {**os.environ, **slurm_cluster.env, "LITELLM_OFFLINE_MODE": "true"}
    argv = [sys.executable, "-m", "guided_evolution"]
    first = subprocess.Popen(
        [*argv, "run", str(seed), "--run-dir", str(run_dir)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        held = run(
            until(lambda: _held_child(slurm_cluster, run_dir), timeout=90, what="a child's job"),
            timeout=100,
        )
    finally:
        first.kill()
        _, first_err = first.communicate()
    assert len(held) == 1 and held[0][3] == "JobHeldUser", (held, first_err[-2000:])
    second = subprocess.Popen(
        [*argv, "resume", str(run_dir), "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: set[str] = set()
    seen_names: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while second.poll() is None and time.monotonic() < deadline:
        for job in slurm_cluster.jobs(job_name(run_dir.name, "")):
            seen.add(job[0])
            seen_names[job[0]] = job[1]
            if job[3] == "JobHeldUser":
                slurm_cluster.run("scontrol", "release", job[0], check=False)
        time.sleep(0.1)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["finished"] and summary["failed"] == 0
    assert held[0][0] in seen, "the queued job of the killed run was waited for"
    with RunIndex.open(run_dir / "index.sqlite", readonly=True) as index:
        seeds = {v.id for v in index.variants() if v.operator == "seed"}
        children = {ev.variant_id for ev in index.evaluations()} - seeds
    names = {seen_names[j] for j in seen}
    assert names == {job_name(run_dir.name, vid) for vid in children}, (names, children)
    assert len(seen) == len(names), "no evaluation was submitted twice"


def test_time_limit_is_a_failed_evaluation(
    slurm_cluster: SlurmCluster,  # noqa: F811
    time_limit_job: _Background | None,
) -> None:
    assert time_limit_job is not None and time_limit_job.thread is not None
    time_limit_job.thread.join(timeout=200)
    assert not time_limit_job.thread.is_alive(), "the evaluation of a timed-out job never ended"
    assert time_limit_job.error is None, repr(time_limit_job.error)
    result = time_limit_job.result
    assert result is not None and result.status == "failed"
    assert "time limit" in (result.failure_reason or ""), result.failure_reason
