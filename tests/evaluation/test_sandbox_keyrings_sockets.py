"""Kernel keyrings and path-named unix sockets are out of reach of sandboxed code.

Each case runs ``_HELPER`` in a process of its own (the keyring case first joins a session
keyring of its own and plants keys there and in its user keyring, as an SSH login with
``pam_keyinit`` or a Kerberos ``KEYRING:`` cache would), optionally on a simulated machine
without namespaces or without Landlock (``tests/support/seccomp.py``) or as an unprivileged user,
and evaluates code through ``Sandbox.wrap`` as ge does. Every backend and mode this machine
offers is covered; the ones it lacks are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from guided_evolution.evaluation.sandbox.bwrap import traversable_by_others
from guided_evolution.evaluation.sandbox.syscall_filter import supported
from tests.support import seccomp

REPO = Path(__file__).resolve().parents[2]

# (backend, seccomp denials, the confine mode the probe must pick; None for bwrap)
CASES = {
    "bwrap": ("bwrap", (), None),
    "landlock": ("landlock", (), "namespaces + Landlock"),
    "landlock-only": ("landlock", ("namespaces",), "Landlock"),
    "namespaces-only": ("landlock", ("landlock",), "namespaces"),
}

_HELPER = r"""
import ctypes, json, os, subprocess, sys
from pathlib import Path
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.sandbox.env import scrub_env
from guided_evolution.evaluation.sandbox.syscall_filter import KEYRING_SYSCALLS, machine

cfg = json.loads(sys.argv[1])
ADD_KEY, REQUEST_KEY, KEYCTL = KEYRING_SYSCALLS[machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sys_(*args):
    return libc.syscall(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args))

SESSION, USER = -3, -4
keys = {}

def unplant():
    while (key := sys_(KEYCTL, 10, USER, b"user", b"ge-planted", 0)) > 0:  # SEARCH
        assert sys_(KEYCTL, 9, key, USER) == 0  # UNLINK

try:
    if cfg["plant"]:
        # A login session as pam_keyinit makes it: a session keyring of its own that links the
        # user keyring; a key in each.
        assert sys_(KEYCTL, 1, None) > 0  # JOIN_SESSION_KEYRING, a new anonymous one
        session = sys_(KEYCTL, 0, SESSION, 0)
        unplant()  # what a failed earlier run planted in the user keyring (it outlives runs)
        assert sys_(KEYCTL, 8, USER, SESSION) == 0  # LINK
        for ring, name in ((SESSION, "ge-test-secret"), (USER, "ge-test-user-secret")):
            key = sys_(ADD_KEY, b"user", name.encode(), b"s3cret", 6, ring)
            assert key > 0, ctypes.get_errno()
            keys[name] = key
            # Every permission to everyone: only the sandbox may stand in the way.
            assert sys_(KEYCTL, 5, key, 0x3F3F3F3F) == 0, ctypes.get_errno()  # SETPERM
        assert sys_(KEYCTL, 5, session, 0x3F3F3F3F) == 0
        keys["session"] = session

    box = Sandbox(SandboxPolicy(backend=cfg["backend"], pass_env=("GE_DATA",)))
    info = box.probe()
    out = {"mode": info.mode.label if info.mode else None, "layers": list(info.isolation.layers),
           "text": info.isolation.text, "contained": info.isolation.contained,
           "warning": info.warning, "runs": []}
    for i, script in enumerate(cfg["scripts"]):
        work = Path(cfg["tmp"]) / f"v{i}"
        work.mkdir()
        os.chmod(cfg["tmp"], 0o755)
        env = {**scrub_env(os.environ), **cfg["env"],
               "KEYS": json.dumps(keys), "KEYRING_SYSCALLS": json.dumps([ADD_KEY, REQUEST_KEY, KEYCTL])}
        command = box.wrap([sys.executable, "-c", script], work, env, [])
        result = subprocess.run(command.argv, env=command.env, cwd=work, pass_fds=command.pass_fds,
                                capture_output=True, text=True, timeout=60)
        box.cleanup(work)
        out["runs"].append({"code": result.returncode, "stdout": result.stdout, "stderr": result.stderr[-2000:]})
    if cfg["plant"]:
        buf = ctypes.create_string_buffer(64)
        n = sys_(KEYCTL, 11, keys["ge-test-secret"], buf, 64)  # READ
        out["secret_after"] = buf.raw[: max(n, 0)].decode()
        out["planted_outside"] = {
            str(ring): sys_(KEYCTL, 10, ring, b"user", b"ge-planted", 0) > 0  # SEARCH
            for ring in (SESSION, USER)
        }
finally:
    if "ge-test-user-secret" in keys:  # the user keyring outlives this process: UNLINK
        sys_(KEYCTL, 9, keys["ge-test-user-secret"], USER)
        unplant()
print("RESULT " + json.dumps(out))
"""

_ATTACK = r"""
import ctypes, errno, json, os
ADD_KEY, REQUEST_KEY, KEYCTL = json.loads(os.environ["KEYRING_SYSCALLS"])
keys = json.loads(os.environ["KEYS"])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys_(*args):
    r = libc.syscall(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args))
    return r if r >= 0 else errno.errorcode[ctypes.get_errno()]
buf = ctypes.create_string_buffer(64)
secret, user_secret = keys["ge-test-secret"], keys["ge-test-user-secret"]
out = {
    "read": sys_(KEYCTL, 11, secret, buf, 64),
    "read_user": sys_(KEYCTL, 11, user_secret, buf, 64),
    "update": sys_(KEYCTL, 2, secret, b"pwned", 5),
    "link": sys_(KEYCTL, 8, secret, -3),
    "search": sys_(KEYCTL, 10, -3, b"user", b"ge-test-secret", 0),
    "search_user": sys_(KEYCTL, 10, -4, b"user", b"ge-test-user-secret", 0),
    "request": sys_(REQUEST_KEY, b"user", b"ge-test-secret", None, 0),
    "session_id": sys_(KEYCTL, 0, -3, 0),
    "add_session": sys_(ADD_KEY, b"user", b"ge-planted", b"x", 1, -3),
    "add_user": sys_(ADD_KEY, b"user", b"ge-planted", b"x", 1, -4),
    "got": buf.value.decode(errors="replace"),
}
try:
    with open("/proc/keys") as fh:
        out["proc_keys"] = "ge-test" in fh.read()
except OSError as exc:
    out["proc_keys"] = type(exc).__name__
print(json.dumps(out))
"""

_LOOK = r"""
import ctypes, errno, json, os
ADD_KEY, REQUEST_KEY, KEYCTL = json.loads(os.environ["KEYRING_SYSCALLS"])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
found = [libc.syscall(ctypes.c_long(KEYCTL), ctypes.c_long(10), ctypes.c_long(ring), b"user",
                      b"ge-planted", ctypes.c_long(0)) > 0 for ring in (-3, -4)]
print(json.dumps({"planted_seen": any(found)}))
"""

_CONNECT = r"""
import json, os, socket
out = {}
for path in json.loads(os.environ["SOCKETS"]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        out[path] = "connected"
    except OSError as exc:
        out[path] = type(exc).__name__
    finally:
        s.close()
data = os.environ["GE_DATA"]
out["data"] = open(os.path.join(data, "batch.bin")).read() if os.path.isdir(data) else "hidden"
print(json.dumps(out))
"""


def _skip_unless_available(case: str) -> None:
    backend, denials, _ = CASES[case]
    if backend == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    if denials and not seccomp.supported():
        pytest.skip(f"the seccomp simulation supports x86_64 and aarch64, not {seccomp.machine()}")


def _helper(case: str, cfg: dict, tmp: Path, as_user: bool = False) -> dict:
    """Run the helper for ``case``; its RESULT (skips where the backend does not work here)."""
    backend, denials, _ = CASES[case]
    python, env = sys.executable, {**os.environ}
    prefix: list[str] = []
    if as_user:
        python = next(
            (p for p in (sys.executable, "/usr/bin/python3")
             if traversable_by_others(Path(os.path.realpath(p)))),
            "",
        )  # fmt: skip
        if os.geteuid() != 0 or not python or shutil.which("setpriv") is None:
            pytest.skip(
                "needs root (to become an unprivileged user), setpriv and a Python it can run"
            )
        prefix = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(tmp)}
        os.chown(tmp, 65534, 65534)
    argv = [*prefix, *(seccomp.deny_argv(*denials) if denials else []), python, "-c", _HELPER]
    cfg = {"backend": backend, "tmp": str(tmp / "work"), **cfg}
    (tmp / "work").mkdir()
    if as_user:
        os.chown(tmp / "work", 65534, 65534)
    proc = subprocess.run(
        [*argv, json.dumps(cfg)], env=env, cwd=tmp, capture_output=True, text=True, timeout=120
    )
    if "does not work here" in proc.stderr or "No module named" in proc.stderr:
        pytest.skip(f"sandbox {case} does not work here: {proc.stderr.strip().splitlines()[-1]}")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    if CASES[case][2] is not None:
        assert result["mode"] == CASES[case][2], result["mode"]
    return result


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A temp directory every uid can traverse (pytest's tmp_path is private to ge's user)."""
    base = Path(tempfile.mkdtemp(prefix="ge-reach-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    ("case", "as_user"),
    [*((c, False) for c in CASES), ("landlock", True), ("bwrap", True)],
)
def test_keys_of_ge_s_session_and_user_keyrings_are_out_of_reach(
    case: str, as_user: bool, tmp_dir: Path
) -> None:
    """The variant can neither read, update, link, search nor request the keys of the session
    keyring ge was started in, nor its user keyring; it cannot plant a key either (a channel to
    the next evaluation), and the keys are intact afterwards."""
    _skip_unless_available(case)
    if not supported():
        pytest.skip(f"no keyring filter for {seccomp.machine()}: only a new session keyring")
    result = _helper(
        case, {"plant": True, "scripts": [_ATTACK, _LOOK], "env": {}}, tmp_dir, as_user
    )
    attack, look = result["runs"]
    assert attack["code"] == 0, attack["stderr"]
    got = json.loads(attack["stdout"])
    for call in ("read", "read_user", "update", "link", "search", "search_user", "request"):
        assert got[call] in ("EPERM", "EACCES", "ENOKEY"), (call, got)
    assert got["got"] == "", got
    if case == "bwrap":  # bwrap hides /proc/keys; ge's own sandbox cannot (see SECURITY.md)
        assert got["proc_keys"] is not True, got
    for ring in ("add_session", "add_user"):
        assert not isinstance(got[ring], int), (ring, got)  # planting a key fails too
    assert json.loads(look["stdout"]) == {"planted_seen": False}, look
    assert result["secret_after"] == "s3cret"
    assert result["planted_outside"] == {"-3": False, "-4": False}
    assert "keyrings denied" in result["layers"], result["layers"]
    assert "kernel keyrings unreachable" in result["text"]["secrets"], result["text"]["secrets"]


@pytest.fixture
def sockets() -> Iterator[tuple[list[str], Path]]:
    """Unix socket servers listening under /srv and /var/lib (world-connectable: only the sandbox
    may stand in the way), and a data directory under /srv with a socket inside."""
    made: list[Path] = []
    servers: list[socket.socket] = []
    paths: list[str] = []
    try:
        for parent in (Path("/srv"), Path("/var/lib")):
            try:
                parent.mkdir(exist_ok=True)
                made.append(Path(tempfile.mkdtemp(prefix="ge-test-sock-", dir=parent)))
            except OSError as exc:
                pytest.skip(f"cannot make a directory in {parent}: {exc}")
            os.chmod(made[-1], 0o755)
        data = made[0] / "data"
        data.mkdir(mode=0o755)
        (data / "batch.bin").write_text("cifar")
        os.chmod(data / "batch.bin", 0o644)
        for path in (made[0] / "db.sock", made[1] / "daemon.sock", data / "inside-data.sock"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
            os.chmod(path, 0o777)
            server.listen(8)
            servers.append(server)
            paths.append(str(path))
        yield paths, data
    finally:
        for server in servers:
            server.close()
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("case", list(CASES))
def test_path_named_unix_sockets_outside_the_command_s_paths_are_unreachable(
    case: str, sockets: tuple[list[str], Path], tmp_dir: Path
) -> None:
    """A database's or daemon's socket under /srv or /var/lib cannot be connected to where the
    sandbox has a mount namespace; the data directory named in pass_env (GE_DATA) stays readable
    (with a socket inside it, which the isolation event says). Landlock alone has no rule for
    path-named sockets: there the event says so and warns."""
    _skip_unless_available(case)
    paths, data = sockets
    env = {"SOCKETS": json.dumps(paths), "GE_DATA": str(data)}
    result = _helper(case, {"plant": False, "scripts": [_CONNECT], "env": env}, tmp_dir)
    run = result["runs"][0]
    assert run["code"] == 0, run["stderr"]
    got = json.loads(run["stdout"])
    db, daemon, inside = paths
    assert got["data"] == "cifar", got
    network = result["text"]["network"]
    if case == "landlock-only":
        assert got[db] == got[daemon] == "connected", got  # documents the gap
        assert "path-named unix sockets" in network and "connectable" in network, network
        assert result["contained"]["network"] is False
        assert result["warning"] and "path-named unix sockets" in result["warning"]
        return
    assert got[db] != "connected" and got[daemon] != "connected", got
    assert got[inside] == "connected", got  # a socket inside a bound-back data path stays
    assert "path-named unix sockets unreachable" in network, network
    assert result["contained"]["network"] is True
