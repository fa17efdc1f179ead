"""Persistent evaluation workers ("zygotes"), one per local slot, for `[evaluator] worker`.

When an evaluator's start-up (importing torch, loading the data set) dominates a short proxy
evaluation, ``evaluator.worker`` names a command that does that start-up once and then forks one
child per evaluation. The local executor starts one such worker per slot, lazily, inside the
sandbox, and sends it one request per evaluation. The check stage runs as a normal sandboxed
command first, or, with ``evaluator.worker_check``, as a request to the same worker.

Protocol (JSON lines; the worker's stdout is the reply channel, its stderr is kept for errors):

* The worker starts in ``work/.ge-worker-<slot>/worker``, a copy of the directory of the first
  variant it serves (so ``python evaluate.py --worker`` finds the seed's non-evolvable files).
  Its environment is the evaluation environment of the slot (``CUDA_VISIBLE_DEVICES`` of the
  slot's GPU, ``GE_RUN_DIR``, ...). First line it prints: ``{"ready": true}``.
* Request: ``{"variant_id", "stage", "workdir", "metrics_path", "log_path", "args": {},
  "env": {...}}``; ``stage`` is ``"evaluate"`` or ``"check"``.
  The worker forks a child that makes itself a process group leader, applies ``env``, chdirs
  into ``workdir``, sends stdout and stderr to ``log_path`` (a FIFO that ge reads and caps) and
  writes its metrics to ``metrics_path`` (and any feedback text to ``env["GE_FEEDBACK"]``, beside
  it; ge takes both back into the variant's ``.ge``). Replies: ``{"variant_id", "pid"}`` once
  the child exists, ``{"variant_id", "exit_code", "signal"}`` once it ended. For the evaluate stage
  ``args`` is empty: the flags of an evaluation are the worker command's own. For the check
  stage (only with ``evaluator.worker_check``) it is ``{"check": true}``: the worker runs its
  cheap check instead, e.g. ``evaluate.py --check`` in the ExquisiteNetV2 seed, without paying
  for a new interpreter and ``import torch`` (3-4 s) per variant.
* The worker exits when its stdin closes.

ge enforces the evaluation timeout by killing the child's process group (the pid of the
"started" reply, translated out of the sandbox's pid namespace), then kills every other process
that the evaluation left in the worker's sandbox. A worker that dies or breaks the protocol is
replaced once; its stage is rerun with the stage's command (``evaluator.command`` or
``evaluator.check``). When the replacement dies too, the slot runs those commands for the rest of
the run (with a warning).

Isolation (weaker than one fresh sandbox per evaluation):

* The worker's sandbox can write only ``work/.ge-worker-<slot>/``; ge moves the variant's
  directory in there (a rename) for the evaluation and back afterwards, so under bwrap a worker
  never sees the variants of other slots, the logs, the index or the repository.
* Evaluations of one slot run one after another in the same sandbox: they share the uid, the
  private ``/tmp`` and ``/dev/shm``, ``HOME`` and the worker process they were forked from. A
  variant can leave files there that later variants of the slot read, and can signal, trace or
  kill its worker (the worker is then replaced). Leftover processes are killed after every
  evaluation. Use ``evaluator.command`` alone where variants must not influence each other.

``evaluator.preload`` uses this pool with ge's own worker (``zygote.py``, built in
``preload.py``), which starts in an empty directory and confines every child it forks to the
variant's own directory (Landlock), its own environment and a clean process tree, so that the
sharing above shrinks to what the module docs of ``zygote.py`` and SECURITY.md list; such a
worker is replaced after ``recycle_after`` variants. The replacement starts ahead (in a directory
of its own, as many stages before as a start takes) and the retired worker ends in the
background, so that the slot never waits for either.

The module is long because a slot's worker lifecycle (start, recycling, death, the fallback to
the command) and one stage's exchange with it share the slot's state; the files of a stage and
the reading of a worker's replies live in ``files.py`` and ``channel.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.evaluation.contract import FEEDBACK_NAME, EvalRequest
from guided_evolution.evaluation.sandbox.disk_reserve import DiskReserve
from guided_evolution.evaluation.sandbox.uids import TOKEN_VAR
from guided_evolution.evaluation.sandbox.wrap import Sandbox
from guided_evolution.evaluation.workers.channel import (
    LINE_LIMIT,
    ReplyTimeout,
    Worker,
    WorkerFailure,
    end_reason,
    host_pid_of,
    kill_leftovers,
    next_message,
    pids_with,
    read_messages,
    read_stderr,
    reply_for,
    send_line,
    settled,
    signal_child,
    stderr_line,
    stopper,
)
from guided_evolution.evaluation.workers.files import (
    FIFO_NAME,
    IO_DIR,
    METRICS_NAME,
    OutputSink,
    copy_output,
    fresh_io,
    move_back,
    open_log,
    take_metrics,
)
from guided_evolution.fsutil import chown_tree, error_text, remove_tree

LOG = logging.getLogger(__name__)
SLOT_DIR_PREFIX = ".ge-worker-"
MAX_DEATHS = 2
STOP_GRACE_S = 2.0
"""How long ge's own worker may take to end by itself when its stdin closes."""
"""A slot's worker is replaced after its first death and given up after this many."""


class _NotUsable(Exception):
    """This evaluation cannot use the worker (not the worker's fault); run it cold."""


@dataclass
class WorkerStats:
    """Counters of one slot's worker."""

    starts: int = 0
    deaths: int = 0
    evaluations: int = 0
    checks: int = 0
    disabled: bool = False


@dataclass
class _SlotState:
    stats: WorkerStats = field(default_factory=WorkerStats)
    worker: Worker | None = None
    successor: asyncio.Task[Worker] | None = None
    """The worker that replaces ``worker`` at its recycling, started ahead of it."""
    stage_s: float = 0.0
    """How long a stage through the worker took lately (when to start the successor)."""


@dataclass
class _StageIO:
    """What a stage through the worker opened, closed after it (None: not opened yet)."""

    io_fd: int | None = None
    """The slot's io directory (the stage's metrics, feedback and log FIFO)."""
    keep_open: int | None = None
    """A writer of the log FIFO, so that ge's reader sees no EOF before the child opened it."""
    transport: asyncio.BaseTransport | None = None
    reader: asyncio.Task[None] | None = None


class WorkerPool:
    """One lazily started worker per slot, driven by ``LocalExecutor`` (see the module doc)."""

    def __init__(
        self,
        command: str,
        sandbox: Sandbox,
        *,
        start_timeout_s: float = 600.0,
        reply_timeout_s: float = 30.0,
        kill_grace_s: float = 3.0,
        stages: tuple[str, ...] = ("evaluate",),
        recycle_after: int | None = None,
        copy_variant: bool = True,
        boxed: bool = False,
    ) -> None:
        unknown = set(stages) - {"check", "evaluate"}
        if unknown:
            raise ValueError(f"unknown worker stages {sorted(unknown)}")
        self.command = command
        self.stages = frozenset(stages)
        """The cascade stages sent to the worker; the others run as commands."""
        self.sandbox = sandbox
        self.start_timeout_s = start_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.kill_grace_s = kill_grace_s
        self.recycle_after = recycle_after
        """A slot's worker is replaced by a fresh one after evaluating this many variants."""
        self.copy_variant = copy_variant
        """Start the worker in a copy of the first variant's directory (else an empty one)."""
        self.boxed = boxed
        """ge's own worker (``zygote.py``): each child is the init of a pid namespace of its own,
        so nothing it starts outlives it; a timed-out child is killed through the worker, and
        no process is looked for by its environment."""
        self.disk_reserve: DiskReserve | None = None
        """Set by the executor: a stage is stopped before the run's disk falls below its floor."""
        self.warnings: list[str] = []
        self._slots: dict[int, _SlotState] = {}
        self._closed = False
        self._start_s = 0.0
        """How long the last worker took to start (when to start a successor)."""
        self._retiring: set[asyncio.Task[None]] = set()

    def stats(self) -> dict[int, WorkerStats]:
        """Counters per slot index (slots that were used)."""
        return {i: s.stats for i, s in sorted(self._slots.items())}

    async def evaluate(
        self,
        slot: int,
        request: EvalRequest,
        env: dict[str, str],
        output: OutputSink,
        run_cold: Callable[[], Awaitable[str | None]],
        stage: str = "evaluate",
    ) -> str | None:
        """Run ``stage`` of ``request`` on ``slot``'s worker; the failure reason or None.

        ``env`` is the evaluation's environment (as the cold command would get it);
        ``run_cold`` runs the stage's command (``evaluator.command`` or ``evaluator.check``)
        instead and is used whenever the worker cannot.
        """
        command = "evaluator.check" if stage == "check" else "evaluator.command"
        state = self._slots.setdefault(slot, _SlotState())
        if state.stats.disabled:
            return await run_cold()
        worker = state.worker
        if worker is not None and worker.proc.returncode is not None:
            await self._lost(state, slot, f"it exited between evaluations{stderr_line(worker)}")
            worker = None
            if state.stats.disabled:
                return await run_cold()
        try:
            return await self._served(state, slot, worker, request, env, output, stage)
        except _NotUsable as exc:
            output.note(f"not using the worker: {exc}; running {command}")
            return await run_cold()
        except WorkerFailure as exc:
            return await self._fall_back(state, slot, exc, output, run_cold, command)

    async def _served(
        self,
        state: _SlotState,
        slot: int,
        worker: Worker | None,
        request: EvalRequest,
        env: dict[str, str],
        output: OutputSink,
        stage: str,
    ) -> str | None:
        """Run ``stage`` on the slot's worker (``worker``, else its successor or one started
        now) and count it; then a broken worker is replaced and a worn one recycled."""
        if worker is None:
            if state.successor is not None:
                output.note(f"the worker of slot {slot} was started ahead: {self.command}")
            else:
                output.note(f"starting the worker of slot {slot}: {self.command}")
            worker = await self._started(state, slot, request, env)
        output.note(f"{stage} via the worker of slot {slot}")
        began = time.monotonic()
        reason = await self._run(worker, request, env, output, stage)
        state.stage_s = time.monotonic() - began
        if stage == "check":
            state.stats.checks += 1
        else:
            state.stats.evaluations += 1
            worker.served += 1
        if worker.broken is not None:
            output.note(f"worker of slot {slot} is replaced: {worker.broken}")
            await self._lost(state, slot, worker.broken)
        else:
            self._recycle(state, slot, request, env)
        return reason

    async def _fall_back(
        self,
        state: _SlotState,
        slot: int,
        exc: WorkerFailure,
        output: OutputSink,
        run_cold: Callable[[], Awaitable[str | None]],
        command: str,
    ) -> str | None:
        """After the worker failed a stage: count its death and rerun the stage as ``command``
        (``run_cold``); the failure reason or None."""
        if self._closed:
            return "stopped: the executor was closed"
        output.note(f"worker of slot {slot} failed: {exc}; running {command}")
        message = await self._lost(state, slot, str(exc), show=False)
        reason = await run_cold()
        # Shown once the slot gives up on its worker, and only when the command works where
        # the worker did not: when both fail (the seed's data is missing, the variant is
        # broken) the evaluation's own failure says it once, and this line would repeat the
        # same error. Every such line stays in the variant's log and the run's events.
        if reason is None and state.stats.disabled:
            LOG.warning("%s", message)
        else:
            output.note(message)
        return reason

    async def aclose(self) -> None:
        """Stop every worker and remove their directories."""
        self._closed = True
        for state in self._slots.values():
            await self._drop_successor(state)
            if state.worker is not None:
                await self._stop(state.worker)
                state.worker = None
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    # ------------------------------------------------------------------ recycling

    def _recycle(
        self, state: _SlotState, slot: int, request: EvalRequest, env: dict[str, str]
    ) -> None:
        """After a stage: once the worker served ``recycle_after`` variants it is retired (it
        ends in the background); its successor starts ahead, as many stages before as its start
        takes (the last start's duration over the last stage's), so that the slot does not wait
        for it."""
        worker, limit = state.worker, self.recycle_after
        if worker is None or limit is None:
            return
        ahead = min(limit - 1, int(self._start_s / max(state.stage_s, 1e-3)) + 1)
        if state.successor is None and worker.served >= limit - ahead:
            state.successor = asyncio.ensure_future(self._start(slot, request, env, state.stats))
        if worker.served >= limit:  # a fresh worker for the next variants (not a death)
            state.worker = None
            task = asyncio.ensure_future(self._stop(worker))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _started(
        self, state: _SlotState, slot: int, request: EvalRequest, env: dict[str, str]
    ) -> Worker:
        """The slot's next worker: its successor (started ahead), or one started now."""
        successor, state.successor = state.successor, None
        if successor is None:
            successor = asyncio.ensure_future(self._start(slot, request, env, state.stats))
        state.worker = await successor
        return state.worker

    async def _drop_successor(self, state: _SlotState) -> None:
        """Stop a successor that will not be used (the slot gave up its worker, or closes)."""
        successor, state.successor = state.successor, None
        if successor is None:
            return
        if not successor.done():
            successor.cancel()  # _start stops what it started
        try:
            worker = await successor
        except (WorkerFailure, asyncio.CancelledError):
            return
        await self._stop(worker)

    # ------------------------------------------------------------------ lifecycle

    async def _lost(self, state: _SlotState, slot: int, why: str, show: bool = True) -> str:
        """Stop a failed worker, count the death (disabling the slot's worker after
        `MAX_DEATHS`), record the warning (shown now unless `show` is false) and return it."""
        if state.worker is not None:
            await self._stop(state.worker)
            state.worker = None
        state.stats.deaths += 1
        if state.stats.deaths >= MAX_DEATHS:
            state.stats.disabled = True
            await self._drop_successor(state)
            message = (
                f"evaluator.worker of slot {slot} failed {state.stats.deaths} times ({why}); "
                "this slot runs evaluator.command (and evaluator.check) from now on"
            )
        else:
            message = f"evaluator.worker of slot {slot} failed ({why}); restarting it"
        self.warnings.append(message)
        if show:
            LOG.warning("%s", message)
        return message

    async def _start(
        self, slot: int, request: EvalRequest, env: dict[str, str], stats: WorkerStats
    ) -> Worker:
        """Start a worker for ``slot`` in a directory of its own and wait for its ready line."""
        workdir = Path(os.path.abspath(request.workdir))
        stats.starts += 1
        # A successor starts beside the worker it replaces: a directory of its own.
        name = f"{SLOT_DIR_PREFIX}{slot}" + (f".{stats.starts}" if stats.starts > 1 else "")
        slot_dir = workdir.parent / name
        began = time.monotonic()
        self._make_slot_dir(slot_dir, workdir)
        worker = await self._spawn(slot_dir, request, env)
        try:
            while True:
                message = await next_message(worker, self.start_timeout_s, "a ready line")
                if message.get("ready"):
                    break
        except BaseException:
            await self._stop(worker)
            raise
        if not self.boxed:
            worker.base_pids = pids_with(worker.marker)
        worker.oom_kills = self.sandbox.oom_kills(slot_dir)
        self._start_s = time.monotonic() - began
        return worker

    def _make_slot_dir(self, slot_dir: Path, workdir: Path) -> None:
        """A fresh ``slot_dir`` whose ``worker`` directory is a copy of the variant's directory
        ``workdir`` (``copy_variant``) or empty."""
        remove_tree(slot_dir)
        try:
            slot_dir.mkdir()
            # The variant's check stage may have left anything there: copy links as links, and
            # never name its files in the message (a deep tree makes copytree recurse too far).
            if not self.copy_variant:
                (slot_dir / "worker").mkdir()
            else:
                shutil.copytree(
                    workdir,
                    slot_dir / "worker",
                    symlinks=True,
                    ignore=shutil.ignore_patterns(".ge", ".ge-home"),
                )
        except (OSError, RecursionError) as exc:
            raise WorkerFailure(
                f"cannot copy the variant's directory into {slot_dir}: {error_text(exc)}"
            ) from None

    async def _spawn(self, slot_dir: Path, request: EvalRequest, env: dict[str, str]) -> Worker:
        """Start the worker command in the sandbox of ``slot_dir`` (the slot's environment,
        less the variant's own variables) and read its stdout and stderr; the directory goes
        again when it cannot start."""
        per_variant = ("GE_METRICS", "GE_FEEDBACK", "GE_VARIANT_ID")
        worker_env = {k: v for k, v in env.items() if k not in per_variant}
        wrapped = self.sandbox.wrap(
            ["/bin/sh", "-c", f"cd worker && {self.command}"],
            slot_dir,
            worker_env,
            [],
            hide=[request.run_dir],
            own_userns=self.boxed,
        )
        marker = f"{TOKEN_VAR}={wrapped.env[TOKEN_VAR]}".encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                *wrapped.argv,
                cwd=slot_dir,
                env=wrapped.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=wrapped.preexec,
                pass_fds=wrapped.pass_fds,
                limit=LINE_LIMIT,
            )
        except BaseException as exc:  # a successor may be cancelled here too (aclose)
            self.sandbox.cleanup(slot_dir)
            remove_tree(slot_dir)
            if isinstance(exc, OSError):
                raise WorkerFailure(f"cannot start it: {exc}") from exc
            raise
        worker = Worker(proc, slot_dir, marker, wrapped.uid)
        assert proc.stdout is not None and proc.stderr is not None
        worker.tasks = [
            asyncio.ensure_future(read_messages(proc.stdout, worker)),
            asyncio.ensure_future(read_stderr(proc.stderr, worker)),
        ]
        return worker

    async def _stop(self, worker: Worker) -> None:
        proc = worker.proc
        if proc.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.close()
        if self.boxed and worker.broken is None:
            # ge's own worker ends at the end of its stdin, and its sandbox with it, every
            # process reaped on the way (killed, the sandbox's inner processes would be left to
            # the machine's init to reap, and their cgroup could not be removed yet).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.sandbox.cleanup(worker.slot_dir)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 10.0)
        for task in worker.tasks:
            task.cancel()
        remove_tree(worker.slot_dir)

    # ------------------------------------------------------------------ one evaluation

    async def _run(
        self,
        worker: Worker,
        request: EvalRequest,
        env: dict[str, str],
        output: OutputSink,
        stage: str,
    ) -> str | None:
        workdir = Path(os.path.abspath(request.workdir))
        reserve = self.disk_reserve
        short = reserve.short() if reserve is not None else None
        if short is not None:
            return short
        name = f"variant-{request.variant_id}"
        inside = worker.slot_dir / name
        try:
            remove_tree(inside)  # whatever an earlier evaluation of the slot left under this name
            os.rename(workdir, inside)
        except OSError as exc:
            raise _NotUsable(
                f"cannot move {workdir} into {worker.slot_dir}: {exc.strerror}"
            ) from exc
        io = _StageIO()
        try:
            await self._open_io(worker, inside, output, io)
            reason = await self._watched(worker, request, stage, inside, env)
        finally:
            await self._close_io(worker, output, io)
            moved = self._move_back(worker, name, workdir, request, stage, io.io_fd)
        return reason if reason is not None else moved

    async def _open_io(
        self, worker: Worker, inside: Path, output: OutputSink, io: _StageIO
    ) -> None:
        """Renew the slot's io directory, give the variant in ``inside`` to the worker's uid and
        copy the stage's output (the log FIFO) into ``output``; ``io`` holds what is open."""
        try:
            io.io_fd = fresh_io(worker.slot_dir, worker.uid)
        except OSError as exc:  # jammed by an earlier stage: a new worker, a new directory
            raise WorkerFailure(f"its io directory cannot be renewed: {exc.strerror}") from None
        if worker.uid is not None:
            chown_tree(inside, worker.uid, worker.uid)
        read_fd, io.keep_open = open_log(io.io_fd)  # keep_open: no EOF before the child
        stream = asyncio.StreamReader(limit=LINE_LIMIT)
        io.transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", 0)
        )
        io.reader = asyncio.ensure_future(copy_output(stream, output))

    async def _close_io(self, worker: Worker, output: OutputSink, io: _StageIO) -> None:
        """After the stage: kill what it left (outside ge's own worker) and finish reading its
        output (the io directory stays open for ``_move_back``)."""
        if io.keep_open is not None:
            os.close(io.keep_open)
        if not self.boxed:
            kill_leftovers(worker)
        if io.reader is not None:
            try:
                await settled(io.reader, 5.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                io.reader.cancel()
                output.note("output still open after the evaluation ended; stopped reading")
        if io.transport is not None:
            io.transport.close()

    @staticmethod
    def _move_back(
        worker: Worker,
        name: str,
        workdir: Path,
        request: EvalRequest,
        stage: str,
        io_fd: int | None,
    ) -> str | None:
        """Move the variant back to ``workdir`` and take the stage's metrics (evaluate) and
        feedback out of the io directory, which is closed then; the failure reason or None."""
        try:
            moved = move_back(worker.slot_dir, name, workdir)
            if moved is None and stage == "evaluate" and io_fd is not None:
                moved = take_metrics(io_fd, workdir, Path(request.metrics_path))
            if moved is None and io_fd is not None:  # every stage's feedback
                take_metrics(io_fd, workdir, request.feedback_path, FEEDBACK_NAME)
        finally:
            if io_fd is not None:
                os.close(io_fd)
        return moved

    async def _watched(
        self, worker: Worker, request: EvalRequest, stage: str, inside: Path, env: dict[str, str]
    ) -> str | None:
        """Send the stage of the variant now in ``inside`` to the worker, under the disk
        reserve's watch; the failure reason or None."""
        io_dir = worker.slot_dir / IO_DIR
        child_env = dict(env)
        child_env["GE_METRICS"] = str(io_dir / METRICS_NAME)
        child_env["GE_FEEDBACK"] = str(io_dir / FEEDBACK_NAME)
        line = {
            "variant_id": request.variant_id,
            "stage": stage,
            "workdir": str(inside),
            "metrics_path": child_env["GE_METRICS"],
            "log_path": str(io_dir / FIFO_NAME),
            "args": {"check": True} if stage == "check" else {},
            "env": child_env,
        }
        timeout = request.check_timeout_s if stage == "check" else request.timeout_s
        reserve = self.disk_reserve
        watch = reserve.watch(inside, stopper(worker, self.boxed)) if reserve else None
        oom_before = worker.oom_kills  # the worker's cgroup, if any: nothing ran since it was read
        try:
            reason = await self._exchange(worker, request.variant_id, line, timeout)
        finally:
            if watch is not None:
                watch.close(reclaim_at=inside)  # after a breach: its big files go
            worker.oom_kills = self.sandbox.oom_kills(worker.slot_dir)
        if watch is not None and watch.reason is not None:
            return watch.reason
        if reason is not None and worker.oom_kills > oom_before:
            return self.sandbox.out_of_memory_reason(reason)
        return reason

    async def _exchange(
        self, worker: Worker, vid: str, line: dict[str, Any], timeout: float
    ) -> str | None:
        """Send the request, wait for its start and end; the failure reason or None."""
        stdin = worker.proc.stdin
        assert stdin is not None
        try:
            await send_line(stdin, (json.dumps(line) + "\n").encode(), self.reply_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise WorkerFailure(f"cannot send the request: {exc or 'timed out'}") from exc
        sent = time.monotonic()
        started = await reply_for(worker, vid, self.reply_timeout_s, "the start reply")
        if "pid" not in started:
            return end_reason(started)
        ns_pid = started["pid"]
        if not isinstance(ns_pid, int) or ns_pid <= 1:
            raise WorkerFailure("bad start reply (no valid pid)")
        left = timeout - (time.monotonic() - sent)
        try:
            ended = await reply_for(worker, vid, max(left, 0.0), "the end reply")
            if ended.get("broken"):
                worker.broken = str(ended["broken"])[:300]
            return end_reason(ended)
        except ReplyTimeout:
            pass
        if self.boxed:
            await signal_child(worker, vid, self.kill_grace_s, self.reply_timeout_s)
            return f"timed out after {timeout:g} s"
        host_pid = host_pid_of(worker, ns_pid)  # only now: a scan of /proc costs milliseconds
        for sig, wait in ((signal.SIGTERM, self.kill_grace_s), (signal.SIGKILL, None)):
            if host_pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(host_pid, sig)
            if wait is None:
                kill_leftovers(worker)
                wait = self.reply_timeout_s
            try:
                await reply_for(worker, vid, wait, "the end reply")
                break
            except ReplyTimeout:
                if sig == signal.SIGKILL:
                    worker.broken = "no end reply after its timed-out child was killed"
        return f"timed out after {timeout:g} s"
