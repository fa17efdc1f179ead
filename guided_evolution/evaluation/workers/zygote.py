"""The preloading worker of ``[evaluator.preload]``: import modules once, fork one child a stage.

ge runs this file as a script (``python zygote.py SPEC``, with the interpreter of the evaluator's
own command) inside the slot's sandbox, as the ``workers.WorkerPool`` worker of that slot, and
speaks that module's JSON-line protocol with it. Stdlib only (the interpreter may not have ge
installed); ``landlock.py`` is loaded from beside this file, before anything is hidden.

SPEC (JSON): ``preload`` (module names), ``evaluate`` and ``check`` (the argv after the
interpreter: ``["evaluate.py", "--check"]`` or ``["-m", "pkg.mod", ...]``; ``check`` may be
null), ``landlock`` (confine each child), ``deny_tcp``, ``devices`` (device files a child may
use), ``keep_env`` (variables of this worker's environment a child keeps: ``PATH``, ge's token),
``private_tmp`` (the slot has a mount namespace of its own: each child gets its own ``/tmp``,
``/dev/shm`` and ``/proc``), ``tmpfs_bytes`` (their size cap, or null).

**Each child is a box of its own** (the boundary between variants): the worker holds a user
namespace of its own (``confine.py --userns``, or made here at start under bwrap), and forks every
child as **pid 1 of a new pid namespace**, in a new ipc and mount namespace. The child therefore
cannot name the worker or any other evaluation (no ``prlimit``, ``setpriority``,
``sched_setscheduler``, ``ioprio_set``, ``kill`` or ``ptrace`` of a pid it cannot see), its SysV
and POSIX IPC objects die with it, and **when it ends the kernel kills every process it started**
(a pid namespace's processes cannot outlive its init, whatever they do to their environment or
session). No process tree is walked and no environment marker trusted.

**Each box is made ahead** (``prefork``): once a stage has ended and the worker has replied, it
forks the next stage's box, which sets up every layer that does not depend on the request and
then waits for it on a pipe; a request only pays for what does depend on it. No evaluated code
runs before its request, each box serves one stage, and a box still waiting when the worker
ends is killed with it.

Before any evaluator code runs, the child: starts a new session; takes private ``/tmp``,
``/dev/shm`` and ``/proc`` (``private_tmp``); reads stdin from /dev/null; closes every other
descriptor (the protocol pipes included); drops every capability (with no_new_privs) — all of
this ahead — then, once the request came, sends stdout and stderr to the request's log FIFO;
takes the request's environment (``HOME`` and ``TMPDIR``: the request's io directory, new for
every stage, where ``GE_METRICS`` and ``GE_FEEDBACK`` point too); restricts itself with Landlock
(its ruleset built ahead, the request's two directories added) to writing only the variant's
directory, the io directory and its private temp directories (no TCP unless allowed, no signals
or abstract sockets outside itself, no ptrace); reseeds the RNGs a fresh process would seed;
then runs the script with ``runpy`` as ``__main__`` with the command's argv. The worker freezes
what it imported (``gc.freeze``): a stage's garbage collections skip those objects and leave
their pages shared.

While a child runs, the worker also reads control lines (``{"signal": N}``: ge's timeout) and
forwards the signal to the child's init, which takes the whole namespace with it. After each child
the worker checks its own rlimits, priority, scheduling, CPU affinity and I/O class against the
ones it started with and says ``broken`` in its end reply if any changed (it is then replaced).

The module is long because it must stay one stdlib-only file that the evaluator's own interpreter
runs (ge may not be installed there): the protocol, the namespaces and the confinement of each
fork cannot live in ge's package.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import pkgutil  # noqa: F401 - runpy.run_path imports it: once here, not in every stage
import platform
import resource
import runpy
import select
import signal
import sys
import traceback
from collections.abc import Callable

_EXIT_SETUP = 125
"""A child's exit code when it could not be set up (as confine.py's)."""
_OWN_FRAMES = (__file__, "<frozen runpy>", getattr(runpy, "__file__", ""))
CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP = 1, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 38, 47
_CAP_VERSION_3 = 0x20080522
_IOPRIO_GET = {"x86_64": 252, "aarch64": 31}.get(platform.machine())
_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
_KEYCTL_JOIN_SESSION_KEYRING = 1
_RLIMITS = tuple(getattr(resource, n) for n in sorted(dir(resource)) if n.startswith("RLIMIT_"))


class SetupError(Exception):
    """A layer of the per-child boundary could not be applied."""


def _load_landlock() -> object:
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(os.path.dirname(here), "sandbox", "landlock.py")
    spec = importlib.util.spec_from_file_location("_ge_zygote_landlock", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reply(fd: int, message: dict) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


class Kernel:
    """The libc calls the boundary needs."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long

    def check(self, result: int, what: str) -> None:
        if result < 0:
            raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")

    def unshare(self, flags: int, what: str) -> None:
        self.check(self.libc.unshare(ctypes.c_int(flags)), what)

    def mount(self, source: str, target: str, fstype: str | None, flags: int, data: str) -> None:
        result = self.libc.mount(
            source.encode(), target.encode(), fstype.encode() if fstype else None,
            ctypes.c_ulong(flags), data.encode() if data else None,
        )  # fmt: skip
        self.check(result, f"mount {target}")

    def prctl(self, option: int, arg: int) -> int:
        return self.libc.prctl(
            ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )  # fmt: skip

    def drop_capabilities(self) -> None:
        """No capability left, in any set, for good (``no_new_privs``: exec grants none)."""
        self.check(self.prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
        self.prctl(PR_CAP_AMBIENT, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
        for cap in range(64):
            if self.prctl(PR_CAPBSET_DROP, cap) < 0 and ctypes.get_errno() == 22:
                break  # EINVAL: past the last capability this kernel knows
        header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()
        self.check(self.libc.capset(header, data), "capset")

    def ioprio(self) -> int | None:
        if _IOPRIO_GET is None:
            return None
        return int(
            self.libc.syscall(ctypes.c_long(_IOPRIO_GET), ctypes.c_long(1), ctypes.c_long(0))
        )

    def fresh_session_keyring(self) -> None:
        """An empty anonymous session keyring (a denied keyctl leaves none reachable anyway)."""
        if _KEYCTL is not None:
            self.libc.syscall(
                ctypes.c_long(_KEYCTL), ctypes.c_long(_KEYCTL_JOIN_SESSION_KEYRING), None
            )


def _mounts_beneath(path: str) -> bool:
    """Whether a mount point lies strictly beneath ``path`` (``/proc/self/mountinfo``)."""
    prefix = path.rstrip("/").encode() + b"/"
    with open("/proc/self/mountinfo", "rb") as fh:
        return any(line.split()[4].startswith(prefix) for line in fh)


def own_user_namespace(kernel: Kernel) -> None:
    """Hold capabilities over new namespaces: a user namespace mapping only our own ids (made
    here under bwrap; ge's own sandbox made it with ``confine.py --userns``)."""
    if _has_cap_sys_admin():
        return  # ge's own sandbox made it (confine --userns)
    uid, gid = os.getuid(), os.getgid()
    kernel.unshare(CLONE_NEWUSER, "a user namespace for the forked evaluations")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        try:
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
        except OSError as exc:
            raise SetupError(f"mapping the worker's ids: {exc.strerror}") from None


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 21 & 1)
    return False


class Boxes:
    """Forks, each the init of a new pid namespace. This process must be the init of a pid
    namespace owned by its own user namespace (``become_init``): it may then point its next
    child into a new pid namespace and back into its own after every fork."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def spawn(self, child: Callable[[], int]) -> int:
        """Run ``child()`` in a fork that is pid 1 of a new pid namespace; its pid."""
        self.kernel.unshare(CLONE_NEWPID, "a pid namespace for the evaluation")
        pid = os.fork()
        if pid == 0:
            code = _EXIT_SETUP
            try:
                code = child()
            except BaseException as exc:
                os.write(2, f"ge zygote: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(code)
        self.kernel.check(
            self.kernel.libc.setns(ctypes.c_int(self.own), ctypes.c_int(CLONE_NEWPID)),
            "back to the worker's pid namespace",
        )
        return pid


def become_init(kernel: Kernel) -> None:
    """Continue as pid 1 of a new pid namespace owned by our user namespace (the worker's own
    children may then be pointed into new namespaces again and again); the original process
    stays as its parent and exits as it does."""
    kernel.unshare(CLONE_NEWPID, "a pid namespace for the worker")
    pid = os.fork()
    if pid == 0:
        kernel.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _n, _f: os.kill(pid, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def attributes(kernel: Kernel) -> dict[str, object]:
    """What a forked child must never change about its worker."""
    return {
        "rlimits": [resource.getrlimit(r) for r in _RLIMITS],
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "scheduler": (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority),
        "affinity": sorted(os.sched_getaffinity(0)),
        "ioprio": kernel.ioprio(),
        "umask": _umask(),
    }


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _child_env(req: dict, spec: dict) -> dict[str, str]:
    env = {str(k): str(v) for k, v in req["env"].items()}
    for name in spec["keep_env"]:
        if name in os.environ:
            env[name] = os.environ[name]
    # The request's io directory: new for every stage and removed by ge at the next one, so no
    # file left there reaches a later variant (and no directory is added to the variant's).
    env["HOME"] = env["TMPDIR"] = os.path.dirname(req["metrics_path"])
    return env


class Box:
    """One stage's box, forked ahead of its request (``prefork``): its init's pid, the pipe its
    evaluator reads the request from, and the pipe its init reports the evaluator's wait status
    on."""

    def __init__(self, pid: int, request_fd: int, status_fd: int) -> None:
        self.pid, self.request_fd, self.status_fd = pid, request_fd, status_fd

    def discard(self) -> None:
        """Kill an unused box (the worker ends) and reap it."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)
        for fd in (self.request_fd, self.status_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def prefork(spec: dict, landlock: object, boxes: Boxes) -> Box:
    """The next stage's box, made while the worker waits for its request: its init has its
    namespaces and private mounts, its evaluator (pid 2) every layer that does not depend on the
    request, and waits for it. No evaluated code runs before the request comes."""
    sys.stdout.flush()
    sys.stderr.flush()
    request_r, request_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        pid = boxes.spawn(lambda: _box_init(spec, landlock, boxes.kernel, request_r, status_w))
    except BaseException:
        for fd in (request_w, status_r):
            os.close(fd)
        raise
    finally:
        os.close(request_r)
        os.close(status_w)
    return Box(pid, request_w, status_r)


def _box_init(spec: dict, landlock: object, kernel: Kernel, request_fd: int, status_fd: int) -> int:
    """The init (pid 1) of one evaluation's pid namespace: make its mount and ipc namespaces,
    fork the evaluator (pid 2, so that it dies of its own signals as a fresh process does), pass
    it ge's SIGTERM, reap whatever it leaves, and write its wait status to ``status_fd``. When
    this process ends, the kernel kills whatever is left in the namespace."""
    os.setsid()
    kernel.unshare(CLONE_NEWNS | CLONE_NEWIPC, "new mount and ipc namespaces")
    private = spec["private"]  # new for this stage
    if spec["private_tmp"]:
        kernel.mount("none", "/", None, MS_REC | MS_PRIVATE, "")
        size = f",size={spec['tmpfs_bytes']}" if spec.get("tmpfs_bytes") else ""
        for path in private:
            kernel.mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" + size)
        # /proc of this namespace only (refused where the slot's /proc is partly covered)
        with contextlib.suppress(SetupError):
            kernel.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "")
    evaluator = os.fork()
    if evaluator == 0:
        code = _EXIT_SETUP
        try:
            os.close(status_fd)
            code = _evaluator(spec, landlock, kernel, request_fd)
        except BaseException as exc:
            os.write(2, f"ge zygote: cannot set up the child: {exc}\n".encode(errors="replace"))
        finally:
            os._exit(code)
    signal.signal(signal.SIGTERM, lambda _n, _f: os.kill(evaluator, signal.SIGTERM))
    os.closerange(0, status_fd)
    os.closerange(status_fd + 1, _max_fd())
    kernel.drop_capabilities()
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        if pid == evaluator:
            os.write(status_fd, str(status).encode())
            return 0


def _max_fd() -> int:
    return os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536


def _evaluator(spec: dict, landlock: object, kernel: Kernel, request_fd: int) -> int:
    """The evaluator (pid 2): every layer that does not depend on the request, then (once it
    came) the rest, then the stage's script; its exit code (module doc). A layer that cannot be
    applied ahead is said in the request's log, as one applied then would be."""
    try:
        ruleset, failure = _ahead(spec, landlock, kernel, request_fd), None
    except Exception as exc:  # said in the log, once the request names it
        ruleset, failure = None, exc
    req = _read_request(request_fd)  # blocks until the stage's request
    log = os.open(req["log_path"], os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    if failure is not None:
        raise failure
    if ruleset is not None:
        ruleset.grant(write=(req["workdir"], os.path.dirname(req["metrics_path"])))
        ruleset.enforce()
    env = _child_env(req, spec)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(req["workdir"])
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own stdin, /dev/null
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # computed again from TMPDIR
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # a fresh process seeds it from the OS
    return _run(spec["check"] if req.get("args", {}).get("check") else spec["evaluate"])


def _ahead(spec: dict, landlock: object, kernel: Kernel, request_fd: int) -> object | None:
    """What the evaluator sets up before its request: no signal handler of the worker's, stdin
    from /dev/null, no descriptor but the request pipe and the worker's stderr, a fresh session
    keyring, the OOM killer's first pick, its Landlock ruleset's static rules (returned: the
    request adds its directories), no capability."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(3, request_fd)
    os.closerange(request_fd + 1, _max_fd())
    kernel.fresh_session_keyring()
    # The kernel's first pick when the slot runs out of memory (not the worker).
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")
    ruleset = None
    if spec["landlock"]:
        ruleset = landlock.Ruleset(  # type: ignore[attr-defined]
            landlock.Plan(  # type: ignore[attr-defined]
                read=("/",),
                write=tuple(spec["private"]),
                devices=tuple(spec["devices"]),
                deny_tcp=spec["deny_tcp"],
                scope=True,
            )
        )
    kernel.drop_capabilities()
    return ruleset


def _read_request(fd: int) -> dict:
    """The stage's request: everything the worker writes to ``fd`` before closing it."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    if not chunks:
        raise SetupError("no request (the worker ended)")
    return json.loads(b"".join(chunks))


def _run(argv: list[str]) -> int:
    """Run the evaluator's script or module as ``__main__``; its exit code."""
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = (exc.code or 0) & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        tb = exc.__traceback__  # from the evaluator's first frame on, as a fresh process shows
        while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FRAMES:
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    return code


class Requests:
    """ge's JSON lines on stdin, read without buffering (so that ``select`` sees what is left)."""

    def __init__(self) -> None:
        self.pending = b""
        self.closed = False

    def fill(self) -> None:
        data = os.read(0, 65536)
        if data:
            self.pending += data
        else:
            self.closed = True

    def take(self) -> dict | None:
        """The next complete line as an object, or None."""
        line, sep, rest = self.pending.partition(b"\n")
        if not sep:
            return None
        self.pending = rest
        return json.loads(line)

    def next(self) -> dict | None:
        """Block until the next request; None when ge closed stdin."""
        while True:
            message = self.take()
            if message is not None or self.closed:
                return message
            self.fill()


def _wait_child(pid: int, requests: Requests) -> int:
    """Wait for the child, forwarding ge's ``{"signal": N}`` lines to it; its wait status."""
    try:
        watch = os.pidfd_open(pid)
    except (AttributeError, OSError):
        watch = None
    try:
        while True:
            ready, _, _ = select.select(
                [0] if watch is None else [0, watch], [], [], None if watch is not None else 0.01
            )
            if watch is None or watch in ready:
                done, status = os.waitpid(pid, 0 if watch is not None else os.WNOHANG)
                if done:
                    return status
            if 0 in ready:
                requests.fill()
                if requests.closed:  # ge is gone: so is this evaluation
                    os.kill(pid, signal.SIGKILL)
                while (message := requests.take()) is not None:
                    number = message.get("signal")
                    if isinstance(number, int) and number in (signal.SIGTERM, signal.SIGKILL):
                        os.kill(pid, number)
    finally:
        if watch is not None:
            os.close(watch)


def _serve(req: dict, box: Box, proto: int, requests: Requests) -> dict:
    """Hand one request to its box (forked ahead, ``prefork``), wait for it; reply twice. The
    end reply: the evaluator's exit code or signal."""
    vid = req.get("variant_id")
    data = memoryview(json.dumps(req).encode())
    with contextlib.suppress(OSError):  # a box that could not be set up: its end says so
        while data:
            data = data[os.write(box.request_fd, data) :]
    os.close(box.request_fd)
    _reply(proto, {"variant_id": vid, "pid": box.pid})
    status = _wait_child(box.pid, requests)
    with os.fdopen(box.status_fd, "rb") as fh:
        reported = fh.read(32)
    if reported.strip().isdigit():  # the evaluator's own status, as its init saw it
        status = int(reported)
    signaled = os.WIFSIGNALED(status)
    return {
        "variant_id": vid,
        "exit_code": None if signaled else os.waitstatus_to_exitcode(status),
        "signal": os.WTERMSIG(status) if signaled else None,
    }


def _trial(spec: dict, boxes: Boxes) -> None:
    """Make sure every layer of the per-child boundary works here before saying ready."""

    def child() -> int:
        if os.getpid() != 1:
            raise SetupError("the child is not the init of its own pid namespace")
        boxes.kernel.unshare(CLONE_NEWNS | CLONE_NEWIPC, "new mount and ipc namespaces")
        if spec["private_tmp"]:
            boxes.kernel.mount("none", "/", None, MS_REC | MS_PRIVATE, "")
            boxes.kernel.mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        boxes.kernel.drop_capabilities()
        return 0

    for _ in range(2):  # twice: the second proves the way back into the worker's namespace
        _, status = os.waitpid(boxes.spawn(child), 0)
        if status != 0:
            raise SetupError("a forked evaluation cannot get namespaces of its own here")


def main(args: list[str]) -> None:
    spec = json.loads(args[0])
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # evaluators must not import ge's modules by their bare names
    proto = os.dup(1)
    os.dup2(2, 1)  # what the preloaded modules print is not a reply
    landlock = _load_landlock()
    if spec["landlock"] and landlock.abi_version() <= 0:  # type: ignore[attr-defined]
        sys.exit("ge zygote: Landlock is unavailable here; cannot confine the forked children")
    # Each stage's private /tmp and /dev/shm: not where the slot bound the run's or the
    # interpreter's directories beneath them (those stay read-only, as the slot's). The slot's
    # mounts never change: looked up once here, not at every stage.
    spec["private"] = [
        p for p in ("/tmp", "/dev/shm") if spec["private_tmp"] and not _mounts_beneath(p)
    ]
    kernel = Kernel()
    try:
        own_user_namespace(kernel)
        become_init(kernel)
        boxes = Boxes(kernel)
        _trial(spec, boxes)
    except (SetupError, OSError) as exc:
        sys.exit(f"ge zygote: cannot box each evaluation: {exc}")
    gc.disable()  # imports leave no garbage worth a collection (torch: ~1M objects, 0.3 s)
    try:
        for name in spec["preload"]:
            importlib.import_module(name)
    finally:
        gc.enable()
    # Objects the worker made are never collected in a stage: a stage's collections skip them
    # (and leave their pages shared with the worker).
    gc.collect()
    gc.freeze()
    before = attributes(kernel)
    _reply(proto, {"ready": True})
    requests = Requests()
    box: Box | None = prefork(spec, landlock, boxes)
    try:
        while (req := requests.next()) is not None:
            if "signal" in req:
                continue  # a late signal for a child that already ended
            if req.get("args", {}).get("check") and not spec["check"]:
                error = "this worker has no check command"
                _reply(proto, {"variant_id": req.get("variant_id"), "error": error})
                continue
            assert box is not None
            end, box = _serve(req, box, proto, requests), None
            after = attributes(kernel)
            changed = [name for name in before if before[name] != after[name]]
            if changed:
                end["broken"] = "an evaluation changed the worker's " + ", ".join(changed)
            _reply(proto, end)
            if changed:
                return
            box = prefork(spec, landlock, boxes)  # while ge takes this stage's results
    finally:
        if box is not None:
            box.discard()


if __name__ == "__main__":
    main(sys.argv[1:])
