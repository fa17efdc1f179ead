"""The bwrap command line of a sandboxed command: namespaces and the file-system layout.

Read-only ``/``, private ``/tmp`` and ``/dev/shm``, the run directory hidden behind a tmpfs, only
the variant's directory (and the explicitly writable paths) writable, credential files of the
home directories hidden. With a dedicated uid, private (0700) homes and ancestors are masked and
what the command needs from them (the interpreter, ``sys.path``, ``PATH``) is bound back.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from guided_evolution.evaluation.sandbox_env import CREDENTIAL_PATHS
from guided_evolution.fsutil import is_within

SOCKET_DIRS = ("/run", "/var/run", "/var/tmp")
"""Masked with an empty tmpfs (bound back where the command's own paths lie inside)."""


@dataclass(frozen=True)
class HostPaths:
    """What the host offers every sandboxed command (the same for every evaluation)."""

    homes: list[Path]
    needed: list[Path]
    """Paths the interpreter and the user's tools need inside the sandbox."""

    @classmethod
    def scan(cls) -> HostPaths:
        """stat()s of the homes, sys.path and PATH; cache the result."""
        homes = _home_dirs()
        return cls(homes, _needed_paths(homes))


@dataclass(frozen=True)
class BwrapRequest:
    """One command's bwrap layout: where it runs, what it may write, read and must not see."""

    workdir: Path
    writable: Sequence[Path]
    hide: Sequence[Path]
    readable: Sequence[Path]
    uid: int | None  # the dedicated uid, or None when the command keeps ge's uid
    network: bool
    readonly_root: bool
    is_root: bool
    tmpfs_bytes: int | None = None  # size cap of the private /tmp and /dev/shm


@dataclass
class _Mounts:
    """bwrap arguments being built, and the tmpfs masks placed so far."""

    args: list[str]
    masks: list[Path] = field(default_factory=lambda: [Path("/tmp")])
    empty: list[Path] = field(default_factory=list)
    """tmpfs that must stay empty (masks, credential directories): remounted read-only."""

    def masked(self, path: Path) -> bool:
        return any(is_within(path, m) for m in self.masks)

    def parents(self, path: Path) -> None:
        """Parents that bwrap creates inside a tmpfs would be 0700 root: make them traversable."""
        inner = [m for m in self.masks if is_within(path, m) and m != path]
        if inner:
            top = max(inner, key=lambda m: len(m.parts))
            for depth in range(len(top.parts) + 1, len(path.parts)):
                self.args.extend(["--perms", "0755", "--dir", str(Path(*path.parts[:depth]))])

    def bind(self, option: str, path: Path) -> None:
        self.parents(path)
        self.args.extend([option, str(path), str(path)])

    def mask(self, path: Path) -> None:
        """Cover ``path`` with an empty, traversable tmpfs."""
        self.args.extend(["--perms", "0755", "--tmpfs", str(path)])
        self.masks.append(path)
        self.empty.append(path)

    def mask_private_ancestors(self, targets: Iterable[Path]) -> None:
        """A private (0700) ancestor would stop the dedicated uid: mask it (bound back later)."""
        for target in targets:
            if self.masked(target):
                continue
            blocked = [d for d in target.parents if not traversable_by_others(d)]
            if blocked:
                top = min(blocked, key=lambda d: len(d.parts))
                if top != Path("/"):
                    self.mask(top)

    def hide_credentials(self, homes: Iterable[Path]) -> None:
        for home in homes:
            for rel in CREDENTIAL_PATHS:
                cred = home / rel
                if os.path.isdir(cred):
                    self.args.extend(["--tmpfs", str(cred)])
                    self.empty.append(cred)
                elif os.path.lexists(cred):
                    self.args.extend(["--ro-bind", "/dev/null", str(cred)])


def _base_args(req: BwrapRequest) -> list[str]:
    """Namespaces, the root file system, /dev (with the NVIDIA devices), /proc, private /tmp."""
    args = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not req.network:
        args.append("--unshare-net")
    if not req.is_root:
        # Unprivileged: a user namespace is needed (it is what --unshare-all adds).
        args.append("--unshare-user")
    args += ["--die-with-parent", "--new-session"]
    args += ["--ro-bind" if req.readonly_root else "--bind", "/", "/"]
    args += ["--dev", "/dev"]
    for dev in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind", str(dev), str(dev)]
    size = ["--size", str(req.tmpfs_bytes)] if req.tmpfs_bytes else []
    args += ["--perms", "1777", *size, "--tmpfs", "/dev/shm", "--proc", "/proc"]
    args += ["--perms", "1777", *size, "--tmpfs", "/tmp"]
    return args


def bwrap_args(req: BwrapRequest, host: HostPaths) -> list[str]:
    """The bwrap options (before ``--``) that run a command as ``req`` describes."""
    m = _Mounts(_base_args(req))
    targets = (req.workdir, *req.writable)
    for name in SOCKET_DIRS:
        # Path-named unix sockets (D-Bus, docker.sock, a user's services) ignore the network
        # namespace and read-only mounts: hide the directories that hold them.
        if os.path.isdir(name) and not os.path.islink(name):
            m.mask(Path(name))
    resolv = Path(os.path.realpath("/etc/resolv.conf"))
    if req.network and m.masked(resolv) and os.path.isdir(resolv.parent):
        m.bind("--ro-bind", resolv.parent)  # DNS for evaluator.network = true
    if req.uid is not None:
        # Root's home is private (0700); mask it and bring back what the command needs.
        for home in host.homes:
            if os.path.isdir(home):
                m.mask(home)
        m.mask_private_ancestors((*targets, *req.readable))
    bound: list[Path] = []
    for path in host.needed:  # shortest first
        if any(is_within(target, path) for target in targets):
            # An ancestor of the variant's directory (a checkout holding `runs/` and `.venv`):
            # bound whole, its real (possibly 0700) mode would lock the dedicated uid out, and
            # the run directory would show. `parents()` makes the path; the needed paths inside
            # it (the venv) are bound one by one below.
            continue
        if any(is_within(path, b) for b in bound):
            continue  # inside a path bound back already
        if m.masked(path) and not any(is_within(mask, path) for mask in m.masks):
            m.bind("--ro-bind", path)
            bound.append(path)
    for path in req.readable:
        # Bound back read-only where a mask (private /tmp, a home, a 0700 ancestor) hid it;
        # the run directory inside it, if any, is hidden again just below.
        if os.stat(path).st_mode & 0o001 and m.masked(path):
            m.bind("--ro-bind", path)
    for path in req.hide:
        if os.path.isdir(path) and not is_within(path, req.workdir):
            m.parents(path)
            m.mask(path)
    m.hide_credentials(host.homes)
    for path in targets:
        m.bind("--bind", path)
    for mask in m.empty:
        # Empty on purpose: read-only, so that nothing can fill them (a tmpfs is RAM).
        m.args += ["--remount-ro", str(mask)]
    if req.uid is not None:
        m.args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    m.args += ["--chdir", str(req.workdir)]
    return m.args


def _home_dirs() -> list[Path]:
    homes: list[Path] = []
    with contextlib.suppress(KeyError):
        homes.append(Path(pwd.getpwuid(os.getuid()).pw_dir))
    env_home = os.environ.get("HOME")
    if env_home and Path(env_home) not in homes:
        homes.append(Path(env_home))
    return [h for h in homes if h.is_absolute() and h != Path("/")]


def _needed_paths(homes: Sequence[Path]) -> list[Path]:
    """Paths the interpreter and the user's tools need inside the sandbox."""
    raw: list[str] = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        os.path.dirname(sys.executable),
        os.path.dirname(os.path.realpath(sys.executable)),
        *sys.path,
        *os.environ.get("PATH", "").split(os.pathsep),
    ]
    for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYENV_ROOT"):
        if os.environ.get(name):
            raw.append(os.environ[name])
    cwd = Path.cwd()
    if not any(is_within(h, cwd) for h in homes) and cwd != Path("/"):
        raw.append(str(cwd))
    found: list[Path] = []
    for item in raw:
        if not item or not os.path.isabs(item):
            continue
        for candidate in (Path(os.path.normpath(item)), Path(os.path.realpath(item))):
            if os.path.exists(candidate) and candidate not in found and candidate != Path("/"):
                found.append(candidate)
    # Shortest first. Paths inside others are kept: when the outer one cannot be bound back (it
    # holds the variant's directory: an editable checkout on sys.path with `runs/` and `.venv`
    # inside), the inner ones are bound instead.
    return sorted(found, key=lambda q: len(q.parts))


def traversable_by_others(path: Path) -> bool:
    """Whether every directory from / down to ``path`` is searchable by any uid."""
    current = Path(os.path.abspath(path))
    for directory in (current, *current.parents):
        try:
            if not os.stat(directory).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True
