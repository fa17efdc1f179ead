"""Local evaluation slots, GPU assignment, the check → evaluate cascade, the output capture."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import (
    OUTPUT_TAIL_BYTES,
    EvalRequest,
    EvalResult,
    failure_feedback,
    metrics_location,
    read_feedback,
    read_metrics,
    replaced_reason,
)
from guided_evolution.evaluation.sandbox.disk_reserve import DiskReserve, Watch
from guided_evolution.evaluation.sandbox.env import EnvFilter, is_secret_name
from guided_evolution.evaluation.sandbox.wrap import Sandbox, signal_name
from guided_evolution.fsutil import UnsafePathError, is_within, unlink_beneath

if TYPE_CHECKING:
    from guided_evolution.evaluation.workers.pool import WorkerPool

TAIL_KEEP_BYTES = 8 * 1024
"""Bytes of the end of the output kept in the log when the output is over the cap."""
READ_CHUNK = 64 * 1024


class _OutputCapture:
    """Keeps the head of the output in the log up to the cap, plus the last bytes."""

    def __init__(self, log_path: Path | None, cap: int) -> None:
        self.cap = max(cap, 2 * TAIL_KEEP_BYTES)
        self.head_budget = self.cap - TAIL_KEEP_BYTES
        self.head_written = 0
        self.total = 0
        self.tail = bytearray()
        self.recent = bytearray()
        self._file: IO[bytes] | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(log_path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self.recent += data
        if len(self.recent) > OUTPUT_TAIL_BYTES:
            del self.recent[: len(self.recent) - OUTPUT_TAIL_BYTES]
        room = self.head_budget - self.head_written
        if room > 0:
            part = data[:room]
            if self._file is not None:
                self._file.write(part)
            self.head_written += len(part)
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > TAIL_KEEP_BYTES:
                del self.tail[: len(self.tail) - TAIL_KEEP_BYTES]

    def note(self, text: str) -> None:
        """A line from ge itself (stage headers), counted like output."""
        self.write(f"[ge] {text}\n".encode())

    def output_tail(self) -> str:
        return bytes(self.recent).decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._file is None:
            return
        omitted = self.total - self.head_written - len(self.tail)
        if omitted > 0:
            self._file.write(f"\n[ge] ... {omitted} bytes of output omitted ...\n".encode())
        self._file.write(bytes(self.tail))
        self._file.close()
        self._file = None


@dataclass
class _Slot:
    index: int
    gpu: str | None


class LocalExecutor:
    """Runs evaluations on this machine, at most ``slots`` at a time, each in the sandbox.

    With ``gpus``, slot ``i`` is pinned to ``gpus[i % len(gpus)]`` (round-robin);
    ``slots_per_gpu`` bounds how many slots may share one GPU.

    With ``workers`` (``evaluator.worker``), the evaluate stage (and the check stage with
    ``evaluator.worker_check``) goes to a persistent worker of the slot (``workers.WorkerPool``)
    instead of a new sandboxed command. Isolation is then per slot, not per evaluation: the
    variants a slot evaluates one after another share that worker's sandbox (uid, ``/tmp``,
    ``HOME``, the forked-from worker process) and can influence each other; slots stay apart
    (each variant directory is moved into the slot's own writable directory while it is
    evaluated). With ``evaluator.preload`` the workers are ge's own (``zygote.py``): each stage
    is a fork confined to its variant, see ``preload.py``.
    """

    def __init__(
        self,
        slots: int,
        gpus: Sequence[str] | None,
        slots_per_gpu: int | None,
        sandbox: Sandbox,
        *,
        kill_grace_s: float = 3.0,
        workers: WorkerPool | None = None,
        warnings: Sequence[str] = (),
        disk_reserve: DiskReserve | None = None,
    ) -> None:
        if slots < 1:
            raise GeError(f"executor.slots must be >= 1, got {slots}", "set executor.slots = 1")
        gpu_list = [str(g) for g in gpus] if gpus else []
        if gpu_list and slots_per_gpu is not None and slots > len(gpu_list) * slots_per_gpu:
            raise GeError(
                f"executor.slots = {slots} needs more than {slots_per_gpu} slot(s) per GPU "
                f"on {len(gpu_list)} GPU(s)",
                "lower executor.slots, raise executor.slots_per_gpu or list more gpus",
            )
        self.sandbox = sandbox
        self._scrub = EnvFilter(sandbox.policy.pass_env)
        """ge's environment as evaluated code may see it (``scrub_env``, decisions kept)."""
        self.kill_grace_s = kill_grace_s
        self.workers = workers
        if workers is not None:
            workers.disk_reserve = disk_reserve
        """Persistent per-slot workers for the evaluate stage (``evaluator.worker``), if any."""
        self.disk_reserve = disk_reserve
        """Free space kept on the run directory's file system while evaluations run, if any."""
        self.slots = [
            _Slot(i, gpu_list[i % len(gpu_list)] if gpu_list else None) for i in range(slots)
        ]
        self.capacity = slots
        self.warnings = list(warnings)
        """The build-time warnings; after ``aclose``, the workers' warnings too."""
        self._free: asyncio.Queue[_Slot] | None = None
        self._running: set[asyncio.subprocess.Process] = set()
        self._workdirs: set[Path] = set()
        self._closed = False

    def _queue(self) -> asyncio.Queue[_Slot]:
        if self._free is None:
            self._free = asyncio.Queue()
            for slot in self.slots:
                self._free.put_nowait(slot)
        return self._free

    def describe(self) -> dict[str, Any]:
        """The slots, their GPUs and the stages warm workers serve (an "executor" event)."""
        per_gpu: dict[str, int] = {}
        for slot in self.slots:
            if slot.gpu is not None:
                per_gpu[slot.gpu] = per_gpu.get(slot.gpu, 0) + 1
        n = len(self.slots)
        where = ", ".join(f"GPU {g} x{k}" for g, k in per_gpu.items()) if per_gpu else "no GPU"
        summary = f"evaluating in {n} slot{'s' if n != 1 else ''} ({where})"
        stages = sorted(self.workers.stages) if self.workers is not None else []
        if self.workers is not None:
            summary += f"; warm workers serve {' and '.join(stages)}"
        return {
            "summary": summary,
            "executor": "local",
            "slots": n,
            "gpus": per_gpu,
            "worker_stages": stages,
        }

    def isolation(self) -> dict[str, Any]:
        """The isolation evaluations run under here (an "isolation" event)."""
        event = self.sandbox.probe().isolation.to_event()
        if self.workers is not None and self.workers.boxed:  # verified by preload_pool
            event["layers"] = [*event["layers"], "a pid, mount and ipc namespace per stage"]
            event["processes"] += (
                "; each stage of a Python evaluator is a fork of a preloading worker, the init of "
                "pid, mount and ipc namespaces of its own: it cannot reach the worker or another "
                "evaluation, and nothing it starts outlives it"
            )
            event["summary"] += "; each stage in namespaces of its own"
        return event

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        """Evaluate one variant; waits for a free slot."""
        if self._closed:
            raise RuntimeError("executor is closed")
        queue = self._queue()
        slot = await queue.get()
        try:
            return await self._evaluate(request, slot)
        finally:
            queue.put_nowait(slot)

    async def aclose(self, cancel: bool = True) -> None:
        """Kill everything still running (local processes die with ge: ``cancel`` is moot)."""
        first = not self._closed
        self._closed = True
        if self.workers is not None:
            if first:
                self.warnings.extend(self.workers.warnings)
            await self.workers.aclose()
        for proc in list(self._running):
            _kill_group(proc, signal.SIGKILL)
        for workdir in list(self._workdirs):
            self.sandbox.cleanup(workdir)
        self.sandbox.close()

    def _env(self, request: EvalRequest, slot: _Slot) -> dict[str, str]:
        for name in request.env:
            if is_secret_name(name):
                raise GeError(
                    f"evaluator environment variable {name!r} looks like a secret",
                    "ge never passes credentials to evaluated code; rename or remove it",
                )
        env = self._scrub(os.environ)
        env.update(request.env)
        env["GE_METRICS"] = str(request.metrics_path)
        env["GE_FEEDBACK"] = str(request.feedback_path)
        env["GE_VARIANT_ID"] = request.variant_id
        env["GE_RUN_DIR"] = str(request.run_dir)
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu or ""
        if slot.gpu:  # GPU ids are nvidia-smi's (PCI order); CUDA's default order may differ
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env

    async def _evaluate(self, request: EvalRequest, slot: _Slot) -> EvalResult:
        started = time.time()
        clock = time.monotonic()
        workdir = Path(os.path.abspath(request.workdir))
        metrics_path = Path(os.path.abspath(request.metrics_path))
        metrics_dir = metrics_path.parent
        writable = [] if is_within(metrics_dir, workdir) else [metrics_dir]
        if not is_within(metrics_path, workdir):
            metrics_dir.mkdir(parents=True, exist_ok=True)
        env = self._env(request, slot)
        capture = _OutputCapture(request.log_path, self.sandbox.policy.output_cap_bytes)
        result = functools.partial(_result, request, slot, workdir, capture, started, clock)
        try:
            failed = await self._stages(
                request, slot, env, writable, capture, workdir, metrics_path
            )
            if failed is not None:
                return result("failed", failed[0], failed[1], {})
            metrics, reason = read_metrics(metrics_path, request.objectives, root=workdir)
        except GeError:
            capture.close()
            raise
        except OSError as exc:
            return result("failed", "evaluate", f"could not run the evaluator: {exc}", {})
        if reason is not None:
            return result("failed", "evaluate", reason, metrics)
        return result("ok", "evaluate", None, metrics)

    async def _stages(
        self,
        request: EvalRequest,
        slot: _Slot,
        env: dict[str, str],
        writable: list[Path],
        capture: _OutputCapture,
        workdir: Path,
        metrics_path: Path,
    ) -> tuple[str, str] | None:
        """Run the cascade (check, then evaluate), each stage through the slot's worker where it
        serves that stage; the first failing stage and its reason, or None."""
        stages = [("evaluate", request.command, request.timeout_s)]
        if request.check_command:
            stages.insert(0, ("check", request.check_command, request.check_timeout_s))
        for stage, command, timeout in stages:
            problem = clear_metrics(metrics_path, workdir)
            if problem is not None:
                return stage, problem
            clear_metrics(request.feedback_path, workdir)  # the stage's own feedback only
            capture.note(f"{stage}: {command}")
            cold = functools.partial(
                self._run, command, timeout, workdir, env, writable, request.run_dir, capture
            )
            if self.workers is not None and stage in self.workers.stages:
                reason = await self.workers.evaluate(
                    slot.index, request, env, capture, cold, stage=stage
                )
            else:
                reason = await cold()
            if reason is not None:
                return stage, reason
        return None

    async def _run(
        self,
        command: str,
        timeout: float,
        workdir: Path,
        env: dict[str, str],
        writable: list[Path],
        run_dir: Path,
        capture: _OutputCapture,
    ) -> str | None:
        """Run one stage; the failure reason, or None on exit code 0."""
        reserve = self.disk_reserve
        short = reserve.short() if reserve is not None else None
        if short is not None:
            return short
        proc = await self._spawn(command, workdir, env, writable, run_dir)
        self._running.add(proc)
        kill = functools.partial(_kill_group, proc, signal.SIGKILL)
        watch = reserve.watch(workdir, kill) if reserve is not None else None
        assert proc.stdout is not None
        reader = asyncio.ensure_future(_drain(proc.stdout, capture))
        timed_out = False
        try:
            timed_out = await self._wait(proc, timeout)
        finally:
            oom = await self._reap(proc, workdir, watch, reader, capture)
        if watch is not None and watch.reason is not None:
            return watch.reason
        if timed_out:
            return f"timed out after {timeout:g} s"
        return self._memory_reason(exit_reason(proc.returncode), oom, capture)

    async def _spawn(
        self,
        command: str,
        workdir: Path,
        env: dict[str, str],
        writable: list[Path],
        run_dir: Path,
    ) -> asyncio.subprocess.Process:
        """Start the stage's command in the sandbox, a session of its own, its output piped
        (the sandbox is cleaned up again when it cannot start)."""
        wrapped = self.sandbox.wrap(
            ["/bin/sh", "-c", command], workdir, env, writable, hide=[run_dir]
        )
        self._workdirs.add(workdir)
        try:
            return await asyncio.create_subprocess_exec(
                *wrapped.argv,
                cwd=workdir,
                env=wrapped.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=wrapped.preexec,
                pass_fds=wrapped.pass_fds,
            )
        except BaseException:
            self.sandbox.cleanup(workdir)
            self._workdirs.discard(workdir)
            raise

    async def _wait(self, proc: asyncio.subprocess.Process, timeout: float) -> bool:
        """Wait for the command's end; past ``timeout`` s, SIGTERM its group, then SIGKILL
        after the grace. Whether it timed out."""
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            _kill_group(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.kill_grace_s)
            except asyncio.TimeoutError:
                _kill_group(proc, signal.SIGKILL)
                await proc.wait()
            return True
        return False

    async def _reap(
        self,
        proc: asyncio.subprocess.Process,
        workdir: Path,
        watch: Watch | None,
        reader: asyncio.Future[None],
        capture: _OutputCapture,
    ) -> bool:
        """After the command, whatever way it ended: kill what is left of it, clean up its
        sandbox and disk watch, finish reading its output. Whether it ran out of memory."""
        _kill_group(proc, signal.SIGKILL)
        oom = self.sandbox.out_of_memory(workdir)
        self.sandbox.cleanup(workdir)
        if watch is not None:
            watch.close()  # after a breach: its big files go, now that nothing writes
        self._workdirs.discard(workdir)
        self._running.discard(proc)
        try:
            await asyncio.wait_for(asyncio.shield(reader), 5.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            reader.cancel()
            capture.note("output still open after the command ended; stopped reading")
        if proc.returncode is None:
            await proc.wait()
        return oom

    def _memory_reason(self, reason: str | None, oom: bool, capture: _OutputCapture) -> str | None:
        """``reason`` saying so when the evaluation failed for its memory bound."""
        if reason is None:
            return None
        if oom:
            return self.sandbox.out_of_memory_reason(reason)
        limit = self.sandbox.address_space_mb()
        if limit is not None and "MemoryError" in capture.output_tail()[-2000:]:
            return (
                f"{reason} (MemoryError: each process's address space is bounded to {limit} MB, "
                "evaluator.limits.memory_mb)"
            )
        return reason


def _result(
    request: EvalRequest,
    slot: _Slot,
    workdir: Path,
    capture: _OutputCapture,
    started: float,
    clock: float,
    status: str,
    stage: str,
    reason: str | None,
    metrics: dict,
) -> EvalResult:
    """The evaluation's result: its feedback (the variant's own, else one made of the failure),
    the output closed; ``started`` wall time, ``clock`` the monotonic time it began."""
    feedback, note = read_feedback(request.feedback_path, request.feedback_max_chars, root=workdir)
    if note is not None:
        capture.note(note)
    capture.close()
    if not feedback and status != "ok":
        feedback = failure_feedback(stage, reason, capture.output_tail())
    return EvalResult(
        variant_id=request.variant_id,
        status=status,
        metrics=metrics,
        failure_reason=reason,
        output_tail=capture.output_tail(),
        stage=stage,
        started_at=started,
        duration_s=time.monotonic() - clock,
        gpu=slot.gpu,
        feedback=feedback,
    )


def exit_reason(code: int | None) -> str | None:
    """The failure reason of an exit status (None for 0)."""
    if code == 0:
        return None
    if code is not None and code < 0:
        name = signal_name(-code)
        return f"exit code {code}" + (f" (killed by {name})" if name else "")
    if code is not None and 128 < code <= 128 + 64:
        name = signal_name(code - 128)
        if name:
            return f"exit code {code} (probably killed by {name})"
    return f"exit code {code}"


def clear_metrics(metrics_path: Path, workdir: Path) -> str | None:
    """Remove an earlier stage's metrics file, never through a link the variant planted; the
    failure reason when a directory on its path is not the one ge made (then nothing is touched)."""
    base, relpath = metrics_location(metrics_path, workdir)
    try:
        if unlink_beneath(base, relpath):
            return None
    except UnsafePathError as exc:
        return replaced_reason(exc, workdir)
    return "could not remove the metrics path left by the previous stage"


async def _drain(stream: asyncio.StreamReader, capture: _OutputCapture) -> None:
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            return
        capture.write(chunk)


def _kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
