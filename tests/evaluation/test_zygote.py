"""`[evaluator] preload`: a per-slot worker imports modules once and forks a confined child per
stage (guided_evolution/evaluation/workers/zygote.py). The isolation claims of SECURITY.md, in both
sandbox backends: what a forked variant cannot write, see, signal or leave behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import guided_evolution
from guided_evolution.evaluation.contract import EvalRequest, EvalResult
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox import landlock
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.workers.preload import preload_pool, python_command
from tests.support import seccomp
from tests.support.cli import ge_here, here_json, processes_with, run_json
from tests.support.seeds import template_seed, write_config

PRELOADED = "xml.dom.minidom"  # a stdlib module nothing imports at start-up

# The evaluator of every variant: does what its behaviour.txt says, then reports what it saw.
EVALUATE = r"""
import json, os, signal, sys, time

preloaded = "xml.dom.minidom" in sys.modules  # before this script imports anything
import xml.dom.minidom as minidom

what = open("behaviour.txt").read().split()
if "--check" in sys.argv:
    open("checked", "w").write(str(os.getpid()))
    sys.exit(7 if what[0] == "badcheck" else 0)
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
fds = [fd for fd in range(3, 1024) if is_open(fd)]
escapes = []
for target in ["../worker/pwned", "../pwned", "../.ge-home/pwned",
               os.environ["OTHER_VARIANT"] + "/pwned"]:
    try:
        open(target, "w").write("x")
        escapes.append(target)
    except OSError:
        pass
if os.getpid() != 2 or os.getppid() != 1:  # under the init of its own pid namespace
    escapes.append(f"pid {os.getpid()} ppid {os.getppid()}")
for pid in range(1, 70000):  # only its init is visible, and it cannot be signalled
    if pid == os.getpid():
        continue
    try:
        os.kill(pid, 0)
        escapes.append(f"pid {pid} can be signalled")
        break
    except ProcessLookupError:
        continue
    except OSError:
        if pid != 1:
            escapes.append(f"pid {pid} exists")
            break
tmp = os.environ["TMPDIR"]
seen_tmp = sorted(n for n in os.listdir("/tmp") + os.listdir("/dev/shm") if n.startswith("ge-zygote-test"))
for shared in ("/tmp", "/dev/shm"):  # private and new for each stage, or read-only
    try:
        open(f"{shared}/ge-zygote-test-" + os.environ["GE_VARIANT_ID"], "w").write("x")
    except OSError:
        pass
seen_mine = os.path.exists(os.path.join(tmp, "mine"))  # left by an earlier variant?
open(os.path.join(tmp, "mine"), "w").write("x")
seen_shm = False
if os.environ["SYSV_CHECK"] == "1":  # a SysV segment left for the next variant of the worker
    import ctypes
    libc = ctypes.CDLL(None)
    seen_shm = libc.shmget(0x6765, 0, 0) != -1
    libc.shmget(0x6765, 4096, 0o1000 | 0o600)
intact = callable(minidom.parseString)
if what[0] == "corrupt":
    minidom.parseString = None
    sys.modules["json"].dumps = None
if what[0] == "crash":
    os.abort()
if what[0] == "hang":
    if os.fork() == 0:
        os.setsid()
        os.execvp("sleep", ["sleep", "987"])
    time.sleep(1000)
worker_start = str(id(minidom))  # the preloaded module's address: one per worker process
import json as fresh_json
metrics = {"score": 1.0, "preloaded": float(preloaded), "intact": float(intact),
           "escapes": ",".join(escapes) or "none", "fds": str(fds), "worker": worker_start,
           "seen_tmp": ",".join(seen_tmp) or "none", "seen_shm": float(seen_shm), "seen_mine": float(seen_mine), "checked": float(os.path.exists("checked")),
           "home": os.environ["HOME"] == os.path.dirname(os.environ["GE_METRICS"]), "cwd": os.getcwd(), "argv": " ".join(sys.argv)}
if what[0] != "corrupt":
    open(os.environ["GE_METRICS"], "w").write(fresh_json.dumps(metrics))
"""


@pytest.fixture(params=["bwrap", "landlock"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    if request.param == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed here")
    if landlock.abi_version() <= 0:
        pytest.skip("no Landlock in this kernel: preload falls back to fresh processes")
    box = Sandbox(SandboxPolicy(backend=request.param, output_cap_bytes=100_000))
    box.probe()
    return box


def _request(
    run_dir: Path, vid: str, behaviour: str, private_ipc: str, timeout_s: float = 30.0
) -> EvalRequest:
    workdir = run_dir / "work" / vid
    workdir.mkdir(parents=True)
    (workdir / "evaluate.py").write_text(EVALUATE)
    (workdir / "behaviour.txt").write_text(behaviour)
    (workdir / ".ge").mkdir()
    return EvalRequest(
        variant_id=vid,
        workdir=workdir,
        run_dir=run_dir,
        command="python evaluate.py --seed 3",
        check_command="python evaluate.py --check",
        timeout_s=timeout_s,
        check_timeout_s=30.0,
        metrics_path=workdir / ".ge" / "metrics.json",
        log_path=run_dir / "logs" / f"{vid}.log",
        objectives=("score",),
        env={"OTHER_VARIANT": str(run_dir / "work" / "first"), "SYSV_CHECK": private_ipc},
    )


def _evaluate(sandbox: Sandbox, requests: list[EvalRequest], recycle: int) -> list[EvalResult]:
    pool, warnings = preload_pool(
        sandbox,
        (PRELOADED,),
        requests[0].command,
        requests[0].check_command,
        start_timeout_s=30.0,
        recycle_after=recycle,
        work_dir=requests[0].run_dir / "work",
        run_dir=requests[0].run_dir,
    )
    assert pool is not None and not warnings and pool.stages == {"check", "evaluate"}
    pool.reply_timeout_s, pool.kill_grace_s = 10.0, 0.5
    executor = LocalExecutor(1, None, None, sandbox, kill_grace_s=0.5, workers=pool)

    async def main() -> list[EvalResult]:
        try:
            return [await executor.evaluate(r) for r in requests]
        finally:
            await executor.aclose()

    results = asyncio.run(main())
    assert pool.warnings == []  # no worker died or was given up
    return results


def test_forked_variants_are_confined_and_independent(sandbox: Sandbox, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    behaviours = ["ok", "corrupt", "ok", "crash", "ok", "hang", "ok", "badcheck", "ok", "ok"]
    info = sandbox.probe()
    private_ipc = "1" if info.backend == "bwrap" or (info.mode and info.mode.namespaces) else "0"
    requests = [_request(run_dir, "first", "ok", private_ipc)]
    requests += [
        _request(run_dir, f"v{i}", b, private_ipc, timeout_s=3.0 if b == "hang" else 30.0)
        for i, b in enumerate(behaviours[1:], 1)
    ]
    results = _evaluate(sandbox, requests, recycle=4)
    by_id = {r.variant_id: r for r in results}
    ok = [r for r in results if r.status == "ok"]
    assert [r.variant_id for r in ok] == ["first", "v2", "v4", "v6", "v8", "v9"]
    for result in ok:
        m = result.metrics
        log = result.output_tail
        assert "check via the worker" in log and "evaluate via the worker" in log, log
        assert m["preloaded"] == 1.0 and m["checked"] == 1.0  # imported once, check ran first
        assert m["escapes"] == "none" and m["seen_tmp"] == "none" and m["seen_shm"] == 0.0, m
        assert m["fds"] == "[]"  # nothing of the worker's descriptors (protocol pipes) is open
        assert m["intact"] == 1.0  # a variant that broke the preloaded module changed nothing
        assert m["argv"] == "evaluate.py --seed 3"
        assert m["home"] == 1.0 and m["seen_mine"] == 0.0  # HOME, TMPDIR: new for each stage
    assert not (run_dir / "work" / "first" / "pwned").exists()
    assert by_id["v1"].status == "failed"  # wrote no metrics
    assert "SIGABRT" in str(by_id["v3"].failure_reason)
    assert by_id["v5"].failure_reason == "timed out after 3 s"
    assert by_id["v7"].stage == "check" and by_id["v7"].failure_reason == "exit code 7"
    # recycle_after=4 counts evaluate stages: first..v3, then v4..v8 (v7 stopped at its check),
    # then v9 each came from a new worker start
    workers = [by_id[v].metrics["worker"] for v in ("first", "v2", "v4", "v6", "v8", "v9")]
    assert workers[0] == workers[1] != workers[2] == workers[3] == workers[4] != workers[5]
    assert processes_with("sleep\x00987") == []


BIG_REQUEST = r"""
import hashlib, json, os, sys
big = "".join(os.environ[f"BIG{i}"] for i in range(4))
json.dump({"score": 1.0, "length": float(len(big)), "digest": hashlib.sha256(big.encode()).hexdigest(),
           "pid": float(os.getpid()), "ppid": float(os.getppid())}, open(os.environ["GE_METRICS"], "w"))
"""


def test_boxes_and_workers_are_made_ahead_and_take_requests_of_any_size(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The worker forks the next stage's box while it waits, and hands it the request through a
    pipe once it comes: a request far larger than a pipe's buffer arrives whole, every stage is
    still pid 2 under an init of its own. A worker to be recycled has its successor started
    ahead, in a directory of its own, and ends in the background; nothing of any worker, its
    idle box included, outlives the pool."""
    run_dir = tmp_path / "run"
    marker = f"ge-zygote-ahead-{os.getpid()}-{tmp_path.name}"
    parts = ["".join(f"{i:07d}" for i in range(k, k + 14_000)) for k in range(0, 56_000, 14_000)]
    big = "".join(parts)  # 392 kB in four variables (an exec takes 128 kB at most in one)
    requests = []
    for vid in ("a", "b", "c", "d", "e"):
        workdir = run_dir / "work" / vid
        (workdir / ".ge").mkdir(parents=True)
        (workdir / "evaluate.py").write_text(BIG_REQUEST)
        requests.append(
            EvalRequest(
                variant_id=vid,
                workdir=workdir,
                run_dir=run_dir,
                command=f"python evaluate.py {marker}",
                check_command=None,
                timeout_s=30.0,
                check_timeout_s=30.0,
                metrics_path=workdir / ".ge" / "metrics.json",
                log_path=run_dir / "logs" / f"{vid}.log",
                objectives=("score",),
                env={f"BIG{i}": part for i, part in enumerate(parts)},
            )
        )
    pool, warnings = preload_pool(
        sandbox, (), requests[0].command, None, start_timeout_s=30.0, recycle_after=2,
        work_dir=run_dir / "work", run_dir=run_dir,
    )  # fmt: skip
    assert pool is not None and not warnings
    executor = LocalExecutor(1, None, None, sandbox, kill_grace_s=0.5, workers=pool)
    waiting: list[list[int]] = []

    async def main() -> list[EvalResult]:
        results = []
        try:
            for request in requests:
                results.append(await executor.evaluate(request))
                waiting.append(processes_with(marker))  # the worker and the next stage's box
        finally:
            await executor.aclose()
        return results

    results = asyncio.run(main())
    assert pool.warnings == []
    digest = hashlib.sha256(big.encode()).hexdigest()
    for result in results:
        assert result.status == "ok", (result.failure_reason, result.output_tail)
        assert result.metrics["length"] == len(big) and result.metrics["digest"] == digest
        assert (result.metrics["pid"], result.metrics["ppid"]) == (2.0, 1.0)
    logs = [(run_dir / "logs" / f"{vid}.log").read_text() for vid in "abcde"]
    assert "starting the worker of slot 0" in logs[0]
    assert ["started ahead" in log for log in logs] == [False, False, True, False, True]
    assert pool.stats()[0].starts == 3 and pool.stats()[0].deaths == 0
    assert all(waiting), waiting  # the worker was still there between stages
    assert processes_with(marker) == []  # and nothing of the workers, their idle boxes included
    assert not [p.name for p in (run_dir / "work").iterdir() if p.name.startswith(".ge-worker")]


def test_python_commands_that_a_zygote_can_run() -> None:
    assert python_command("python evaluate.py --check").args == ("evaluate.py", "--check")
    assert python_command("python3 -m pkg.eval --lr=0.1").args == ("-m", "pkg.eval", "--lr=0.1")
    for other in ("sh run.sh", "python -u evaluate.py", "python a.py && rm x", "python a.py > o"):
        assert python_command(other) is None


def _seed(tmp_path: Path, evaluator: dict) -> Path:
    seed = template_seed(tmp_path / "seed")
    (seed / "evaluate.py").write_text(
        "import json, os, sys\n"
        f"json.dump({{'score': float({PRELOADED!r} in sys.modules), 'size': 1.0}},"
        " open(os.environ['GE_METRICS'], 'w'))\n"
    )
    write_config(
        seed / "ge.toml",
        {
            "seed": {"files": ["model.py"]},
            "llm": {"models": ["offline"]},
            "evolution": {"initial_population": 3, "population": 3, "elites": 2, "generations": 1},
            "evaluator": {"timeout_s": 60, **evaluator},
            "executor": {"slots": 1, "gpus": []},
        },
        [{"name": "score", "direction": "max"}, {"name": "size", "direction": "min"}],
    )
    return seed


def test_ge_run_with_preload_evaluates_in_forks(tmp_path: Path) -> None:
    seed = _seed(tmp_path, {"command": "python evaluate.py", "preload": [PRELOADED]})
    summary = here_json("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert summary["finished"] and summary["evaluated"] >= 3
    # score 1.0: the module was in sys.modules before evaluate.py ran, i.e. preloaded
    assert summary["front"] and all(r["metrics"]["score"] == 1.0 for r in summary["front"])


def test_preload_works_where_ge_itself_is_installed_under_a_hidden_path(tmp_path: Path) -> None:
    """ge installed under /tmp or $HOME (a clone there, an editable install): the sandbox hides
    those, so the worker could not open ge's zygote.py and every stage silently fell back to a
    fresh process (a clean clone's CI under /tmp caught it)."""
    installed = tmp_path / "site"
    shutil.copytree(
        Path(guided_evolution.__file__).parent,
        installed / "guided_evolution",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    seed = _seed(tmp_path, {"command": "python evaluate.py", "preload": [PRELOADED]})
    env = {"PYTHONPATH": str(installed)}
    summary = run_json("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path, env=env)
    assert summary["evaluated"] >= 3
    assert all(r["metrics"]["score"] == 1.0 for r in summary["front"]), summary["front"]
    logs = " ".join(p.read_text() for p in (tmp_path / "run" / "logs").iterdir())
    assert str(installed) in logs and "running evaluator.command" not in logs


@pytest.mark.parametrize(
    ("evaluator", "message"),
    [
        ({"command": "sh run.sh", "preload": ["torch"]}, "is not `python SCRIPT [ARGS]`"),
        ({"command": "python e.py", "preload": ["no-such"]}, "is not a module name"),
    ],
)
def test_preload_config_errors_are_one_line(tmp_path: Path, evaluator: dict, message: str) -> None:
    seed = _seed(tmp_path, evaluator)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("preload", [[PRELOADED], True])
def test_where_user_namespaces_are_forbidden_each_stage_runs_as_a_fresh_process(
    tmp_path: Path, preload: object
) -> None:
    """A host that forbids unprivileged user namespaces (simulated with seccomp): the worker
    cannot box its forks, so ge's start-up trial refuses preload and every stage runs as a fresh
    sandboxed process; the warning names why only where preload was asked for, and the isolation
    line does not claim a box per stage."""
    if not seccomp.supported() or os.geteuid() != 0:
        pytest.skip("needs root (the sandbox itself needs no user namespace then) and seccomp")
    seed = _seed(tmp_path, {"command": "python evaluate.py", "preload": preload})
    proc = subprocess.run(
        [*seccomp.deny_argv("userns"), sys.executable, "-m", "guided_evolution", "run",
         str(seed), "--run-dir", str(tmp_path / "run"), "--json"],
        cwd=tmp_path, env={**os.environ, "LITELLM_OFFLINE_MODE": "true"},
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["evaluated"] >= 3
    assert all(r["metrics"]["score"] == 0.0 for r in summary["front"])  # nothing preloaded
    asked = isinstance(preload, list)
    assert ("evaluator.preload is not used:" in proc.stderr) == asked, proc.stderr[-2000:]
    isolation = next(line for line in proc.stderr.splitlines() if line.startswith("isolation:"))
    assert "each stage in namespaces of its own" not in isolation
