"""The preloading worker of ``[evaluator] preload``: import modules once, fork one child a stage.

ge runs this file as a script (``python zygote.py SPEC``, with the interpreter of the evaluator's
own command) inside the slot's sandbox, as the ``workers.WorkerPool`` worker of that slot, and
speaks that module's JSON-line protocol with it. Stdlib only (the interpreter may not have ge
installed); ``landlock.py`` is loaded from beside this file, before anything is hidden.

SPEC (JSON): ``preload`` (module names), ``evaluate`` and ``check`` (the argv after the
interpreter: ``["evaluate.py", "--check"]`` or ``["-m", "pkg.mod", ...]``; ``check`` may be
null), ``landlock`` (confine each child), ``deny_tcp``, ``devices`` (device files a child may
use), ``keep_env`` (variables of this worker's environment a child keeps: ``PATH``, ge's token),
``private_ipc`` (this worker has an ipc namespace of its own).

Each request forks a child that, before any evaluator code runs: starts a new session; reads
stdin from /dev/null; sends stdout and stderr to the request's log FIFO; closes every other
descriptor (the protocol pipes included); takes the request's environment (``HOME`` and
``TMPDIR``: the request's io directory, new for every stage, where ``GE_METRICS`` and
``GE_FEEDBACK`` point too); restricts itself with Landlock to writing only the
variant's directory and the request's io directory (no TCP unless allowed, no signals or
abstract sockets outside itself, no ptrace of this worker); reseeds the RNGs a fresh process
would seed; then runs the script with ``runpy`` as ``__main__`` with the command's argv. After it
ends, this worker (a child subreaper) kills and reaps whatever the child left and, in its own ipc
namespace, removes every SysV IPC object the child made; then it replies.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import json
import os
import runpy
import signal
import sys
import time
import traceback

_PR_SET_CHILD_SUBREAPER = 36
_EXIT_SETUP = 125
"""A child's exit code when it could not be set up (as confine.py's)."""
_OWN_FRAMES = (__file__, "<frozen runpy>", getattr(runpy, "__file__", ""))
_IPC_RMID = 0
_SYSV = ("shm", "sem", "msg")


def _load_landlock() -> object:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "landlock.py")
    spec = importlib.util.spec_from_file_location("_ge_zygote_landlock", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reply(fd: int, message: dict) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def _children(me: int) -> list[int]:
    """Pids whose parent is ``me`` (no /proc/PID/task/TID/children on every kernel)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(name))
    return found


def kill_leftovers() -> None:
    """Kill and reap every remaining descendant (orphans come to this subreaper)."""
    me = os.getpid()
    for _ in range(200):
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return  # no child at all
        for pid in _children(me):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)


def remove_sysv_ipc(libc: object) -> None:
    """Remove every SysV shared memory segment, semaphore set and message queue (only called in
    the worker's own ipc namespace, where everything was made by an earlier child)."""
    for kind in _SYSV:
        try:
            with open(f"/proc/sysvipc/{kind}") as fh:
                ids = [int(line.split()[1]) for line in fh.readlines()[1:] if line.strip()]
        except (OSError, ValueError, IndexError):
            continue
        for ipc_id in ids:
            if kind == "sem":
                libc.semctl(ipc_id, 0, _IPC_RMID, 0)  # type: ignore[attr-defined]
            else:
                getattr(libc, f"{kind}ctl")(ipc_id, _IPC_RMID, None)


def _child_env(req: dict, spec: dict) -> dict[str, str]:
    env = {str(k): str(v) for k, v in req["env"].items()}
    for name in spec["keep_env"]:
        if name in os.environ:
            env[name] = os.environ[name]
    # The request's io directory: new for every stage and removed by ge at the next one, so no
    # file left there reaches a later variant (and no directory is added to the variant's).
    env["HOME"] = env["TMPDIR"] = os.path.dirname(req["metrics_path"])
    return env


def _prepare(req: dict, spec: dict, landlock: object, proto: int) -> None:
    """Make this fresh fork look like a new sandboxed process of the variant (module doc)."""
    os.setsid()
    os.close(proto)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(req["log_path"], os.O_WRONLY | os.O_NOFOLLOW)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
    env = _child_env(req, spec)
    if spec["landlock"]:
        plan = landlock.Plan(  # type: ignore[attr-defined]
            read=("/",),
            write=(req["workdir"], os.path.dirname(req["metrics_path"])),
            devices=tuple(spec["devices"]),
            deny_tcp=spec["deny_tcp"],
            scope=True,
        )
        landlock.restrict(plan)  # type: ignore[attr-defined]
    os.environ.clear()
    os.environ.update(env)
    os.chdir(req["workdir"])
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own stdin, /dev/null
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # computed again from TMPDIR
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # a fresh process seeds it from the OS


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


def _serve(req: dict, spec: dict, landlock: object, proto: int, libc: object) -> None:
    """Fork the child of one request, wait for it, clean up after it; reply twice."""
    vid = req.get("variant_id")
    argv = spec["check"] if req.get("args", {}).get("check") else spec["evaluate"]
    if not argv:
        _reply(proto, {"variant_id": vid, "error": "this worker has no check command"})
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = _EXIT_SETUP
        try:
            _prepare(req, spec, landlock, proto)
            code = _run(argv)
        except BaseException as exc:
            os.write(2, f"ge zygote: cannot set up the child: {exc}\n".encode(errors="replace"))
        finally:
            os._exit(code)
    _reply(proto, {"variant_id": vid, "pid": pid})
    _, status = os.waitpid(pid, 0)
    kill_leftovers()
    if spec["private_ipc"]:
        remove_sysv_ipc(libc)
    signaled = os.WIFSIGNALED(status)
    _reply(
        proto,
        {
            "variant_id": vid,
            "exit_code": None if signaled else os.waitstatus_to_exitcode(status),
            "signal": os.WTERMSIG(status) if signaled else None,
        },
    )


def main(args: list[str]) -> None:
    spec = json.loads(args[0])
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # evaluators must not import ge's modules by their bare names
    proto = os.dup(1)
    os.dup2(2, 1)  # what the preloaded modules print is not a reply
    landlock = _load_landlock()
    if spec["landlock"] and landlock.abi_version() <= 0:  # type: ignore[attr-defined]
        sys.exit("ge zygote: Landlock is unavailable here; cannot confine the forked children")
    libc = landlock._libc()  # type: ignore[attr-defined]
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    if spec["private_ipc"]:
        remove_sysv_ipc(libc)
    for name in spec["preload"]:
        importlib.import_module(name)
    _reply(proto, {"ready": True})
    for raw in iter(sys.stdin.buffer.readline, b""):
        _serve(json.loads(raw), spec, landlock, proto, libc)


if __name__ == "__main__":
    main(sys.argv[1:])
