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
  writes its metrics to ``metrics_path``. Replies: ``{"variant_id", "pid"}`` once the child
  exists, ``{"variant_id", "exit_code", "signal"}`` once it ended. For the evaluate stage
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
from typing import TYPE_CHECKING, Any, Protocol

from guided_evolution.evaluation.sandbox import TOKEN_VAR, Sandbox, chown_tree, signal_name

if TYPE_CHECKING:
    from guided_evolution.evaluation.local import EvalRequest

LOG = logging.getLogger(__name__)
READ_CHUNK = 64 * 1024
STDERR_KEEP_BYTES = 2048
LINE_LIMIT = 1 << 20
SLOT_DIR_PREFIX = ".ge-worker-"
MAX_DEATHS = 2
"""A slot's worker is replaced after its first death and given up after this many."""


class OutputSink(Protocol):
    """Where an evaluation's output goes (the executor's capped log capture)."""

    def write(self, data: bytes) -> None: ...

    def note(self, text: str) -> None: ...


class WorkerFailure(Exception):
    """The worker died or broke the protocol; the evaluation is rerun cold."""


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
class _Worker:
    proc: asyncio.subprocess.Process
    slot_dir: Path
    marker: bytes
    uid: int | None
    messages: asyncio.Queue[dict[str, Any] | None]
    stderr_tail: bytearray = field(default_factory=bytearray)
    base_pids: set[int] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    broken: str | None = None  # set when the worker must be replaced after this evaluation


@dataclass
class _SlotState:
    stats: WorkerStats = field(default_factory=WorkerStats)
    worker: _Worker | None = None


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
        self.warnings: list[str] = []
        self._slots: dict[int, _SlotState] = {}
        self._closed = False

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
            await self._lost(state, slot, f"it exited between evaluations{_tail(worker)}")
            worker = None
            if state.stats.disabled:
                return await run_cold()
        try:
            if worker is None:
                output.note(f"starting the worker of slot {slot}: {self.command}")
                worker = await self._start(slot, request, env, state.stats)
                state.worker = worker
            output.note(f"{stage} via the worker of slot {slot}")
            reason = await self._run(worker, request, env, output, stage)
            if stage == "check":
                state.stats.checks += 1
            else:
                state.stats.evaluations += 1
            if worker.broken is not None:
                output.note(f"worker of slot {slot} is replaced: {worker.broken}")
                await self._lost(state, slot, worker.broken)
            return reason
        except _NotUsable as exc:
            output.note(f"not using the worker: {exc}; running {command}")
            return await run_cold()
        except WorkerFailure as exc:
            if self._closed:
                return "stopped: the executor was closed"
            output.note(f"worker of slot {slot} failed: {exc}; running {command}")
            await self._lost(state, slot, str(exc))
            return await run_cold()

    async def aclose(self) -> None:
        """Stop every worker and remove their directories."""
        self._closed = True
        for state in self._slots.values():
            if state.worker is not None:
                await self._stop(state.worker)
                state.worker = None

    # ------------------------------------------------------------------ lifecycle

    async def _lost(self, state: _SlotState, slot: int, why: str) -> None:
        if state.worker is not None:
            await self._stop(state.worker)
            state.worker = None
        state.stats.deaths += 1
        if state.stats.deaths >= MAX_DEATHS:
            state.stats.disabled = True
            message = (
                f"evaluator.worker of slot {slot} failed {state.stats.deaths} times ({why}); "
                "this slot runs evaluator.command (and evaluator.check) from now on"
            )
        else:
            message = f"evaluator.worker of slot {slot} failed ({why}); restarting it"
        self.warnings.append(message)
        LOG.warning("%s", message)

    async def _start(
        self, slot: int, request: EvalRequest, env: dict[str, str], stats: WorkerStats
    ) -> _Worker:
        workdir = Path(os.path.abspath(request.workdir))
        slot_dir = workdir.parent / f"{SLOT_DIR_PREFIX}{slot}"
        stats.starts += 1
        try:
            shutil.rmtree(slot_dir, ignore_errors=True)
            shutil.copytree(
                workdir,
                slot_dir / "worker",
                symlinks=True,
                ignore=shutil.ignore_patterns(".ge", ".ge-home"),
            )
            (slot_dir / "io").mkdir()
        except OSError as exc:
            raise WorkerFailure(f"cannot prepare {slot_dir}: {exc}") from exc
        worker_env = {k: v for k, v in env.items() if k not in ("GE_METRICS", "GE_VARIANT_ID")}
        argv, full_env, preexec = self.sandbox.wrap(
            ["/bin/sh", "-c", f"cd worker && {self.command}"],
            slot_dir,
            worker_env,
            [],
            hide=[request.run_dir],
        )
        uid = os.stat(slot_dir).st_uid if self.sandbox.last_uid_switched else None
        marker = f"{TOKEN_VAR}={full_env[TOKEN_VAR]}".encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=slot_dir,
                env=full_env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=preexec,
                limit=LINE_LIMIT,
            )
        except OSError as exc:
            self.sandbox.cleanup(slot_dir)
            raise WorkerFailure(f"cannot start it: {exc}") from exc
        worker = _Worker(proc, slot_dir, marker, uid, asyncio.Queue())
        assert proc.stdout is not None and proc.stderr is not None
        worker.tasks = [
            asyncio.ensure_future(_read_messages(proc.stdout, worker)),
            asyncio.ensure_future(_read_stderr(proc.stderr, worker)),
        ]
        try:
            while True:
                message = await _next(worker, self.start_timeout_s, "a ready line")
                if message.get("ready"):
                    break
        except BaseException:
            await self._stop(worker)
            raise
        worker.base_pids = _pids_with(marker)
        return worker

    async def _stop(self, worker: _Worker) -> None:
        proc = worker.proc
        if proc.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.sandbox.cleanup(worker.slot_dir)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 10.0)
        for task in worker.tasks:
            task.cancel()
        shutil.rmtree(worker.slot_dir, ignore_errors=True)

    # ------------------------------------------------------------------ one evaluation

    async def _run(
        self,
        worker: _Worker,
        request: EvalRequest,
        env: dict[str, str],
        output: OutputSink,
        stage: str,
    ) -> str | None:
        workdir = Path(os.path.abspath(request.workdir))
        inside = worker.slot_dir / f"variant-{request.variant_id}"
        io_dir = worker.slot_dir / "io"
        metrics = io_dir / "metrics.json"
        fifo = io_dir / "log.fifo"
        try:
            os.rename(workdir, inside)
        except OSError as exc:
            raise _NotUsable(f"cannot move {workdir} into {worker.slot_dir}: {exc}") from exc
        reader: asyncio.Task[None] | None = None
        keep_open: int | None = None
        transport: asyncio.BaseTransport | None = None
        try:
            for path in (metrics, fifo):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            os.mkfifo(fifo, 0o600)
            if worker.uid is not None:
                chown_tree(inside, worker.uid)
                os.chown(fifo, worker.uid, worker.uid)
            read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            keep_open = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # no EOF before the child
            stream = asyncio.StreamReader(limit=LINE_LIMIT)
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", 0)
            )
            reader = asyncio.ensure_future(_copy(stream, output))
            child_env = dict(env)
            child_env["GE_METRICS"] = str(metrics)
            line = {
                "variant_id": request.variant_id,
                "stage": stage,
                "workdir": str(inside),
                "metrics_path": str(metrics),
                "log_path": str(fifo),
                "args": {"check": True} if stage == "check" else {},
                "env": child_env,
            }
            timeout = request.check_timeout_s if stage == "check" else request.timeout_s
            reason = await self._exchange(worker, request.variant_id, line, timeout)
        finally:
            if keep_open is not None:
                os.close(keep_open)
            self._kill_leftovers(worker)
            if reader is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(reader), 5.0)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    reader.cancel()
                    output.note("output still open after the evaluation ended; stopped reading")
            if transport is not None:
                transport.close()
            with contextlib.suppress(OSError):
                os.rename(inside, workdir)
        if metrics.exists():
            target = Path(os.path.abspath(request.metrics_path))
            with contextlib.suppress(OSError):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(metrics), str(target))
        return reason

    async def _exchange(
        self, worker: _Worker, vid: str, line: dict[str, Any], timeout: float
    ) -> str | None:
        """Send the request, wait for its start and end; the failure reason or None."""
        stdin = worker.proc.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps(line) + "\n").encode())
            await asyncio.wait_for(stdin.drain(), self.reply_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise WorkerFailure(f"cannot send the request: {exc or 'timed out'}") from exc
        sent = time.monotonic()
        started = await _reply_for(worker, vid, self.reply_timeout_s, "the start reply")
        if "pid" not in started:
            return _end_reason(started)
        ns_pid = started["pid"]
        if not isinstance(ns_pid, int) or ns_pid <= 1:
            raise WorkerFailure(f"bad start reply {json.dumps(started)[:200]}")
        host_pid = _host_pid(worker, ns_pid)
        left = timeout - (time.monotonic() - sent)
        try:
            ended = await _reply_for(worker, vid, max(left, 0.0), "the end reply")
            return _end_reason(ended)
        except _Timeout:
            pass
        for sig, wait in ((signal.SIGTERM, self.kill_grace_s), (signal.SIGKILL, None)):
            if host_pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(host_pid, sig)
            if wait is None:
                self._kill_leftovers(worker)
                wait = self.reply_timeout_s
            try:
                await _reply_for(worker, vid, wait, "the end reply")
                break
            except _Timeout:
                if sig == signal.SIGKILL:
                    worker.broken = "no end reply after its timed-out child was killed"
        return f"timed out after {timeout:g} s"

    def _kill_leftovers(self, worker: _Worker) -> None:
        """Kill every process of the worker's sandbox except the worker itself."""
        for _ in range(20):
            victims = _pids_with(worker.marker) - worker.base_pids - {os.getpid()}
            if not victims:
                return
            for pid in victims:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


class _Timeout(Exception):
    pass


async def _next(worker: _Worker, timeout: float, what: str) -> dict[str, Any]:
    try:
        message = await asyncio.wait_for(worker.messages.get(), timeout)
    except asyncio.TimeoutError:
        raise WorkerFailure(f"no {what} within {timeout:g} s") from None
    if message is None:
        await _dead(worker, what)
    assert message is not None
    return message


async def _dead(worker: _Worker, what: str) -> None:
    """Raise ``WorkerFailure`` for a worker whose stdout ended, with its exit status."""
    worker.messages.put_nowait(None)  # sticky: later waits see the end too
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(worker.proc.wait(), 2.0)
    code = worker.proc.returncode
    raise WorkerFailure(f"it exited (code {code}) before {what}{_tail(worker)}")


async def _reply_for(worker: _Worker, vid: str, timeout: float, what: str) -> dict[str, Any]:
    """The next reply about ``vid`` (others are stale and skipped); ``_Timeout`` when late."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout
        try:
            message = await asyncio.wait_for(worker.messages.get(), left)
        except asyncio.TimeoutError:
            raise _Timeout from None
        if message is None:
            await _dead(worker, what)
        assert message is not None
        if "error" in message:
            raise WorkerFailure(f"it rejected the request: {str(message['error'])[:200]}")
        if message.get("variant_id") == vid:
            return message


def _end_reason(message: dict[str, Any]) -> str | None:
    code, sig = message.get("exit_code"), message.get("signal")
    if isinstance(sig, int) and sig > 0:
        name = signal_name(sig)
        return f"exit code {-sig}" + (f" (killed by {name})" if name else "")
    if code == 0:
        return None
    if not isinstance(code, int):
        raise WorkerFailure(f"bad end reply {json.dumps(message)[:200]}")
    if 128 < code <= 128 + 64 and (name := signal_name(code - 128)):
        return f"exit code {code} (probably killed by {name})"
    return f"exit code {code}"


async def _read_messages(stream: asyncio.StreamReader, worker: _Worker) -> None:
    """Parse the worker's stdout into messages; anything not a JSON object counts as noise."""
    try:
        while True:
            raw = await stream.readline()
            if not raw:
                break
            try:
                message = json.loads(raw)
            except ValueError:
                message = None
            if isinstance(message, dict):
                worker.messages.put_nowait(message)
            else:
                _keep(worker.stderr_tail, raw)
    except (ValueError, asyncio.LimitOverrunError, OSError):
        _keep(worker.stderr_tail, b"[ge] an over-long line on the worker's stdout\n")
    finally:
        worker.messages.put_nowait(None)


async def _read_stderr(stream: asyncio.StreamReader, worker: _Worker) -> None:
    with contextlib.suppress(OSError):
        while chunk := await stream.read(READ_CHUNK):
            _keep(worker.stderr_tail, chunk)


async def _copy(stream: asyncio.StreamReader, output: OutputSink) -> None:
    while chunk := await stream.read(READ_CHUNK):
        output.write(chunk)


def _keep(buffer: bytearray, data: bytes) -> None:
    buffer += data
    if len(buffer) > STDERR_KEEP_BYTES:
        del buffer[: len(buffer) - STDERR_KEEP_BYTES]


def _tail(worker: _Worker) -> str:
    text = bytes(worker.stderr_tail).decode("utf-8", "replace").strip()
    return f": {text.splitlines()[-1][:300]}" if text else ""


def _pids_with(marker: bytes) -> set[int]:
    """Host pids of the processes whose environment holds ``marker`` (one worker's sandbox)."""
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    found.add(int(name))
        except OSError:
            continue
    return found


def _host_pid(worker: _Worker, ns_pid: int) -> int | None:
    """The host pid of the sandbox's process ``ns_pid`` (innermost pid namespace)."""
    for pid in _pids_with(worker.marker) - worker.base_pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
                for text in fh:
                    if text.startswith("NSpid:"):
                        if int(text.split()[-1]) == ns_pid:
                            return pid
                        break
        except (OSError, ValueError):
            continue
    return None
