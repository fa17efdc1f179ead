"""Linux Landlock through ctypes: confine the calling process (and what it execs) to a ``Plan``.

Stdlib only, and nothing runs at import, because the confinement launcher imports this file as a
top-level module under ``python -I -S`` (no site-packages) right before it execs the evaluated
command; the PyPI bindings (``landlock``, ``landlockpy``, ``py-landlock``) are pre-release and
would not load without site-packages. Kernel reference: Documentation/userspace-api/landlock.rst.

Landlock restricts the calling thread only: call ``restrict`` in a single-threaded process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

TYPE_CHECKING = False  # typing is not imported: it would cost milliseconds at every launch
if TYPE_CHECKING:
    from collections.abc import Sequence

ACCESS_FS: dict[str, int] = {
    "EXECUTE": 1 << 0,
    "WRITE_FILE": 1 << 1,
    "READ_FILE": 1 << 2,
    "READ_DIR": 1 << 3,
    "REMOVE_DIR": 1 << 4,
    "REMOVE_FILE": 1 << 5,
    "MAKE_CHAR": 1 << 6,
    "MAKE_DIR": 1 << 7,
    "MAKE_REG": 1 << 8,
    "MAKE_SOCK": 1 << 9,
    "MAKE_FIFO": 1 << 10,
    "MAKE_BLOCK": 1 << 11,
    "MAKE_SYM": 1 << 12,
    "REFER": 1 << 13,  # ABI 2
    "TRUNCATE": 1 << 14,  # ABI 3
    "IOCTL_DEV": 1 << 15,  # ABI 5
}
"""Filesystem access rights (``LANDLOCK_ACCESS_FS_*``) by name."""

_FS_SINCE_ABI = ((1, (1 << 13) - 1), (2, 1 << 13), (3, 1 << 14), (5, 1 << 15))
_FILE_RIGHTS = sum(
    ACCESS_FS[n] for n in ("EXECUTE", "WRITE_FILE", "READ_FILE", "TRUNCATE", "IOCTL_DEV")
)
"""The only rights a rule on a non-directory may carry (else the kernel answers EINVAL)."""
_READ = ACCESS_FS["READ_FILE"] | ACCESS_FS["READ_DIR"] | ACCESS_FS["EXECUTE"]
_NOT_WRITE = ACCESS_FS["MAKE_BLOCK"] | ACCESS_FS["MAKE_CHAR"]
_DEVICE = ACCESS_FS["READ_FILE"] | ACCESS_FS["WRITE_FILE"] | ACCESS_FS["IOCTL_DEV"]
_NET_TCP = 1 | 2  # LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP (ABI 4)
_SCOPES = ((1, "abstract unix sockets"), (2, "signals"))  # LANDLOCK_SCOPE_* (ABI 6)

# Syscall numbers of the generic table, shared by x86_64, aarch64 and every other arch but alpha.
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38


class LandlockError(Exception):
    """Landlock is unavailable, or one of its syscalls failed."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class Plan:
    """What a confined process may do; everything else on the filesystem is denied.

    ``read``: paths granted read + execute. ``write``: directories granted every handled right
    but making block and character devices. ``devices``: device files granted read, write (and
    ioctl). ``deny_tcp``: deny every TCP bind and connect. ``scope``: no signals to, and no
    abstract unix socket connections with, processes outside the sandbox. Immutable.
    """

    __slots__ = ("deny_tcp", "devices", "read", "scope", "write")
    read: tuple[str, ...]
    write: tuple[str, ...]
    devices: tuple[str, ...]
    deny_tcp: bool
    scope: bool

    def __init__(
        self,
        read: Sequence[str] = (),
        write: Sequence[str] = (),
        devices: Sequence[str] = (),
        deny_tcp: bool = False,
        scope: bool = False,
    ) -> None:
        for name, paths in (("read", read), ("write", write), ("devices", devices)):
            object.__setattr__(self, name, tuple(os.fspath(p) for p in paths))
        object.__setattr__(self, "deny_tcp", bool(deny_tcp))
        object.__setattr__(self, "scope", bool(scope))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Plan is immutable: cannot set {name}")

    def _fields(self) -> tuple[object, ...]:
        return (self.read, self.write, self.devices, self.deny_tcp, self.scope)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Plan(read={!r}, write={!r}, devices={!r}, deny_tcp={!r}, scope={!r})".format(
            *self._fields()
        )


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.syscall.argtypes = (ctypes.c_long,) * 5  # number + 4 arguments; unused ones must be 0
    libc.prctl.restype = ctypes.c_int
    libc.prctl.argtypes = (ctypes.c_int,) + (ctypes.c_ulong,) * 4
    return libc


def _checked(what: str, result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise LandlockError(f"{what} failed: {os.strerror(code)} ({errno.errorcode.get(code)})")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI (0 when Landlock is missing or disabled: ENOSYS, EOPNOTSUPP, or any OSError)."""
    try:
        abi = _libc().syscall(_SYS_CREATE_RULESET, 0, 0, _CREATE_RULESET_VERSION, 0)
    except (OSError, AttributeError):
        return 0
    return max(abi, 0)


def _fs_rights(abi: int) -> int:
    """Every filesystem right the given ABI knows (and so handles: unlisted operations are denied)."""
    return sum(bits for since, bits in _FS_SINCE_ABI if abi >= since)


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> bool:
    """Grant ``rights`` beneath ``path``; False when it does not exist."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise LandlockError(f"cannot open {path} for a Landlock rule: {e.strerror}") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        if rights:
            attr = _PathBeneathAttr(rights, fd)
            result = libc.syscall(
                _SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.addressof(attr), 0
            )
            _checked(f"landlock_add_rule({path})", result)
    finally:
        os.close(fd)
    return True


class Ruleset:
    """A Landlock ruleset built in steps, then enforced on the calling process: ``Ruleset(plan)``
    opens it and adds the plan's rules, ``grant`` adds more (paths known only later), ``enforce``
    restricts the caller (one ``restrict`` in two halves: the preloading worker builds a stage's
    static rules before the stage's request comes, and adds its directories when it does).
    Raises LandlockError when Landlock is unavailable or a syscall fails."""

    def __init__(self, plan: Plan) -> None:
        abi = abi_version()
        if abi <= 0:
            raise LandlockError("Landlock is unavailable: the kernel lacks it or it is not in lsm=")
        self.abi = abi
        self.handled = _fs_rights(abi)
        self.scopes = [name for _, name in _SCOPES if plan.scope and abi >= 6]
        self.tcp = plan.deny_tcp and abi >= 4
        attr = _RulesetAttr(
            self.handled,
            _NET_TCP if self.tcp else 0,
            sum(bit for bit, _ in _SCOPES) if self.scopes else 0,
        )
        size = 8 if abi < 4 else 16 if abi < 6 else 24  # what this kernel's ruleset_attr holds
        self.libc = _libc()
        self.fd = _checked(
            "landlock_create_ruleset",
            self.libc.syscall(_SYS_CREATE_RULESET, ctypes.addressof(attr), size, 0, 0),
        )
        self.missing: list[str] = []
        try:
            self.grant(read=plan.read, write=plan.write, devices=plan.devices)
        except BaseException:
            self.close()
            raise

    def grant(
        self, read: Sequence[str] = (), write: Sequence[str] = (), devices: Sequence[str] = ()
    ) -> None:
        """Add rules as ``Plan`` grants them; paths that do not exist go to ``missing``."""
        for paths, rights in ((read, _READ), (write, ~_NOT_WRITE), (devices, _DEVICE)):
            for path in paths:
                if not _add_rule(self.libc, self.fd, os.fspath(path), rights & self.handled):
                    self.missing.append(os.fspath(path))

    def enforce(self) -> dict:
        """Set no_new_privs and landlock_restrict_self the calling process (and what it execs);
        what was applied (see ``restrict``). The ruleset is closed either way."""
        try:
            _checked(
                "prctl(PR_SET_NO_NEW_PRIVS)", self.libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            )
            _checked(
                "landlock_restrict_self", self.libc.syscall(_SYS_RESTRICT_SELF, self.fd, 0, 0, 0)
            )
        finally:
            self.close()
        return {
            "abi": self.abi,
            "filesystem": True,
            "tcp": self.tcp,
            "scopes": self.scopes,
            "ioctl": self.abi >= 5,
            "missing": self.missing,
        }

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def restrict(plan: Plan) -> dict:
    """Build the ruleset, set no_new_privs, landlock_restrict_self the calling process (and what it execs).

    Returns what was applied: ``abi``, ``filesystem`` (True), ``tcp`` (TCP denied), ``scopes``
    (names), ``ioctl`` (device ioctls restricted), ``missing`` (paths skipped as nonexistent).
    Raises LandlockError when Landlock is unavailable or a syscall fails.
    """
    return Ruleset(plan).enforce()


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def _entries(directory: str, skip: str, hidden: list[str]) -> list[str]:
    """The entries of ``directory`` but ``skip``, less symlinks whose target would expose a hidden path."""
    try:
        with os.scandir(directory) as it:
            names = [e.path for e in it if e.path != skip]
    except OSError:
        return []  # unreadable: grant none of it (the hidden path stays hidden)
    out = []
    for path in names:
        if os.path.islink(path):  # a rule on a symlink lands on its target
            target = os.path.realpath(path)
            if any(_within(target, h) or _within(h, target) for h in hidden):
                continue
        out.append(path)
    return out


def hiding_rules(hidden: Sequence[str], root: str = "/") -> list[str]:
    """Paths to grant read so that everything under root is readable EXCEPT the hidden paths.

    Starts from ``[root]``; each hidden path's granted ancestor is replaced by its entries but the
    one leading to the hidden path, recursively down to it. Hidden paths that do not exist or lie
    outside root are ignored; one equal to (or above) root yields []. Symlinked entries pointing at,
    into or above a hidden path are left out. A bind mount of a hidden directory is not detected.
    """
    root = os.path.realpath(root)
    secret = [os.path.realpath(h) for h in hidden if os.path.lexists(h)]
    secret = [h for h in secret if _within(h, root) or _within(root, h)]
    if any(_within(root, h) for h in secret):
        return []
    granted = {root}
    for h in secret:
        granted = {g for g in granted if not _within(g, h)}
        above = [g for g in granted if _within(h, g)]
        if not above:
            continue  # already hidden, inside another hidden path
        current = above[0]
        granted.discard(current)
        for part in h[len(current) :].strip("/").split("/"):
            step = os.path.join(current, part)
            granted.update(_entries(current, step, secret))
            current = step
    return sorted(granted)
