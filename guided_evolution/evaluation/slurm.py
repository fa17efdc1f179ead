"""The SLURM executor: each evaluation is one sbatch job; status from squeue (and sacct).

On the submitting side, ``SlurmExecutor`` offers the interface of ``LocalExecutor`` (``slots``,
``evaluate``, ``aclose``). Per variant it keeps, under ``<run_dir>/slurm/``:

```
<variant>.json            the live job (id, token), written atomically; what `ge resume` re-attaches to
<variant>/<token>/        one submission: job.sh, spec.json, job.out (SLURM's output of the script),
                          exit.json (written by the script's trap), result.json (the evaluation),
                          metrics.json (a copy), work/ (the variant's tree while the job runs)
```

On the node, the job script runs the setup snippet, then this module (``job_main``) with the
interpreter that runs ge: it probes the sandbox there and evaluates through a one-slot
``LocalExecutor``, so the check → evaluate cascade, the sandbox wrapper, the output cap and the
metrics contract are the same as locally. The evaluation's log goes to ``<run_dir>/logs/``.

A job that SLURM ends (time limit, out of memory, node failure, scancel) is a failed evaluation
with that reason. Without accounting, the script's exit file says how it ended; a job that
disappears from squeue without one is failed after ``grace_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guided_evolution.errors import GeError
from guided_evolution.evaluation.local import (
    OUTPUT_TAIL_BYTES,
    EvalRequest,
    EvalResult,
    LocalExecutor,
)
from guided_evolution.evaluation.sandbox import Sandbox, SandboxPolicy, is_secret_name

if TYPE_CHECKING:
    from guided_evolution.config import ResolvedConfig
    from guided_evolution.runstore.rundir import RunPaths

SLURM_DIR = "slurm"
COMMAND_TIMEOUT_S = 60.0
"""Deadline of one SLURM client command (sbatch, squeue, sacct, scancel, scontrol)."""
DEADLINE_SLACK_S = 180.0
"""How long past its time limit a running job may go before ge cancels it itself."""
NO_LIMIT_ALLOWANCE_S = 600.0
"""Setup time allowed on top of the evaluator timeouts when the time limit is unlimited."""
SQUEUE_OUTAGE_S = 600.0
"""How long squeue may keep failing before the evaluations waiting on it fail."""
SBATCH_RETRY_S = 300.0
"""How long transient sbatch failures (controller busy or down, submit limits) are retried."""
JOB_OUTPUT_TAIL_BYTES = 8 * 1024

LIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
    }
)
"""Job states in which the job may still run (or is running)."""
_ENDED_BY_SLURM = {
    "TIMEOUT": "hit its time limit ({time_limit})",
    "CANCELLED": "was cancelled (scancel)",
    "OUT_OF_MEMORY": "ran out of memory (SLURM mem = {mem})",
    "NODE_FAIL": "was ended by a node failure",
    "PREEMPTED": "was preempted by SLURM",
    "BOOT_FAIL": "could not start (node boot failure)",
    "DEADLINE": "passed its SLURM deadline",
    "REVOKED": "was revoked by SLURM",
}
"""Terminal states in which SLURM (not the job itself) ended the job, and how to say it."""
_DETERMINISTIC = frozenset({"TIMEOUT", "OUT_OF_MEMORY"})
"""Found on resume, these are this variant's failures; other unfinished jobs are resubmitted."""
_HOPELESS_PENDING = frozenset(
    {
        "PartitionTimeLimit",
        "PartitionNodeLimit",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "AccountNotAllowed",
        "DependencyNeverSatisfied",
        "QOSMaxWallDurationPerJobLimit",
    }
)
"""Pending reasons that never clear by themselves: the job is cancelled and the evaluation fails."""
_TRANSIENT_SBATCH = (
    "unable to contact slurm controller",
    "socket timed out",
    "resource temporarily unavailable",
    "try again",
    "slurm_persist_conn",
    "maxsubmit",
    "submitjoblimit",
    "job violates accounting/qos policy (job submit limit",
)


# --------------------------------------------------------------------------- small helpers


def parse_time_limit(text: str) -> float | None:
    """Seconds of a SLURM time limit (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``).

    None for ``UNLIMITED`` / ``INFINITE``; GeError for anything else SLURM would reject.
    """
    value = text.strip()
    if value.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match:
        raise GeError(
            f"executor.slurm.time_limit = {text!r} is not a SLURM time",
            'use "MM", "HH:MM:SS" or "D-HH:MM:SS", e.g. "01:00:00"',
        )
    days, first, second, third = match.groups()
    numbers = [int(first)] + [int(x) for x in (second, third) if x is not None]
    if days is not None:
        hours, minutes, seconds = ([*numbers, 0, 0])[:3]
        return float(((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds)
    if len(numbers) == 1:
        return float(numbers[0] * 60)
    if len(numbers) == 2:
        return float(numbers[0] * 60 + numbers[1])
    return float((numbers[0] * 60 + numbers[1]) * 60 + numbers[2])


def job_name(run_name: str, variant_id: str) -> str:
    """The SLURM job name of one evaluation: ``ge-<run>-<variant>`` (safe characters only)."""
    run = re.sub(r"[^A-Za-z0-9._-]", "_", run_name)[:80]
    return f"ge-{run}-{variant_id}"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _signal_text(name: Any) -> str:
    return str(name) if name else "a signal"


# --------------------------------------------------------------------------- SLURM commands


@dataclass(frozen=True)
class JobState:
    """What SLURM says about a job."""

    state: str
    reason: str = ""


class _CommandFailed(Exception):
    """A SLURM client command could not run or timed out."""


async def _command(
    argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a client command, under a deadline."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise _CommandFailed(f"{argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise _CommandFailed(f"{argv[0]} did not answer within {timeout:g} s") from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    code = proc.returncode if proc.returncode is not None else -1
    return code, out.decode(errors="replace"), err.decode(errors="replace").strip()


class _Monitor:
    """Job states from one batched squeue per poll interval (sacct for jobs squeue forgot)."""

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self.watched: set[str] = set()
        self._states: dict[str, JobState] = {}
        self._asked: set[str] = set()
        self._stamp = -float("inf")
        self._error: str | None = None
        self._lock: asyncio.Lock | None = None
        self.accounting: bool | None = None
        """None until sacct was tried; False where the cluster has no accounting storage."""

    async def state(self, job_id: str) -> tuple[JobState | None, str | None]:
        """(state or None when squeue does not know the job, squeue's error or None)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            fresh = time.monotonic() - self._stamp < self.poll_s * 0.5
            if not fresh or job_id not in self._asked:
                await self._refresh({*self.watched, job_id})
        if self._error is not None:
            return None, self._error
        return self._states.get(job_id), None

    async def _refresh(self, ids: set[str]) -> None:
        ids = {i for i in ids if i}
        self._stamp = time.monotonic()
        self._asked = set(ids)
        if not ids:
            return
        argv = ["squeue", "-h", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(sorted(ids))]
        try:
            code, out, err = await _command(argv)
        except _CommandFailed as exc:
            self._error = str(exc)
            return
        if code != 0 and "invalid job id" not in err.lower():
            self._error = f"squeue failed: {err or f'exit code {code}'}"
            return
        self._error = None
        states: dict[str, JobState] = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0] in ids:
                states[parts[0]] = JobState(parts[1].strip(), (parts[2] if len(parts) > 2 else ""))
        self._states = states

    async def sacct(self, job_id: str) -> JobState | None:
        """The state from accounting, or None (no accounting, or no record of the job)."""
        if self.accounting is False:
            return None
        argv = ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobIDRaw,State,Reason"]
        try:
            code, out, err = await _command(argv)
        except _CommandFailed:
            return None
        if code != 0:
            if "disabled" in err.lower() or "not running" in err.lower():
                self.accounting = False
            return None
        self.accounting = True
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0] == job_id:
                state = parts[1].split()[0] if parts[1].split() else ""
                return JobState(state, parts[2] if len(parts) > 2 else "") if state else None
        return None


async def _scontrol_exit(job_id: str) -> str | None:
    """``ExitCode=code:signal`` from the controller's memory (no accounting needed)."""
    try:
        code, out, _err = await _command(["scontrol", "show", "job", "-o", job_id])
    except _CommandFailed:
        return None
    if code != 0:
        return None
    match = re.search(r"\bExitCode=(\d+):(\d+)", out)
    if not match:
        return None
    status, sig = int(match.group(1)), int(match.group(2))
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    return f"exit code {status}"


# --------------------------------------------------------------------------- the executor


@dataclass
class _Job:
    """One submission of one variant."""

    variant_id: str
    token: str
    name: str
    job_id: str | None
    submitted_at: float
    dir: Path

    def record(self) -> dict[str, Any]:
        return {
            "variant_id": self.variant_id,
            "job_id": self.job_id,
            "token": self.token,
            "name": self.name,
            "submitted_at": self.submitted_at,
        }


class SlurmExecutor:
    """Evaluates each variant as one sbatch job, at most ``max_queued`` in SLURM at once."""

    def __init__(self, resolved: ResolvedConfig, paths: RunPaths, sandbox: Sandbox) -> None:
        self.cfg = resolved.config.executor.slurm
        self.paths = paths
        self.sandbox = sandbox
        self.run_name = Path(paths.root).name
        self.dir = Path(paths.root) / SLURM_DIR
        for tool in ("sbatch", "squeue", "scancel"):
            if shutil.which(tool) is None:
                raise GeError(
                    f'[executor] kind = "slurm" needs the SLURM command {tool!r}, '
                    "which is not on PATH",
                    'run ge on a SLURM login node, or set [executor] kind = "local"',
                )
        self.time_limit_s = parse_time_limit(self.cfg.time_limit)
        self.python = self.cfg.python or sys.executable
        self.slots: list[int] = list(range(self.cfg.max_queued))
        self.submitted: list[str] = []
        """Job ids this instance submitted (re-attached jobs are not in it)."""
        self._live: dict[str, _Job] = {}
        self._queue: asyncio.Semaphore | None = None
        self._monitor = _Monitor(self.cfg.poll_s)
        self._checker = LocalExecutor(
            max(1, min(self.cfg.max_queued, os.cpu_count() or 1)), None, None, sandbox
        )
        self._closed = False

    # ------------------------------------------------------------------ public

    @property
    def live_jobs(self) -> list[str]:
        """Ids of the jobs this instance is waiting on (submitted or re-attached)."""
        return [j.job_id for j in self._live.values() if j.job_id]

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        """Evaluate one variant as a SLURM job; re-attaches to a live job of the same variant."""
        if self._closed:
            raise RuntimeError("executor is closed")
        vid = request.variant_id
        record = _read_json(self.dir / f"{vid}.json")
        if record is not None:
            job = await self._reattach(record)
            if isinstance(job, EvalResult):
                return job
            if job is not None:
                async with self._slot():
                    return await self._wait(job, request)
        if request.check_command and not self.cfg.check_on_cluster:
            failed = await self._local_check(request)
            if failed is not None:
                return failed
        async with self._slot():
            job = await self._submit(request)
            return await self._wait(job, request)

    async def aclose(self, cancel: bool = True) -> None:
        """Stop waiting. With ``cancel`` (Ctrl-C), scancel the jobs and forget them, so that
        `ge resume` resubmits them; without (``--detach``) they keep running and `ge resume`
        re-attaches to them."""
        self._closed = True
        jobs = list(self._live.values())
        if cancel and jobs:
            ids = [j.job_id for j in jobs if j.job_id]
            if ids:
                with contextlib.suppress(_CommandFailed):
                    await _command(["scancel", *ids])
            for job in jobs:
                self._forget(job)
        await self._checker.aclose()

    # ------------------------------------------------------------------ queue slots

    @contextlib.asynccontextmanager
    async def _slot(self) -> Any:
        if self._queue is None:
            self._queue = asyncio.Semaphore(self.cfg.max_queued)
        async with self._queue:
            yield

    # ------------------------------------------------------------------ check stage

    async def _local_check(self, request: EvalRequest) -> EvalResult | None:
        """Run the check stage here; its failure, or None when it passed."""
        probe = replace(request, command="true", objectives=())
        result = await self._checker.evaluate(probe)
        if result.stage == "check":
            return result
        with contextlib.suppress(OSError):
            Path(request.metrics_path).unlink()
        return None

    # ------------------------------------------------------------------ submitting

    def _job_dir(self, vid: str, token: str) -> Path:
        return self.dir / vid / token

    async def _submit(self, request: EvalRequest) -> _Job:
        vid = request.variant_id
        token = secrets.token_hex(4)
        shutil.rmtree(self.dir / vid, ignore_errors=True)  # earlier, lost submissions
        job = _Job(vid, token, job_name(self.run_name, vid), None, time.time(), self._job_dir(vid, token))
        job.dir.mkdir(parents=True)
        source = Path(os.path.abspath(request.workdir))
        work = job.dir / "work"
        try:
            shutil.move(str(source), str(work))
        except OSError as exc:
            raise GeError(
                f"cannot move the variant's tree into {work}: {exc}",
                "check free space and permissions of the run directory",
            ) from None
        metrics = Path(os.path.abspath(request.metrics_path))
        if _within(metrics, source):
            metrics = work / metrics.relative_to(source)
        spec = {
            "variant_id": vid,
            "workdir": str(work),
            "run_dir": str(Path(os.path.abspath(request.run_dir))),
            "command": request.command,
            "check_command": request.check_command if self.cfg.check_on_cluster else None,
            "timeout_s": request.timeout_s,
            "check_timeout_s": request.check_timeout_s,
            "metrics_path": str(metrics),
            "log_path": str(os.path.abspath(request.log_path)) if request.log_path else None,
            "objectives": list(request.objectives),
            "env": dict(request.env),
            "policy": {**asdict(self.sandbox.policy), "pass_env": list(self.sandbox.policy.pass_env)},
            "result_path": str(job.dir / "result.json"),
        }
        _atomic_write(job.dir / "spec.json", json.dumps(spec, indent=1))
        _atomic_write(job.dir / "job.sh", self._script(job))
        self._live[vid] = job
        _atomic_write(self.dir / f"{vid}.json", json.dumps(job.record()))
        job.job_id = await self._sbatch(job)
        _atomic_write(self.dir / f"{vid}.json", json.dumps(job.record()))
        self.submitted.append(job.job_id)
        self._monitor.watched.add(job.job_id)
        return job

    def _script(self, job: _Job) -> str:
        c = self.cfg
        opts = [f"--time={c.time_limit}", f"--cpus-per-task={c.cpus_per_task}"]
        if c.partition:
            opts.append(f"--partition={c.partition}")
        if c.gres:
            opts.append(f"--gres={c.gres}")
        if c.gpus:
            opts.append(f"--gpus={c.gpus}")
        if c.mem:
            opts.append(f"--mem={c.mem}")
        lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in opts)]
        for extra in c.extra_sbatch:
            text = extra.strip()
            lines.append(text if text.startswith("#SBATCH") else f"#SBATCH {text}")
        q = shlex.quote
        package_parent = str(Path(__file__).resolve().parents[2])
        launcher = (
            "import sys; sys.path.append(sys.argv.pop(1)); "
            "from guided_evolution.evaluation.slurm import job_main; sys.exit(job_main(sys.argv[1:]))"
        )
        lines += [
            f"# ge: evaluation of variant {job.variant_id} of run {self.run_name}",
            f"_ge_dir={q(str(job.dir))}",
            "_ge_stage=setup",
            "_ge_child=",
            "_ge_status() {",
            '  printf \'{"exit": %s, "signal": %s, "stage": "%s", "job_id": "%s"}\\n\' '
            '"$1" "$2" "$_ge_stage" "${SLURM_JOB_ID:-}" > "$_ge_dir/.exit.json.tmp" '
            '&& mv -f "$_ge_dir/.exit.json.tmp" "$_ge_dir/exit.json"',
            "}",
            "_ge_signalled() {",
            "  trap - EXIT TERM INT HUP",
            '  [ -n "$_ge_child" ] && kill -TERM "$_ge_child" 2>/dev/null',
            '  _ge_status null "\\"$1\\""',
            '  exit "$2"',
            "}",
            "trap '_ge_status $? null' EXIT",
            "trap '_ge_signalled SIGTERM 143' TERM",
            "trap '_ge_signalled SIGINT 130' INT",
            "trap '_ge_signalled SIGHUP 129' HUP",
            f'echo "[ge] SLURM job ${{SLURM_JOB_ID:-?}} on $(hostname): variant {job.variant_id}"',
            "# --- setup ([executor.slurm] setup)",
            *(c.setup.splitlines() if c.setup.strip() else [":"]),
            "_ge_rc=$?",
            "# --- evaluation",
            'if [ "$_ge_rc" -ne 0 ]; then',
            '  echo "[ge] setup failed with exit code $_ge_rc" >&2',
            '  exit "$_ge_rc"',
            "fi",
            "_ge_stage=evaluate",
            f"{q(self.python)} -c {q(launcher)} {q(package_parent)} {q(str(job.dir / 'spec.json'))} &",
            "_ge_child=$!",
            'wait "$_ge_child"',
            "exit $?",
        ]
        return "\n".join(lines) + "\n"

    async def _sbatch(self, job: _Job) -> str:
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name={job.name}",
            f"--output={job.dir / 'job.out'}",
            f"--chdir={job.dir}",
            f"--comment=ge:{job.token}",
            str(job.dir / "job.sh"),
        ]
        # The job inherits this environment: never hand it ge's credentials.
        env = {k: v for k, v in os.environ.items() if not is_secret_name(k)}
        deadline = time.monotonic() + SBATCH_RETRY_S
        wait = 1.0
        while True:
            try:
                code, out, err = await _command(argv, env)
            except _CommandFailed as exc:
                code, out, err = -1, "", str(exc)
            first = out.strip().splitlines()[0] if out.strip() else ""
            job_id = first.split(";")[0].strip()
            if code == 0 and re.fullmatch(r"\d+(_\d+)?", job_id):
                return job_id
            message = err or out.strip() or f"exit code {code}"
            transient = code == -1 or any(m in message.lower() for m in _TRANSIENT_SBATCH)
            if not transient or time.monotonic() + wait > deadline:
                self._forget(job)
                raise GeError(
                    f"sbatch refused the evaluation job: {message.splitlines()[-1][:300]}",
                    "fix [executor.slurm] in ge.toml (partition, time_limit, gres, gpus, mem, "
                    f"extra_sbatch); the script is {job.dir / 'job.sh'}",
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, 30.0)

    # ------------------------------------------------------------------ re-attaching

    async def _reattach(self, record: dict[str, Any]) -> _Job | EvalResult | None:
        """The live job of a persisted record, the result it left, or None when it is lost."""
        vid = str(record.get("variant_id", ""))
        token = str(record.get("token", ""))
        if not vid or not re.fullmatch(r"[0-9a-f]+", token):
            with contextlib.suppress(OSError):
                (self.dir / f"{vid}.json").unlink()
            return None
        job = _Job(
            vid,
            token,
            str(record.get("name") or job_name(self.run_name, vid)),
            str(record["job_id"]) if record.get("job_id") else None,
            float(record.get("submitted_at") or time.time()),
            self._job_dir(vid, token),
        )
        if job.job_id is None:  # killed between sbatch and the record: look the job up
            job.job_id = await self._find_by_comment(job)
            if job.job_id is None:
                self._forget(job)
                return None
        self._live[vid] = job
        self._monitor.watched.add(job.job_id)
        spec = _read_json(job.dir / "spec.json") or {}
        request = _request_from_spec(spec) if spec else None
        if request is not None:
            result = self._collect_result(job, request)
            if result is not None:
                return result
        state, error = await self._monitor.state(job.job_id)
        if error is None and state is None:
            state = await self._monitor.sacct(job.job_id)
        if request is not None and (error is not None or (state and state.state in LIVE_STATES)):
            return job
        if request is not None and state is not None:
            if state.state in _DETERMINISTIC:
                return self._failed(job, request, self._ended_reason(job, state))
            if state.state == "COMPLETED":
                return job  # its result may still be on its way (shared file system)
        if request is None and state is not None and state.state in LIVE_STATES:
            await self._scancel(job)  # its files are gone: it cannot deliver a result
        self._forget(job)  # lost: cancelled, purged, or its files are gone
        return None

    async def _find_by_comment(self, job: _Job) -> str | None:
        argv = ["squeue", "-h", "-n", job.name, "-o", "%i|%k"]
        with contextlib.suppress(_CommandFailed):
            code, out, _err = await _command(argv)
            if code == 0:
                for line in out.splitlines():
                    job_id, _, comment = line.strip().partition("|")
                    if comment.strip() == f"ge:{job.token}":
                        return job_id
        return None

    # ------------------------------------------------------------------ waiting

    def _deadline_s(self, request: EvalRequest) -> float:
        """How long a running job may take before ge cancels it itself."""
        if self.time_limit_s is not None:
            return self.time_limit_s + DEADLINE_SLACK_S
        stages = request.timeout_s
        if self.cfg.check_on_cluster and request.check_command:
            stages += request.check_timeout_s
        return stages + NO_LIMIT_ALLOWANCE_S + DEADLINE_SLACK_S

    async def _wait(self, job: _Job, request: EvalRequest) -> EvalResult:
        assert job.job_id is not None
        grace = self.cfg.grace_s
        running_since: float | None = None
        ended_since: float | None = None
        gone_since: float | None = None
        failing_since: float | None = None
        result_since: float | None = None
        while True:
            if self._closed:
                raise RuntimeError(f"executor closed while waiting for SLURM job {job.job_id}")
            exit_info = _read_json(job.dir / "exit.json")
            state, error = await self._monitor.state(job.job_id)
            now = time.monotonic()
            if error is not None:
                failing_since = failing_since or now
                if now - failing_since > max(SQUEUE_OUTAGE_S, grace):
                    return self._failed(job, request, f"no job status for {now - failing_since:.0f} s: {error}")
            else:
                failing_since = None
                if state is None:
                    state = await self._monitor.sacct(job.job_id)
            if (job.dir / "result.json").exists():
                # The slot (max_queued) is freed once SLURM, too, sees the job end.
                result_since = result_since or now
                finishing = error is None and state is not None and state.state in LIVE_STATES
                if not finishing or now - result_since > grace:
                    result = self._collect_result(job, request)
                    if result is not None:
                        return result
                if finishing:
                    await asyncio.sleep(self.cfg.poll_s)
                    continue
            if state is not None and state.state in LIVE_STATES:
                gone_since = ended_since = None
                if state.state == "PENDING" and state.reason in _HOPELESS_PENDING:
                    await self._scancel(job)
                    return self._failed(
                        job,
                        request,
                        f"SLURM will never start job {job.job_id} (pending reason "
                        f"{state.reason}); fix [executor.slurm] in ge.toml",
                    )
                if state.state == "RUNNING" and running_since is None:
                    running_since = now
                if running_since is not None and now - running_since > self._deadline_s(request):
                    await self._scancel(job)
                    return self._failed(
                        job,
                        request,
                        f"SLURM job {job.job_id} ran past ge's deadline "
                        f"({self._deadline_s(request):.0f} s) without ending; cancelled",
                    )
            elif state is not None and state.state in _ENDED_BY_SLURM:
                result = self._collect_result(job, request)
                return result or self._failed(job, request, self._ended_reason(job, state))
            elif state is not None or exit_info is not None:
                # The script ended by itself (COMPLETED / FAILED, or forgotten by SLURM but its
                # exit file is there): the result is due, maybe after shared-FS lag.
                if exit_info is not None and (exit_info.get("exit") != 0 or exit_info.get("signal")):
                    result = self._collect_result(job, request)
                    return result or self._failed(job, request, self._exit_reason(job, exit_info))
                ended_since = ended_since or now
                if now - ended_since > grace:
                    how = await _scontrol_exit(job.job_id) if exit_info is None else "exit code 0"
                    what = f"state {state.state}" if state is not None else "no longer queued"
                    return self._failed(
                        job,
                        request,
                        f"SLURM job {job.job_id} ended ({what}, {how or 'no exit status'}) "
                        f"without writing a result (waited {grace:g} s); see {job.dir / 'job.out'}",
                    )
            elif error is None:
                gone_since = gone_since or now
                if now - gone_since > grace:
                    return self._failed(
                        job,
                        request,
                        f"SLURM job {job.job_id} vanished from the queue without writing its "
                        f"exit status (waited {grace:g} s; no accounting record)",
                    )
            await asyncio.sleep(self.cfg.poll_s)

    def _ended_reason(self, job: _Job, state: JobState) -> str:
        text = _ENDED_BY_SLURM.get(state.state, f"ended in state {state.state}")
        text = text.format(time_limit=self.cfg.time_limit, mem=self.cfg.mem or "default")
        reason = f" ({state.reason})" if state.reason and state.reason not in ("None", "") else ""
        return f"SLURM job {job.job_id} {text}{reason}"

    def _exit_reason(self, job: _Job, info: dict[str, Any]) -> str:
        stage = info.get("stage")
        if info.get("signal"):
            return (
                f"SLURM job {job.job_id} was terminated by {_signal_text(info.get('signal'))} "
                f"during {stage or 'the job'} (time limit, scancel or preemption; "
                "SLURM no longer says which)"
            )
        code = info.get("exit")
        if stage == "setup":
            return (
                f"the setup snippet of SLURM job {job.job_id} failed (exit code {code}); "
                f"see {job.dir / 'job.out'}"
            )
        return (
            f"ge's launcher in SLURM job {job.job_id} failed (exit code {code}); see "
            f"{job.dir / 'job.out'} (is ge importable by {self.python} on the node? "
            "set [executor.slurm] python)"
        )

    async def _scancel(self, job: _Job) -> None:
        if job.job_id:
            with contextlib.suppress(_CommandFailed):
                await _command(["scancel", job.job_id])

    # ------------------------------------------------------------------ outcomes

    def _collect_result(self, job: _Job, request: EvalRequest) -> EvalResult | None:
        """The result the job wrote, if any; the job is then over for ge."""
        data = _read_json(job.dir / "result.json")
        if data is None or data.get("status") not in ("ok", "failed"):
            return None
        try:
            result = EvalResult(
                variant_id=request.variant_id,
                status=str(data["status"]),
                metrics={str(k): v for k, v in dict(data.get("metrics") or {}).items()},
                failure_reason=data.get("failure_reason"),
                output_tail=str(data.get("output_tail") or ""),
                stage=str(data.get("stage") or "evaluate"),
                started_at=float(data.get("started_at") or job.submitted_at),
                duration_s=float(data.get("duration_s") or 0.0),
                gpu=data.get("gpu"),
            )
        except (TypeError, ValueError, KeyError):
            return None
        spec = _read_json(job.dir / "spec.json") or {}
        path = Path(str(spec.get("metrics_path", "")))
        if path.is_file():
            with contextlib.suppress(OSError):
                shutil.copyfile(path, job.dir / "metrics.json")
        self._forget(job)
        return result

    def _failed(self, job: _Job, request: EvalRequest, reason: str) -> EvalResult:
        """A failed evaluation with ``reason``; the job's output is appended to the log."""
        log = Path(request.log_path) if request.log_path else None
        job_out = _tail(job.dir / "job.out", JOB_OUTPUT_TAIL_BYTES)
        text = f"\n[ge] {reason}\n"
        if job_out:
            text += f"[ge] end of the job's output ({job.dir / 'job.out'}):\n{job_out}"
        tail = text
        if log is not None:
            with contextlib.suppress(OSError):
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(text)
                tail = _tail(log, OUTPUT_TAIL_BYTES)
        self._forget(job)
        return EvalResult(
            variant_id=request.variant_id,
            status="failed",
            metrics={},
            failure_reason=reason,
            output_tail=tail[-OUTPUT_TAIL_BYTES:],
            stage="evaluate",
            started_at=job.submitted_at,
            duration_s=max(0.0, time.time() - job.submitted_at),
            gpu=None,
        )

    def _forget(self, job: _Job) -> None:
        """The job is over for ge: drop its record and its copy of the variant's tree."""
        if self._live.get(job.variant_id) is job:
            del self._live[job.variant_id]
        if job.job_id:
            self._monitor.watched.discard(job.job_id)
        record = self.dir / f"{job.variant_id}.json"
        current = _read_json(record)
        if current is not None and current.get("token") == job.token:
            with contextlib.suppress(OSError):
                record.unlink()
        shutil.rmtree(job.dir / "work", ignore_errors=True)


# --------------------------------------------------------------------------- on the node


def _request_from_spec(spec: dict[str, Any]) -> EvalRequest | None:
    try:
        return EvalRequest(
            variant_id=str(spec["variant_id"]),
            workdir=Path(spec["workdir"]),
            run_dir=Path(spec["run_dir"]),
            command=str(spec["command"]),
            check_command=spec.get("check_command"),
            timeout_s=float(spec["timeout_s"]),
            check_timeout_s=float(spec["check_timeout_s"]),
            metrics_path=Path(spec["metrics_path"]),
            log_path=Path(spec["log_path"]) if spec.get("log_path") else None,
            objectives=tuple(str(o) for o in spec.get("objectives", ())),
            env={str(k): str(v) for k, v in dict(spec.get("env") or {}).items()},
        )
    except (KeyError, TypeError, ValueError):
        return None


def job_main(argv: Sequence[str]) -> int:
    """Entry point inside the SLURM job: evaluate the variant described by ``argv[0]`` (spec.json).

    Writes result.json (the EvalResult) and exits 0; exits non-zero, without a result, when the
    spec is unreadable or the job is terminated (SLURM's reason then tells ge what happened).
    """
    if len(argv) != 1:
        print("usage: job_main SPEC.json", file=sys.stderr)
        return 2
    spec = _read_json(Path(argv[0]))
    request = _request_from_spec(spec) if spec else None
    if spec is None or request is None:
        print(f"[ge] unreadable job spec {argv[0]}", file=sys.stderr)
        return 3
    return asyncio.run(_run_job(spec, request))


async def _run_job(spec: dict[str, Any], request: EvalRequest) -> int:
    policy_data = dict(spec.get("policy") or {})
    policy_data["pass_env"] = tuple(policy_data.get("pass_env") or ())
    started = time.time()
    try:
        sandbox = Sandbox(SandboxPolicy(**policy_data))
        info = sandbox.probe()
    except (GeError, TypeError) as exc:
        message = exc.one_line() if isinstance(exc, GeError) else str(exc)
        _write_result(spec, _node_failure(request, f"sandbox on node {socket.gethostname()}: {message}", started))
        return 0
    if info.warning:
        print(f"[ge] on {socket.gethostname()}: {info.warning}", file=sys.stderr, flush=True)
    # The sandbox puts ge's interpreter first on PATH unless PATH already names it: name it last,
    # so that the interpreter the setup snippet activated stays the evaluator's `python`.
    py_dir = os.path.dirname(sys.executable)
    path_parts = os.environ.get("PATH", os.defpath).split(os.pathsep)
    if py_dir and py_dir not in path_parts:
        os.environ["PATH"] = os.pathsep.join([*path_parts, py_dir])
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
    executor = LocalExecutor(1, [gpu] if gpu else None, None, sandbox)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    try:
        result = await executor.evaluate(request)
    except asyncio.CancelledError:
        await executor.aclose()
        print("[ge] terminated; evaluation stopped", file=sys.stderr, flush=True)
        return 143
    except GeError as exc:
        result = _node_failure(request, exc.one_line(), started)
    _write_result(spec, result)
    return 0


def _node_failure(request: EvalRequest, reason: str, started: float) -> EvalResult:
    return EvalResult(
        variant_id=request.variant_id,
        status="failed",
        metrics={},
        failure_reason=reason,
        output_tail="",
        stage="evaluate",
        started_at=started,
        duration_s=time.time() - started,
        gpu=None,
    )


def _write_result(spec: dict[str, Any], result: EvalResult) -> None:
    data = asdict(result)
    data["host"] = socket.gethostname()
    _atomic_write(Path(spec["result_path"]), json.dumps(data))


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
