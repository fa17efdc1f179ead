"""The SLURM executor: each evaluation is one sbatch job; status from squeue (and sacct).

``SlurmExecutor``, an ``Executor`` (``contract``), keeps per variant under ``<run_dir>/slurm/``:

```
<variant>.json            the live job (id, token), written atomically; what `ge resume` re-attaches to
<variant>/<token>/        one submission: job.sh, spec.json, job.out (SLURM's output of the script),
                          exit.json (written by the script's trap), result.json (the evaluation),
                          metrics.json (a copy), work/ (the variant's tree while the job runs)
```

On the node, the job script (``script``) runs the setup snippet, then ``job.job_main``
with the interpreter that runs ge: it probes the sandbox there and evaluates through a one-slot
``LocalExecutor``, so the check → evaluate cascade, the sandbox wrapper, the output cap and the
metrics contract are the same as locally (the log goes to ``<run_dir>/logs/``); SLURM's
commands and the squeue/sacct monitoring are in ``commands``.

A job that SLURM ends (time limit, out of memory, node failure, scancel) is a failed evaluation
with that reason. Without accounting, the script's exit file says how it ended; a job that
disappears from squeue without one is failed after ``grace_s``.

The module is long because it holds a job's whole life in one class (submit, watch, re-attach
on resume, end); SLURM's commands and the outcome rules are in modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalRequest, EvalResult, metrics_location
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox.env import is_secret_name
from guided_evolution.evaluation.sandbox.wrap import Sandbox
from guided_evolution.evaluation.slurm.commands import (
    HOPELESS_PENDING,
    LIVE_STATES,
    CommandFailed,
    JobMonitor,
    JobState,
    SbatchRefused,
    find_by_comment,
    sbatch,
    scancel,
    scontrol_exit,
)
from guided_evolution.evaluation.slurm.job import read_json, request_from_spec, spec_of
from guided_evolution.evaluation.slurm.outcomes import (
    ENDED_BY_SLURM,
    ended_reason,
    exit_reason,
    failed_result,
    log_failure,
    read_result,
)
from guided_evolution.evaluation.slurm.script import job_name, job_script, parse_time_limit
from guided_evolution.fsutil import atomic_write, error_text, remove_tree, unlink_beneath

if TYPE_CHECKING:
    from guided_evolution.config import ResolvedConfig
    from guided_evolution.runstore.rundir import RunPaths

SLURM_DIR = "slurm"
DEADLINE_SLACK_S = 180.0
"""How long past its time limit a running job may go before ge cancels it itself."""
NO_LIMIT_ALLOWANCE_S = 600.0
"""Setup time allowed on top of the evaluator timeouts when the time limit is unlimited."""
SQUEUE_OUTAGE_S = 600.0
"""How long squeue may keep failing before the evaluations waiting on it fail."""
_DETERMINISTIC = frozenset({"TIMEOUT", "OUT_OF_MEMORY"})
"""Found on resume, these are this variant's failures; other unfinished jobs are resubmitted."""
SBATCH_ANSWER_S = 5.0
"""How long a cancelled submission waits for sbatch to print the job id it already queued."""


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


@dataclass
class _Watch:
    """Since when (monotonic time) each condition of a waited-on job holds; None: it does not."""

    running: float | None = None
    ended: float | None = None  # ended by itself, no result yet
    gone: float | None = None  # unknown to squeue and sacct, no exit file
    failing: float | None = None  # squeue fails
    result: float | None = None  # result.json is there


async def _lookup_once(job: _Job) -> str | None:
    """The id of a job whose sbatch never answered, by its comment; None if squeue fails too."""
    with contextlib.suppress(CommandFailed):
        return await find_by_comment(job.name, f"ge:{job.token}")
    return None


class SlurmExecutor:
    """Evaluates each variant as one sbatch job, at most ``max_queued`` in SLURM at once."""

    def __init__(
        self,
        resolved: ResolvedConfig,
        paths: RunPaths,
        sandbox: Sandbox,
        *,
        warnings: Sequence[str] = (),
    ) -> None:
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
        self.capacity = self.cfg.max_queued
        self.warnings = list(warnings)
        self.submitted: list[str] = []
        """Job ids this instance submitted (re-attached jobs are not in it)."""
        self._live: dict[str, _Job] = {}
        self._queue: asyncio.Semaphore | None = None
        self._monitor = JobMonitor(self.cfg.poll_s)
        self._checker = LocalExecutor(
            max(1, min(self.cfg.max_queued, os.cpu_count() or 1)), None, None, sandbox
        )
        self._closed = False

    # ------------------------------------------------------------------ public

    @property
    def live_jobs(self) -> list[str]:
        """Ids of the jobs this instance is waiting on (submitted or re-attached)."""
        return [j.job_id for j in self._live.values() if j.job_id]

    def isolation(self) -> dict[str, Any]:
        """Decided on each node: its probe picks the sandbox, or the job fails (fail closed)."""
        backend = self.sandbox.policy.backend
        text = f"decided on each node by its probe (evaluator.sandbox = {backend!r})"
        return {
            "backend": backend,
            "layers": [],
            "summary": f"slurm: {text}; a node that cannot isolate fails the job",
            **{
                aspect: text
                for aspect in ("filesystem", "network", "secrets", "processes", "resources")
            },
            "contained": {
                a: backend != "none"
                for a in ("filesystem", "network", "secrets", "processes", "resources")
            },
            "warnings": [],
        }

    def describe(self) -> dict[str, Any]:
        """The partition and the queue bound (an "executor" event)."""
        where = f"partition {self.cfg.partition}" if self.cfg.partition else "the default partition"
        summary = f"evaluating as SLURM jobs on {where}, at most {self.cfg.max_queued} queued"
        return {"summary": summary, "executor": "slurm", "max_queued": self.cfg.max_queued}

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        """Evaluate one variant as a SLURM job; re-attaches to a live job of the same variant."""
        if self._closed:
            raise RuntimeError("executor is closed")
        vid = request.variant_id
        record = read_json(self.dir / f"{vid}.json")
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
        """Stop waiting. With ``cancel`` (Ctrl-C), scancel the jobs (one whose sbatch had not
        answered yet is found by its comment) and forget them, so that `ge resume` resubmits
        them; without (``--detach``) they keep running and `ge resume` re-attaches to them."""
        self._closed = True
        jobs = list(self._live.values())
        if cancel and jobs:
            ids = [j.job_id or await _lookup_once(j) for j in jobs]
            if ids := [i for i in ids if i]:
                await scancel(*ids)
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
        with contextlib.suppress(OSError):  # never through a link the variant planted
            unlink_beneath(*metrics_location(request.metrics_path, request.workdir))
        return None

    # ------------------------------------------------------------------ submitting

    async def _submit(self, request: EvalRequest) -> _Job:
        vid = request.variant_id
        token = secrets.token_hex(4)
        remove_tree(self.dir / vid)  # earlier, lost submissions
        job = _Job(
            vid, token, job_name(self.run_name, vid), None, time.time(), self.dir / vid / token
        )
        job.dir.mkdir(parents=True)
        source = Path(os.path.abspath(request.workdir))
        work = job.dir / "work"
        try:
            shutil.move(str(source), str(work))
        except (OSError, RecursionError) as exc:  # a copy (another file system) can recurse
            raise GeError(
                f"cannot move the variant's tree into {work}: {error_text(exc)}",
                "check free space and permissions of the run directory",
            ) from None
        spec = spec_of(request, job.dir, self.sandbox.policy, check=self.cfg.check_on_cluster)
        script = job_script(self.cfg, job.dir, vid, self.run_name, self.python)
        _write(job.dir / "spec.json", json.dumps(spec, indent=1))
        _write(job.dir / "job.sh", script)
        self._live[vid] = job
        _write(self.dir / f"{vid}.json", json.dumps(job.record()))
        job.job_id = await self._sbatch_recorded(job)
        self.submitted.append(job.job_id)
        self._monitor.watched.add(job.job_id)
        return job

    async def _sbatch_recorded(self, job: _Job) -> str:
        """``_sbatch``, then the job id in the variant's record. A cancellation (``--detach``,
        Ctrl-C) while sbatch runs waits up to ``SBATCH_ANSWER_S`` for its answer and records
        the id, so that a resume finds the queued job by its id; an sbatch slower than that is
        cancelled (its job is found by its comment, as after a kill)."""
        submit = asyncio.ensure_future(self._sbatch(job))
        try:
            job_id = await asyncio.shield(submit)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                job.job_id = await asyncio.wait_for(submit, SBATCH_ANSWER_S)
                _write(self.dir / f"{job.variant_id}.json", json.dumps(job.record()))
                self.submitted.append(job.job_id)  # it was submitted, by this instance
            raise
        job.job_id = job_id
        _write(self.dir / f"{job.variant_id}.json", json.dumps(job.record()))
        return job_id

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
        try:
            return await sbatch(argv, env)
        except SbatchRefused as exc:
            self._forget(job)
            raise GeError(
                f"sbatch refused the evaluation job: {exc}",
                "fix [executor.slurm] in ge.toml (partition, time_limit, gres, gpus, mem, "
                f"extra_sbatch); the script is {job.dir / 'job.sh'}",
            ) from None

    # ------------------------------------------------------------------ re-attaching

    async def _find_unrecorded(self, job: _Job) -> str | None:
        """The queued job of a submission whose id was never recorded, looked up by its comment
        until squeue has answered for ``SBATCH_ANSWER_S`` without it: the sbatch of a killed ge
        may still be queueing it (a lookup at once missed it, and the variant was submitted
        twice). A failing squeue is no answer: it is asked again, for up to
        ``SQUEUE_OUTAGE_S`` (a failure taken for "not queued" submitted the variant twice)."""
        start = time.monotonic()
        wait = 0.5
        while True:
            try:
                found = await find_by_comment(job.name, f"ge:{job.token}")
            except CommandFailed:
                if time.monotonic() - start > SQUEUE_OUTAGE_S:
                    return None  # no answer for that long: submit it again
                await asyncio.sleep(wait)
                wait = min(wait * 2, 10.0)
                continue
            if found is not None or time.monotonic() - start >= SBATCH_ANSWER_S:
                return found
            wait = 0.5
            await asyncio.sleep(wait)

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
            self.dir / vid / token,
        )
        if job.job_id is None:  # killed between sbatch and the record: look the job up
            job.job_id = await self._find_unrecorded(job)
            if job.job_id is None:
                self._forget(job)
                return None
        self._live[vid] = job
        self._monitor.watched.add(job.job_id)
        spec = read_json(job.dir / "spec.json") or {}
        request = request_from_spec(spec) if spec else None
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
        """Poll the job until it delivers its result or is found failed."""
        watch = _Watch()
        while True:
            if self._closed:
                raise RuntimeError(f"executor closed while waiting for SLURM job {job.job_id}")
            result = await self._poll(job, request, watch)
            if result is not None:
                return result
            await asyncio.sleep(self.cfg.poll_s)

    async def _poll(self, job: _Job, request: EvalRequest, watch: _Watch) -> EvalResult | None:
        """One look at the job: its outcome, or None while it may still deliver one."""
        assert job.job_id is not None
        grace = self.cfg.grace_s
        exit_info = read_json(job.dir / "exit.json")
        state, error = await self._monitor.state(job.job_id)
        now = time.monotonic()
        if error is not None:
            watch.failing = watch.failing or now
            if now - watch.failing > max(SQUEUE_OUTAGE_S, grace):
                reason = f"no job status for {now - watch.failing:.0f} s: {error}"
                return self._failed(job, request, reason)
        else:
            watch.failing = None
            if state is None:
                state = await self._monitor.sacct(job.job_id)
        if (job.dir / "result.json").exists():
            # The slot (max_queued) is freed once SLURM, too, sees the job end.
            watch.result = watch.result or now
            finishing = error is None and state is not None and state.state in LIVE_STATES
            if not finishing or now - watch.result > grace:
                result = self._collect_result(job, request)
                if result is not None:
                    return result
            if finishing:
                return None
        if state is not None and state.state in LIVE_STATES:
            return await self._check_live(job, request, state, watch, now)
        if state is not None and state.state in ENDED_BY_SLURM:
            result = self._collect_result(job, request)
            return result or self._failed(job, request, self._ended_reason(job, state))
        if state is not None or exit_info is not None:
            return await self._check_ended(job, request, state, exit_info, watch, now)
        if error is None:
            watch.gone = watch.gone or now
            if now - watch.gone > grace:
                return self._failed(
                    job,
                    request,
                    f"SLURM job {job.job_id} vanished from the queue without writing its "
                    f"exit status (waited {grace:g} s; no accounting record)",
                )
        return None

    async def _check_live(
        self, job: _Job, request: EvalRequest, state: JobState, watch: _Watch, now: float
    ) -> EvalResult | None:
        """A queued or running job: failed when SLURM will never start it or it overran."""
        watch.gone = watch.ended = None
        if state.state == "PENDING" and state.reason in HOPELESS_PENDING:
            await self._scancel(job)
            return self._failed(
                job,
                request,
                f"SLURM will never start job {job.job_id} (pending reason "
                f"{state.reason}); fix [executor.slurm] in ge.toml",
            )
        if state.state == "RUNNING" and watch.running is None:
            watch.running = now
        if watch.running is not None and now - watch.running > self._deadline_s(request):
            await self._scancel(job)
            return self._failed(
                job,
                request,
                f"SLURM job {job.job_id} ran past ge's deadline "
                f"({self._deadline_s(request):.0f} s) without ending; cancelled",
            )
        return None

    async def _check_ended(
        self,
        job: _Job,
        request: EvalRequest,
        state: JobState | None,
        exit_info: dict[str, Any] | None,
        watch: _Watch,
        now: float,
    ) -> EvalResult | None:
        """The script ended by itself (COMPLETED / FAILED, or forgotten by SLURM but its exit
        file is there): the result is due, maybe after shared-FS lag."""
        assert job.job_id is not None
        if exit_info is not None and (exit_info.get("exit") != 0 or exit_info.get("signal")):
            result = self._collect_result(job, request)
            return result or self._failed(
                job, request, exit_reason(job.job_id, exit_info, job.dir, self.python)
            )
        grace = self.cfg.grace_s
        watch.ended = watch.ended or now
        if now - watch.ended <= grace:
            return None
        how = await scontrol_exit(job.job_id) if exit_info is None else "exit code 0"
        what = f"state {state.state}" if state is not None else "no longer queued"
        return self._failed(
            job,
            request,
            f"SLURM job {job.job_id} ended ({what}, {how or 'no exit status'}) "
            f"without writing a result (waited {grace:g} s); see {job.dir / 'job.out'}",
        )

    async def _scancel(self, job: _Job) -> None:
        if job.job_id:
            await scancel(job.job_id)

    # ------------------------------------------------------------------ outcomes

    def _collect_result(self, job: _Job, request: EvalRequest) -> EvalResult | None:
        """The result the job wrote, if any; the job is then over for ge."""
        result = read_result(job.dir, request, job.submitted_at)
        if result is not None:
            self._forget(job)
        return result

    def _failed(self, job: _Job, request: EvalRequest, reason: str) -> EvalResult:
        """A failed evaluation with ``reason``; the job's output is appended to the log."""
        tail = log_failure(job.dir, request.log_path, reason)
        self._forget(job)
        return failed_result(request, reason, tail, job.submitted_at)

    def _ended_reason(self, job: _Job, state: JobState) -> str:
        return ended_reason(job.job_id, state, self.cfg.time_limit, self.cfg.mem)

    def _forget(self, job: _Job) -> None:
        """The job is over for ge: drop its record and its copy of the variant's tree."""
        if self._live.get(job.variant_id) is job:
            del self._live[job.variant_id]
        if job.job_id:
            self._monitor.watched.discard(job.job_id)
        record = self.dir / f"{job.variant_id}.json"
        current = read_json(record)
        if current is not None and current.get("token") == job.token:
            with contextlib.suppress(OSError):
                record.unlink()
        remove_tree(job.dir / "work")


def _write(path: Path, text: str) -> None:
    """Atomic and durable: the job's node reads these files over a shared file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, fsync=True)
