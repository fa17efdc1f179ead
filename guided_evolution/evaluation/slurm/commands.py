"""SLURM client commands: one command under a deadline, job states (squeue, sacct, scontrol), sbatch.

Every command runs with a deadline (``COMMAND_TIMEOUT_S``); ``CommandFailed`` says it could not
run or did not answer. ``JobMonitor`` asks squeue once per poll interval for every watched job.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

COMMAND_TIMEOUT_S = 60.0
"""Deadline of one SLURM client command (sbatch, squeue, sacct, scancel, scontrol)."""
SBATCH_RETRY_S = 300.0
"""How long transient sbatch failures (controller busy or down, submit limits) are retried."""

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
HOPELESS_PENDING = frozenset(
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
TRANSIENT_SBATCH = (
    "unable to contact slurm controller",
    "socket timed out",
    "resource temporarily unavailable",
    "try again",
    "slurm_persist_conn",
    "maxsubmit",
    "submitjoblimit",
    "job violates accounting/qos policy (job submit limit",
)
"""Parts of sbatch messages that mean "try again later" (retried for ``SBATCH_RETRY_S``)."""


@dataclass(frozen=True)
class JobState:
    """What SLURM says about a job."""

    state: str
    reason: str = ""


class CommandFailed(Exception):
    """A SLURM client command could not run or timed out."""


async def run_command(
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
        raise CommandFailed(f"{argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise CommandFailed(f"{argv[0]} did not answer within {timeout:g} s") from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()  # reaped here, not by a transport that outlives the event loop
        raise
    code = proc.returncode if proc.returncode is not None else -1
    return code, out.decode(errors="replace"), err.decode(errors="replace").strip()


class JobMonitor:
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
            code, out, err = await run_command(argv)
        except CommandFailed as exc:
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
            code, out, err = await run_command(argv)
        except CommandFailed:
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


async def scontrol_exit(job_id: str) -> str | None:
    """``ExitCode=code:signal`` from the controller's memory (no accounting needed)."""
    try:
        code, out, _err = await run_command(["scontrol", "show", "job", "-o", job_id])
    except CommandFailed:
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


async def scancel(*job_ids: str) -> None:
    """Cancel jobs, best effort."""
    with contextlib.suppress(CommandFailed):
        await run_command(["scancel", *job_ids])


async def find_by_comment(name: str, comment: str) -> str | None:
    """The id of the queued job called ``name`` whose comment is ``comment``; None when squeue
    answered without it. Raises ``CommandFailed`` when squeue failed: that is no answer, and
    taking it for "not queued" submits the variant a second time."""
    code, out, err = await run_command(["squeue", "-h", "-n", name, "-o", "%i|%k"])
    if code != 0:
        raise CommandFailed(f"squeue failed: {err or f'exit code {code}'}")
    for line in out.splitlines():
        job_id, _, found = line.strip().partition("|")
        if found.strip() == comment:
            return job_id
    return None


class SbatchRefused(Exception):
    """sbatch refused the job, or kept failing transiently; the message is its last line."""


async def sbatch(argv: Sequence[str], env: dict[str, str]) -> str:
    """Submit with ``argv`` (``sbatch --parsable ...``); the job id. Transient failures are retried."""
    deadline = time.monotonic() + SBATCH_RETRY_S
    wait = 1.0
    while True:
        try:
            code, out, err = await run_command(argv, env)
        except CommandFailed as exc:
            code, out, err = -1, "", str(exc)
        first = out.strip().splitlines()[0] if out.strip() else ""
        job_id = first.split(";")[0].strip()
        if code == 0 and re.fullmatch(r"\d+(_\d+)?", job_id):
            return job_id
        message = err or out.strip() or f"exit code {code}"
        transient = code == -1 or any(m in message.lower() for m in TRANSIENT_SBATCH)
        if not transient or time.monotonic() + wait > deadline:
            raise SbatchRefused(message.splitlines()[-1][:300])
        await asyncio.sleep(wait)
        wait = min(wait * 2, 30.0)
