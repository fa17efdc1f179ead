"""Wrapping an evaluation command: bwrap or ge's own launcher, scrubbed env, rlimits, a uid.

The evaluated code is untrusted. Backends, strongest first (``auto`` takes the first that runs
here and refuses to start when none does: it never silently runs code unconfined):

* ``bwrap``: new pid/net/ipc/uts namespaces, read-only ``/``, private size-capped ``/tmp`` and
  ``/dev/shm``, the run directory hidden behind a tmpfs, only the variant's directory (and the
  explicitly writable paths) writable, credential files of the home directory hidden
  (``bwrap``).
* ``landlock``: ge's own launcher (``confine.py``, needs no package): the same namespaces and
  layout where the kernel allows (root, or user namespaces), plus Landlock (writes only in the
  variant's directory, TCP denied, signals and abstract sockets scoped); the probe picks the
  strongest of its ``MODES`` that works (``confine_backend``).
* ``none``: rlimits and a new session only, chosen explicitly (a warning says what is exposed).

When ge runs as root, RLIMIT_NPROC is not enforced for uid 0, so the command is switched to a
dedicated unprivileged uid (one per running evaluation, ``uids``); the variant's directory
is chowned to it. That uid also makes the fork-bomb limit and the final "kill everything of this
evaluation" (``Sandbox.cleanup``) reliable. The environment is scrubbed by the caller
(``env.scrub_env``).

The module is long because ``Sandbox`` is the one place that turns a policy into a command for
every backend (probe, uid lease, cgroup, limits, keyring filter, clean-up); the layouts, the
launcher's options, the uids and the environment already live in this package's other modules.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from guided_evolution.errors import GeError
from guided_evolution.evaluation.sandbox.bwrap import (
    BwrapRequest,
    HostPaths,
    bwrap_args,
    named_paths,
    traversable_by_others,
)
from guided_evolution.evaluation.sandbox.cgroups import (
    MEMORY,
    PIDS,
    CgroupLease,
    Cgroups,
    find_cgroups,
)
from guided_evolution.evaluation.sandbox.confine_backend import (
    MODES,
    ConfineMode,
    RLimits,
    confine_argv,
    private_tmp,
)
from guided_evolution.evaluation.sandbox.execute import (
    JOIN_CGROUPS,
    drop_privileges_argv,
    preexec_hook,
    prlimit_argv,
)
from guided_evolution.evaluation.sandbox.isolation import Findings, Isolation, describe
from guided_evolution.evaluation.sandbox.syscall_filter import keyring_filter, machine
from guided_evolution.evaluation.sandbox.uids import (
    TOKEN_VAR,
    Lease,
    count_processes_of,
    new_lease,
    release,
)
from guided_evolution.fsutil import chown_tree, is_within, open_dir_beneath

BACKENDS = ("bwrap", "landlock", "none")
KEY_FILES = ("/proc/keys", "/proc/key-users")
"""What /proc says of the kernel's keys and their owners: hidden from bwrap's commands."""
FIX_HINT = (
    "install bubblewrap (apt-get install bubblewrap) or use a Linux kernel with Landlock (5.13+); "
    'to run evaluated code without isolation anyway: evaluator.sandbox = "none" or --no-sandbox'
)


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits and isolation of one evaluation command."""

    network: bool = False
    memory_mb: int | None = None
    """The memory bound: of the evaluation as a whole where a cgroup of its own caps it
    (``memory.max``, no RLIMIT_AS then), else of each process's address space (RLIMIT_AS)."""
    memory_default: str = ""
    """How ge chose ``memory_mb`` (``evaluator.limits.memory_mb = "auto"``), for the isolation event;
    "" when it was set explicitly."""
    default_address_space_mb: int | None = None
    """With ``memory_default``: the RLIMIT_AS of each process where no cgroup caps the
    evaluation (None: none, e.g. with GPUs, where CUDA reserves more address space than that)."""
    cpu_seconds: int | None = None
    file_size_mb: int | None = 1024
    max_processes: int | None = 256
    output_cap_bytes: int = 1_000_000
    readonly_root: bool = True
    pass_env: tuple[str, ...] = ()
    # directories the command may read (e.g. the seed dir and its data)
    readable: tuple[str, ...] = ()
    backend: str = "auto"  # "auto" | "bwrap" | "landlock" | "none"
    tmpfs_mb: int | None = 1024  # size cap of the private /tmp and /dev/shm, each
    disk_reserve: str = ""  # the executor's disk reserve in words (disk_reserve.py), or ""


@dataclass(frozen=True)
class SandboxInfo:
    """What the probe found works here."""

    backend: str
    network_isolated: bool
    warning: str | None
    isolation: Isolation
    mode: ConfineMode | None = None
    """The layers of ge's own sandbox in use (backend ``landlock``)."""


@dataclass(frozen=True)
class SandboxedCommand:
    """A wrapped command, ready for ``subprocess``: run ``argv`` with ``env`` and ``preexec``."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    preexec: Callable[[], None] | None
    uid: int | None
    """The dedicated uid the command runs as (ge runs as root), or None: it keeps ge's uid."""
    pass_fds: tuple[int, ...] = ()
    """Descriptors the command must inherit (``pass_fds=``): bwrap reads its keyring filter from
    one. Owned by the sandbox, closed by ``cleanup(workdir)``."""


@dataclass(frozen=True)
class _Probed:
    """One probe's findings, shared by every ``Sandbox`` of the same policy in this process."""

    info: SandboxInfo
    bwrap_size: bool
    cgroup_search: tuple[Cgroups | None, str] | None
    passed: set[tuple[str, ...]] = field(default_factory=set, compare=False, hash=False)
    """Other one-off checks of this sandbox that held (``Sandbox.check_once``)."""


@functools.lru_cache(maxsize=16)
def _probed(policy: SandboxPolicy, euid: int, environ: tuple[str, str]) -> _Probed:
    """Probe once per process for each key: the policy (backend, limits, readable paths), the
    uid and the ``PATH``/``HOME`` the backends are looked up and laid out with. A failed probe
    raises and is not kept, so it is tried again."""
    del euid, environ  # part of the cache key only
    sandbox = Sandbox(policy)
    info = sandbox._probe_here()
    return _Probed(info, sandbox._bwrap_size, sandbox._cgroup_search)


class Sandbox:
    """Builds the command line, environment and preexec hook of a sandboxed command."""

    def __init__(self, policy: SandboxPolicy) -> None:
        if policy.backend not in ("auto", *BACKENDS):
            raise GeError(
                f"unknown sandbox backend {policy.backend!r}",
                "use one of auto, bwrap, landlock, none",
            )
        self.policy = policy
        self._info: SandboxInfo | None = None
        self._probed: _Probed | None = None
        self._is_root = os.geteuid() == 0
        self._leases: dict[Path, Lease] = {}
        self._keyring_filter = keyring_filter()  # bwrap's --seccomp program; None: unsupported
        self._fds: dict[Path, list[int]] = {}
        self._host: HostPaths | None = None
        self._setpriv = shutil.which("setpriv")
        self._prlimit = shutil.which("prlimit")
        self._bwrap_size = False  # whether this bwrap knows --size (0.7+)
        self._cgroup_search: tuple[Cgroups | None, str] | None = None
        self._unremoved: list[CgroupLease] = []

    # ------------------------------------------------------------------ probing

    def probe(self) -> SandboxInfo:
        """Find (once per process and policy, see ``_probed``) the strongest backend that actually runs here.

        Raises ``GeError`` when the configured backend (or, for ``auto``, every backend that can
        stop writes outside the variant's directory) does not work: ge fails closed.
        """
        if self._info is None:
            environ = (os.environ.get("PATH", ""), os.environ.get("HOME", ""))
            found = _probed(self.policy, os.geteuid(), environ)
            self._bwrap_size, self._cgroup_search = found.bwrap_size, found.cgroup_search
            self._info, self._probed = found.info, found
        return self._info

    def check_once(self, key: tuple[str, ...], check: Callable[[], str | None]) -> str | None:
        """Run ``check`` (None: it held, else why not) unless one with the same ``key`` held
        before in this process with this sandbox's policy; a failure is not kept."""
        self.probe()
        assert self._probed is not None
        if key in self._probed.passed:
            return None
        problem = check()
        if problem is None:
            self._probed.passed.add(key)
        return problem

    def _probe_here(self) -> SandboxInfo:
        """The probe itself: try each backend (and each of ge's own modes) in turn."""
        wanted = self.policy.backend
        failures: list[str] = []
        chosen: tuple[str, ConfineMode | None, str] | None = None
        if wanted == "none":
            chosen = ("none", None, "")
        for backend in ("bwrap", "landlock") if wanted == "auto" else (wanted,):
            if chosen is not None:
                break
            modes: tuple[ConfineMode | None, ...] = MODES if backend == "landlock" else (None,)
            for mode in modes:
                error, applied = self._try_backend(backend, mode)
                if error is None:
                    chosen = (backend, mode, applied)
                    break
                failures.append(f"{backend}{f' ({mode.label})' if mode else ''}: {error}")
        if chosen is None:
            what = (
                f"sandbox backend {wanted!r} does not work here"
                if wanted != "auto"
                else "no sandbox can stop evaluated code writing outside its directory here"
            )
            raise GeError(f"{what} ({'; '.join(failures)})", FIX_HINT)
        return self._describe(*chosen)

    def _describe(self, backend: str, mode: ConfineMode | None, applied: str) -> SandboxInfo:
        p = self.policy
        namespaces = backend == "bwrap" or bool(mode and mode.namespaces)
        landlock = next((part for part in applied.split("; ") if part.startswith("landlock")), "")
        keyrings = next((part for part in applied.split("; ") if part.startswith("keyrings")), "")
        dedicated = self._is_root and (namespaces or self._reachable(()))
        cgroups = self._cgroups()
        problem = self._cgroup_search[1] if self._cgroup_search else ""
        isolation = describe(
            Findings(
                backend=backend,
                namespaces=namespaces,
                landlock=landlock,
                keyrings=keyrings,
                dedicated_uid=dedicated,
                is_root=self._is_root,
                network_allowed=p.network,
                tmpfs_mb=p.tmpfs_mb if backend != "bwrap" or self._bwrap_size else None,
                memory_mb=p.memory_mb,
                file_size_mb=p.file_size_mb,
                max_processes=p.max_processes,
                cgroups=cgroups.label if cgroups is not None else "",
                cgroup_problem=problem,
                memory_default=p.memory_default,
                address_space_mb=self.address_space_mb(),
                disk_reserve=p.disk_reserve,
            )
        )
        warning = None
        if backend == "none":
            warning = (
                'sandbox: disabled (evaluator.sandbox = "none"); evaluated code runs WITH '
                "network access and without filesystem isolation: "
                + "; ".join(isolation.text[a] for a in ("filesystem", "secrets", "processes"))
            )
        elif isolation.warnings():
            warning = "; ".join(isolation.warnings())
        return SandboxInfo(
            backend=backend,
            network_isolated=isolation.contained["network"],
            warning=warning,
            isolation=isolation,
            mode=mode,
        )

    def _try_backend(self, backend: str, mode: ConfineMode | None) -> tuple[str | None, str]:
        """Run ``true`` through the backend: (None, what was applied) when it works, else
        (a short reason, "")."""
        if backend == "bwrap":
            bwrap = shutil.which("bwrap")
            if bwrap is None:
                return "bwrap not installed", ""
            self._bwrap_size = _bwrap_knows_size(bwrap)
        with tempfile.TemporaryDirectory(prefix="ge-sandbox-probe-") as tmp:
            workdir = Path(tmp) / "work"
            workdir.mkdir()
            os.chmod(tmp, 0o755)
            try:
                command = self._build(
                    backend, ["true"], workdir, {"PATH": os.defpath}, [], [], mode=mode, report=True
                )
                result = run_to_end(command, workdir, timeout_s=20)
            except (OSError, subprocess.SubprocessError) as exc:
                return str(exc), ""
            finally:
                self.cleanup(workdir)
                self.close()  # a one-off: its cgroup must not wait for a later cleanup
        out = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            text = result.stderr.decode(errors="replace").strip().splitlines()
            return (text[-1] if text else f"exit code {result.returncode}")[:200], ""
        if backend == "bwrap":  # it applied the keyring filter, or it failed (no report line)
            if self._keyring_filter is None:
                return None, f"keyrings OPEN (no seccomp filter for {machine()})"
            return None, "keyrings denied"
        applied = [line for line in out.splitlines() if line.startswith("confine: ")]
        return None, applied[-1].removeprefix("confine: ") if applied else ""

    # ------------------------------------------------------------------ wrapping

    def wrap(
        self,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        writable: list[Path],
        hide: Sequence[Path] = (),
        *,
        own_userns: bool = False,
    ) -> SandboxedCommand:
        """The sandboxed command that runs ``argv`` in ``workdir``.

        ``env`` must already be scrubbed (see ``scrub_env``); HOME is set to a private directory.
        ``writable`` paths stay writable; ``hide`` directories (the run directory) are replaced by
        an empty tmpfs, except ``workdir`` and ``writable`` inside them. When ge runs as root,
        ``workdir`` and ``writable`` are chowned to the evaluation's uid. Call ``cleanup(workdir)``
        after the command ended, it kills leftovers and releases the uid. ``own_userns``: ge's own
        backend starts the command in a user namespace of its own, before Landlock (the
        preloading worker needs it to give each fork its own namespaces; under bwrap the
        worker makes it itself).
        """
        info = self.probe()
        return self._build(
            info.backend, argv, workdir, env, writable, hide, mode=info.mode, userns=own_userns
        )

    def cleanup(self, workdir: Path) -> int:
        """Kill every process left by the command started for ``workdir``; returns how many."""
        lease = self._leases.pop(Path(os.path.abspath(workdir)), None)
        for fd in self._fds.pop(Path(os.path.abspath(workdir)), []):
            os.close(fd)
        for cgroup in self._unremoved:  # earlier ones, whose processes had not exited yet
            cgroup.release(wait=False)
        self._unremoved = [c for c in self._unremoved if c.dirs]
        killed = 0 if lease is None else release(lease)
        if lease is not None and lease.cgroup is not None and lease.cgroup.dirs:
            self._unremoved.append(lease.cgroup)  # its killed processes are still exiting
        return killed

    def close(self) -> None:
        """Remove the cgroups whose processes were still exiting at their ``cleanup``."""
        for cgroup in self._unremoved:
            cgroup.release(wait=True)
        self._unremoved = []

    def _lease(self, workdir: Path, switch_uid: bool) -> Lease:
        taken = {lease.uid for lease in self._leases.values() if lease.uid is not None}
        lease = new_lease(self._is_root and switch_uid, taken)
        limit = self.policy.max_processes
        if limit is not None and not self._is_root:
            # RLIMIT_NPROC counts every process of the uid: leave room for the user's own.
            limit += count_processes_of(os.getuid())
        lease.processes_limit = limit
        self._leases[Path(os.path.abspath(workdir))] = lease
        cgroups = self._cgroups()
        if cgroups is not None:
            p = self.policy
            memory = p.memory_mb * 1024 * 1024 if p.memory_mb is not None else None
            lease.cgroup = cgroups.create(f"ge-{lease.token}", memory, p.max_processes)
        return lease

    def address_space_mb(self) -> int | None:
        """The RLIMIT_AS of each process: none where a cgroup caps the evaluation's memory
        (address space is not memory: CUDA and many threads reserve far more than they use)."""
        cgroups = self._cgroups()
        if cgroups is not None and cgroups.controls(MEMORY):
            return None
        if self.policy.memory_default:
            return self.policy.default_address_space_mb
        return self.policy.memory_mb

    def out_of_memory(self, workdir: Path) -> bool:
        """Whether the kernel killed a process of the command started for ``workdir`` for going
        over the evaluation's memory cap (its cgroup); call before ``cleanup``."""
        return self.oom_kills(workdir) > 0

    def oom_kills(self, workdir: Path) -> int:
        """How many processes of the command started for ``workdir`` the kernel killed so far
        for going over the memory cap of its cgroup (0 without one). A worker's count grows
        over its evaluations: compare it before and after one."""
        lease = self._leases.get(Path(os.path.abspath(workdir)))
        return lease.cgroup.oom_kills() if lease is not None and lease.cgroup is not None else 0

    def out_of_memory_reason(self, reason: str) -> str:
        """A failure ``reason`` of an evaluation the kernel killed for its memory bound."""
        return (
            f"out of memory: the evaluation went over its bound of {self.policy.memory_mb} MB "
            f"(evaluator.limits.memory_mb) and the kernel killed it ({reason})"
        )

    def _cgroups(self) -> Cgroups | None:
        """Where each evaluation gets a capped cgroup of its own (found once), or None."""
        if self._cgroup_search is None:
            # Only with memory_mb: moving a process into a cgroup costs ~4 ms an evaluation
            # (benchmarks/engine_overhead.py), worth it for the one cap rlimits cannot give.
            wanted = (MEMORY, PIDS) if self.policy.max_processes is not None else (MEMORY,)
            search = find_cgroups(wanted) if self.policy.memory_mb is not None else (None, "")
            self._cgroup_search = search
        return self._cgroup_search[0]

    def _reachable(self, paths: Sequence[Path]) -> bool:
        """Whether a dedicated uid can reach ``paths`` and the interpreter on the real tree."""
        return all(
            traversable_by_others(p.parent)
            for p in (*paths, Path(os.path.realpath(sys.executable)))
        )

    def _build(
        self,
        backend: str,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        writable: Sequence[Path],
        hide: Sequence[Path],
        mode: ConfineMode | None = None,
        report: bool = False,
        userns: bool = False,
    ) -> SandboxedCommand:
        workdir = Path(os.path.abspath(workdir))
        writable = [Path(os.path.abspath(p)) for p in writable]
        lease, home, extra = self._prepare(backend, mode, workdir, writable)
        out_env = self._env(env, home, lease)
        if extra:
            out_env["TMPDIR"] = str(extra[0])
        hidden = [Path(os.path.abspath(p)) for p in hide]
        named = named_paths(env, self.policy.pass_env, argv)  # data paths: bound back read-only
        joins = [str(f) for f in lease.cgroup.procs_files] if lease.cgroup is not None else []
        if backend == "landlock":
            assert mode is not None
            request = self._bwrap_request(workdir, writable, hidden, lease, backend, named)
            args = self._confine(mode, request, lease, joins, report, userns)
            return SandboxedCommand((*args, *argv), out_env, None, lease.uid)
        if backend == "bwrap":
            drop = drop_privileges_argv(self._setpriv, lease.uid)
            request = self._bwrap_request(workdir, writable, hidden, lease, backend, named)
            layout = bwrap_args(request, self._hosts())
            layout += self._bwrap_keyrings(workdir)
            full = [shutil.which("bwrap") or "bwrap", *layout, "--", *drop, *argv]
        else:
            full = list(argv)
        return self._limited(backend, full, out_env, lease, joins, workdir)

    def _prepare(
        self,
        backend: str,
        mode: ConfineMode | None,
        workdir: Path,
        writable: Sequence[Path],
    ) -> tuple[Lease, Path, list[Path]]:
        """Make the command's directories (its private HOME and, without a mount layout, its
        /tmp inside ``workdir``), lease its uid and give it ``workdir`` and ``writable``. The
        lease, HOME and the private /tmp (if any)."""
        own_mounts = backend == "bwrap" or bool(mode and mode.namespaces)
        # Without a mount layout the dedicated uid must reach the directories and the
        # interpreter on the real file system; where it cannot, the command keeps ge's uid.
        switch = own_mounts or self._reachable((workdir, *writable))
        home = workdir / ".ge-home"
        extra = [] if own_mounts or backend == "none" else [private_tmp(workdir)]
        workdir.mkdir(parents=True, exist_ok=True)
        for inside in (home, *extra):
            # The variant's own directory: a link planted by an earlier stage is not followed
            # (UnsafePathError, an OSError: the stage fails, nothing outside is touched).
            os.close(open_dir_beneath(workdir, inside.name, create=True))
        for path in writable:
            path.mkdir(parents=True, exist_ok=True)
        lease = self._lease(workdir, switch_uid=switch)
        if lease.uid is not None:
            for path in (workdir, *writable):
                chown_tree(path, lease.uid, lease.uid)
        return lease, home, extra

    def _confine(
        self,
        mode: ConfineMode,
        request: BwrapRequest,
        lease: Lease,
        joins: list[str],
        report: bool,
        userns: bool,
    ) -> list[str]:
        """The launcher's command line (``confine_argv``) for ge's own backend."""
        limits = self._limits(lease)
        if userns:
            # The preloading worker runs no variant code: its layout, uid and rlimits
            # confine it, and each fork applies Landlock itself (Landlock here would forbid
            # the mounts that give every fork a private /tmp and /dev/shm).
            mode = ConfineMode(namespaces=mode.namespaces, landlock=False)
        return confine_argv(
            mode, request, self._hosts(), limits, joins, report=report, userns=userns
        )

    def _limited(
        self,
        backend: str,
        full: list[str],
        out_env: dict[str, str],
        lease: Lease,
        joins: list[str],
        workdir: Path,
    ) -> SandboxedCommand:
        """``full`` (bwrap's command line, or the bare command) under the rlimits, in the
        evaluation's cgroup and, for ``none``, switched to the lease's uid."""
        switch_uid = lease.uid if backend == "none" else None
        limits = self._limits(lease)
        if switch_uid is None and self._prlimit is not None:
            # rlimits through prlimit(1) rather than a Python preexec hook: without the hook the
            # parent can vfork, which saves a few ms per evaluation in a large ge process.
            join = [*JOIN_CGROUPS, *joins, "--"] if joins else []
            prlimit = prlimit_argv(self._prlimit, limits)
            return SandboxedCommand(
                (*join, *prlimit, *full), out_env, None, lease.uid, self._passed(workdir)
            )
        preexec = preexec_hook(limits, switch_uid, joins)
        return SandboxedCommand(tuple(full), out_env, preexec, lease.uid, self._passed(workdir))

    def _bwrap_keyrings(self, workdir: Path) -> list[str]:
        """bwrap options that keep kernel keyrings from the command: the keyring filter
        (``syscall_filter``) read from a pipe of its own (``--seccomp FD``, in ``pass_fds``;
        bwrap fails rather than run without it), and ``/proc/keys``, ``/proc/key-users`` hidden
        (bwrap cannot give the command a new session keyring: the filter makes the inherited
        one unusable, and this hides what it holds). Nothing where no filter exists here."""
        if self._keyring_filter is None:
            return []
        read, write = os.pipe()
        try:
            os.write(write, self._keyring_filter)  # ~200 bytes: a pipe holds them, no reader yet
        finally:
            os.close(write)
        self._fds.setdefault(workdir, []).append(read)
        hidden = [a for f in KEY_FILES for a in ("--ro-bind", "/dev/null", f)]
        return [*hidden, "--seccomp", str(read)]

    def _passed(self, workdir: Path) -> tuple[int, ...]:
        return tuple(self._fds.get(workdir, ()))

    def _limits(self, lease: Lease) -> RLimits:
        p = self.policy
        mb = 1024 * 1024
        address_space = self.address_space_mb()
        return RLimits(
            memory_bytes=address_space * mb if address_space is not None else None,
            cpu_seconds=p.cpu_seconds,
            file_bytes=p.file_size_mb * mb if p.file_size_mb is not None else None,
            processes=lease.processes_limit,
        )

    @staticmethod
    def _env(env: dict[str, str], home: Path, lease: Lease) -> dict[str, str]:
        """``env`` plus the private HOME, the lease's token and ge's interpreter on PATH."""
        out_env = dict(env)
        out_env["HOME"] = str(home)
        out_env[TOKEN_VAR] = lease.token
        py_dir = os.path.dirname(sys.executable)
        path_parts = out_env.get("PATH", os.defpath).split(os.pathsep)
        if py_dir and py_dir not in path_parts:
            out_env["PATH"] = os.pathsep.join([py_dir, *path_parts])
        return out_env

    def _hosts(self) -> HostPaths:
        if self._host is None:  # stat()s of sys.path & co: the same for every evaluation
            self._host = HostPaths.scan()
        return self._host

    def _bwrap_request(
        self,
        workdir: Path,
        writable: Sequence[Path],
        hide: Sequence[Path],
        lease: Lease,
        backend: str,
        named: Sequence[Path] = (),
    ) -> BwrapRequest:
        """``named``: paths the user named for the command (``named_paths``), readable too."""
        readable = [Path(os.path.abspath(r)) for r in self.policy.readable if os.path.isdir(r)]
        # Never one inside a hidden directory (the run directory): it stays hidden.
        readable += [p for p in named if not any(is_within(p, h) for h in hide)]
        return BwrapRequest(
            workdir=workdir,
            writable=writable,
            hide=hide,
            readable=readable,
            uid=lease.uid,
            network=self.policy.network,
            readonly_root=self.policy.readonly_root,
            is_root=self._is_root,
            tmpfs_bytes=self._tmpfs_bytes(backend),
        )

    def _tmpfs_bytes(self, backend: str) -> int | None:
        """The size cap of the private /tmp and /dev/shm (None: bwrap too old for --size)."""
        if self.policy.tmpfs_mb is None or (backend == "bwrap" and not self._bwrap_size):
            return None
        return self.policy.tmpfs_mb * 1024 * 1024


def run_to_end(
    command: SandboxedCommand, cwd: Path, timeout_s: float
) -> subprocess.CompletedProcess[bytes]:
    """Run a wrapped one-off command (a probe) to its end, its output captured."""
    return subprocess.run(
        command.argv,
        env=command.env,
        cwd=cwd,
        preexec_fn=command.preexec,
        pass_fds=command.pass_fds,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )


def _bwrap_knows_size(bwrap: str) -> bool:
    """Whether this bubblewrap accepts ``--size`` (a size cap for ``--tmpfs``, bwrap 0.7+)."""
    try:
        result = subprocess.run([bwrap, "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"--size" in result.stdout + result.stderr


_SIGNAL_NAME = re.compile(r"^SIG[A-Z0-9]+$")


def signal_name(number: int) -> str | None:
    """``SIGKILL`` for 9, None for an unknown number."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return None
    return name if _SIGNAL_NAME.match(name) else None
