"""The hostile-variant threat suite, per sandbox backend and per evaluation mode: SECURITY.md's
table, measured.

Per backend and mode (``fresh``: a new sandboxed process per stage, ``preload = false`` where ge
has it; ``preload``: confined forks of one worker per slot, ``preload = ["json"]``), three
`ge run`:

* side by side (2 slots): one variant per threat of ``THREATS``. Each payload attacks at import
  of `model.py` (evaluate stage; the seeds have no check stage) and prints ``RESULT <threat>
  ESCAPED|CONTAINED|TRIED <notes>`` to its log; where the outcome can be seen from the outside
  (files on the host, the test's listeners, a process that outlived the run, the session keyring
  ge ran in, what ge printed and recorded) that is checked too. ge runs in a session keyring of its own that holds a planted
  key (``_KEYRING``).
* the ``SEQUENCES`` (1 slot each, in order): an attack, then a victim evaluated after it on the
  same slot (and a witness before them). ``worker-poison`` changes the limits, niceness,
  scheduling and I/O priority of every process above it (a preload worker passes them on);
  ``survivor-chain`` scrubs ge's marker from its environment, leaves the process group and keeps
  a regrowing chain of ~160 processes alive; ``io-jam`` does the same and keeps thousands of
  entries in its io directory; ``disk-fill`` writes past ge's disk reserve
  (``[evaluator] disk_reserve_mb``, set just below the free space). The host judges: the victim
  got the witness's limits and priorities, no process of the attack was alive while the victim
  ran (``ProcessWatch``), the victim evaluated and the run went on, the disk filler failed with
  a reason naming the disk.

``CONTAINED`` is the single source of truth: backend -> the threats it contains with fresh
processes; ``expected`` adds what a row's isolation event claims besides (a box per stage with
preload, a cgroup per evaluation) and removes what escapes with ge's uid. The observed row must
equal it (``pytest -s -n 0`` prints both tables, and why a cell differs; ``GE_THREAT_TABLE=FILE``
with ``-n 0`` writes the observed one as Markdown, SECURITY.md's form: see ``markdown``). Each
row takes ~15 s (three `ge run`): the rows are ``slow``, and xdist spreads them over its workers.

Backends: ``bwrap``; ``landlock`` (ge's own launcher, namespaces + Landlock); ``landlock-only``
and ``namespaces-only`` (the same launcher on a machine whose kernel denies namespaces,
respectively Landlock, simulated with ``tests/support/seccomp.py``); ``none``, the control, where
the attacks must get through (the payloads can see an escape). ``CONTAINED`` is for ge run as
root (CI, and how ge is often run; under ``none`` with a private (0700) run directory the variant
then runs as root too); ``SAME_UID`` is what escapes in addition when ge is not root. The payloads
are in ``threats.py``. ``fail-closed``: no backend can stop writes -> `ge run` refuses.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import fcntl
import functools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import ValidationError

from guided_evolution.config import EvaluatorConfig
from guided_evolution.runstore.records import EvaluationRecord
from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import (
    PayloadWriter,
    llm_config,
    set_config,
    stray_processes,
    variants_by_payload,
)
from tests.reliability.threats import (
    ALL_THREATS,
    DISK_MB,
    SEQUENCES,
    SYSCALLS,
    THREATS,
    Listeners,
    Scene,
    payload,
)
from tests.support import seccomp
from tests.support.openai_server import serve
from tests.support.seeds import template_seed

pytestmark = pytest.mark.timeout(900)

SHARED_PARENT = "/var/tmp"
"""Where the test puts a world-writable directory and a world-connectable unix socket: outside
/tmp, like /run/dbus/system_bus_socket or /dev/log, so a read-only root alone does not hide it."""
RUN_TIMEOUT_S = 240
SECRET_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN")
MODES = ("fresh", "preload")
PRELOAD = ["json"]
ESCAPES = ("escape-seq-metrics", "escape-seq-output")
RAW_CONTROL = re.compile("[\x07\x1b\x80-\x9f\u202e]")
"""What variant-written text must never bring to a terminal raw: BEL, ESC, C1, RLO."""

GE_DEFENDED = frozenset(
    {
        "env-secrets",
        "daemon",
        "metrics-symlink",
        "metrics-hardlink",
        "metrics-fifo",
        "inherited-fds",
        *ESCAPES,
        "disk-fill",
        "io-jam",
    }
)
"""Contained by ge itself whatever the backend: scrubbed environment, the per-evaluation token
kill, the metrics-file rules, close_fds, inert terminal output, the disk reserve, a slot's io
directory that is new for every stage."""
ALL = frozenset(ALL_THREATS)
UNIX_PATH = frozenset({"unix-path", "unix-path-owner", "unix-path-srv", "unix-path-var-lib"})
CONTAINED: dict[str, frozenset[str]] = {
    "bwrap": ALL,
    "landlock": ALL,
    # No network namespace: Landlock denies TCP (ABI >= 4) and scopes abstract sockets (ABI >= 6);
    # UDP and path-named unix sockets have no Landlock rule (ge's event says "network OPEN").
    "landlock-only": ALL - {"udp"} - UNIX_PATH,
    "namespaces-only": ALL,
    "none": GE_DEFENDED,  # the control: only what ge does itself
}
PER_STAGE_BOX = frozenset(
    {
        "parent-environ",
        "daemon-env-i",
        "signal-ge",
        "ptrace-ge",
        "umount-proc",
        "setns-net",
        "worker-poison",
        "survivor-chain",
    }
)
"""Contained in addition where each stage is a preloading worker's fork in pid, mount and ipc
namespaces of its own (the isolation event's layers say so; with preload even under ``none``,
where the machine allows user namespaces): it cannot name ge, the worker or another
evaluation, holds no capability outside, and nothing it starts outlives it."""
SUBREAPER = frozenset({"daemon-env-i"})
"""Contained in addition where a preloading worker ran the stages: a child subreaper, it kills
what a fork left behind (marker or not)."""
BOXED = ("bwrap", "landlock", "none")
"""Where preload boxes each stage here (landlock-only cannot make namespaces; namespaces-only
has no Landlock to confine the forks: both run fresh processes instead)."""
CGROUP_KILLS = frozenset({"daemon-env-i", "survivor-chain"})
"""Contained in addition where each evaluation has a cgroup of its own (its event's
``resources`` say "(cgroup"): what it leaves there is killed, marker or not."""
SAME_UID = frozenset({"owner-only-read", "unix-path-owner"})
"""Escape every backend when ge is not root: the evaluated code keeps ge's uid, so files and
sockets only that user may use (outside homes, /tmp and the run) stay usable (measured)."""
SAME_UID_SHARED_PIDS = frozenset({"worker-poison"})
"""Escape in addition where ge is in the variant's pid namespace (landlock-only) and the variant
keeps ge's uid: it can name ge and set ge's limits and priorities (proven with a no-op)."""
FAMILIES = {
    "worker-poison": ("worker-poison",),
    "survivors": ("survivor-chain", "io-jam"),
    "keyring": ("keyring",),
    "service-sockets": ("unix-path-srv", "unix-path-var-lib"),
    "terminal": ESCAPES,
    "disk": ("disk-fill",),
}
"""Threats with a test of their own (the first test takes all the others)."""


def expected(backend: str, mode: str, row: Row | None = None) -> frozenset[str]:
    """The threats ``backend`` contains in ``mode``: with the row's isolation event (the stage
    box, a cgroup per evaluation) and for the uid the evaluated code ran as: ge's own when ge is
    not root, or root's when no dedicated uid could reach ge's Python (its isolation event then
    says "uid 0 without capabilities" and marks secrets as not contained)."""
    want = CONTAINED[backend]
    boxed = row.boxed if row is not None else mode == "preload" and backend in BOXED
    if boxed:
        want |= PER_STAGE_BOX
    if row.preloaded if row is not None else mode == "preload" and backend in BOXED:
        want |= SUBREAPER
    if row is not None and row.cgroup:
        want |= CGROUP_KILLS
    if os.geteuid() != 0 or (row is not None and row.same_uid):
        shared_pids = SAME_UID_SHARED_PIDS if backend == "landlock-only" else frozenset()
        want -= SAME_UID | (frozenset() if boxed else shared_pids)
    return want


@dataclass(frozen=True)
class Setup:
    """How one backend row is run: the configured sandbox, the kernel features denied to it, and
    what the row needs from this kernel (the Landlock ABI, new namespaces)."""

    sandbox: str
    denials: tuple[str, ...] = ()
    landlock_abi: int = 0
    namespaces: bool = False


SETUPS = {
    "bwrap": Setup("bwrap"),
    "landlock": Setup("landlock", landlock_abi=6, namespaces=True),
    "landlock-only": Setup("landlock", ("namespaces",), landlock_abi=6),
    "namespaces-only": Setup("landlock", ("landlock",), namespaces=True),
    "none": Setup("none"),
}
_KERNEL_PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
flags = 0x60020000 | (0 if os.geteuid() == 0 else 0x10000000)  # NEWNS|NEWPID|NEWNET (|NEWUSER)
print(max(libc.syscall(444, None, 0, 1), 0), int(libc.unshare(flags) == 0))
"""


def skip_unless_measurable(setup: Setup) -> None:
    """Skip (saying why) a row this machine cannot show: a missing tool or kernel feature."""
    if setup.sandbox == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    if setup.denials and not seccomp.supported():
        pytest.skip(f"the seccomp simulation supports x86_64 and aarch64, not {seccomp.machine()}")
    if setup.landlock_abi or setup.namespaces:
        out = subprocess.run([sys.executable, "-c", _KERNEL_PROBE], capture_output=True, text=True)
        abi, namespaces = (int(x) for x in out.stdout.split())
        if abi < setup.landlock_abi:
            pytest.skip(f"this kernel's Landlock ABI is {abi}; the row needs {setup.landlock_abi}")
        if setup.namespaces and not namespaces:
            pytest.skip("this kernel (or container) refuses new namespaces to this user")


def mode_config(mode: str) -> dict[str, object]:
    """``[evaluator]`` keys of a mode: preload a module, or (where ge accepts it) say no preload."""
    if mode == "preload":
        return {"preload": PRELOAD}
    try:
        EvaluatorConfig.model_validate(
            {"command": "python evaluate.py", "preload": {"enabled": False}}
        )
    except ValidationError:
        return {}  # a ge without `preload = false`: fresh processes are its default
    return {"preload": False}


def disk_floor(path: Path) -> dict[str, object]:
    """``[evaluator] disk_reserve_mb`` (where ge has it) half of disk-fill's volume below the free
    space of ``path``'s file system: the variant crosses it, nothing else does."""
    fields = EvaluatorConfig.model_fields
    limits = fields["limits"].annotation.model_fields if "limits" in fields else fields
    if "disk_reserve_mb" not in limits:  # a ge before the reserve
        return {}
    free_mb = shutil.disk_usage(path).free >> 20
    return {"disk_reserve_mb": max(1, free_mb - DISK_MB // 2)}


@dataclass
class Row:
    """What one backend and mode showed: threat -> ESCAPED / CONTAINED (or MISSING / ERROR /
    SKIPPED, when this machine cannot show it)."""

    backend: str
    mode: str
    verdicts: dict[str, str]
    notes: dict[str, str]
    seconds: float
    stderr: str
    run_dir: Path

    @property
    def label(self) -> str:
        return column(self.backend, self.mode)

    @functools.cached_property
    def isolation(self) -> dict:
        """The run's (last) isolation event."""
        index = RunIndex.open(self.run_dir / "index.sqlite", readonly=True)
        try:
            events = [e.data for e in index.events("isolation")]
        finally:
            index.close()
        return events[-1] if events else {}

    @property
    def same_uid(self) -> bool:
        """Whether the evaluated code kept ge's uid (no "dedicated uid" layer in the event)."""
        event = self.isolation
        return (
            bool(event)
            and event["backend"] != "none"
            and ("dedicated uid" not in event.get("layers", []))
        )

    @property
    def boxed(self) -> bool:
        """Whether each stage ran in namespaces of its own (a preloading worker's fork)."""
        return any(re.search(r"namespace.* per stage", x) for x in self.isolation.get("layers", []))

    @functools.cached_property
    def preloaded(self) -> bool:
        """Whether a preloading worker ran the stages (its variants' logs say so)."""
        logs = sorted((self.run_dir / "logs").glob("*.log"))
        return any("via the worker of slot" in log.read_text(errors="replace") for log in logs[:3])

    @property
    def cgroup(self) -> bool:
        """Whether each evaluation had a cgroup of its own."""
        return "(cgroup" in self.isolation.get("resources", "")

    @property
    def contained(self) -> frozenset[str]:
        return frozenset(t for t, v in self.verdicts.items() if v == "CONTAINED")


def column(backend: str, mode: str) -> str:
    return backend + ("+preload" if mode == "preload" else "")


def ge_command(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    denials: tuple[str, ...] = (),
    wrapper: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m guided_evolution ARGS`, under the seccomp wrapper when ``denials`` are given
    (and under ``wrapper`` first, e.g. ``_KEYRING``)."""
    prefix = seccomp.deny_argv(*denials) if denials else []
    return subprocess.run(
        [*(wrapper or []), *prefix, sys.executable, "-m", "guided_evolution", *args],
        cwd=cwd,
        env={**os.environ, "LITELLM_OFFLINE_MODE": "true", **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


_KEYRING = r"""
import ctypes, json, struct, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
report, nums, key, secret, added = sys.argv[1:6]
S = json.loads(nums)
def keyctl(*args):
    return libc.syscall(S["keyctl"], *args)
session = keyctl(L(1), b"ge-threat-session")  # KEYCTL_JOIN_SESSION_KEYRING: a new one, named
planted = -1  # never into a session keyring of the user's own
if session > 0:
    planted = libc.syscall(S["add_key"], b"user", key.encode(), secret.encode(), L(len(secret)), L(-3))
out = {"session": session, "planted": planted, "errno": ctypes.get_errno()}
rc = subprocess.call(sys.argv[7:])
buf = ctypes.create_string_buffer(4096)
n = keyctl(L(11), L(planted), buf, L(4096))  # KEYCTL_READ
out["intact"] = n == len(secret) and buf.raw[:n] == secret.encode()
def keys(ring):  # serial -> description (type;uid;gid;perm;description) of a keyring's keys
    n = keyctl(L(11), L(ring), buf, L(4096))  # KEYCTL_READ: a keyring reads as its serials
    found = {}
    for serial in struct.unpack(f"{max(n, 0) // 4}i", buf.raw[: max(n, 0)]):
        m = keyctl(L(6), L(serial), buf, L(4096))  # KEYCTL_DESCRIBE
        found[serial] = buf.value.decode(errors="replace") if m >= 0 else "?"
    return found
out["session_keys"] = list(keys(session).values())
user = keyctl(L(0), L(-4), L(0))  # ge's user keyring, not made if it does not exist
added_there = [k for k, d in keys(user).items() if d.endswith(";" + added)] if user > 0 else []
out["user_keyring_added"] = bool(added_there)
for serial in added_there:  # KEYCTL_UNLINK: it outlives every session
    keyctl(L(9), L(serial), L(user))
json.dump(out, open(report, "w"))
sys.exit(rc)
"""
"""``python -c _KEYRING REPORT SYSCALLS KEY SECRET ADDED -- ARGV``: ARGV (ge) in a new session
keyring that holds KEY (payload SECRET); afterwards, what became of it (JSON in REPORT)."""


def keyring_wrapper(scene: Scene, report: Path) -> list[str] | None:
    nums = SYSCALLS.get(platform.machine())
    if nums is None:
        scene.unmeasured["keyring"] = f"no keyring system call numbers for {platform.machine()}"
        return None
    args = [report, json.dumps(nums), scene.key, scene.key_secret, scene.key_added, "--"]
    return [sys.executable, "-c", _KEYRING, *map(str, args)]


def _keyring_outside(scene: Scene, report: Path) -> str | None:
    """What the host sees of the keyring threat: None, or how the variant reached it."""
    if "keyring" in scene.unmeasured:
        return None
    data = json.loads(report.read_text())
    if data["planted"] <= 0 or data["session"] <= 0:
        scene.unmeasured["keyring"] = f"this kernel refuses keyrings (errno {data['errno']})"
        return None
    seen = []
    if not data["intact"]:
        seen.append("the planted key was changed")
    added = [d for d in data["session_keys"] if d.endswith(";" + scene.key_added)]
    if added:
        seen.append(f"a key was added to ge's session keyring: {added}")
    if data["user_keyring_added"]:
        seen.append("a key was added to ge's user keyring")
    return "; ".join(seen) or None


def _read(path: str) -> bytes:
    """A /proc file of up to 16 KB, in one read (a quarter of ``Path.read_text``'s CPU)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 16384)
    finally:
        os.close(fd)


class ProcessWatch:
    """Every 0.1 s, the live processes whose name (comm) starts with ``prefix``: when they were
    seen, so that survivors of an evaluation can be told from processes killed in time."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Scan while the block runs: the sequence that makes such processes (scans all along
        the row took ~1 CPU-s)."""
        self._thread.start()
        try:
            yield
        finally:
            self.stop()

    def scan(self) -> list[tuple[int, str]]:
        """(pid, name) of such processes that are alive and not being killed: SIGKILL pending
        means its sandbox is coming down (slowly on a busy machine); it runs no code again."""
        found, prefix = [], b"(" + self.prefix.encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:  # a raw read of every process's stat: 10 scans a second of ~400 processes
                stat = _read(f"/proc/{entry}/stat")
                if not stat[stat.find(b"(") :].startswith(prefix):
                    continue
                name = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
                if stat[stat.rfind(b")") + 2 :].startswith((b"Z", b"X")):
                    continue
                status = _read(f"/proc/{entry}/status").decode(errors="replace")
            except OSError:
                continue
            pending = re.findall(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$", status, re.M)
            if not any(int(mask, 16) & 1 << (signal.SIGKILL - 1) for mask in pending):
                found.append((int(entry), name))
        return found

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            started = time.time()
            self.seen += [(started, pid, name) for pid, name in self.scan()]

    def since(self, moment: float, suffix: str) -> list[int]:
        """Pids seen alive in a scan that began after ``moment``, with names ending in ``suffix``."""
        return sorted({pid for t, pid, name in self.seen if t > moment and name.endswith(suffix)})

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def kill_all(self) -> None:
        """Stop every such process (so none can fork), then kill them all."""
        deadline = time.monotonic() + 10
        stopped: set[int] = set()
        while time.monotonic() < deadline:
            fresh = [pid for pid, _ in self.scan() if pid not in stopped]
            if not fresh:
                break
            for pid in fresh:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGSTOP)
                stopped.add(pid)
        for pid in stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _results(run_dir: Path, found: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """threat -> (inside verdict, notes) from the RESULT line in its variant's log."""
    out: dict[str, tuple[str, str]] = {}
    for name, info in found.items():
        log = run_dir / "logs" / f"{info['id']}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        match = re.search(rf"^RESULT {re.escape(name)} (\w+) ?(.*)$", text, re.M)
        out[name] = (match.group(1), match.group(2)) if match else ("MISSING", text[-600:])
    return out


def _outside(
    scene: Scene, ears: Listeners, before: dict[str, str], found: dict[str, dict]
) -> dict[str, str]:
    """threat -> what the host shows of its escape (only the threats that escaped)."""
    after = scene.digests()
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    seen: dict[str, str] = {}
    for threat, root in (
        ("home-write", scene.home),
        ("seed-write", scene.seed),
        ("world-writable-write", scene.shared),
    ):
        hits = [p for p in changed if Path(p).is_relative_to(root)]
        if hits:
            seen[threat] = f"changed on the host: {hits}"
    if scene.host_tmp_files():
        seen["tmp-write"] = f"written on the host: {scene.host_tmp_files()}"
    for threat, heard in ears.heard.items():
        if heard:
            seen[threat] = f"the host's listener heard {heard[:3]}"
    for threat, suffix in (("daemon", "-daemon"), ("daemon-env-i", "-envi")):
        if stray := stray_processes([scene.stray + suffix]):
            seen[threat] = f"outlived the run: {stray}"
    for threat in ("metrics-symlink", "metrics-hardlink"):
        ev = found.get(threat, {}).get("evaluation")
        if ev is not None and scene.token in json.dumps(ev.metrics) + str(ev.failure_reason):
            seen[threat] = f"ge read the owner-only file for the variant: {ev.metrics}"
    ev = found.get("metrics-fifo", {}).get("evaluation")
    if ev is None or ev.status != "failed" or "metrics" not in (ev.failure_reason or ""):
        seen["metrics-fifo"] = f"not failed for its metrics: {ev}"
    return seen


_GE_CALLS = r"""
import json, os, sys, tempfile, traceback
from guided_evolution.cli import main
out = {}
for label, args, merged in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        saved = os.dup(1), os.dup(2)
        os.dup2(so.fileno(), 1)
        os.dup2((so if merged else se).fileno(), 2)
        sys.argv, code = ["ge", *args], 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd in (1, 2):
                os.dup2(saved[fd - 1], fd)
                os.close(saved[fd - 1])
        so.seek(0)
        se.seek(0)
        out[label] = [code, so.read().decode(errors="replace"), se.read().decode(errors="replace")]
print(json.dumps(out))
"""
"""``python -c _GE_CALLS JSON``: each ``[label, argv, merged]`` of JSON through ge's entry point,
one after the other in this one process, its stdout and stderr (``merged``: stderr into stdout,
as on a terminal) caught at the file descriptors; label -> [exit code, stdout, stderr] as JSON."""


def ge_calls(cwd: Path, calls: dict[str, tuple[list[str], bool]]) -> dict[str, list]:
    """Read-only `ge` commands in one process: one start-up (~0.4 CPU-s) instead of one each;
    each prints all it prints alone (label -> [exit code, stdout, stderr])."""
    argv = json.dumps([[label, args, merged] for label, (args, merged) in calls.items()])
    proc = subprocess.run(
        [sys.executable, "-c", _GE_CALLS, argv],
        cwd=cwd,
        env={**os.environ, "LITELLM_OFFLINE_MODE": "true"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _store_problem(run_dir: Path, doctor: list) -> str | None:
    """Why the run's store is not intact (git fsck, ``doctor``: `ge doctor --json`'s result),
    or None."""
    code, out, err = doctor
    if code != 0 or not json.loads(out or "{}").get("ok"):
        return f"`ge doctor` exited {code}: {(out + err)[-1000:]}"
    fsck = subprocess.run(
        ["git", "--git-dir", str(run_dir / "repo.git"), "fsck", "--strict"],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if fsck.returncode == 0 else f"git fsck: {(fsck.stderr + fsck.stdout)[-1000:]}"


def reads(
    scene: Scene, found: dict[str, dict], run: subprocess.CompletedProcess[str], others: list[Path]
) -> tuple[dict[str, str], dict[Path, str | None]]:
    """ge's read-only commands on the finished runs, in one process: `ge show` of the two
    escape-seq variants, `ge status` (``_terminal``) and `ge doctor` of the side-by-side run and
    of ``others`` (those with an index). What ``_terminal`` saw, run dir -> ``_store_problem``."""
    calls = {f"ge show {t}": (["show", str(scene.run_dir), found[t]["id"]], True) for t in ESCAPES}
    calls["ge status"] = (["status", str(scene.run_dir)], True)
    dirs = [scene.run_dir] + [d for d in others if (d / "index.sqlite").exists()]
    calls |= {f"ge doctor {d}": (["doctor", str(d), "--json"], False) for d in dirs}
    out = ge_calls(scene.root, calls)
    problems = {d: _store_problem(d, out.pop(f"ge doctor {d}")) for d in dirs}
    return _terminal(found, run, out), problems


def _terminal(
    found: dict[str, dict], run: subprocess.CompletedProcess[str], out: dict[str, list]
) -> dict[str, str]:
    """escape-seq-* -> where ge printed its escapes raw: `ge run` itself, and ``out``: `ge show`
    of the two variants and `ge status` (tests/inspection/test_terminal_escapes.py has the
    others), each of which must have worked (printed its variant, printed something)."""
    for label, (code, text, _) in out.items():
        what = "" if label == "ge status" else found[label.split()[-1]]["id"]
        assert code == 0 and what in text and text.strip(), f"{label} exited {code}: {text[-2000:]}"
    texts = {"ge run": run.stdout + run.stderr} | {label: v[1] for label, v in out.items()}
    seen: dict[str, list[str]] = {}
    for label, text in texts.items():
        for match in RAW_CONTROL.finditer(text):
            near = text[max(0, match.start() - 80) : match.end() + 80]
            who = [t for t, tag in zip(ESCAPES, "mo", strict=True) if f"-{tag}" in near]
            for threat in who or ESCAPES:
                if label not in seen.setdefault(threat, []):
                    seen[threat].append(label)
    return {
        t: f"raw escapes reached the terminal in: {', '.join(labels)}" for t, labels in seen.items()
    }


def _kill_strays(scene: Scene, run_dirs: Iterable[Path]) -> None:
    """Kill what the payloads left behind (their marker or the run directory names them)."""
    for line in stray_processes([scene.stray, *map(str, run_dirs)]):
        pid = int(line.split(":")[0])
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue


def threat_seed(seed: Path, variants: int) -> None:
    """The template seed with ``variants`` initial variants and no check stage: every payload
    attacks in the evaluate stage only (``evaluate_stage_only``): a check stage would only add a
    sandboxed process per variant (~1.5 of a row's ~15 CPU-s)."""
    template_seed(seed, generations=0, initial_population=variants)
    text = (seed / "ge.toml").read_text()
    text, dropped = re.subn(r"^check = .*\n", "", text, flags=re.M)
    assert dropped == 1, text
    (seed / "ge.toml").write_text(text)


def side_by_side(
    scene: Scene, ears: Listeners, setup: Setup, mode: str
) -> tuple[dict, dict, subprocess.CompletedProcess[str], dict]:
    """One `ge run` of every threat of ``THREATS`` (2 slots) in a session keyring with a planted
    key; threat -> inside (verdict, notes), threat -> what the host saw (but ge's later output,
    ``_terminal``), the run, payload -> its variant."""
    threat_seed(scene.seed, len(THREATS))
    set_config(scene.seed, "executor", slots=2)
    set_config(scene.seed, "evaluator", sandbox=setup.sandbox, timeout_s=30, **mode_config(mode))
    params = scene.params(ears)
    writer = PayloadWriter([(name, payload(name, params)) for name in THREATS])
    env = {"HOME": str(scene.home), **{n: f"{scene.secret}-{n}" for n in SECRET_NAMES}}
    report = scene.root / "keyring.json"
    wrapper = keyring_wrapper(scene, report)
    with serve(responder=writer) as server:
        llm_config(scene.seed, server.base_url, concurrency=2)
        before = scene.digests()
        args = ["run", str(scene.seed), "--run-dir", str(scene.run_dir), "--json"]
        proc = ge_command(args, cwd=scene.root, env=env, denials=setup.denials, wrapper=wrapper)
    assert proc.returncode == 0, f"ge did not finish: {proc.stderr[-3000:]}"
    assert json.loads(proc.stdout)["finished"]
    found = variants_by_payload(scene.run_dir)
    assert set(found) == set(THREATS), f"payloads that became variants: {sorted(found)}"
    inside = _results(scene.run_dir, found)
    outside = _outside(scene, ears, before, found)
    if wrapper is not None and (keyring := _keyring_outside(scene, report)):
        outside["keyring"] = keyring
    return inside, outside, proc, found


@dataclass
class Sequence:
    """What one sequence run showed: each payload's variant, RESULT and evaluation."""

    name: str
    run_dir: Path
    proc: subprocess.CompletedProcess[str]
    found: dict[str, dict]
    inside: dict[str, tuple[str, str]]
    after_run: list[tuple[int, str]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        try:
            return self.proc.returncode == 0 and bool(json.loads(self.proc.stdout)["finished"])
        except (ValueError, KeyError, TypeError):
            return False

    def why_not_finished(self) -> str:
        tail = self.proc.stderr.strip().splitlines()[-3:]
        return f"`ge run` exited {self.proc.returncode}: {' / '.join(tail)}"

    def evaluation(self, name: str) -> EvaluationRecord | None:
        return self.found.get(name, {}).get("evaluation")

    def failed_victim(self, name: str) -> str | None:
        """Why the variant ``name`` did not evaluate normally (None when it did)."""
        ev = self.evaluation(name)
        if ev is None:
            return f"{name} was never evaluated"
        if ev.status != "ok":
            return f"{name} {ev.status}: {ev.failure_reason}"
        if self.inside[name][0] == "MISSING":
            return f"{name} printed no RESULT: {self.inside[name][1][-200:]}"
        return None

    def state(self, name: str) -> dict | None:
        match = re.search(r"STATE (\{.*?\})", self.inside.get(name, ("", ""))[1])
        return json.loads(match.group(1)) if match else None

    def out_of_order(self) -> str | None:
        """The order of evaluation differs from ``SEQUENCES``' (a victim before its attack)."""
        started = [
            (ev.started_at or 0.0, n)
            for n in SEQUENCES[self.name]
            if (ev := self.evaluation(n)) is not None
        ]
        order = [n for _, n in sorted(started)]
        want = [n for n in SEQUENCES[self.name] if n in order]
        return None if order == want else f"evaluated in the order {order}, not {want}"


def sequence(
    scene: Scene, ears: Listeners, setup: Setup, mode: str, name: str, watch: ProcessWatch
) -> Sequence:
    """One `ge run` of one slot that evaluates ``SEQUENCES[name]`` in order (with a disk reserve
    just below the free space for disk-fill)."""
    base = scene.root / f"seq-{name}"
    seed, run_dir = base / "seed", base / "run"
    threat_seed(seed, len(SEQUENCES[name]))
    set_config(seed, "executor", slots=1)
    evaluator = {"sandbox": setup.sandbox, "timeout_s": 30, "max_processes": 1024}
    evaluator |= disk_floor(base) if "disk-fill" in SEQUENCES[name] else {}
    set_config(seed, "evaluator", **evaluator, **mode_config(mode))
    params = scene.params(ears, run_dir)
    writer = PayloadWriter([(n, payload(n, params)) for n in SEQUENCES[name]])
    with serve(responder=writer) as server:
        llm_config(seed, server.base_url, concurrency=1)
        args = ["run", str(seed), "--run-dir", str(run_dir), "--json"]
        proc = ge_command(args, cwd=base, env={"HOME": str(scene.home)}, denials=setup.denials)
    after = watch.scan()
    found = variants_by_payload(run_dir) if (run_dir / "index.sqlite").exists() else {}
    return Sequence(name, run_dir, proc, found, _results(run_dir, found), after)


def judge_poison(seq: Sequence, cwd: Path, store: str | None) -> dict[str, tuple[bool, str]]:
    """worker-poison and disk-fill -> (escaped, why), from what the host and the victims saw
    (``store``: why the run's store is not intact, ``_store_problem``)."""
    why = []
    if seq.inside.get("worker-poison", ("",))[0] == "ESCAPED":
        why.append("it could set ge's own limits")
    witness, victim = seq.state("witness"), seq.state("victim-poison")
    if witness and victim and witness != victim:
        changed = {k: (witness.get(k), v) for k, v in victim.items() if witness.get(k) != v}
        why.append(f"the next variant's limits and priorities changed (witness, victim): {changed}")
    why += filter(None, (seq.failed_victim("witness"), seq.failed_victim("victim-poison")))
    out = {"worker-poison": (bool(why), "; ".join(why))}
    ev, why = seq.evaluation("disk-fill"), []
    if ev is None or ev.status != "failed" or "disk" not in str(ev.failure_reason).lower():
        what = "never evaluated" if ev is None else f"{ev.status} ({ev.failure_reason})"
        floor = "" if disk_floor(cwd) else " (this ge has no [evaluator] disk_reserve_mb)"
        why.append(f"not failed for the disk: {what}{floor}")
    if problem := seq.failed_victim("victim-disk"):
        why.append(problem)
    if store:
        why.append(f"the run's store is damaged: {store[:300]}")
    out["disk-fill"] = (bool(why), "; ".join(why))
    return out


def judge_chain(seq: Sequence, watch: ProcessWatch) -> dict[str, tuple[bool, str]]:
    """survivor-chain and io-jam -> (escaped, why). io-jam's survivors are survivor-chain's
    matter: io-jam escapes when the variant after it fails or the run stops."""
    out: dict[str, tuple[bool, str]] = {}
    for threat, victim, suffix in (
        ("survivor-chain", "victim-chain", "c"),
        ("io-jam", "victim-jam", "j"),
    ):
        why, info = [], []
        ev = seq.evaluation(victim)
        # a kill takes effect at once; 0.5 s for the scans (the seeds have no check stage)
        alive = watch.since(ev.started_at + 0.5, suffix) if ev and ev.started_at else []
        if alive:
            info.append(f"{len(alive)} of its processes were seen alive while {victim} ran")
        if after := [p for p, n in seq.after_run if n.endswith(suffix)]:
            info.append(f"{len(after)} of its processes outlived the run")
        if threat == "survivor-chain":
            why, info = info, []
        seen = re.search(rf"(\d+) of {threat}", seq.inside.get(victim, ("", ""))[1])
        if seen and int(seen.group(1)):  # perhaps still dying: the host's watch decides
            info.append(f"{victim} saw {seen.group(1)} of its processes in /proc")
        if problem := seq.failed_victim(victim):
            why.append(problem)
        if threat == "io-jam" and not seq.finished:
            why.append(seq.why_not_finished())
        out[threat] = (bool(why), "; ".join(why + info))
    return out


@contextlib.contextmanager
def _disk_lock() -> Iterator[None]:
    """Held while a disk-fill sequence runs: its reserve is set just below the free space, so the
    rows that xdist runs side by side take turns (another row's filler would trip this one's)."""
    with open(Path(tempfile.gettempdir()) / "ge-tests-disk-fill.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_sequence(
    scene: Scene, ears: Listeners, setup: Setup, mode: str, name: str, watch: ProcessWatch
) -> Sequence:
    """``sequence``, with the disk lock (disk-fill) and the process watch (survivor-chain)."""
    with (
        _disk_lock() if "disk-fill" in SEQUENCES[name] else contextlib.nullcontext(),
        watch.watching() if "survivor-chain" in SEQUENCES[name] else contextlib.nullcontext(),
    ):
        return sequence(scene, ears, setup, mode, name, watch)


def judged_sequence(
    seq: Sequence, cwd: Path, watch: ProcessWatch, store: str | None
) -> tuple[dict[str, tuple[bool, str]], dict[str, tuple[str, str]]]:
    """One sequence, judged: threat -> (escaped, why), threat -> its RESULT (verdict, notes)."""
    judged = judge_poison(seq, cwd, store) if seq.name == "poison" else judge_chain(seq, watch)
    if order := seq.out_of_order():
        judged = {t: (True, f"ERROR: {order}") for t in judged}
    return judged, {t: v for t, v in seq.inside.items() if t in judged}


def measure(backend: str, mode: str, root: Path) -> Row:
    """Every threat under ``backend`` and ``mode``: the side-by-side run and the sequences."""
    setup = SETUPS[backend]
    skip_unless_measurable(setup)
    scene = Scene(root, Path(tempfile.mkdtemp(prefix="ge-threat-", dir=SHARED_PARENT)))
    scene.make_services()
    ears = Listeners(scene.shared, f"ge-threat-{scene.tag}", scene.services)
    watch = ProcessWatch(scene.chain)
    started = time.monotonic()
    run_dirs = [scene.run_dir] + [root / f"seq-{name}" / "run" for name in SEQUENCES]
    try:
        scene.build()
        inside, outside, proc, found = side_by_side(scene, ears, setup, mode)
        host: dict[str, tuple[bool, str]] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(SEQUENCES)) as pool:
            runs = {
                name: pool.submit(run_sequence, scene, ears, setup, mode, name, watch)
                for name in SEQUENCES
            }
            # The reads of the finished runs go on beside the chain (the longer sequence).
            terminal, stores = reads(scene, found, proc, [runs["poison"].result().run_dir])
            assert stores[scene.run_dir] is None, stores[scene.run_dir]
            outside |= terminal
            for future in runs.values():
                seq = future.result()
                judged, results = judged_sequence(seq, root, watch, stores.get(seq.run_dir))
                host |= judged
                inside |= results
    finally:
        watch.stop()
        ears.close()
        watch.kill_all()
        _kill_strays(scene, run_dirs)
        for tmp in scene.host_tmp_files():
            (tmp / f"ge-threat-{scene.tag}").unlink()
        shutil.rmtree(scene.shared, ignore_errors=True)
        scene.remove_services()
    verdicts, notes = {}, {}
    for threat in ALL_THREATS:
        word, text = inside.get(threat, ("MISSING", "never evaluated"))
        if threat in scene.unmeasured:
            verdicts[threat], notes[threat] = "SKIPPED", scene.unmeasured[threat]
            continue
        if threat in host:
            escaped, why = host[threat]
            broken = word in ("MISSING", "ERROR") and threat != "disk-fill"  # may be killed
            verdict = "ERROR" if why.startswith("ERROR") else "ESCAPED" if escaped else "CONTAINED"
            verdicts[threat] = word if broken and not escaped else verdict
            notes[threat] = "; ".join(x for x in (why, text) if x)
            continue
        escaped = word == "ESCAPED" or threat in outside
        verdicts[threat] = (
            "ESCAPED" if escaped else word if word in ("MISSING", "ERROR") else "CONTAINED"
        )
        notes[threat] = "; ".join(x for x in (outside.get(threat, ""), text) if x)
    return Row(
        backend, mode, verdicts, notes, time.monotonic() - started, proc.stderr, scene.run_dir
    )


def _cell(
    rows: dict[tuple[str, str], Row], backend: str, mode: str, threat: str
) -> tuple[str, str]:
    """(observed, expected) of one cell: ok, ESC, n/a or a broken payload's word."""
    row = rows.get((backend, mode))
    want = "ok" if threat in expected(backend, mode, row) else "ESC"
    if row is None:
        return want, want
    got = row.verdicts[threat]
    return {"CONTAINED": "ok", "ESCAPED": "ESC", "SKIPPED": "n/a"}.get(got, got), want


def _columns(rows: dict[tuple[str, str], Row]) -> list[tuple[str, str]]:
    every = [(b, m) for b in CONTAINED for m in MODES]
    return [c for c in every if c in rows] or every


def table(rows: dict[tuple[str, str], Row]) -> str:
    """Threats down, backends and modes across: ``ok`` contained, ``ESC`` escaped; ``!`` not as
    expected."""
    cols = _columns(rows)
    width = max(len(column(*c)) for c in cols) + 2
    lines = ["threat".ljust(20) + "".join(column(*c).rjust(width) for c in cols)]
    for threat in ALL_THREATS:
        cells = []
        for backend, mode in cols:
            got, want = _cell(rows, backend, mode, threat)
            cells.append((got if got in (want, "n/a") else f"{got}!").rjust(width))
        lines.append(threat.ljust(20) + "".join(cells))
    if rows:
        lines.append("seconds".ljust(20) + "".join(f"{rows[c].seconds:{width}.1f}" for c in cols))
    return "\n".join(lines)


def markdown(rows: dict[tuple[str, str], Row]) -> str:
    """The observed table as Markdown (SECURITY.md's form): ``ok`` contained, **ESC** escaped,
    n/a not measurable here; a cell that differs from ``CONTAINED`` says what it should be."""
    cols = _columns(rows)
    head = [
        f"Measured {datetime.date.today()} on Linux {platform.release()} ({platform.machine()}), "
        f"as {'root' if os.geteuid() == 0 else 'a normal user'}, by "
        "`tests/reliability/test_sandbox_threats.py`. `+preload`: `[evaluator] preload` (each "
        "stage a confined fork of one worker per slot), else `preload = false`. `ok` contained, "
        "**ESC** escaped, n/a not measurable here; a cell unlike the suite's `CONTAINED` says "
        "what it should be.",
        "",
        "| threat | " + " | ".join(column(*c) for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    lines = []
    for threat in ALL_THREATS:
        cells = []
        for backend, mode in cols:
            got, want = _cell(rows, backend, mode, threat)
            text = "**ESC**" if got == "ESC" else got
            cells.append(text if got in (want, "n/a") else f"{text} (want {want})")
        lines.append(f"| {threat} | " + " | ".join(cells) + " |")
    return "\n".join(head + lines) + "\n"


@pytest.fixture(scope="module")
def rows() -> Iterator[dict[tuple[str, str], Row]]:
    """Every row of this session; both tables are printed at the end (`pytest -s`), and the
    observed one is written as Markdown to ``$GE_THREAT_TABLE`` when that is set."""
    observed: dict[tuple[str, str], Row] = {}
    yield observed
    print("\n\nexpected containment (CONTAINED, the source of SECURITY.md's table):\n" + table({}))
    if observed:
        print("\nobserved:\n" + table(observed))
        failures = [
            f"{r.label} {t}: {r.notes[t][:400]}"
            for r in observed.values()
            for t in ALL_THREATS
            if _cell(observed, r.backend, r.mode, t)[0]
            not in (_cell(observed, r.backend, r.mode, t)[1], "n/a")
        ]
        if failures:
            print("\nwhy the cells marked ! differ:\n" + "\n".join(failures))
    if path := os.environ.get("GE_THREAT_TABLE"):
        Path(path).write_text(markdown(observed))


@pytest.fixture(
    scope="module",
    params=[pytest.param((b, m), marks=pytest.mark.slow) for b in CONTAINED for m in MODES],
    ids="-".join,
)
def row(
    request: pytest.FixtureRequest,
    rows: dict[tuple[str, str], Row],
    tmp_path_factory: pytest.TempPathFactory,
) -> Row:
    backend, mode = request.param
    root = tmp_path_factory.mktemp(f"threats-{backend}-{mode}")
    rows[(backend, mode)] = measure(backend, mode, root)
    return rows[(backend, mode)]


def check(row: Row, threats: Iterable[str]) -> None:
    """The row's verdicts on ``threats`` are those of the table (skip: none measurable here)."""
    threats = list(threats)
    measured = [t for t in threats if row.verdicts[t] != "SKIPPED"]
    if not measured:
        pytest.skip("; ".join(sorted({row.notes[t] for t in threats})))
    broken = {
        t: row.verdicts[t] for t in measured if row.verdicts[t] not in ("ESCAPED", "CONTAINED")
    }
    assert not broken, f"payloads that did not report: {broken} ({[row.notes[t] for t in broken]})"
    want = expected(row.backend, row.mode, row) & set(measured)
    contained = row.contained & set(measured)
    escaped, unexpected = sorted(want - contained), sorted(contained - want)
    assert not escaped, f"{row.label}: escaped: " + "; ".join(
        f"{t}: {row.notes[t]}" for t in escaped
    )
    assert not unexpected, (
        f"{row.label}: contained but the table says it escapes (update CONTAINED): {unexpected}"
    )


def test_each_backend_contains_exactly_the_threats_of_the_table(row: Row) -> None:
    others = {t for family in FAMILIES.values() for t in family}
    check(row, [t for t in ALL_THREATS if t not in others])


def test_a_variant_cannot_change_the_limits_or_priorities_of_later_variants(row: Row) -> None:
    """prlimit (RLIMIT_FSIZE, RLIMIT_AS), setpriority, sched_setscheduler and ioprio_set on the
    processes above the variant: a preload worker would pass them on to every later variant."""
    check(row, FAMILIES["worker-poison"])


def test_no_process_of_a_variant_outlives_its_evaluation(row: Row) -> None:
    """A regrowing chain of processes without ge's marker: none alive while the next variant of
    the slot runs; one that keeps its io directory full does not fail the next one nor stop the
    run."""
    check(row, FAMILIES["survivors"])


def test_the_session_keyring_ge_runs_in_is_out_of_reach(row: Row) -> None:
    check(row, FAMILIES["keyring"])


def test_unix_sockets_of_services_in_srv_and_var_lib_are_out_of_reach(row: Row) -> None:
    check(row, FAMILIES["service-sockets"])


def test_variant_text_reaches_the_terminal_inert(row: Row) -> None:
    """Metric names and values, output lines and feedback with OSC 52, title, CSI and C1 codes:
    `ge run`, `ge show` and `ge status` print none of them raw."""
    check(row, FAMILIES["terminal"])


def test_a_disk_filling_variant_fails_and_the_run_goes_on(row: Row) -> None:
    """With `[evaluator] disk_reserve_mb` just below the free space: the variant that writes past
    it fails with a reason naming the disk, the next variant evaluates, the store is intact."""
    check(row, FAMILIES["disk"])


def test_each_run_records_and_prints_its_isolation(row: Row) -> None:
    index = RunIndex.open(row.run_dir / "index.sqlite", readonly=True)
    try:
        events = [e.data for e in index.events("isolation")]
    finally:
        index.close()
    assert events, "no isolation event"
    data = events[-1]
    for key in (
        "backend",
        "layers",
        "filesystem",
        "network",
        "secrets",
        "processes",
        "resources",
        "summary",
    ):
        assert key in data, (key, data)
    assert data["backend"] == SETUPS[row.backend].sandbox, data
    assert " ".join(data["summary"].split()) in " ".join(row.stderr.split()), row.stderr[-2000:]
    layers = " | ".join(data["layers"]).lower()
    landlock, namespaces = "landlock" in layers, "namespace" in layers
    expect = {
        "landlock": (True, True),
        "landlock-only": (True, False),
        "namespaces-only": (False, True),
    }
    if row.backend in expect:
        assert (landlock, namespaces) == expect[row.backend], data["layers"]
    if row.same_uid and os.geteuid() == 0:
        # Root without a dedicated uid: root-only files are readable, and the event says so.
        assert data["contained"]["secrets"] is False, data
        assert any("secrets" in w for w in data["warnings"]), data["warnings"]


def path_without(program: str, farm: Path) -> str:
    """PATH with every directory that holds ``program`` replaced by a copy (symlinks) without it."""
    parts = []
    for n, directory in enumerate(os.environ.get("PATH", os.defpath).split(os.pathsep)):
        if directory and (Path(directory) / program).exists():
            copy = farm / f"path{n}"
            copy.mkdir(parents=True)
            for entry in os.scandir(directory):
                if entry.name != program:
                    (copy / entry.name).symlink_to(entry.path)
            directory = str(copy)
        parts.append(directory)
    return os.pathsep.join(parts)


def _refusal(tmp_path: Path, sandbox: str, denials: tuple[str, ...]) -> str:
    """`ge run` with ``sandbox`` and no bwrap on PATH: it must refuse; its stderr line."""
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=1)
    set_config(seed, "evaluator", sandbox=sandbox)
    env = {"PATH": path_without("bwrap", tmp_path / "bin")}
    proc = ge_command(
        ["run", str(seed), "--run-dir", str(tmp_path / "run")],
        cwd=tmp_path,
        env=env,
        denials=denials,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert lines[0].startswith("error:") and "sandbox" in lines[0], lines[0]
    assert "bubblewrap" in lines[0], lines[0]
    assert not (tmp_path / "run").exists(), "a refused run left a run directory"
    return lines[0]


def test_without_any_backend_that_stops_writes_ge_run_refuses(tmp_path: Path) -> None:
    if not seccomp.supported():
        pytest.skip(f"the seccomp simulation supports x86_64 and aarch64, not {seccomp.machine()}")
    line = _refusal(tmp_path, "auto", ("landlock", "namespaces"))
    for fix in ("Landlock", 'sandbox = "none"', "--no-sandbox"):
        assert fix in line, (fix, line)


def test_explicit_bwrap_without_bwrap_refuses(tmp_path: Path) -> None:
    _refusal(tmp_path, "bwrap", ())


_PROBE = """
import ctypes, errno, json, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def err(r):
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
out = {"unshare": err(libc.unshare(0x10000000)), "landlock": err(libc.syscall(444, None, 0, 1))}
out["clone3"] = err(libc.syscall(435, None, 0))
if out["unshare"] != "ok":  # raw clone(CLONE_NEWNET | SIGCHLD): refused before any child exists
    out["clone-newnet"] = err(libc.syscall(CLONE, 0x40000000 | 17, 0, 0, 0, 0))
t = threading.Thread(target=lambda: None)
t.start()
t.join()
out["sh"] = subprocess.run(["sh", "-c", "echo ok"], capture_output=True, text=True).stdout.strip()
print(json.dumps(out))
"""


def _probe(denials: tuple[str, ...]) -> dict[str, str]:
    code = _PROBE.replace("CLONE", str(seccomp.ARCHES[seccomp.machine()].clone))
    argv = [*(seccomp.deny_argv(*denials) if denials else []), sys.executable, "-c", code]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_seccomp_wrapper_denies_exactly_what_it_is_asked_to() -> None:
    if not seccomp.supported():
        pytest.skip(f"the seccomp simulation supports x86_64 and aarch64, not {seccomp.machine()}")
    plain = _probe(())
    assert plain["clone3"] != "ENOSYS" and plain["sh"] == "ok", plain
    for denials in (("namespaces",), ("landlock",), ("landlock", "unshare")):
        out = _probe(denials)
        ns, ll = bool({"namespaces", "unshare"} & set(denials)), "landlock" in denials
        want = {**plain, "sh": "ok"}  # threads, fork/exec and a shell still work
        if ns:
            want.update(unshare="EPERM", clone3="ENOSYS", **{"clone-newnet": "EPERM"})
        if ll:
            want["landlock"] = "ENOSYS"
        assert out == want, (denials, out, plain)
    if shutil.which("unshare"):
        cli = subprocess.run(
            [*seccomp.deny_argv("unshare"), "unshare", "-n", "true"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert cli.returncode != 0 and "Operation not permitted" in cli.stderr, cli.stderr
