"""Wrapping an evaluation command: bwrap / unshare, scrubbed env, rlimits, a dedicated uid.

The evaluated code is untrusted. Layers, strongest first:

* ``bwrap``: new pid/net/ipc/uts namespaces, read-only ``/``, private ``/tmp`` and ``/dev/shm``,
  the run directory hidden behind a tmpfs, only the variant's directory (and the explicitly
  writable paths) writable, credential files of the home directory hidden (``sandbox_bwrap``).
* ``unshare``: new pid and net namespaces only (no read-only root).
* ``none``: rlimits and a new session only (a warning is reported).

When ge runs as root, RLIMIT_NPROC is not enforced for uid 0, so the command is switched to a
dedicated unprivileged uid (one per running evaluation, ``sandbox_uids``); the variant's directory
is chowned to it. That uid also makes the fork-bomb limit and the final "kill everything of this
evaluation" (``Sandbox.cleanup``) reliable. The environment is scrubbed by the caller
(``sandbox_env.scrub_env``).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.errors import GeError
from guided_evolution.evaluation.sandbox_bwrap import (
    BwrapRequest,
    HostPaths,
    bwrap_args,
    traversable_by_others,
)
from guided_evolution.evaluation.sandbox_uids import (
    TOKEN_VAR,
    Lease,
    chown_tree,
    count_processes_of,
    new_lease,
    release,
)

BACKENDS = ("bwrap", "unshare", "none")


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits and isolation of one evaluation command."""

    network: bool = False
    memory_mb: int | None = None
    cpu_seconds: int | None = None
    file_size_mb: int | None = 1024
    max_processes: int | None = 256
    output_cap_bytes: int = 1_000_000
    readonly_root: bool = True
    pass_env: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()  # directories the command may read (e.g. the seed dir and its data)
    backend: str = "auto"  # "auto" | "bwrap" | "unshare" | "none"


@dataclass(frozen=True)
class SandboxInfo:
    """What the probe found works here."""

    backend: str
    network_isolated: bool
    warning: str | None


@dataclass(frozen=True)
class SandboxedCommand:
    """A wrapped command, ready for ``subprocess``: run ``argv`` with ``env`` and ``preexec``."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    preexec: Callable[[], None] | None
    uid: int | None
    """The dedicated uid the command runs as (ge runs as root), or None: it keeps ge's uid."""


class Sandbox:
    """Builds the command line, environment and preexec hook of a sandboxed command."""

    def __init__(self, policy: SandboxPolicy) -> None:
        if policy.backend not in ("auto", *BACKENDS):
            raise GeError(
                f"unknown sandbox backend {policy.backend!r}",
                "use one of auto, bwrap, unshare, none",
            )
        self.policy = policy
        self._info: SandboxInfo | None = None
        self._is_root = os.geteuid() == 0
        self._leases: dict[Path, Lease] = {}
        self._host: HostPaths | None = None
        self._setpriv = shutil.which("setpriv")
        self._prlimit = shutil.which("prlimit")

    # ------------------------------------------------------------------ probing

    def probe(self) -> SandboxInfo:
        """Find (once, cached on this object) the strongest backend that actually runs here."""
        if self._info is not None:
            return self._info
        wanted = self.policy.backend
        candidates = BACKENDS if wanted == "auto" else (wanted,)
        failures: list[str] = []
        chosen = "none"
        for backend in candidates:
            error = self._try_backend(backend)
            if error is None:
                chosen = backend
                break
            failures.append(f"{backend}: {error}")
        else:
            if wanted != "auto":
                raise GeError(
                    f"sandbox backend {wanted!r} does not work here ({'; '.join(failures)})",
                    'set evaluator.sandbox = "auto" or install bubblewrap',
                )
        isolated = chosen in ("bwrap", "unshare") and not self.policy.network
        warning = None
        if chosen == "none" and wanted == "none":
            warning = (
                'sandbox: disabled (evaluator.sandbox = "none"); evaluated code runs WITH '
                "network access and without filesystem isolation"
            )
        elif chosen == "none":
            warning = (
                "sandbox: neither bwrap nor unshare works here"
                + (f" ({'; '.join(failures)})" if failures else "")
                + "; evaluated code runs WITH network access and without filesystem isolation"
                " (install bubblewrap)"
            )
        elif chosen == "unshare" and self.policy.readonly_root and not self._is_root:
            warning = (
                "sandbox: bwrap is unavailable; unshare isolates network and processes but "
                "the file system stays writable for evaluated code (install bubblewrap)"
            )
        self._info = SandboxInfo(backend=chosen, network_isolated=isolated, warning=warning)
        return self._info

    def _try_backend(self, backend: str) -> str | None:
        """Run ``true`` through the backend; None when it works, else a short reason."""
        if backend == "bwrap" and shutil.which("bwrap") is None:
            return "bwrap not installed"
        if backend == "unshare" and shutil.which("unshare") is None:
            return "unshare not installed"
        with tempfile.TemporaryDirectory(prefix="ge-sandbox-probe-") as tmp:
            workdir = Path(tmp)
            try:
                command = self._build(backend, ["true"], workdir, {"PATH": os.defpath}, [], [])
                result = subprocess.run(
                    command.argv,
                    env=command.env,
                    cwd=workdir,
                    preexec_fn=command.preexec,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=20,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return str(exc)
            finally:
                self.cleanup(workdir)
        if result.returncode != 0:
            text = result.stdout.decode(errors="replace").strip().splitlines()
            return (text[-1] if text else f"exit code {result.returncode}")[:200]

    # ------------------------------------------------------------------ wrapping

    def wrap(
        self,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        writable: list[Path],
        hide: Sequence[Path] = (),
    ) -> SandboxedCommand:
        """The sandboxed command that runs ``argv`` in ``workdir``.

        ``env`` must already be scrubbed (see ``scrub_env``); HOME is set to a private directory.
        ``writable`` paths stay writable; ``hide`` directories (the run directory) are replaced by
        an empty tmpfs, except ``workdir`` and ``writable`` inside them. When ge runs as root,
        ``workdir`` and ``writable`` are chowned to the evaluation's uid. Call ``cleanup(workdir)``
        after the command ended, it kills leftovers and releases the uid.
        """
        info = self.probe()
        return self._build(info.backend, argv, workdir, env, writable, hide)

    def cleanup(self, workdir: Path) -> int:
        """Kill every process left by the command started for ``workdir``; returns how many."""
        lease = self._leases.pop(Path(os.path.abspath(workdir)), None)
        return 0 if lease is None else release(lease)

    def _lease(self, workdir: Path, switch_uid: bool) -> Lease:
        taken = {lease.uid for lease in self._leases.values() if lease.uid is not None}
        lease = new_lease(self._is_root and switch_uid, taken)
        limit = self.policy.max_processes
        if limit is not None and not self._is_root:
            # RLIMIT_NPROC counts every process of the uid: leave room for the user's own.
            limit += count_processes_of(os.getuid())
        lease.processes_limit = limit
        self._leases[Path(os.path.abspath(workdir))] = lease
        return lease

    def _build(
        self,
        backend: str,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        writable: Sequence[Path],
        hide: Sequence[Path],
    ) -> SandboxedCommand:
        workdir = Path(os.path.abspath(workdir))
        writable = [Path(os.path.abspath(p)) for p in writable]
        # Outside bwrap the dedicated uid must be able to reach the directories and the
        # interpreter on the real file system; where it cannot, the command stays root.
        reachable = all(
            traversable_by_others(p.parent)
            for p in (workdir, *writable, Path(os.path.realpath(sys.executable)))
        )
        lease = self._lease(workdir, switch_uid=backend == "bwrap" or reachable)
        home = workdir / ".ge-home"
        home.mkdir(parents=True, exist_ok=True)
        for path in writable:
            path.mkdir(parents=True, exist_ok=True)
        if lease.uid is not None:
            for path in (workdir, *writable):
                chown_tree(path, lease.uid)
        out_env = self._env(env, home, lease)
        drop = self._drop_privileges_argv(lease.uid) if backend != "none" else []
        if backend == "bwrap":
            hidden = [Path(os.path.abspath(p)) for p in hide]
            request = self._bwrap_request(workdir, writable, hidden, lease)
            layout = bwrap_args(request, self._hosts())
            full = [shutil.which("bwrap") or "bwrap", *layout, "--", *drop, *argv]
        elif backend == "unshare":
            ns = ["--pid", "--fork", "--kill-child", "--mount-proc"]
            if not self.policy.network:
                ns.append("--net")
            if not self._is_root:
                ns = ["--user", "--map-root-user", *ns]
            full = [shutil.which("unshare") or "unshare", *ns, "--", *drop, *argv]
        else:
            full = list(argv)
        switch_uid = lease.uid if backend == "none" else None
        limits = self._prlimit_argv(lease.processes_limit) if switch_uid is None else None
        if limits is not None:
            # rlimits through prlimit(1) rather than a Python preexec hook: without the hook the
            # parent can vfork, which saves a few ms per evaluation in a large ge process.
            return SandboxedCommand((*limits, *full), out_env, None, lease.uid)
        preexec = self._preexec(lease.processes_limit, switch_uid)
        return SandboxedCommand(tuple(full), out_env, preexec, lease.uid)

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
        self, workdir: Path, writable: Sequence[Path], hide: Sequence[Path], lease: Lease
    ) -> BwrapRequest:
        readable = [Path(os.path.abspath(r)) for r in self.policy.readable if os.path.isdir(r)]
        return BwrapRequest(
            workdir=workdir,
            writable=writable,
            hide=hide,
            readable=readable,
            uid=lease.uid,
            network=self.policy.network,
            readonly_root=self.policy.readonly_root,
            is_root=self._is_root,
        )

    def _prlimit_argv(self, processes: int | None) -> list[str] | None:
        """`prlimit --...=N --` applying the policy's rlimits, or None without prlimit."""
        if self._prlimit is None:
            return None
        p = self.policy
        args = [self._prlimit, "--core=0"]
        if p.memory_mb is not None:
            args.append(f"--as={p.memory_mb * 1024 * 1024}")
        if p.cpu_seconds is not None:
            args.append(f"--cpu={p.cpu_seconds}")
        if p.file_size_mb is not None:
            args.append(f"--fsize={p.file_size_mb * 1024 * 1024}")
        if processes is not None:
            args.append(f"--nproc={processes}")
        return [*args, "--"]

    def _drop_privileges_argv(self, uid: int | None) -> list[str]:
        if uid is None:
            return []
        if self._setpriv:
            return [
                self._setpriv,
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        code = (
            "import os,sys;os.setgroups([]);os.setgid(int(sys.argv[1]));"
            "os.setuid(int(sys.argv[1]));os.execvp(sys.argv[2],sys.argv[2:])"
        )
        return [sys.executable, "-I", "-c", code, str(uid)]

    def _preexec(self, processes: int | None, uid: int | None) -> Callable[[], None] | None:
        p = self.policy
        limits: list[tuple[int, int]] = []
        if p.memory_mb is not None:
            limits.append((resource.RLIMIT_AS, p.memory_mb * 1024 * 1024))
        if p.cpu_seconds is not None:
            limits.append((resource.RLIMIT_CPU, p.cpu_seconds))
        if p.file_size_mb is not None:
            limits.append((resource.RLIMIT_FSIZE, p.file_size_mb * 1024 * 1024))
        if processes is not None:
            limits.append((resource.RLIMIT_NPROC, processes))
        limits.append((resource.RLIMIT_CORE, 0))
        if not limits and uid is None:
            return None

        def preexec() -> None:
            for kind, value in limits:
                _soft, hard = resource.getrlimit(kind)
                if hard != resource.RLIM_INFINITY:
                    value = min(value, hard)
                resource.setrlimit(kind, (value, value))
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return preexec


_SIGNAL_NAME = re.compile(r"^SIG[A-Z0-9]+$")


def signal_name(number: int) -> str | None:
    """``SIGKILL`` for 9, None for an unknown number."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return None
    return name if _SIGNAL_NAME.match(name) else None
