"""The command line of ge's own sandbox (``sandbox = "landlock"``): ``confine.py`` and its options.

``confine.py`` runs under ge's interpreter with ``-I -S`` and applies, in one process start, what
the probe found works here (a ``ConfineMode``): namespaces with bwrap's file-system layout
(planned by ``bwrap.bwrap_args``), the dedicated uid, rlimits and Landlock; in every mode
a new session keyring and a seccomp filter denying the keyring syscalls (``syscall_filter``). Without
namespaces, Landlock alone hides the run directory and the homes from reads (``--ll-hide``) and
the command gets a private temp directory inside its own directory (``TMPDIR``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.evaluation.sandbox.bwrap import BwrapRequest, HostPaths, bwrap_args
from guided_evolution.evaluation.sandbox.env import CREDENTIAL_PATHS
from guided_evolution.evaluation.sandbox.landlock import hiding_rules
from guided_evolution.fsutil import is_within

CONFINE = Path(__file__).with_name("confine.py")
_BOOT = "import sys;sys.path.insert(0,{directory!r});import confine;confine.main(sys.argv[1:])"
"""Imported, not run as a script: its compiled .pyc is reused (compiling it costs ~4 ms a start)."""
PRIVATE_TMP = ".ge-tmp"
"""Private temp directory inside the variant's directory when there is no mount namespace."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


@dataclass(frozen=True)
class ConfineMode:
    """Which layers of ge's own sandbox to apply (the probe picks the strongest that runs)."""

    namespaces: bool
    landlock: bool

    @property
    def label(self) -> str:
        return " + ".join(
            n for n, on in (("namespaces", self.namespaces), ("Landlock", self.landlock)) if on
        )


MODES = (ConfineMode(True, True), ConfineMode(True, False), ConfineMode(False, True))
"""Strongest first: namespaces need root or user namespaces, Landlock a 5.13+ kernel."""


@dataclass(frozen=True)
class RLimits:
    """The rlimits of one command (None: unlimited)."""

    memory_bytes: int | None
    cpu_seconds: int | None
    file_bytes: int | None
    processes: int | None

    def options(self) -> list[str]:
        values = (
            ("as", self.memory_bytes),
            ("cpu", self.cpu_seconds),
            ("fsize", self.file_bytes),
            ("nproc", self.processes),
            ("core", 0),
        )
        out: list[str] = []
        for name, value in values:
            if value is not None:
                out += ["--rlimit", f"{name}={value}"]
        return out


def confine_argv(
    mode: ConfineMode,
    req: BwrapRequest,
    host: HostPaths,
    limits: RLimits,
    cgroups: Sequence[str] = (),
    *,
    report: bool = False,
    userns: bool = False,
) -> list[str]:
    """``python -I -S -c BOOT OPTIONS --`` for one command (append the command's argv);
    ``cgroups``: the ``cgroup.procs`` files the command joins first; ``userns``: the command gets
    a user namespace of its own (``confine.py --userns``)."""
    args = [sys.executable, "-I", "-S", "-c", _BOOT.format(directory=str(CONFINE.parent))]
    if report:
        args.append("--report")
    for procs in cgroups:
        args += ["--cgroup", procs]
    if mode.namespaces:
        args += ["--ns", *bwrap_args(req, host)]
    else:
        args += ["--chdir", str(req.workdir)]
    if req.uid is not None:
        args += ["--uid", str(req.uid)]
    elif req.is_root:
        args.append("--drop-caps")
    args += limits.options()
    if userns:
        args.append("--userns")
    if mode.landlock:
        args += _landlock_options(mode, req, host)
    # Every mode: a new session keyring and no keyring syscalls (syscall_filter.py).
    args.append("--deny-keyrings")
    return [*args, "--"]


def _landlock_options(mode: ConfineMode, req: BwrapRequest, host: HostPaths) -> list[str]:
    writable = [req.workdir, *req.writable]
    if mode.namespaces:
        # The layout already hides what must not be read and gives a private /tmp.
        args = ["--ll-read", "/"]
        writable += [Path("/tmp"), Path("/dev/shm")]
    else:
        args = []
        hidden = hidden_without_namespaces(req, host)
        for path in hidden:
            args += ["--ll-hide", str(path)]
        for path in readable_without_namespaces(req, host, hidden):
            args += ["--ll-read", str(path)]
    for path in writable:
        args += ["--ll-write", str(path)]
    devices = [*DEVICES, *(str(p) for p in sorted(Path("/dev").glob("nvidia*")))]
    for device in devices:
        if os.path.exists(device):
            args += ["--ll-dev", device]
    if not req.network:
        args.append("--ll-deny-tcp")
    return [*args, "--ll-scope"]


def hidden_without_namespaces(req: BwrapRequest, host: HostPaths) -> list[Path]:
    """What Landlock alone keeps from reads: the run directory, the homes (or, when the command
    keeps ge's own uid and home, their credential files)."""
    hidden = [p for p in req.hide if os.path.exists(p)]
    for home in host.homes:
        if req.uid is not None or req.is_root:
            hidden.append(home)
        else:
            hidden += [home / rel for rel in CREDENTIAL_PATHS if os.path.lexists(home / rel)]
    return [p for p in hidden if p not in req.readable]


def readable_without_namespaces(
    req: BwrapRequest, host: HostPaths, hidden: Sequence[Path]
) -> list[Path]:
    """Parts of the ``hidden`` paths the command needs back: the interpreter, sys.path, the seed.

    A wanted path that holds a hidden one (a checkout in the home holding the run directory) is
    granted all but that hidden path: Landlock rules only add, so granting the whole checkout
    would make the run directory readable again."""
    out: list[Path] = []
    for path in (*host.needed, *req.readable):
        if not any(is_within(path, h) for h in hidden):
            continue
        inner = [str(h) for h in hidden if h != path and is_within(h, path)]
        parts = [Path(g) for g in hiding_rules(inner, str(path))] if inner else [path]
        out += [g for g in parts if g not in out]
    return out


def private_tmp(workdir: Path) -> Path:
    """The command's own temp directory when there is no private /tmp (``TMPDIR``)."""
    return workdir / PRIVATE_TMP
