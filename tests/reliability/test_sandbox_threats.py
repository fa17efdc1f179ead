"""The hostile-variant threat suite, run once per sandbox backend: SECURITY.md's table, measured.

Per backend, one `ge run` evaluates one variant per threat. Each payload attacks at import of
`model.py` (evaluate stage) and prints ``RESULT <threat> ESCAPED|CONTAINED|TRIED <notes>`` to its
log; where the outcome can be seen from the outside (files on the host, the test's listeners, a
process that outlived the run, what ge recorded) that is checked too. ``CONTAINED`` below is the
single source of truth: backend -> the threats it contains; the observed row must equal it
(``pytest -s`` prints both tables).

Backends: ``bwrap``; ``landlock`` (ge's own launcher, namespaces + Landlock); ``landlock-only``
and ``namespaces-only`` (the same launcher on a machine whose kernel denies namespaces,
respectively Landlock, simulated with ``tests/support/seccomp.py``); ``none``, the control, where
the attacks must get through (the payloads can see an escape). ``CONTAINED`` is for ge run as
root (CI, and how ge is often run; under ``none`` with a private (0700) run directory the variant
then runs as root too); ``SAME_UID`` is what escapes in addition when ge is not root. The payloads
are in ``threat_payloads.py``. ``fail-closed``: no backend can stop writes -> `ge run` refuses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import (
    PayloadWriter,
    assert_store_intact,
    llm_config,
    set_config,
    stray_processes,
    variants_by_payload,
)
from tests.reliability.threats import THREATS, Listeners, Scene, payload
from tests.support import seccomp
from tests.support.openai_server import serve
from tests.support.seeds import template_seed

pytestmark = pytest.mark.timeout(900)

SHARED_PARENT = "/var/tmp"
"""Where the test puts a world-writable directory and a world-connectable unix socket: outside
/tmp, like /run/dbus/system_bus_socket or /dev/log, so a read-only root alone does not hide it."""
RUN_TIMEOUT_S = 240
SECRET_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN")

GE_DEFENDED = frozenset(
    {
        "env-secrets",
        "daemon",
        "metrics-symlink",
        "metrics-hardlink",
        "metrics-fifo",
        "inherited-fds",
    }
)
"""Contained by ge itself whatever the backend: scrubbed environment, the per-evaluation token
kill, the metrics-file rules, close_fds."""
ALL = frozenset(THREATS)
CONTAINED: dict[str, frozenset[str]] = {
    "bwrap": ALL,
    "landlock": ALL,
    # No network namespace: Landlock denies TCP (ABI >= 4) and scopes abstract sockets (ABI >= 6);
    # UDP and path-named unix sockets have no Landlock rule (ge's event says "network OPEN").
    "landlock-only": ALL - {"udp", "unix-path", "unix-path-owner"},
    "namespaces-only": ALL,
    "none": GE_DEFENDED,
}
SAME_UID = frozenset({"owner-only-read", "unix-path-owner"})
"""Escape every backend when ge is not root: the evaluated code keeps ge's uid, so files and
sockets only that user may use (outside homes, /tmp and the run) stay usable (measured)."""


def expected(backend: str, row: Row | None = None) -> frozenset[str]:
    """The threats ``backend`` contains for the uid the evaluated code ran as: ge's own when ge
    is not root, or root's when no dedicated uid could reach ge's Python (its isolation event
    then says "uid 0 without capabilities" and marks secrets as not contained)."""
    same_uid = os.geteuid() != 0 or (row is not None and row.same_uid)
    return CONTAINED[backend] - (SAME_UID if same_uid else frozenset())


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


@dataclass
class Row:
    """What one backend's run showed: threat -> ESCAPED / CONTAINED (or MISSING / ERROR)."""

    backend: str
    verdicts: dict[str, str]
    notes: dict[str, str]
    seconds: float
    stderr: str
    run_dir: Path

    @property
    def same_uid(self) -> bool:
        """Whether the evaluated code kept ge's uid (no "dedicated uid" layer in the event)."""
        index = RunIndex.open(self.run_dir / "index.sqlite", readonly=True)
        try:
            events = [e.data for e in index.events("isolation")]
        finally:
            index.close()
        return (
            bool(events)
            and events[-1]["backend"] != "none"
            and ("dedicated uid" not in events[-1].get("layers", []))
        )

    @property
    def contained(self) -> frozenset[str]:
        return frozenset(t for t, v in self.verdicts.items() if v == "CONTAINED")


def ge_command(
    args: list[str], *, cwd: Path, env: dict[str, str], denials: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`python -m guided_evolution ARGS`, under the seccomp wrapper when ``denials`` are given."""
    prefix = seccomp.deny_argv(*denials) if denials else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "guided_evolution", *args],
        cwd=cwd,
        env={**os.environ, "LITELLM_OFFLINE_MODE": "true", **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


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


def _kill_strays(scene: Scene) -> None:
    """Kill what the payloads left behind (their marker or the run directory names them)."""
    for line in stray_processes([scene.stray, str(scene.run_dir)]):
        pid = int(line.split(":")[0])
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue


def run_backend(backend: str, root: Path) -> Row:
    """One `ge run` of every threat under ``backend``; the verdicts (the common promises asserted)."""
    setup = SETUPS[backend]
    skip_unless_measurable(setup)
    scene = Scene(root, Path(tempfile.mkdtemp(prefix="ge-threat-", dir=SHARED_PARENT)))
    ears = Listeners(scene.shared, f"ge-threat-{scene.tag}")
    try:
        scene.build()
        template_seed(scene.seed, generations=0, initial_population=len(THREATS))
        set_config(scene.seed, "executor", slots=2)
        set_config(scene.seed, "evaluator", sandbox=setup.sandbox, timeout_s=30)
        params = scene.params(ears)
        writer = PayloadWriter([(name, payload(name, params)) for name in THREATS])
        env = {"HOME": str(scene.home), **{n: f"{scene.secret}-{n}" for n in SECRET_NAMES}}
        started = time.monotonic()
        with serve(responder=writer) as server:
            llm_config(scene.seed, server.base_url, concurrency=2)
            before = scene.digests()
            args = ["run", str(scene.seed), "--run-dir", str(scene.run_dir), "--json"]
            proc = ge_command(args, cwd=root, env=env, denials=setup.denials)
        seconds = time.monotonic() - started
        assert proc.returncode == 0, f"ge did not finish under {backend}: {proc.stderr[-3000:]}"
        assert json.loads(proc.stdout)["finished"]
        found = variants_by_payload(scene.run_dir)
        assert set(found) == set(THREATS), f"payloads that became variants: {sorted(found)}"
        inside = _results(scene.run_dir, found)
        outside = _outside(scene, ears, before, found)
        assert_store_intact(scene.run_dir, root)
    finally:
        ears.close()
        _kill_strays(scene)
        for tmp in scene.host_tmp_files():
            (tmp / f"ge-threat-{scene.tag}").unlink()
        shutil.rmtree(scene.shared, ignore_errors=True)
    verdicts, notes = {}, {}
    for threat in THREATS:
        word, text = inside[threat]
        escaped = word == "ESCAPED" or threat in outside
        verdicts[threat] = (
            "ESCAPED" if escaped else word if word in ("MISSING", "ERROR") else "CONTAINED"
        )
        notes[threat] = "; ".join(x for x in (outside.get(threat, ""), text) if x)
    return Row(backend, verdicts, notes, seconds, proc.stderr, scene.run_dir)


def table(rows: dict[str, Row]) -> str:
    """Threats down, backends across: ``ok`` contained, ``ESC`` escaped; ``!`` not as expected."""
    names = [b for b in CONTAINED if b in rows] or list(CONTAINED)
    lines = ["threat".ljust(22) + "".join(b.rjust(17) for b in names)]
    for threat in THREATS:
        cells = []
        for backend in names:
            want = "ok" if threat in expected(backend, rows.get(backend)) else "ESC"
            got = rows[backend].verdicts[threat] if backend in rows else want
            got = {"CONTAINED": "ok", "ESCAPED": "ESC"}.get(got, got)
            cells.append((got if got == want else f"{got}! (want {want})").rjust(17))
        lines.append(threat.ljust(22) + "".join(cells))
    if rows:
        lines.append("seconds".ljust(22) + "".join(f"{rows[b].seconds:17.1f}" for b in names))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def rows() -> Iterator[dict[str, Row]]:
    """Every backend's row of this session; both tables are printed at the end (`pytest -s`)."""
    observed: dict[str, Row] = {}
    yield observed
    print("\n\nexpected containment (CONTAINED, the source of SECURITY.md's table):\n" + table({}))
    if observed:
        print("\nobserved:\n" + table(observed))


@pytest.fixture(scope="module", params=list(CONTAINED))
def row(
    request: pytest.FixtureRequest, rows: dict[str, Row], tmp_path_factory: pytest.TempPathFactory
) -> Row:
    backend = request.param
    rows[backend] = run_backend(backend, tmp_path_factory.mktemp(f"threats-{backend}"))
    return rows[backend]


def test_each_backend_contains_exactly_the_threats_of_the_table(row: Row) -> None:
    broken = {t: v for t, v in row.verdicts.items() if v not in ("ESCAPED", "CONTAINED")}
    assert not broken, f"payloads that did not report: {broken} ({[row.notes[t] for t in broken]})"
    want = expected(row.backend, row)
    escaped = sorted(want - row.contained)
    unexpected = sorted(row.contained - want)
    assert not escaped, f"{row.backend}: escaped: " + "; ".join(
        f"{t}: {row.notes[t]}" for t in escaped
    )
    assert not unexpected, (
        f"{row.backend}: contained but the table says it escapes (update CONTAINED): {unexpected}"
    )


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
