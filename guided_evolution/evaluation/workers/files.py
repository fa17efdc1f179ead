"""The files of one evaluation on a worker: its ``io`` directory, log FIFO, metrics and feedback.

``workers.WorkerPool`` moves the variant's directory into the slot's directory for the
evaluation; these helpers make the fresh ``io`` directory with the log FIFO the child writes to,
move the directory back and take the metrics file, never following a link the variant planted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path
from typing import Protocol

from guided_evolution.evaluation.contract import metrics_location, replaced_reason
from guided_evolution.evaluation.workers.channel import READ_CHUNK, WorkerFailure
from guided_evolution.fsutil import DIR_NOFOLLOW, UnsafePathError, open_dir_beneath, remove_tree

IO_DIR = "io"
"""The slot's directory for the child's metrics file and log FIFO (new for every evaluation)."""
METRICS_NAME = "metrics.json"
FIFO_NAME = "log.fifo"


class OutputSink(Protocol):
    """Where an evaluation's output goes (the executor's capped log capture)."""

    def write(self, data: bytes) -> None: ...

    def note(self, text: str) -> None: ...


def fresh_io(slot_dir: Path, uid: int | None) -> int:
    """A new ``io`` directory of the slot with the log FIFO in it; its descriptor. What the
    worker's sandbox left there (a symlink in place of ``io``, ...) is removed first."""
    slot_fd = os.open(slot_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_tree(slot_dir / IO_DIR)
        os.mkdir(IO_DIR, 0o700, dir_fd=slot_fd)
        io_fd = os.open(IO_DIR, DIR_NOFOLLOW, dir_fd=slot_fd)
    finally:
        os.close(slot_fd)
    try:
        os.mkfifo(FIFO_NAME, 0o600, dir_fd=io_fd)
        if uid is not None:
            os.fchown(io_fd, uid, uid)
            os.chown(FIFO_NAME, uid, uid, dir_fd=io_fd, follow_symlinks=False)
    except BaseException:
        os.close(io_fd)
        raise
    return io_fd


def open_log(io_fd: int) -> tuple[int, int]:
    """The log FIFO of ``io_fd`` opened for reading and (kept open) for writing."""
    read_fd = os.open(
        FIFO_NAME, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=io_fd
    )
    try:
        if not stat.S_ISFIFO(os.fstat(read_fd).st_mode):
            raise WorkerFailure("its log FIFO was replaced")
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        return read_fd, os.open(FIFO_NAME, flags, dir_fd=io_fd)
    except BaseException:
        os.close(read_fd)
        raise


def move_back(slot_dir: Path, name: str, workdir: Path) -> str | None:
    """Move the slot's ``name`` back to ``workdir``; the failure reason. What is no longer a
    directory there (the variant replaced it) is removed, not moved."""
    try:
        if not stat.S_ISDIR(os.lstat(slot_dir / name).st_mode):
            remove_tree(slot_dir / name)
            return "the variant replaced its own directory"
        os.rename(slot_dir / name, workdir)
    except FileNotFoundError:
        return "the variant replaced its own directory"
    except OSError as exc:
        return f"could not move the variant's directory back: {exc.strerror}"
    return None


def take_metrics(
    io_fd: int, workdir: Path, metrics_path: Path, name: str = METRICS_NAME
) -> str | None:
    """Move the child's ``io/metrics.json`` (or ``io/<name>``: its feedback file), whatever it
    is, to ``metrics_path`` through descriptors (``read_metrics`` or ``read_feedback`` judges
    it); the reason when the variant replaced a directory."""
    base, relpath = metrics_location(metrics_path, workdir)
    try:
        dst_fd = open_dir_beneath(base, relpath.parent, create=True)
    except UnsafePathError as exc:
        return replaced_reason(exc, workdir)
    except OSError:
        return None  # read_metrics says what is missing
    with contextlib.suppress(OSError):  # nothing written: read_metrics says so
        os.rename(name, relpath.name, src_dir_fd=io_fd, dst_dir_fd=dst_fd)
    os.close(dst_fd)
    return None


async def copy_output(stream: asyncio.StreamReader, output: OutputSink) -> None:
    while chunk := await stream.read(READ_CHUNK):
        output.write(chunk)
