"""One worker process of ``workers.WorkerPool``: its replies, its stderr, its processes.

The pool drives the protocol (see the ``workers`` module doc); this module reads what a worker
says (JSON-line replies on stdout, a bounded tail of stderr), turns an end reply into a failure
reason, stops a stage (through ge's own worker, or by the sandbox token in the environment of the
processes of an evaluator's own worker).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.evaluation.sandbox.wrap import signal_name

READ_CHUNK = 64 * 1024
STDERR_KEEP_BYTES = 2048
LINE_LIMIT = 1 << 20


class WorkerFailure(Exception):
    """The worker died or broke the protocol; the evaluation is rerun cold."""


class Inbox:
    """A worker's messages in arrival order (None: its stdout ended). ``get`` waits on a future
    of its own: ``asyncio.wait_for(queue.get(), t)`` ran each wait in a task of its own, two more
    passes of the event loop per reply, each behind every callback then ready (milliseconds on a
    busy loop, twice per stage)."""

    def __init__(self) -> None:
        self._items: collections.deque[dict[str, Any] | None] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: dict[str, Any] | None) -> None:
        self._items.append(item)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def get(self, timeout: float) -> dict[str, Any] | None:
        """The next message; ``asyncio.TimeoutError`` when none came within ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._items:
            waiter = loop.create_future()
            timer = loop.call_at(deadline, _expire, waiter)
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiters.remove(waiter)
        return self._items.popleft()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


@dataclass
class Worker:
    """One running worker process of a slot, and what ge reads from it."""

    proc: asyncio.subprocess.Process
    slot_dir: Path
    marker: bytes
    uid: int | None
    messages: Inbox = field(default_factory=Inbox)
    stderr_tail: bytearray = field(default_factory=bytearray)
    base_pids: set[int] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    broken: str | None = None  # set when the worker must be replaced after this evaluation
    served: int = 0  # variants evaluated (evaluate stages), for WorkerPool.recycle_after
    oom_kills: int = 0  # its cgroup's OOM kills when its last stage ended (read once a stage)


async def send_line(stdin: asyncio.StreamWriter, data: bytes, timeout: float) -> None:
    """Write ``data`` to the worker, waiting (``timeout`` s at most) only where the pipe is full
    or closing: an ``asyncio.wait_for`` of a drain with nothing to wait for costs two loop passes."""
    stdin.write(data)
    transport = stdin.transport
    if transport.is_closing() or transport.get_write_buffer_size():
        await asyncio.wait_for(stdin.drain(), timeout)


async def settled(task: asyncio.Future[None], timeout: float) -> None:
    """Wait for ``task`` to end (``timeout`` s at most; it is not cancelled then) and raise what
    it raised; no loop pass when it has ended already."""
    if task.done():
        task.result()
    else:
        await asyncio.wait_for(asyncio.shield(task), timeout)


class ReplyTimeout(Exception):
    """A reply did not come in time (the worker may still be alive)."""


async def next_message(worker: Worker, timeout: float, what: str) -> dict[str, Any]:
    """The worker's next message (a ready line); ``WorkerFailure`` when late or dead."""
    try:
        message = await worker.messages.get(timeout)
    except asyncio.TimeoutError:
        raise WorkerFailure(f"no {what} within {timeout:g} s") from None
    if message is None:
        await _dead(worker, what)
    assert message is not None
    return message


async def _dead(worker: Worker, what: str) -> None:
    """Raise ``WorkerFailure`` for a worker whose stdout ended, with its exit status."""
    worker.messages.put_nowait(None)  # sticky: later waits see the end too
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(worker.proc.wait(), 2.0)
    code = worker.proc.returncode
    raise WorkerFailure(f"it exited (code {code}) before {what}{stderr_line(worker)}")


async def reply_for(worker: Worker, vid: str, timeout: float, what: str) -> dict[str, Any]:
    """The next reply about ``vid`` (others are stale and skipped); ``ReplyTimeout`` when late."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReplyTimeout
        try:
            message = await worker.messages.get(left)
        except asyncio.TimeoutError:
            raise ReplyTimeout from None
        if message is None:
            await _dead(worker, what)
        assert message is not None
        if "error" in message:
            raise WorkerFailure(f"it rejected the request: {str(message['error'])[:200]}")
        if message.get("variant_id") == vid:
            return message


def end_reason(message: dict[str, Any]) -> str | None:
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


async def read_messages(stream: asyncio.StreamReader, worker: Worker) -> None:
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


async def read_stderr(stream: asyncio.StreamReader, worker: Worker) -> None:
    with contextlib.suppress(OSError):
        while chunk := await stream.read(READ_CHUNK):
            _keep(worker.stderr_tail, chunk)


def _keep(buffer: bytearray, data: bytes) -> None:
    buffer += data
    if len(buffer) > STDERR_KEEP_BYTES:
        del buffer[: len(buffer) - STDERR_KEEP_BYTES]


def stderr_line(worker: Worker) -> str:
    text = bytes(worker.stderr_tail).decode("utf-8", "replace").strip()
    return f": {text.splitlines()[-1][:300]}" if text else ""


def pids_with(marker: bytes) -> set[int]:
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


def host_pid_of(worker: Worker, ns_pid: int) -> int | None:
    """The host pid of the sandbox's process ``ns_pid`` (innermost pid namespace)."""
    for pid in pids_with(worker.marker) - worker.base_pids:
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


def kill_leftovers(worker: Worker) -> None:
    """Kill every process of the worker's sandbox except the worker itself (a worker of the
    evaluator's own: its children are found by the sandbox token in their environment)."""
    for _ in range(20):
        victims = pids_with(worker.marker) - worker.base_pids - {os.getpid()}
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _send_signal(worker: Worker, number: int) -> None:
    assert worker.proc.stdin is not None
    worker.proc.stdin.write((json.dumps({"signal": number}) + "\n").encode())


def stopper(worker: Worker, boxed: bool) -> Callable[[], None]:
    """What stops the running stage at once (the disk reserve): through ge's own worker, SIGKILL
    to the stage's init; a worker of the evaluator's own is killed and replaced."""

    def stop() -> None:
        if boxed:
            _send_signal(worker, int(signal.SIGKILL))
        else:
            worker.broken = "stopped for the disk reserve"
            os.killpg(worker.proc.pid, signal.SIGKILL)

    return stop


async def signal_child(worker: Worker, vid: str, grace_s: float, reply_timeout_s: float) -> None:
    """SIGTERM, then SIGKILL, to a timed-out stage's init, sent by ge's own worker: the stage's
    whole pid namespace goes with it. The worker is marked broken when no end reply comes."""
    assert worker.proc.stdin is not None
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, reply_timeout_s)):
        try:
            _send_signal(worker, int(sig))
            await asyncio.wait_for(worker.proc.stdin.drain(), reply_timeout_s)
            await reply_for(worker, vid, wait, "the end reply")
            return
        except ReplyTimeout:
            continue
        except (OSError, asyncio.TimeoutError):
            break
    worker.broken = "no end reply after its timed-out child was killed"
