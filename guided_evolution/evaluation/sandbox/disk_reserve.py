"""The disk reserve: free space kept on the file system of the run directory while variants run.

A variant that fills the disk also fills the disk that holds the run's own state (``repo.git``,
``index.sqlite``, the logs), and ge could then lose or corrupt what it records. While evaluations
run, ``DiskReserve`` reads the file system's free space (``statvfs``: about a microsecond) every
``POLL_S`` seconds; when it falls below the floor, the evaluation whose directory holds the space
is stopped (its ``stop`` callback: kill its processes) and failed with "the variant filled the
disk (...)", and its big files are removed once its processes are gone (``Watch.close``). A
variant writes faster than that only by a fraction of the floor (1 GB or more by default).

Around the awaited evaluation (``local.LocalExecutor._run``; a worker's child the same way)::

    reason = reserve.short()                       # already below the floor: do not start
    watch = reserve.watch(workdir, stop=kill_the_evaluation)
    try:
        ...                                        # await the evaluation's process
    finally:
        ...                                        # kill and reap whatever it left, then
        watch.close()                              # unwatch; after a breach, reclaim its space
    if watch.reason is not None:
        return watch.reason                        # the evaluation's failure reason
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

MB = 1 << 20
POLL_S = 0.25
"""Seconds between two looks at the free space while an evaluation runs."""
FLOOR_MIN, FLOOR_MAX = 1024 * MB, 10 * 1024 * MB
"""The default floor: 1 % of the file system, within these bounds (and at most a tenth of it)."""
BLAME_MIN_BYTES = 64 * MB
"""An evaluation's directory holding less than this did not fill the disk."""
BIG_FILE_BYTES = MB
"""``close`` removes the files of at least this size from a directory that filled the disk."""
SETTLE_S = 1.0
"""After stopping an evaluation, the time its space has to come back before the next blame."""
MAX_ENTRIES = 200_000
"""Entries looked at when measuring a directory (a variant may make millions of files)."""


def default_floor(path: Path) -> int:
    """The floor for ``disk_reserve_mb = "auto"``: 1 % of the file system that holds ``path``,
    at least 1 GiB but at most a tenth of a small file system, and at most 10 GiB."""
    st = os.statvfs(existing(path))
    size = st.f_blocks * st.f_frsize
    return min(max(size // 100, min(FLOOR_MIN, size // 10)), FLOOR_MAX)


def existing(path: Path) -> Path:
    """``path``, or its nearest ancestor that exists (a run directory about to be made)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds ``path``."""
    path = existing(path)
    try:
        device = path.stat().st_dev
        while path != path.parent and path.parent.stat().st_dev == device:
            path = path.parent
    except OSError:
        pass
    return path


class Watch:
    """One evaluation watched by a ``DiskReserve``."""

    def __init__(self, reserve: DiskReserve, path: Path, stop: Callable[[], None]) -> None:
        self.reserve = reserve
        self.path = path
        """The evaluation's directory (where it is now: a worker moves it into its slot)."""
        self.stop = stop
        self.reason: str | None = None
        """Set when the reserve stopped the evaluation: its failure reason."""

    def close(self, reclaim_at: Path | None = None) -> int:
        """Stop watching. After a breach, remove the big files of the directory (``reclaim_at``,
        else ``path``) so the space comes back: call it once the evaluation's processes are gone.
        Returns the bytes removed."""
        self.reserve._watches.discard(self)
        if self.reason is None:
            return 0
        return reclaim(reclaim_at if reclaim_at is not None else self.path)


class DiskReserve:
    """Keeps ``floor`` bytes free on the file system that holds ``path`` while evaluations run."""

    def __init__(self, path: Path, floor: int, poll_s: float = POLL_S, note: str = "") -> None:
        self.path = existing(path)
        self.floor = floor
        self.poll_s = poll_s
        self.note = note
        """How the floor was chosen (for the isolation event), e.g. "ge's default: 1 % ..."."""
        self.filesystem = str(mount_point(self.path))
        self._watches: set[Watch] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._quiet_until = 0.0

    @classmethod
    def from_setting(cls, path: Path, setting: int | str) -> DiskReserve | None:
        """The reserve ``evaluator.limits.disk_reserve_mb`` asks for ("auto", MB, 0 = none)."""
        if setting == 0:
            return None
        if setting == "auto":
            note = "ge's default: 1 % of the file system, 1 to 10 GB"
            return cls(path, default_floor(path), note=note)
        return cls(path, int(setting) * MB)

    def describe(self) -> str:
        """The reserve in words (the isolation event's resources aspect)."""
        how = f"; {self.note}" if self.note else ""
        return (
            f"an evaluation is stopped when free space on {self.filesystem} falls below "
            f"{self.floor // MB} MB (disk reserve{how})"
        )

    def free(self) -> int | None:
        """Bytes an unprivileged user may still write on the file system (None: unknown)."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def short(self) -> str | None:
        """Why an evaluation may not start (free space already below the floor), or None."""
        free = self.free()
        if free is None or free >= self.floor:
            return None
        return (
            f"not started: free space on {self.filesystem} is {free // MB} MB, below the disk "
            f"reserve of {self.floor // MB} MB (evaluator.limits.disk_reserve_mb)"
        )

    def watch(self, path: Path, stop: Callable[[], None]) -> Watch:
        """Watch the evaluation in ``path`` until ``Watch.close``; ``stop`` kills it. Call it
        in the event loop that awaits the evaluation."""
        watch = Watch(self, Path(os.path.abspath(path)), stop)
        self._watches.add(watch)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.poll_s, self._tick, loop)
        return watch

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if not self._watches:
            return
        free = self.free()
        if free is not None and free < self.floor and time.monotonic() >= self._quiet_until:
            self._breach()
        if self._watches and not loop.is_closed():
            self._timer = loop.call_later(self.poll_s, self._tick, loop)

    def _breach(self) -> None:
        """Stop the evaluation whose directory holds the most; all of them when none holds
        much (the space went elsewhere: an evaluation without a sandbox, another program)."""
        live = [w for w in self._watches if w.reason is None]
        if not live:
            return
        usage = {w: directory_usage(w.path) for w in live}
        top = max(live, key=lambda w: usage[w])
        floor = f"{self.floor // MB} MB"
        if usage[top] >= BLAME_MIN_BYTES:
            victims = [top]
            reason = (
                f"the variant filled the disk (free space on {self.filesystem} fell below "
                f"{floor}, the disk reserve; its directory held {usage[top] // MB} MB)"
            )
        else:
            victims = live
            reason = (
                f"stopped: free space on {self.filesystem} fell below {floor} (the disk reserve) "
                "while it ran, and not by writing in its directory"
            )
        for watch in victims:
            watch.reason = reason
            with contextlib.suppress(OSError):
                watch.stop()
        self._quiet_until = time.monotonic() + SETTLE_S


def directory_usage(path: Path, max_entries: int = MAX_ENTRIES) -> int:
    """Bytes of disk the files below ``path`` occupy (links never followed; at most
    ``max_entries`` entries looked at)."""
    total = seen = 0
    for _dirpath, dirnames, filenames, dirfd in _walk(path):
        for name in filenames + dirnames:
            seen += 1
            with contextlib.suppress(OSError):
                total += os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_blocks * 512
            if seen >= max_entries:
                return total
    return total


def reclaim(path: Path, min_bytes: int = BIG_FILE_BYTES) -> int:
    """Remove the files below ``path`` that occupy ``min_bytes`` or more (links never
    followed); the bytes they occupied."""
    freed = 0
    for _dirpath, _dirnames, filenames, dirfd in _walk(path):
        for name in filenames:
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_blocks * 512 >= min_bytes:
                    os.unlink(name, dir_fd=dirfd)
                    freed += st.st_blocks * 512
            except OSError:
                continue
    return freed


def _walk(path: Path) -> Iterator[tuple[str, list[str], list[str], int]]:
    """``os.fwalk`` below ``path`` (nothing when it is gone), never following a link."""
    if os.path.lexists(path):
        yield from os.fwalk(path, follow_symlinks=False)
