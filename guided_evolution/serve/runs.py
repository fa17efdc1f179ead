"""What `ge serve` serves: one run, or the runs of a directory, and who holds a run's lock,
asked without taking any lock.

`doctor.lock_holder` tests the lock by taking a shared lock for an instant; a `ge resume` that
tries to lock the run in that instant would fail. A server that asks every second must not, so
`holder` reads the kernel's lock table (``/proc/locks``) instead and falls back to
`doctor.lock_holder` only where there is none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.errors import GeError
from guided_evolution.runstore.rundir import (
    CONFIG_FILE,
    LATEST,
    LOCK_FILE,
    latest_run,
    looks_like_run,
)

PROC_LOCKS = Path("/proc/locks")


def holder(run_dir: Path) -> str | None:
    """The pid written in the lock file of ``run_dir`` while a process holds its lock, else None.

    Reads ``/proc/locks`` (an exclusive flock on the lock file's device and inode) and takes
    nothing; without ``/proc/locks``, `doctor.lock_holder`."""
    lock = Path(run_dir) / LOCK_FILE
    try:
        st = os.stat(lock)
    except OSError:
        return None
    try:
        table = PROC_LOCKS.read_text()
    except OSError:
        from guided_evolution.runstore.doctor import lock_holder

        return lock_holder(Path(run_dir))
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        words = line.split()
        if len(words) >= 6 and "FLOCK" in words and where in words and "WRITE" in words:
            try:
                return lock.read_text(errors="replace").strip()[:64] or "unknown"
            except OSError:
                return "unknown"
    return None


@dataclass(frozen=True)
class Target:
    """What was asked for: one run (``single``) or a directory of runs."""

    root: Path
    single: bool

    def runs(self) -> dict[str, Path]:
        """Name -> run directory, newest name first (the directory is listed again each time)."""
        if self.single:
            return {self.root.name: self.root}
        try:
            found = [
                d
                for d in self.root.iterdir()
                if d.name[:1] != "." and d.name != LATEST and (d / CONFIG_FILE).is_file()
            ]
        except OSError:
            return {}
        return {d.name: d for d in sorted(found, key=lambda d: d.name, reverse=True)}


def target_of(path: Path) -> Target:
    """The run or runs directory at ``path``; a one-line GeError for anything else."""
    path = Path(path)
    if path.name == LATEST and path.is_file():  # runs/latest as a file naming the run
        found = latest_run(path.parent)
        path = found if found is not None else path
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise GeError(
            f"{path} {what}",
            "pass a run directory (runs/NAME) or a directory of runs (runs), "
            "or start a run with `ge run SEED_DIR`",
        )
    if looks_like_run(path):
        return Target(path.resolve(), single=True)
    return Target(path.resolve(), single=False)
