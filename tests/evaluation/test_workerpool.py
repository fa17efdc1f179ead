"""Persistent per-slot evaluation workers (`evaluator.worker`) through LocalExecutor."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalRequest, EvalResult
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.workers.pool import WorkerPool
from tests.support.cli import processes_with

PY = shlex.quote(sys.executable)
ROOT = Path(__file__).resolve().parents[2]
SEED_DIR = ROOT / "seeds" / "exquisitenet_v2"

# A pure-Python worker that follows the protocol. Each child does what `behaviour.txt` of its
# variant says; `worker_id` tells which worker start a child was forked from.
FAKE_WORKER = r'''
import json, os, random, selectors, signal, sys, time

WORKER_ID = f"{os.getpid()}-{random.random()}"
if os.path.exists("no-start"):
    print("cannot start: no-start file", file=sys.stderr)
    sys.exit(3)


def reply(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def child(req):
    fd = os.open(req["log_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(req["env"])
    os.chdir(req["workdir"])
    what = open("behaviour.txt").read().split()
    if req["args"].get("check"):  # the check stage (evaluator.worker_check)
        assert req["stage"] == "check", req
        print(f"check in {WORKER_ID}", flush=True)
        if what[0] == "badcheck":
            print("check says no", flush=True)
            return 4
        if what[0] == "slowcheck":
            time.sleep(float(what[1]))
        open("checked-in-worker", "w").write(WORKER_ID)
        json.dump({"check_worker_id": WORKER_ID}, open(os.environ["GE_METRICS"], "w"))
        return 0
    assert req["stage"] == "evaluate" and req["args"] == {}, req
    print(f"child of {WORKER_ID} doing {what}", flush=True)
    if what[0] == "crash":
        print("boom", flush=True)
        return 3
    if what[0] == "hang":
        if os.fork() == 0:  # a grandchild that leaves the process group
            os.setsid()
            os.execvp("sleep", ["sleep", what[1]])
        time.sleep(1000)
    if what[0] == "kill-worker":
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(0.5)
    if what[0] == "spam":
        sys.stdout.write("x" * 300_000 + "\nthe end\n")
        sys.stdout.flush()
    time.sleep(float(what[1]) if what[0] == "slow" else 0)
    open("child-was-here", "w").write(os.getcwd())
    siblings = sorted(os.listdir(os.path.dirname(os.path.dirname(os.getcwd()))))
    sleepers = 0  # processes left by an earlier evaluation ("ok MARKER")
    for pid in filter(str.isdigit, os.listdir("/proc")) if len(what) > 1 else ():
        try:
            sleepers += ("sleep\0" + what[1]).encode() in open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            pass
    json.dump({"score": 1.0, "worker_id": WORKER_ID, "cwd": os.getcwd(),
               "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
               "checked": float(os.path.exists("checked")), "siblings": json.dumps(siblings),
               "checked_in_worker": open("checked-in-worker").read()
               if os.path.exists("checked-in-worker") else "no",
               "sleepers": float(sleepers)},
              open(os.environ["GE_METRICS"], "w"))
    return 0


reply({"ready": True})
running = {}
sel = selectors.DefaultSelector()
sel.register(sys.stdin.fileno(), selectors.EVENT_READ)
buffer, open_input = b"", True
while open_input or running:
    if open_input and sel.select(timeout=0.02):
        chunk = os.read(sys.stdin.fileno(), 65536)
        open_input = bool(chunk)
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                os.setpgid(0, 0)
                code = 1
                try:
                    code = child(req)
                finally:
                    os._exit(code)
            running[pid] = req["variant_id"]
            reply({"variant_id": req["variant_id"], "pid": pid})
    elif not open_input:
        time.sleep(0.02)
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        vid = running.pop(pid)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        reply({"variant_id": vid, "exit_code": code, "signal": sig})
'''

COLD = (
    f"{PY} -c "
    + shlex.quote(
        "import json, os; json.dump({'score': 2.0, 'cold': 'yes'}, open(os.environ['GE_METRICS'], 'w'))"
    )
)


def _request(run_dir: Path, vid: str, behaviour: str, **kw: object) -> EvalRequest:
    workdir = run_dir / "work" / vid
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "fake_worker.py").write_text(FAKE_WORKER)
    (workdir / "behaviour.txt").write_text(behaviour)
    (workdir / ".ge").mkdir(exist_ok=True)
    fields: dict[str, object] = {
        "variant_id": vid,
        "workdir": workdir,
        "run_dir": run_dir,
        "command": COLD,
        "check_command": None,
        "timeout_s": 30.0,
        "check_timeout_s": 30.0,
        "metrics_path": workdir / ".ge" / "metrics.json",
        "log_path": run_dir / "logs" / f"{vid}.log",
        "objectives": ("score",),
        "env": {},
    }
    fields.update(kw)
    return EvalRequest(**fields)  # type: ignore[arg-type]


def _executor(
    sandbox: Sandbox,
    worker: str,
    slots: int = 1,
    stages: tuple[str, ...] = ("evaluate",),
    **kw: object,
) -> LocalExecutor:
    pool = WorkerPool(
        worker, sandbox, start_timeout_s=30.0, reply_timeout_s=10.0, kill_grace_s=0.5,
        stages=stages,
    )
    return LocalExecutor(
        slots, kw.get("gpus"), None, sandbox, kill_grace_s=0.5, workers=pool  # type: ignore[arg-type]
    )


def _in_sequence(executor: LocalExecutor, *requests: EvalRequest) -> list[EvalResult]:
    async def main() -> list[EvalResult]:
        try:
            return [await executor.evaluate(r) for r in requests]
        finally:
            await executor.aclose()

    return asyncio.run(main())




FAKE = f"{PY} fake_worker.py"


def test_two_evaluations_reuse_one_worker_after_a_normal_check(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    check = f"{PY} -c " + shlex.quote("open('checked', 'w').close()")
    first = _request(run, "v1", "ok", check_command=check)
    second = _request(run, "v2", "spam", check_command=check)
    executor = _executor(sandbox, FAKE)
    pool = executor.workers
    assert pool is not None
    one, two = _in_sequence(executor, first, second)
    assert one.status == "ok" and two.status == "ok", (one.failure_reason, two.failure_reason)
    assert one.metrics["worker_id"] == two.metrics["worker_id"]
    assert pool.stats()[0].starts == 1 and pool.stats()[0].evaluations == 2
    assert "cold" not in one.metrics
    assert one.metrics["checked"] == 1.0  # the check stage ran, as a command, in the variant dir
    # The child ran in its own variant directory, which is back in place afterwards.
    assert str(one.metrics["cwd"]).endswith("variant-v1")
    assert (run / "work" / "v1" / "child-was-here").read_text() == one.metrics["cwd"]
    log = (run / "logs" / "v1.log").read_text()
    assert "via the worker of slot 0" in log and "doing ['ok']" in log
    # Output goes through the same cap as a command's: head, omission marker, tail.
    big = (run / "logs" / "v2.log").read_text()
    assert "bytes of output omitted" in big and big.rstrip().endswith("the end")
    assert len(big) < 120_000
    assert "the end" in two.output_tail
    if sandbox.probe().backend == "bwrap":
        # Under bwrap the worker sees its own slot directory only, not other variants.
        assert json.loads(str(one.metrics["siblings"])) == [".ge-worker-0"]
    assert not (run / "work" / ".ge-worker-0").exists()  # removed by aclose


CHECK_COLD = f"{PY} -c " + shlex.quote("open('checked', 'w').close()")
BOTH = ("check", "evaluate")


def test_worker_check_sends_the_check_stage_to_the_same_worker(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    requests = [_request(run, f"v{i}", "ok", check_command=CHECK_COLD) for i in range(2)]
    executor = _executor(sandbox, FAKE, stages=BOTH)
    pool = executor.workers
    assert pool is not None
    one, two = _in_sequence(executor, *requests)
    assert one.status == two.status == "ok", (one.failure_reason, two.failure_reason)
    # The check ran in a child of the very worker that then evaluated; the cold check never ran.
    assert one.metrics["checked_in_worker"] == one.metrics["worker_id"]
    assert two.metrics["checked_in_worker"] == two.metrics["worker_id"] == one.metrics["worker_id"]
    assert one.metrics["checked"] == 0.0
    stats = pool.stats()[0]
    assert (stats.starts, stats.checks, stats.evaluations) == (1, 2, 2)
    log = (run / "logs" / "v0.log").read_text()
    assert "check via the worker of slot 0" in log and "evaluate via the worker of slot 0" in log


def test_a_check_failing_in_the_worker_stops_the_cascade(sandbox: Sandbox, tmp_path: Path) -> None:
    run = tmp_path / "run"
    bad = _request(run, "bad", "badcheck", check_command=CHECK_COLD)
    slow = _request(run, "slow", "slowcheck 60", check_command=CHECK_COLD, check_timeout_s=1.0)
    fine = _request(run, "fine", "ok", check_command=CHECK_COLD)
    executor = _executor(sandbox, FAKE, stages=BOTH)
    pool = executor.workers
    assert pool is not None
    bad_r, slow_r, fine_r = _in_sequence(executor, bad, slow, fine)
    assert (bad_r.status, bad_r.stage, bad_r.failure_reason) == ("failed", "check", "exit code 4")
    assert "check says no" in bad_r.output_tail
    # The check stage gets check_timeout_s, not the evaluation's timeout_s.
    assert (slow_r.stage, slow_r.failure_reason) == ("check", "timed out after 1 s")
    assert slow_r.duration_s < 15
    for request in (bad, slow):  # the evaluate stage never ran
        assert not (request.workdir / "child-was-here").exists()
    assert fine_r.status == "ok" and fine_r.metrics["worker_id"] == fine_r.metrics[
        "checked_in_worker"]
    assert pool.stats()[0].starts == 1 and not pool.warnings  # failures of variants, not of it


def test_worker_check_falls_back_to_the_check_command_when_the_worker_cannot_start(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    request = _request(run, "v", "ok", check_command=CHECK_COLD)
    (request.workdir / "no-start").write_text("")
    (result,) = _in_sequence(_executor(sandbox, FAKE, stages=BOTH), request)
    assert result.status == "ok" and result.metrics.get("cold") == "yes"
    assert (request.workdir / "checked").exists()  # evaluator.check ran as a command
    assert "running evaluator.check" in (run / "logs" / "v.log").read_text()


def test_a_crashing_child_fails_alone(sandbox: Sandbox, tmp_path: Path) -> None:
    run = tmp_path / "run"
    executor = _executor(sandbox, FAKE)
    crash, fine = _in_sequence(executor, _request(run, "c", "crash"), _request(run, "f", "ok"))
    assert crash.status == "failed" and crash.failure_reason == "exit code 3"
    assert crash.stage == "evaluate" and "boom" in crash.output_tail
    assert fine.status == "ok", fine.failure_reason
    assert executor.workers is not None and executor.workers.stats()[0].starts == 1


def test_a_hanging_child_is_killed_at_the_timeout_and_the_worker_survives(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    marker = f"{time.time_ns() % 100_000}.5"
    requests = (
        _request(run, "a", "ok"),
        _request(run, "h", f"hang {marker}", timeout_s=1.5),
        _request(run, "b", f"ok {marker}"),
    )
    executor = _executor(sandbox, FAKE)
    first, hung, after = _in_sequence(executor, *requests)
    assert hung.status == "failed" and hung.failure_reason == "timed out after 1.5 s"
    assert first.status == after.status == "ok"
    assert first.metrics["worker_id"] == after.metrics["worker_id"]
    assert after.metrics["sleepers"] == 0  # the escaped grandchild was gone before the next one
    assert processes_with(f"sleep\0{marker}") == []


def test_a_dead_worker_is_restarted_once_then_the_slot_runs_cold(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    requests = (
        _request(run, "k1", "kill-worker"),
        _request(run, "ok1", "ok"),
        _request(run, "k2", "kill-worker"),
        _request(run, "ok2", "ok"),
    )
    executor = _executor(sandbox, FAKE)
    pool = executor.workers
    assert pool is not None
    k1, ok1, k2, ok2 = _in_sequence(executor, *requests)
    # The evaluation whose worker died is rerun with evaluator.command.
    assert k1.status == "ok" and k1.metrics.get("cold") == "yes", k1.failure_reason
    assert "running evaluator.command" in (run / "logs" / "k1.log").read_text()
    assert ok1.status == "ok" and "worker_id" in ok1.metrics  # a restarted worker
    assert k2.status == "ok" and k2.metrics.get("cold") == "yes"
    assert ok2.status == "ok" and ok2.metrics.get("cold") == "yes"  # worker mode is off now
    stats = pool.stats()[0]
    assert (stats.starts, stats.deaths, stats.disabled) == (2, 2, True)
    assert len(pool.warnings) == 2 and "runs evaluator.command" in pool.warnings[1]


def test_a_worker_that_cannot_start_falls_back_to_the_command(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    requests = [_request(run, f"v{i}", "ok") for i in range(3)]
    for request in requests:
        (request.workdir / "no-start").write_text("")
    executor = _executor(sandbox, FAKE)
    pool = executor.workers
    assert pool is not None
    results = _in_sequence(executor, *requests)
    assert [r.metrics.get("cold") for r in results] == ["yes", "yes", "yes"]
    assert pool.stats()[0].starts == 2 and pool.stats()[0].disabled
    assert "no-start file" in pool.warnings[0]


def test_concurrent_slots_each_get_their_own_worker_and_gpu(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    requests = [_request(run, f"v{i}", "slow 0.3") for i in range(6)]
    executor = _executor(sandbox, FAKE, slots=2, gpus=["0", "1"])
    pool = executor.workers
    assert pool is not None

    async def main() -> list[EvalResult]:
        try:
            return list(await asyncio.gather(*(executor.evaluate(r) for r in requests)))
        finally:
            await executor.aclose()

    results = asyncio.run(main())
    assert all(r.status == "ok" for r in results), [r.failure_reason for r in results]
    by_gpu: dict[str, set[str]] = {}
    for r in results:
        assert r.metrics["gpu"] == r.gpu
        by_gpu.setdefault(str(r.gpu), set()).add(str(r.metrics["worker_id"]))
    assert sorted(by_gpu) == ["0", "1"]
    assert all(len(ids) == 1 for ids in by_gpu.values())  # one worker per slot, reused
    assert by_gpu["0"] != by_gpu["1"]
    assert {i: s.starts for i, s in pool.stats().items()} == {0: 1, 1: 1}


# --------------------------------------------------------------------------- the real seed

SEED_WORKER = "python evaluate.py --worker --data data --epochs 1 --device cpu --batch-size 50"


def _seed_request(
    run: Path, vid: str, replace: tuple[str, str] | None = None, check: str | None = None
) -> EvalRequest:
    """A variant of the ExquisiteNetV2 seed (one text replacement in model.py) with tiny CIFAR
    data inside its own tree (the sandbox's /tmp is private)."""
    from tests.support.cifar import write_cifar

    workdir = run / "work" / vid
    workdir.mkdir(parents=True)
    shutil.copy(SEED_DIR / "evaluate.py", workdir / "evaluate.py")
    model = (SEED_DIR / "model.py").read_text()
    if replace is not None:
        assert model.count(replace[0]) == 1
        model = model.replace(*replace)
    (workdir / "model.py").write_text(model)
    write_cifar(workdir / "data", 100, 20, seed=1)
    return EvalRequest(
        variant_id=vid,
        workdir=workdir,
        run_dir=run,
        command="python evaluate.py --data data --epochs 1 --device cpu",
        check_command=check,
        timeout_s=100.0,
        check_timeout_s=60.0,
        metrics_path=workdir / ".ge" / "metrics.json",
        log_path=run / "logs" / f"{vid}.log",
        objectives=("val_accuracy", "params"),
    )


@pytest.mark.timeout(120)
def test_exquisitenet_worker_through_the_executor(sandbox: Sandbox, tmp_path: Path) -> None:
    run = tmp_path / "run"
    requests = [_seed_request(run, vid) for vid in ("s1", "s2")]
    executor = _executor(sandbox, SEED_WORKER)
    pool = executor.workers
    assert pool is not None
    one, two = _in_sequence(executor, *requests)
    assert one.status == "ok" and two.status == "ok", (one.output_tail, two.output_tail)
    assert one.metrics["params"] == two.metrics["params"] == 518_230.0
    assert one.metrics == {**two.metrics, **{k: one.metrics[k] for k in ("train_seconds",
                                                                          "images_per_second")}}
    assert pool.stats()[0].starts == 1 and pool.stats()[0].evaluations == 2
    assert "batch 50" in (run / "logs" / "s2.log").read_text()  # the worker's flags apply


@pytest.mark.timeout(120)
def test_exquisitenet_check_stage_in_the_worker(sandbox: Sandbox, tmp_path: Path) -> None:
    """`evaluate.py --worker` serves `--check` requests: a bad shape fails at the check stage."""
    run = tmp_path / "run"
    check = "python evaluate.py --check"
    good = _seed_request(run, "good", check=check)
    bad = _seed_request(run, "bad", ("return self.fc(self.drop(x))", "return self.drop(x)"), check)
    requests = [good, bad]
    executor = _executor(sandbox, SEED_WORKER, stages=("check", "evaluate"))
    pool = executor.workers
    assert pool is not None
    good, bad = _in_sequence(executor, *requests)
    assert good.status == "ok", good.output_tail
    assert good.metrics["params"] == 518_230.0
    assert (bad.status, bad.stage, bad.failure_reason) == ("failed", "check", "exit code 1")
    assert "expected (2, 10)" in bad.output_tail
    stats = pool.stats()[0]
    assert (stats.starts, stats.checks, stats.evaluations) == (1, 2, 1) and not pool.warnings
    log = (run / "logs" / "good.log").read_text()
    assert "check via the worker of slot 0" in log and "check_seconds" in log


@pytest.mark.timeout(180)
def test_exquisitenet_failures_on_a_shared_gpu_never_disturb_the_other_evaluations(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Two slots packed on one GPU id, four variants at once: an out-of-memory child and a
    killed child fail alone, with their own reasons; the good ones match and no worker dies."""
    forward = "        x = self.DFSEB1(self.FCT(x))"
    broken = {
        "oom": forward.replace("x = ", "torch.empty(1 << 50)\n        x = ", 1),
        "killed": forward.replace(
            "x = ", "import os, signal\n        os.kill(os.getpid(), signal.SIGKILL)\n        x = ", 1
        ),
    }
    run = tmp_path / "run"
    requests = [
        _seed_request(run, vid, (forward, broken[vid]) if vid in broken else None)
        for vid in ("good1", "oom", "killed", "good2")
    ]
    pool = WorkerPool(
        SEED_WORKER, sandbox, start_timeout_s=60.0, reply_timeout_s=10.0, kill_grace_s=0.5
    )
    executor = LocalExecutor(2, ["0"], 2, sandbox, kill_grace_s=0.5, workers=pool)

    async def main() -> list[EvalResult]:
        try:
            return list(await asyncio.gather(*(executor.evaluate(r) for r in requests)))
        finally:
            await executor.aclose()

    good1, oom, killed, good2 = asyncio.run(main())
    assert good1.status == good2.status == "ok", (good1.output_tail, good2.output_tail)
    assert good1.gpu == good2.gpu == oom.gpu == killed.gpu == "0"
    assert good1.metrics["val_accuracy"] == good2.metrics["val_accuracy"]
    assert good1.metrics["params"] == 518_230.0
    assert (oom.status, oom.failure_reason) == ("failed", "exit code 1")
    assert "allocate" in oom.output_tail
    assert killed.failure_reason == "exit code -9 (killed by SIGKILL)"
    assert not pool.warnings
    stats = pool.stats()
    assert sorted(stats) == [0, 1] and all(s.starts == 1 and not s.deaths for s in stats.values())
    assert sum(s.evaluations for s in stats.values()) == 4


@pytest.mark.parametrize("backend", ["landlock", "none"])
def test_other_sandbox_backends_reuse_the_worker_and_enforce_the_timeout(
    tmp_path: Path, backend: str
) -> None:
    box = Sandbox(SandboxPolicy(output_cap_bytes=100_000, backend=backend))
    try:
        box.probe()
    except GeError as exc:  # a backend this machine lacks
        pytest.skip(f"{backend} does not work here: {exc}")
    run = tmp_path / "run"
    marker = f"{time.time_ns() % 100_000}.25"
    requests = (
        _request(run, "a", "ok"),
        _request(run, "h", f"hang {marker}", timeout_s=1.0),
        _request(run, "b", "crash"),
        _request(run, "c", f"ok {marker}"),
    )
    ok, hung, crash, after = _in_sequence(_executor(box, FAKE), *requests)
    assert hung.failure_reason == "timed out after 1 s"
    assert crash.failure_reason == "exit code 3"
    assert ok.status == after.status == "ok"
    assert ok.metrics["worker_id"] == after.metrics["worker_id"]
    assert after.metrics["sleepers"] == 0


def test_an_executor_refuses_a_secret_looking_pass_env_before_any_evaluation() -> None:
    """The environment filter is built once per executor (its decisions kept per name): a
    ``pass_env`` that names a secret is refused when the executor is made, with the same
    message as before."""
    with pytest.raises(GeError, match="looks like a secret"):
        LocalExecutor(1, None, None, Sandbox(SandboxPolicy(pass_env=("MY_API_TOKEN",))))
    allowed = LocalExecutor(1, None, None, Sandbox(SandboxPolicy(pass_env=("GE_DATA*",))))
    assert allowed.capacity == 1
