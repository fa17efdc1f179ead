"""Confine one evaluated command without bubblewrap, then exec it (ge's own sandbox launcher).

Run as ``python -I -S -c 'import confine; confine.main(...)' OPTIONS -- ARGV`` (see
``confine_backend``; stdlib only, no package imports, its .pyc reused: it starts in ~10 ms). It
applies, in this order, whatever layers ge asked for and fails (exit 125, one line on
stderr starting ``confine:``) when one of them cannot be applied, so that ge's probe can pick the
strongest set that works on this machine:

1. ``--ns``: new mount, pid, network, ipc and uts namespaces (plus a user namespace when not
   root, mapping the caller's own uid), then the file-system layout below; the command runs as
   pid 1 of the new pid namespace (when it ends, the kernel kills everything left in it), under
   a supervisor that dies with ge and turns SIGTERM into SIGKILL. Without namespaces the
   supervisor is a child subreaper that kills what the command leaves behind.
2. The layout, in bwrap's own vocabulary (``bwrap.bwrap_args`` plans it for both):
   ``--ro-bind / /`` makes the whole tree read-only, ``--tmpfs`` (``--perms``, ``--size``) masks or
   adds private size-capped directories, ``--bind``/``--ro-bind SRC DST`` brings back paths from
   the original tree, ``--dir``, ``--proc``, ``--remount-ro``, ``--chdir``.
3. ``--uid U``: the dedicated unprivileged uid (ge runs as root); ``--drop-caps``: stay uid 0
   with no capabilities at all.
4. ``--rlimit NAME=N``; ``--userns``: the command gets a user namespace of its own, mapping only
   its uid (it holds capabilities over the namespaces it creates and nothing else: the
   preloading worker uses them to give every forked evaluation a pid namespace of its own);
5. Landlock (``--ll-read``/``--ll-write``/``--ll-dev``/``--ll-hide``,
   ``--ll-deny-tcp``, ``--ll-scope``; module ``landlock`` next to this file);
6. ``--deny-keyrings``: a new, empty session keyring, then a seccomp filter that fails every
   keyring syscall (module ``syscall_filter`` next to this file). Never fatal: the report says
   what held ("keyrings denied"), and ge's isolation event with it.

``--report`` prints what was applied (one ``confine: ...`` line on stdout) before the exec.

The module is long because it must stay one stdlib-only file that starts before anything else of
ge (only ``landlock.py`` beside it): the option parser, the syscalls, the layout and the
supervisor cannot live in the package without importing it.
"""

import _signal as signal  # the C module: `signal` would import enum (+3 ms a start)
import ctypes
import os
import resource
import stat
import sys
import time
from types import ModuleType

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, AT_RECURSIVE, AT_FDCWD = 1, 0x8000, -100
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_RDONLY = 1
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_CAP_AMBIENT = 1, 24, 28, 47
PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE = 36, 4
CAP_VERSION_3, CAP_SYS_ADMIN, PR_CAP_AMBIENT_RAISE = 0x20080522, 21, 2
SIGKILL = 9
SECURE_NOROOT_AND_LOCKS = 0x3F  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED and their locks
RLIMITS = {"as": 9, "cpu": 0, "fsize": 1, "nproc": 6, "core": 4}
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXIT_SETUP = 125
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))  # fmt: skip


class ConfineError(Exception):
    """A layer could not be applied."""


class MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns")]


class Spec:
    """The parsed command line."""

    def __init__(self) -> None:
        self.ns = False
        self.net = False
        self.ops: list[tuple] = []
        self.uid: int | None = None
        self.drop_caps = False
        self.userns = False
        self.rlimits: list[tuple[int, int]] = []
        self.cgroups: list[str] = []
        self.chdir: str | None = None
        self.ll_read: list[str] = []
        self.ll_write: list[str] = []
        self.ll_dev: list[str] = []
        self.ll_hide: list[str] = []
        self.ll_tcp = False
        self.ll_scope = False
        self.landlock = False
        self.report = False
        self.keyrings = False
        self.argv: list[str] = []


_ONE_ARG = ("--tmpfs", "--dir", "--proc", "--remount-ro", "--dev")
_TWO_ARGS = ("--bind", "--ro-bind", "--dev-bind")
_VALUED = ("--uid", "--chdir", "--rlimit", "--cap-add", "--cgroup")
_LL_FLAGS = ("--ll-deny-tcp", "--ll-scope")
_IGNORED = ("--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            "--unshare-user", "--die-with-parent", "--new-session")  # fmt: skip


def parse(args: list[str]) -> Spec:
    """The options before ``--`` and the command after it."""
    spec = Spec()
    perms: str | None = None
    size: str | None = None
    i = 0
    while i < len(args):
        opt = args[i]
        if opt == "--":
            spec.argv = args[i + 1 :]
            break
        if opt in _ONE_ARG:
            spec.ops.append((opt, args[i + 1], perms, size))
            perms = size = None
            i += 2
        elif opt in _TWO_ARGS:
            spec.ops.append((opt, args[i + 1], args[i + 2]))
            i += 3
        elif opt in ("--perms", "--size"):
            perms, size = (args[i + 1], size) if opt == "--perms" else (perms, args[i + 1])
            i += 2
        elif opt in _VALUED or (opt.startswith("--ll-") and opt not in _LL_FLAGS):
            _value(spec, opt, args[i + 1])
            i += 2
        else:
            _flag(spec, opt)
            i += 1
    if not spec.argv:
        raise ConfineError("no command after --")
    return spec


def _value(spec: Spec, opt: str, value: str) -> None:
    if opt == "--uid":
        spec.uid = int(value)
    elif opt == "--chdir":
        spec.chdir = value
    elif opt == "--rlimit":
        name, _, number = value.partition("=")
        spec.rlimits.append((RLIMITS[name], int(number)))
    elif opt == "--cap-add":
        pass  # bwrap's way to let the command switch uid; confine switches itself
    elif opt == "--cgroup":
        spec.cgroups.append(value)
    else:
        spec.landlock = True
        {"--ll-read": spec.ll_read, "--ll-write": spec.ll_write, "--ll-dev": spec.ll_dev,
         "--ll-hide": spec.ll_hide}[opt].append(value)  # fmt: skip


def _flag(spec: Spec, opt: str) -> None:
    if opt == "--ns":
        spec.ns = True
    elif opt == "--unshare-net":
        spec.net = True
    elif opt == "--drop-caps":
        spec.drop_caps = True
    elif opt == "--userns":
        spec.userns = True
    elif opt == "--ll-deny-tcp":
        spec.landlock = spec.ll_tcp = True
    elif opt == "--ll-scope":
        spec.landlock = spec.ll_scope = True
    elif opt == "--deny-keyrings":
        spec.keyrings = True
    elif opt == "--report":
        spec.report = True
    elif opt not in _IGNORED:
        raise ConfineError(f"unknown option {opt}")


class Kernel:
    """The few libc calls and raw syscalls confine needs."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long

    def check(self, result: int, what: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise ConfineError(f"{what}: {os.strerror(err)}")
        return result

    def syscall(self, number: int, *args: object) -> int:
        """A raw syscall; ints go as C longs (a variadic call would truncate negative ones)."""
        values = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
        return self.libc.syscall(ctypes.c_long(number), *values)

    def unshare(self, flags: int) -> None:
        self.check(self.libc.unshare(ctypes.c_int(flags)), "unshare")

    def mount(self, source: str, target: str, fstype: str | None, flags: int, data: str) -> None:
        self.check(
            self.libc.mount(
                source.encode(), target.encode(), fstype.encode() if fstype else None,
                ctypes.c_ulong(flags), data.encode() if data else None,
            ),
            f"mount {target}",
        )  # fmt: skip

    def open_tree(self, path: str) -> int:
        flags = OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE
        return self.check(
            self.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), flags),
            f"open_tree {path}",
        )

    def move_mount(self, fd: int, target: str) -> None:
        result = self.syscall(
            SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH
        )
        self.check(result, f"move_mount {target}")

    def read_only(self, path: str, recursive: bool) -> None:
        attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
        flags = AT_RECURSIVE if recursive else 0
        result = self.syscall(
            SYS_MOUNT_SETATTR,
            AT_FDCWD,
            path.encode(),
            flags,
            ctypes.byref(attr),
            ctypes.sizeof(attr),
        )
        self.check(result, f"read-only {path}")

    def prctl(self, option: int, arg: int, arg3: int = 0) -> int:
        return self.libc.prctl(
            ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )  # fmt: skip


def enter_namespaces(kernel: Kernel, spec: Spec) -> list[str]:
    """New namespaces; a user namespace mapping our own ids when not root. Names applied."""
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    names = ["mount", "pid", "ipc", "uts"]
    if spec.net:
        flags |= CLONE_NEWNET
        names.insert(2, "network")
    if uid != 0:
        flags |= CLONE_NEWUSER
        names.append("user")
    kernel.unshare(flags)
    if uid != 0:
        map_own_ids(uid, gid)
    return names


def map_own_ids(uid: int, gid: int) -> None:
    """Map ``uid`` and ``gid`` onto themselves in the user namespace just made."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)


def own_user_namespace(kernel: Kernel) -> None:
    """A new user namespace that maps only this process's uid and gid onto themselves."""
    uid, gid = os.getuid(), os.getgid()
    kernel.unshare(CLONE_NEWUSER)
    kernel.prctl(PR_SET_DUMPABLE, 1)  # the uid switch made /proc/self root's until then
    map_own_ids(uid, gid)
    kernel.prctl(PR_SET_DUMPABLE, 0)
    # Keep CAP_SYS_ADMIN (over this namespace only) across the exec: an ambient capability.
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    kernel.check(kernel.libc.capget(header, data), "capget")
    data[2] |= 1 << CAP_SYS_ADMIN  # inheritable, low word
    kernel.check(kernel.libc.capset(header, data), "capset")
    kernel.check(kernel.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN), "ambient")


def supervise(child: int, reap: bool = False) -> None:
    """Wait for ``child``; exit as it did. Termination signals become SIGKILL of the child.

    With ``reap`` (no pid namespace to end them), this process is a child subreaper: whatever
    the command left behind (daemons, ``setsid``) is re-parented here and killed at the end."""

    def forward(_signum: int, _frame: object) -> None:
        os.kill(child, SIGKILL)

    for sig in SIGNALS:
        signal.signal(sig, forward)
    status = 0
    while True:
        try:
            _pid, status = os.waitpid(child, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            status = EXIT_SETUP << 8
        break
    if reap:
        kill_descendants()
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def kill_descendants(rounds: int = 200) -> None:
    """SIGKILL every process re-parented to this subreaper until none is left."""
    me = str(os.getpid())
    for _ in range(rounds):
        for pid in _children_of(me):
            try:  # noqa: SIM105 - contextlib would cost start-up time
                os.kill(int(pid), SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return  # no children at all: nothing can be re-parented here any more
        time.sleep(0.001)


def _children_of(parent: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1].decode() == parent:
            found.append(pid)
    return found


def _mountpoint(path: str, is_dir: bool) -> None:
    """Create the mount point (inside a tmpfs made by an earlier op) if it is missing."""
    if os.path.lexists(path):
        return
    if is_dir:
        os.makedirs(path, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))


def build_layout(kernel: Kernel, spec: Spec) -> None:
    """Apply the mount operations in order; bind sources are cloned from the original tree
    first (one clone per operation: a clone is a mount, and a mount is in one place only)."""
    kernel.mount("none", "/", None, MS_REC | MS_PRIVATE, "")
    clones: dict[tuple[int, str], int] = {}
    for i, op in enumerate(spec.ops):
        binds = op[0] in ("--bind", "--ro-bind", "--dev-bind") and op[1:] != ("/", "/")
        sources = [op[1]] if binds else []
        if op[0] == "--dev":
            sources = [f"/dev/{n}" for n in DEV_NODES if os.path.exists(f"/dev/{n}")]
        for source in sources:
            clones[(i, source)] = kernel.open_tree(source)
    read_only_last: list[str] = []
    for i, op in enumerate(spec.ops):
        kind = op[0]
        if kind == "--ro-bind" and op[1:] == ("/", "/"):
            kernel.read_only("/", recursive=True)
        elif kind in ("--bind", "--ro-bind", "--dev-bind"):
            _place(kernel, clones[(i, op[1])], op[2], read_only=kind == "--ro-bind")
        elif kind == "--tmpfs":
            _mountpoint(op[1], True)
            options = ",".join(
                x for x in (f"mode={op[2] or '0755'}", f"size={op[3]}" if op[3] else "") if x
            )
            kernel.mount("tmpfs", op[1], "tmpfs", MS_NOSUID | MS_NODEV, options)
        elif kind == "--dir" and not os.path.isdir(op[1]):  # an existing one stays as it is
            os.makedirs(op[1], exist_ok=True)
            os.chmod(op[1], int(op[2] or "0755", 8))
        elif kind == "--proc":
            kernel.mount("proc", op[1], "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "")
        elif kind == "--remount-ro":
            kernel.read_only(op[1], recursive=False)
        elif kind == "--dev":
            nodes = {source: fd for (j, source), fd in clones.items() if j == i}
            _minimal_dev(kernel, op[1], nodes)
            read_only_last.append(op[1])
    for fd in clones.values():
        os.close(fd)
    for path in read_only_last:
        kernel.read_only(path, recursive=False)


def _place(kernel: Kernel, clone: int, target: str, read_only: bool) -> None:
    _mountpoint(target, stat.S_ISDIR(os.fstat(clone).st_mode))
    kernel.move_mount(clone, target)
    if read_only:
        kernel.read_only(target, recursive=True)


def _minimal_dev(kernel: Kernel, dev: str, clones: dict[str, int]) -> None:
    """A fresh /dev (like bwrap's ``--dev``): the harmless nodes only, no sockets (/dev/log),
    no disks; GPUs are added by ``--dev-bind`` after it."""
    kernel.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=65536")
    for name in DEV_NODES:
        source = f"/dev/{name}"
        if source in clones:
            _place(kernel, clones[source], f"{dev}/{name}", read_only=False)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm", 0o755)


def drop_privileges(kernel: Kernel, spec: Spec) -> str | None:
    """Switch to the dedicated uid, or stay uid 0 with no capabilities; what was done."""
    if spec.uid is not None:
        os.setgroups([])
        os.setresgid(spec.uid, spec.uid, spec.uid)
        os.setresuid(spec.uid, spec.uid, spec.uid)
        return f"dedicated uid {spec.uid}"
    if spec.drop_caps:
        kernel.prctl(PR_CAP_AMBIENT, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
        for cap in range(64):
            if kernel.prctl(PR_CAPBSET_DROP, cap) < 0 and ctypes.get_errno() == 22:
                break  # EINVAL: past the last capability this kernel knows
        kernel.check(kernel.prctl(PR_SET_SECUREBITS, SECURE_NOROOT_AND_LOCKS), "securebits")
        return "uid 0 without capabilities"
    return None


def load_syscall_filter() -> ModuleType:
    """The ``syscall_filter`` module next to this file (imported before the layout)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import syscall_filter

    return syscall_filter


def load_landlock() -> ModuleType:
    """The ``landlock`` module next to this file (imported before the layout hides anything)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import landlock

    return landlock


def apply_landlock(landlock: ModuleType, spec: Spec) -> str:
    """Landlock as the spec asks; a short description of what the kernel applied."""
    read = list(spec.ll_read)
    if spec.ll_hide:
        read += landlock.hiding_rules(spec.ll_hide, "/")
    plan = landlock.Plan(
        read=tuple(read),
        write=tuple(spec.ll_write),
        devices=tuple(spec.ll_dev),
        deny_tcp=spec.ll_tcp,
        scope=spec.ll_scope,
    )
    try:
        done = landlock.restrict(plan)
    except landlock.LandlockError as exc:
        raise ConfineError(f"landlock: {exc}") from None
    parts = [f"landlock ABI {done['abi']}"]
    if done.get("tcp"):
        parts.append("tcp denied")
    parts += [f"{s} scoped" for s in done.get("scopes", [])]
    return ", ".join(parts)


def confine(spec: Spec) -> list[str]:
    """Apply every layer to this process (forking for the pid namespace); what was applied."""
    kernel = Kernel()
    landlock = load_landlock() if spec.landlock else None
    keyrings = load_syscall_filter() if spec.keyrings else None
    applied: list[str] = []
    for procs in spec.cgroups:  # first: everything below runs in the evaluation's cgroups
        with open(procs, "w") as fh:
            fh.write("0")
    if spec.cgroups:
        applied.append("cgroups")
    kernel.prctl(PR_SET_PDEATHSIG, SIGKILL)
    if spec.ns:
        # The command becomes pid 1 of the new pid namespace: when it ends, the kernel kills
        # everything left in it. It dies with this supervisor, which dies with ge.
        applied.append("namespaces: " + ", ".join(enter_namespaces(kernel, spec)))
        child = os.fork()
        if child:
            supervise(child)
        kernel.prctl(PR_SET_PDEATHSIG, SIGKILL)
        build_layout(kernel, spec)
        applied.append("mount layout")
    if spec.chdir:
        os.chdir(spec.chdir)
    who = drop_privileges(kernel, spec)
    if who:
        applied.append(who)
        kernel.prctl(PR_SET_PDEATHSIG, SIGKILL)  # a credential change cleared it
    for kind, value in spec.rlimits:
        soft_hard = resource.getrlimit(kind)[1]
        value = value if soft_hard == resource.RLIM_INFINITY else min(value, soft_hard)
        resource.setrlimit(kind, (value, value))
    if spec.rlimits:
        applied.append("rlimits")
    if spec.userns:  # before Landlock, which denies writing the uid map
        own_user_namespace(kernel)
        kernel.prctl(PR_SET_PDEATHSIG, SIGKILL)  # new credentials cleared it
        applied.append("own user namespace")
    if landlock is not None:
        applied.append(apply_landlock(landlock, spec))
    if keyrings is not None:  # last: the join needs keyctl, the filter then denies it
        applied.append(keyrings.deny_keyrings())
    if not spec.ns:
        # No pid namespace: stay as a confined subreaper around the command and kill what it
        # leaves behind (a daemon without ge's token, `env -i setsid ...`).
        kernel.prctl(PR_SET_CHILD_SUBREAPER, 1)
        child = os.fork()
        if child:
            supervise(child, reap=True)
        kernel.prctl(PR_SET_PDEATHSIG, SIGKILL)
        applied.append("subreaper")
    return applied


def main(args: list[str]) -> None:
    try:
        spec = parse(args)
        applied = confine(spec)
    except Exception as exc:  # any failure: one line, exit 125
        os.write(2, f"confine: {exc}\n".encode(errors="replace"))
        os._exit(EXIT_SETUP)
    if spec.report:
        os.write(1, ("confine: " + "; ".join(applied) + "\n").encode())
    exec_command(spec.argv)


def exec_command(argv: list[str]) -> None:
    """``execvp`` without its lazy imports (the stdlib may be out of reach after the uid switch)."""
    name = argv[0]
    dirs = [""] if "/" in name else os.environ.get("PATH", os.defpath).split(":")
    error: OSError = FileNotFoundError(2, "not found on PATH")
    for directory in dirs:
        try:
            os.execv(os.path.join(directory, name) if directory else name, argv)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            error = exc if not isinstance(error, PermissionError) else error
        except OSError as exc:
            error = exc
            break
    os.write(2, f"confine: cannot run {name}: {error.strerror}\n".encode())
    os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
