"""What the sandbox really gives evaluated code here, in words: the "isolation" event of a run.

``describe`` turns the probe's findings (backend, the layers ``confine.py`` reported, the policy)
into five aspects a user can check: file system, network, secrets, processes, resources. Each
aspect says whether it is contained; every uncontained one becomes a warning at the run's start.
SECURITY.md's table and ``tests/reliability/test_sandbox_threats.py`` hold the same claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ASPECTS = ("filesystem", "network", "secrets", "processes", "resources")


@dataclass(frozen=True)
class Isolation:
    """The isolation in force for a run's evaluations."""

    backend: str
    layers: tuple[str, ...]
    text: dict[str, str]
    contained: dict[str, bool] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        short = {
            "filesystem": "writes only in the variant dir"
            if self.contained.get("filesystem")
            else "file system WRITABLE",
            "network": "no network" if self.contained.get("network") else "network OPEN",
        }
        return f"{self.backend}: {short['filesystem']}; {short['network']}; " + (
            "secrets scrubbed" if self.contained.get("secrets") else "secrets EXPOSED"
        )

    def warnings(self) -> list[str]:
        """One line per aspect that is not contained."""
        return [
            f"sandbox ({self.backend}): {name}: {self.text[name]}"
            for name in ASPECTS
            if not self.contained.get(name, False)
        ]

    def to_event(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "layers": list(self.layers),
            **self.text,
            "contained": dict(self.contained),
            "summary": self.summary,
            "warnings": self.warnings(),
        }


@dataclass(frozen=True)
class Findings:
    """What the probe established."""

    backend: str  # bwrap | landlock | none
    namespaces: bool
    landlock: str  # the layer confine.py reported, e.g. "landlock ABI 7, tcp denied, ..." or ""
    dedicated_uid: bool
    is_root: bool
    network_allowed: bool
    tmpfs_mb: int | None
    memory_mb: int | None
    file_size_mb: int | None
    max_processes: int | None
    cgroups: str = ""  # e.g. "memory (cgroup v1), pids (cgroup v1)"; "" without
    cgroup_problem: str = ""  # why a wanted cgroup cap is missing
    keyrings: str = ""  # what the probe reported of them: "keyrings denied", "keyrings OPEN (...)"
    memory_default: str = ""  # how ge chose memory_mb (evaluator.limits.memory_mb = "auto"), or ""
    address_space_mb: int | None = None  # RLIMIT_AS of each process, if any
    disk_reserve: str = ""  # "an evaluation is stopped when free space on / falls below ..."


def describe(f: Findings) -> Isolation:
    """The five aspects for these findings."""
    contained_fs = f.backend == "bwrap" or f.namespaces or bool(f.landlock)
    layers = _layers(f)
    return Isolation(
        backend=f.backend,
        layers=tuple(layers),
        text={
            "filesystem": _filesystem(f, contained_fs),
            "network": _network(f)[0],
            "secrets": _secrets(f)[0],
            "processes": _processes(f)[0],
            "resources": _resources(f)[0],
        },
        contained={
            "filesystem": contained_fs,
            "network": _network(f)[1],
            "secrets": _secrets(f)[1],
            "processes": _processes(f)[1],
            "resources": _resources(f)[1],
        },
    )


def _layers(f: Findings) -> list[str]:
    layers = ["bwrap"] if f.backend == "bwrap" else []
    if f.backend == "bwrap" or f.namespaces:
        layers += ["mount namespace", "pid namespace"]
        if not f.network_allowed:
            layers.append("network namespace")
    if f.landlock:
        layers.append(f.landlock)
    if f.keyrings:
        layers.append(f.keyrings)
    if f.dedicated_uid:
        layers.append("dedicated uid")
    elif f.is_root and f.backend != "none":
        layers.append("uid 0 without capabilities")
    return [*layers, "scrubbed environment", "rlimits", "process-group kill"]


def _own_mounts(f: Findings) -> bool:
    return f.backend == "bwrap" or f.namespaces


def _filesystem(f: Findings, contained: bool) -> str:
    if not contained:
        who = "root" if f.is_root and not f.dedicated_uid else "ge's user"
        return f"WRITABLE: evaluated code can write wherever {who} can"
    if _own_mounts(f):
        return "writes only in the variant directory and a private /tmp; the run directory and homes hidden"
    return (
        "writes only in the variant directory (Landlock), temp files in its .ge-tmp; "
        "the run directory and homes hidden from reads"
    )


UNIX_SOCKETS_HIDDEN = (
    "path-named unix sockets unreachable: of / only /usr, /bin, /sbin, /lib*, /etc and /sys are "
    "visible, plus what the command needs, bound back read-only (ge's interpreter, sys.path, PATH, "
    "the seed directory, data paths named in pass_env or the command: a socket inside those stays "
    "connectable)"
)


def _network(f: Findings) -> tuple[str, bool]:
    if f.network_allowed:
        sockets = f"; {UNIX_SOCKETS_HIDDEN}" if _own_mounts(f) else ""
        return f"open (evaluator.network = true){sockets}", False
    if _own_mounts(f):
        return f"none (empty network namespace); {UNIX_SOCKETS_HIDDEN}", True
    abstract = (
        "abstract unix sockets scoped (Landlock)"
        if "abstract unix sockets scoped" in f.landlock
        else "abstract unix sockets OPEN"
    )
    sockets = (
        "path-named unix sockets (D-Bus, docker.sock, a database's socket under /run, /var/lib "
        "or /srv) are connectable"
    )
    if "tcp denied" in f.landlock:
        abi = f.landlock.split(",")[0].replace("landlock", "Landlock")
        return (
            f"TCP denied (Landlock), {abstract}, but UDP is OPEN and {sockets}: no network "
            f"namespace, and {abi} has no rule for them",
            False,
        )
    return f"OPEN: no network namespace and no Landlock network rules; {sockets}", False


def _keyrings(f: Findings) -> tuple[str, bool]:
    """What evaluated code can do with the kernel's keyrings, from the probe's report."""
    calls = "add_key, request_key and keyctl fail (seccomp)"
    if f.keyrings == "keyrings denied":
        if f.backend == "bwrap":
            return f"kernel keyrings unreachable: {calls}; /proc/keys hidden", True
        names = "" if f.dedicated_uid else "; /proc/keys still lists the names of its uid's keys"
        return f"kernel keyrings unreachable: a new empty session keyring, {calls}{names}", True
    if f.backend == "none":
        return "kernel keyrings of ge's user (session and user keyrings) READABLE", False
    why = f.keyrings.partition("(")[2].rstrip(")") or "not applied"
    if f.keyrings.startswith("keyrings: new session keyring only"):
        return (
            "a new empty session keyring, but the user keyring of the uid is REACHABLE (keys of "
            f"ge's user, or a channel between evaluations of one dedicated uid): {why}",
            False,
        )
    return f"kernel keyrings REACHABLE (read, overwritten, planted): {why}", False


def _secrets(f: Findings) -> tuple[str, bool]:
    text, contained = _secrets_but_keyrings(f)
    keys, keys_contained = _keyrings(f)
    return f"{text}; {keys}", contained and keys_contained


def _secrets_but_keyrings(f: Findings) -> tuple[str, bool]:
    if f.backend == "none":
        exposed = (
            "ge's /proc entries (its environment, API keys)"
            if not f.dedicated_uid
            else "files readable by others"
        )
        return f"environment scrubbed, but {exposed} and the run directory are readable", False
    if _own_mounts(f):
        return (
            "environment scrubbed; run directory and home credentials hidden; /proc shows only the evaluation",
            True,
        )
    if f.is_root and not f.dedicated_uid:
        return (
            "environment scrubbed; run directory and homes hidden, but the code runs as uid 0: "
            "root-only files elsewhere (e.g. /etc/shadow) are READABLE. Fix: keep ge's Python "
            "and the run directory outside private (0700) directories such as /root, so that a "
            "dedicated uid can run them",
            False,
        )
    return (
        "environment scrubbed; run directory and homes hidden; other processes' /proc entries denied (Landlock)",
        True,
    )


def _processes(f: Findings) -> tuple[str, bool]:
    own = "own pid namespace" if _own_mounts(f) else "ge's pid namespace"
    who = "dedicated uid" if f.dedicated_uid else ("uid 0" if f.is_root else "ge's uid")
    if f.backend == "none":
        return (
            f"{own}, {who}: evaluated code can signal and trace ge and leave daemons behind",
            False,
        )
    scoped = _own_mounts(f) or "signals scoped" in f.landlock
    if not scoped:
        return (
            f"{own}, {who}: signals to ge's other processes are NOT blocked (Landlock ABI < 6)",
            False,
        )
    if not _own_mounts(f) and not f.dedicated_uid:
        return (
            f"{own}, {who}: evaluated code can lower ge's own rlimits, priority and scheduling "
            "(prlimit, setpriority, sched_setscheduler: Landlock has no rule for them, and it "
            "shares ge's uid and pid namespace). Fix: let a dedicated uid run it (keep ge's "
            "Python and the run directory outside private 0700 directories, as root) or allow "
            "namespaces",
            False,
        )
    limit = f"at most {f.max_processes} processes" if f.max_processes else "no process-count limit"
    if f.max_processes and "pids" in f.cgroups:
        limit += f" per evaluation ({_cgroup_of(f, 'pids')})"
    elif f.is_root and not f.dedicated_uid:
        limit = "no process-count limit (uid 0)"
    return f"{own}, {who}, {limit}; leftovers killed after each evaluation", True


def _resources(f: Findings) -> tuple[str, bool]:
    """Contained: memory bounded per evaluation (a cgroup), a disk reserve, and (with private
    mounts) capped /tmp and /dev/shm."""
    memory, per_evaluation = _memory(f)
    if _own_mounts(f):
        tmp = (
            f"/tmp and /dev/shm capped at {f.tmpfs_mb} MB each"
            if f.tmpfs_mb
            else "/tmp and /dev/shm uncapped (RAM)"
        )
    else:
        tmp = "temp files on disk in the variant directory"
    files = f"files up to {f.file_size_mb} MB each" if f.file_size_mb else "file size unbounded"
    disk = f.disk_reserve or (
        "NO disk reserve: a variant can fill the disk that holds the run (set "
        "evaluator.limits.disk_reserve_mb)"
    )
    text = f"{memory}; {tmp}; {files}; {disk}"
    tmp_capped = bool(f.tmpfs_mb or not _own_mounts(f))
    return text, per_evaluation and bool(f.disk_reserve) and tmp_capped


def _memory(f: Findings) -> tuple[str, bool]:
    """The memory part of the resources aspect, and whether it bounds each evaluation."""
    how = f"; {f.memory_default}" if f.memory_default else ""
    if not f.memory_mb:
        if f.memory_default:
            return f"memory not bounded by ge ({f.memory_default})", False
        return "memory UNBOUNDED (evaluator.limits.memory_mb = 0)", False
    if "memory" in f.cgroups:
        return f"memory {f.memory_mb} MB per evaluation ({_cgroup_of(f, 'memory')}{how})", True
    why = f.cgroup_problem or "no cgroup"
    if f.address_space_mb:
        return (
            f"memory NOT bounded per evaluation ({why}), only each process's address space at "
            f"{f.address_space_mb} MB (RLIMIT_AS{how})",
            False,
        )
    return (
        f"memory UNBOUNDED: {why}, and an address-space limit (RLIMIT_AS) would break CUDA "
        "(set evaluator.limits.memory_mb to bound each process's address space)",
        False,
    )


def _cgroup_of(f: Findings, controller: str) -> str:
    """ "cgroup v1" for ``controller`` from a label like "memory (cgroup v1), pids (cgroup v2)"."""
    for part in f.cgroups.split(", "):
        if controller in part.split(" (")[0].split("+"):
            return part.split("(")[-1].rstrip(")")
    return "cgroup"
