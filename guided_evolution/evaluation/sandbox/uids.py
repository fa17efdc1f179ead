"""Leases of sandboxed commands: a dedicated uid (when ge runs as root) and leftover killing.

Every sandboxed command gets a ``Lease``: a random token (``TOKEN_VAR`` in its environment marks
its whole process tree) and, as root, an unprivileged uid from ``UID_BASE`` reserved machine-wide
with an flock. ``release`` kills whatever the command left behind and frees the uid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.errors import GeError
from guided_evolution.evaluation.sandbox.cgroups import CgroupLease

UID_BASE = 1_900_000_000
"""First uid handed to sandboxed commands when ge runs as root (uids are used, not registered)."""
UID_POOL_SIZE = 4096
UID_LOCK_DIR = "ge-sandbox-uids"
"""Directory (in the system temp dir) of per-uid lock files: a uid is leased machine-wide."""
TOKEN_VAR = "GE_SANDBOX_TOKEN"
"""Environment marker of every sandboxed process tree, used to find leftovers when not root."""


@dataclass
class Lease:
    """What one sandboxed command holds until ``release``."""

    uid: int | None
    token: str
    processes_limit: int | None = None
    lock_fd: int | None = None  # flock on the uid's lock file, held for the lease
    cgroup: CgroupLease | None = None  # the evaluation's own cgroups, where the machine allows

    @property
    def marker(self) -> bytes:
        """The ``TOKEN_VAR=token`` entry in the environment of the command's processes."""
        return f"{TOKEN_VAR}={self.token}".encode()


def new_lease(switch_uid: bool, taken: set[int]) -> Lease:
    """A lease with a fresh token; with ``switch_uid``, a reserved pool uid (not in ``taken``)."""
    uid, lock_fd = reserve_uid(taken) if switch_uid else (None, None)
    return Lease(uid=uid, token=secrets.token_hex(8), lock_fd=lock_fd)


def release(lease: Lease) -> int:
    """Kill every process left by the lease's command, free its uid; how many were killed."""
    try:
        killed = lease.cgroup.release(wait=False) if lease.cgroup is not None else 0
        killed += _kill_leftovers(lease, rounds=1)
        if killed and lease.uid is not None:
            # Something survived (a fork bomb forks while we kill one by one): kill(-1) as
            # the uid hits all of them at once, then sweep until nothing is left. In the
            # common case nothing survived and no process is spawned here.
            _kill_uid(lease.uid)
        return killed + (_kill_leftovers(lease) if killed else 0)
    finally:
        if lease.lock_fd is not None:
            os.close(lease.lock_fd)  # the uid is free for other ge processes again


def count_processes_of(uid: int) -> int:
    """How many processes ``uid`` owns."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry.path).st_uid == uid:
                count += 1
        except OSError:
            continue
    return count


def _proc_owner(pid: str) -> int | None:
    """The effective uid of a process (owner of /proc/PID), or None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _has_token(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


def _kill_leftovers(lease: Lease, rounds: int = 50) -> int:
    killed = 0
    marker = lease.marker
    for _ in range(rounds):
        victims = [
            pid
            for pid in os.listdir("/proc")
            if pid.isdigit()
            and int(pid) != os.getpid()
            and (
                # With a dedicated uid (processes cannot change it: no-new-privs), the cheap
                # owner of /proc/PID says enough; otherwise look for the token in environ.
                _proc_owner(pid) == lease.uid if lease.uid is not None else _has_token(pid, marker)
            )
        ]
        if not victims:
            break
        for pid in victims:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
    return killed


def _kill_uid(uid: int) -> None:
    """kill(-1, SIGKILL) as ``uid``: atomically hits every process of that uid (fork bombs)."""
    kill = shutil.which("kill")
    if kill is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [kill, "-s", "KILL", "--", "-1"],
            user=uid,
            group=uid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )


def _uid_lock_dir() -> Path | None:
    """The private directory of uid lock files, or None when it cannot be trusted."""
    path = Path(tempfile.gettempdir()) / UID_LOCK_DIR
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        return None
    return path


def reserve_uid(taken: set[int]) -> tuple[int, int | None]:
    """A pool uid that no other ge process holds and that owns no process; (uid, lock fd).

    Every ge process on the machine draws from the same pool, and ``release`` kills *every*
    process of the uid: without a machine-wide reservation (an flock per uid) two concurrent runs
    would kill each other's evaluations.
    """
    directory = _uid_lock_dir()
    start = secrets.randbelow(UID_POOL_SIZE)
    for step in range(UID_POOL_SIZE):
        uid = UID_BASE + (start + step) % UID_POOL_SIZE
        if uid in taken:
            continue
        fd: int | None = None
        if directory is not None:
            try:
                fd = os.open(
                    directory / str(uid),
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if fd is not None:
                    os.close(fd)
                continue
        if count_processes_of(uid) == 0:
            return uid, fd
        if fd is not None:
            os.close(fd)
    raise GeError(
        f"no free sandbox uid in {UID_BASE}..{UID_BASE + UID_POOL_SIZE - 1}",
        "too many concurrent evaluations on this machine; lower executor.slots",
    )
