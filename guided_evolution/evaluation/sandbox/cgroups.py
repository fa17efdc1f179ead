"""Caps on an evaluation as a whole (memory, processes) through cgroups, where the machine allows.

rlimits count per process (RLIMIT_AS) or per uid (RLIMIT_NPROC): four children of 1.5 GB each pass
``memory_mb = 2048``. A cgroup per evaluation counts them together. ``find_cgroups`` looks, per
controller, for a place where ge may create cgroups: cgroup v2 (ge's own cgroup when the
controller is delegated to its children, or, as root, a ``ge`` cgroup under the root), else the
controller's cgroup v1 hierarchy (ge's own cgroup there). Each is tried for real (a child is made,
capped and removed). What is found, or why nothing is, goes into the run's isolation event.
The evaluated command joins its cgroups first thing (``cgroup.procs``); ``CgroupLease.release``
kills what is left in them and removes them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

MEMORY, PIDS = "memory", "pids"


@dataclass(frozen=True)
class Hierarchy:
    """Where ge makes one child cgroup per evaluation for ``controllers``."""

    version: int  # 1 or 2
    base: Path
    controllers: tuple[str, ...]

    def limits(self, memory_bytes: int | None, processes: int | None) -> list[tuple[str, str]]:
        """(file, value) pairs that cap a child of this hierarchy."""
        out: list[tuple[str, str]] = []
        if MEMORY in self.controllers and memory_bytes is not None:
            if self.version == 2:
                out += [("memory.max", str(memory_bytes)), ("memory.swap.max", "0")]
            else:
                out += [("memory.limit_in_bytes", str(memory_bytes))]
                out += [("memory.memsw.limit_in_bytes", str(memory_bytes))]
        if PIDS in self.controllers and processes is not None:
            out.append(("pids.max", str(processes)))
        return out


@dataclass
class CgroupLease:
    """The cgroups of one evaluation."""

    dirs: list[Path]
    _oom_files: tuple[list[Path], list[Path]] | None = field(default=None, init=False, repr=False)

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def release(self, wait: bool = True) -> int:
        """Kill every process left in the cgroups and remove them; how many were killed.

        Without ``wait``: one pass, no sleeping; a cgroup whose killed processes are not gone yet
        stays in ``dirs`` (call again later)."""
        killed = 0
        left: list[Path] = []
        for directory in self.dirs:
            killed += _empty(directory, rounds=200 if wait else 1)
            if not _remove(directory, tries=100 if wait else 1):
                left.append(directory)
        self.dirs = left
        return killed

    def oom_kills(self) -> int:
        """How many processes the kernel killed for going over the memory cap (call before
        ``release``). A worker's lease is asked after every stage: the files that exist (the
        memory controller's, v2 or v1) are found once per set of ``dirs``."""
        if self._oom_files is None or self._oom_files[0] != self.dirs:
            found = [
                d / name
                for d in self.dirs
                for name in ("memory.events", "memory.oom_control")  # cgroup v2, v1
                if (d / name).exists()
            ]
            self._oom_files = (list(self.dirs), found)
        return sum(_counter(path, "oom_kill") for path in self._oom_files[1])


def _remove(directory: Path, tries: int) -> bool:
    for attempt in range(tries):
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:  # EBUSY: a killed process is not gone yet
            if attempt + 1 < tries:
                time.sleep(0.01)
    return False


@dataclass(frozen=True)
class Cgroups:
    """The hierarchies that cap this machine's evaluations."""

    hierarchies: tuple[Hierarchy, ...]

    @property
    def label(self) -> str:
        parts = [f"{'+'.join(h.controllers)} (cgroup v{h.version})" for h in self.hierarchies]
        return ", ".join(parts)

    def controls(self, controller: str) -> bool:
        return any(controller in h.controllers for h in self.hierarchies)

    def create(self, name: str, memory_bytes: int | None, processes: int | None) -> CgroupLease:
        """A capped cgroup named ``name`` in every hierarchy (removed again on failure)."""
        lease = CgroupLease([])
        try:
            for h in self.hierarchies:
                directory = h.base / name
                directory.mkdir()
                lease.dirs.append(directory)
                for file, value in h.limits(memory_bytes, processes):
                    _write(directory / file, value, optional=file.startswith("memory.memsw"))
        except OSError:
            lease.release()
            raise
        return lease


def find_cgroups(controllers: tuple[str, ...]) -> tuple[Cgroups | None, str]:
    """The hierarchies where ge can cap ``controllers``, and, for those it cannot, why."""
    mounts = _mounts()
    own = _own_cgroups()
    found: list[Hierarchy] = []
    missing: list[str] = []
    v2 = _v2_base(mounts.get("cgroup2"), own.get(""), controllers)
    if v2 is not None:
        found.append(v2)
    for controller in controllers:
        if v2 is not None and controller in v2.controllers:
            continue
        mount, path = mounts.get(controller), own.get(controller)
        base = Path(mount) / path.lstrip("/") if mount and path is not None else None
        if base is not None and _works(Hierarchy(1, base, (controller,))):
            found.append(Hierarchy(1, base, (controller,)))
        else:
            missing.append(controller)
    reason = ""
    if missing:
        reason = (
            f"no cgroup where ge may cap {' and '.join(missing)} (cgroup v2 without the "
            "controller delegated to ge, and no writable v1 hierarchy)"
        )
    return (Cgroups(tuple(found)) if found else None), reason


def _v2_base(mount: str | None, own: str | None, wanted: tuple[str, ...]) -> Hierarchy | None:
    if mount is None or own is None:
        return None
    root = Path(mount)
    mine = root / own.lstrip("/")
    delegated = [c for c in wanted if c in _words(mine / "cgroup.subtree_control")]
    if delegated and os.access(mine, os.W_OK) and _works(Hierarchy(2, mine, tuple(delegated))):
        return Hierarchy(2, mine, tuple(delegated))
    if os.geteuid() != 0:
        return None
    at_root = [c for c in wanted if c in _words(root / "cgroup.subtree_control")]
    if not at_root:
        return None
    base = root / "ge"  # no processes of its own: its children may use the controllers
    try:
        base.mkdir(exist_ok=True)
        _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in at_root))
    except OSError:
        return None
    h = Hierarchy(2, base, tuple(at_root))
    return h if _works(h) else None


def own_memory_limit() -> int | None:
    """The memory limit in bytes of ge's own cgroup (the smallest on its way up: a container's
    or a SLURM job's limit), or None without one."""
    mounts, own = _mounts(), _own_cgroups()
    limits: list[int] = []
    if MEMORY in mounts and own.get(MEMORY) is not None:
        stat = Path(mounts[MEMORY]) / own[MEMORY].lstrip("/") / "memory.stat"
        limits.append(_counter(stat, "hierarchical_memory_limit"))
    if "cgroup2" in mounts and own.get("") is not None:
        root = Path(mounts["cgroup2"])
        directory = root / own[""].lstrip("/")
        while root == directory or root in directory.parents:
            words = _words(directory / "memory.max")
            if words and words[0].isdigit():
                limits.append(int(words[0]))
            directory = directory.parent
    usable = [limit for limit in limits if 0 < limit < 1 << 60]
    return min(usable) if usable else None


def _counter(path: Path, key: str) -> int:
    """The value of ``key`` in a cgroup file of "key value" lines; 0 without it."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _works(h: Hierarchy) -> bool:
    """Make, cap and remove a child: whether ge may use this hierarchy."""
    probe = h.base / f"ge-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        for file, value in h.limits(64 << 20, 64):
            _write(probe / file, value, optional=file.startswith("memory.memsw"))
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def _empty(directory: Path, rounds: int) -> int:
    """SIGKILL everything in the cgroup until it is empty (cgroup.kill where the kernel has it)."""
    killed = 0
    with contextlib.suppress(OSError):
        _write(directory / "cgroup.kill", "1")
    for round_ in range(rounds):
        try:
            pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return killed
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        if round_ + 1 < rounds:
            time.sleep(0.005)
    return killed


def _write(path: Path, value: str, optional: bool = False) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except FileNotFoundError:
        if not optional:
            raise


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _mounts() -> dict[str, str]:
    """Mount points: "cgroup2", and each v1 controller's hierarchy."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        point = fields[4].replace("\\040", " ")
        if rest[0] == "cgroup2":
            out.setdefault("cgroup2", point)
        elif rest[0] == "cgroup":
            for option in rest[2].split(","):
                if option in (MEMORY, PIDS):
                    out.setdefault(option, point)
    return out


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller, and "" for cgroup v2."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        names = parts[1].split(",") if parts[1] else [""]
        for name in names:
            out.setdefault(name, parts[2])
    return out
