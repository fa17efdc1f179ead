"""The bwrap command line of a sandboxed command: namespaces and the file-system layout.

Read-only ``/`` of which only the system directories stay visible (``KEPT``): every other
top-level directory (``/run``, ``/var``, ``/srv``, ``/opt``, ``/home``, ...) is hidden behind an
empty read-only tmpfs, and what the command needs from them is bound back read-only (the
interpreter, ``sys.path``, ``PATH``, the seed directory, data paths). Path-named unix sockets
(a daemon's, a database's) ignore the network namespace: outside what is bound back, none is
left to connect to. Private ``/tmp`` and ``/dev/shm``, the run directory hidden behind a tmpfs,
only the variant's directory (and the explicitly writable paths) writable, credential files of
the home directories hidden. With a dedicated uid, private (0700) homes and ancestors are masked
too.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import pwd
import shlex
import stat
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from guided_evolution.evaluation.sandbox.env import CREDENTIAL_PATHS

KEPT = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "sys", "proc", "dev", "tmp")
"""The top-level directories that stay visible (read-only): software (``/usr``; ``/bin``,
``/sbin``, ``/lib*`` are links into it or hold the same), the system configuration libc, Python
and CUDA read (``/etc``: ``ld.so.cache``, ``passwd``, ``resolv.conf``, certificates, time zone)
and the kernel's view of the hardware (``/sys``: CPUs, NUMA nodes, the PCI devices of CUDA;
sysfs holds no sockets). ``/proc``, ``/dev`` and ``/tmp`` are the sandbox's own. Every other
top-level directory is masked with an empty tmpfs, and a socket directly in ``/`` with
``/dev/null``: that is where path-named unix sockets live (``/run``, ``/var/run``, ``/var/lib``,
``/srv``, ``/opt``, ``/home``, ``/tmp`` of the host)."""
STORES = ("/nix/store", "/gnu/store")
"""Read-only software stores (NixOS, Guix): bound back whole where they exist."""


def _within(path: Path, parent: Path) -> bool:
    """``fsutil.is_within`` (lexical) for the paths of a layout, by their text: a layout asks
    it thousands of times per command (every needed path against every target and mask)."""
    p, q = (
        str(path if isinstance(path, Path) else Path(path)),
        str(parent if isinstance(parent, Path) else Path(parent)),
    )
    return p == q or p.startswith(q if q.endswith("/") else q + "/")


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
        return any(_within(path, m) for m in self.masks)

    def parents(self, path: Path) -> None:
        """Parents that bwrap creates inside a tmpfs would be 0700 root: make them traversable."""
        inner = [m for m in self.masks if _within(path, m) and m != path]
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
    mask_top_level(m)
    for store in STORES:
        if os.path.isdir(store) and not os.path.islink(store):
            m.bind("--ro-bind", Path(store))
    resolv = Path(os.path.realpath("/etc/resolv.conf"))
    if req.network and m.masked(resolv) and os.path.isdir(resolv.parent):
        m.bind("--ro-bind", resolv.parent)  # DNS for evaluator.network = true
    if req.uid is not None:
        # Root's home is private (0700); mask it and bring back what the command needs.
        for home in host.homes:
            if os.path.isdir(home) and not m.masked(home):
                m.mask(home)
        m.mask_private_ancestors((*targets, *req.readable))
    bound: list[Path] = []
    for path in host.needed:  # shortest first
        if any(_within(target, path) for target in targets):
            # An ancestor of the variant's directory (a checkout holding `runs/` and `.venv`):
            # bound whole, its real (possibly 0700) mode would lock the dedicated uid out, and
            # the run directory would show. `parents()` makes the path; the needed paths inside
            # it (the venv) are bound one by one below.
            continue
        if any(_within(path, b) for b in bound):
            continue  # inside a path bound back already
        if m.masked(path) and not any(_within(mask, path) for mask in m.masks):
            m.bind("--ro-bind", path)
            bound.append(path)
    for path in sorted(req.readable, key=lambda q: len(q.parts)):
        # Bound back read-only where a mask (a top-level directory, private /tmp, a home, a 0700
        # ancestor) hid it; the run directory inside it, if any, is hidden again just below. A
        # dedicated uid could not use a directory or file closed to others: it is left hidden.
        if not os.path.exists(path) or any(_within(mask, path) for mask in m.masks):
            continue  # a whole masked directory (a data path "/srv") stays hidden
        if any(_within(path, b) for b in bound):
            continue  # inside a path bound back already
        others = 0o001 if os.path.isdir(path) else 0o004
        if m.masked(path) and (req.uid is None or os.stat(path).st_mode & others):
            m.bind("--ro-bind", path)
            bound.append(path)
    for path in req.hide:
        if os.path.isdir(path) and not _within(path, req.workdir):
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


def mask_top_level(m: _Mounts) -> None:
    """Mask every top-level directory of / but ``KEPT`` (empty tmpfs), and every socket in /."""
    with os.scandir("/") as entries:
        found = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in entries)
    for name, is_dir, is_link in found:
        path = Path("/", name)
        if is_dir and name not in KEPT:
            m.mask(path)
        elif not is_dir and not is_link:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    m.args.extend(["--ro-bind", "/dev/null", str(path)])


def named_paths(env: Mapping[str, str], pass_env: Sequence[str], argv: Sequence[str]) -> list[Path]:
    """Existing absolute paths the user named for the command, which the layout binds back
    read-only where they are hidden: in the values of the ``pass_env`` variables (``GE_DATA=
    /data/cifar-10-batches-py``; ``:``-separated lists too) and ``LD_LIBRARY_PATH``, and in the
    words of the command (``python evaluate.py --data=/srv/data``)."""
    words: list[str] = []
    for name, value in env.items():
        if name == "LD_LIBRARY_PATH" or any(fnmatch.fnmatchcase(name, p) for p in pass_env):
            words += value.split(os.pathsep)
    for arg in argv:
        try:
            words += shlex.split(arg)
        except ValueError:
            words += arg.split()
    found: list[Path] = []
    for word in words:
        for item in (word, word.partition("=")[2]):
            if not item.startswith("/"):
                continue
            for candidate in (Path(os.path.normpath(item)), Path(os.path.realpath(item))):
                if candidate != Path("/") and candidate not in found and candidate.exists():
                    found.append(candidate)
    return found


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
    raw += ld_so_dirs()  # libraries the dynamic linker knows (/opt/...: HPC-X, CUDA, MKL)
    cwd = Path.cwd()
    if not any(_within(h, cwd) for h in homes) and cwd != Path("/"):
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


def ld_so_dirs(conf: str = "/etc/ld.so.conf", depth: int = 0) -> list[str]:
    """The directories of ``ld.so.conf`` and the files it includes (``include GLOB``)."""
    out: list[str] = []
    try:
        with open(conf, encoding="utf-8", errors="replace") as fh:
            lines = [line.split("#", 1)[0].strip() for line in fh]
    except OSError:
        return out
    for line in lines:
        words = line.split(None, 1)
        if len(words) == 2 and words[0] == "include" and depth < 4:
            pattern = os.path.join(os.path.dirname(conf), words[1])  # absolute stays absolute
            for name in sorted(glob.glob(pattern)):
                out += ld_so_dirs(name, depth + 1)
        elif line.startswith("/"):
            out.append(line)
    return out


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
