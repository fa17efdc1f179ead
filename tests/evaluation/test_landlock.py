"""Landlock binding on the real kernel: every restriction is applied in a child ``python -I -S``
that imports ``landlock`` as a top-level module (as the confinement launcher does), never in pytest."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from guided_evolution.evaluation.sandbox import landlock
from guided_evolution.evaluation.sandbox.landlock import ACCESS_FS, Plan, abi_version, hiding_rules

EVAL_DIR = str(Path(landlock.__file__).parent)
ABI = abi_version()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="Landlock is not available on this kernel")
CHILD = """
import errno, os, sys
sys.path.insert(0, {eval_dir!r})
import landlock
results = {{}}
def attempt(name, action):
    try:
        value = action()
        results[name] = "ok" if value is None else value
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
"""
CHILD_RESTRICT = """
applied = landlock.restrict(landlock.Plan(**{plan!r})) if {plan!r} is not None else None
"""
CHILD_END = """
print(repr({"applied": applied, "results": results}))
"""


def _child(plan: dict | None, body: str, pre: str = "") -> dict:
    """Run ``body`` in a child restricted by ``plan`` (None: not restricted) after ``pre``."""
    plan = None if plan is None else {k: _plain(v) for k, v in plan.items()}
    code = (
        CHILD.format(eval_dir=EVAL_DIR)
        + textwrap.dedent(pre)
        + CHILD_RESTRICT.format(plan=plan)
        + textwrap.dedent(body)
        + CHILD_END
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def _plain(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [os.fspath(v) for v in value]
    return value


def test_imports_without_site_packages_and_without_heavy_modules() -> None:
    code = (
        f"import sys; sys.path.insert(0, {EVAL_DIR!r}); import landlock; "
        "print(sorted({'json', 're', 'typing', 'pathlib', 'dataclasses', 'site'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_rights_mask_follows_the_abi() -> None:
    newer = ACCESS_FS["REFER"] | ACCESS_FS["TRUNCATE"] | ACCESS_FS["IOCTL_DEV"]
    assert landlock._fs_rights(1) == (1 << 13) - 1
    assert landlock._fs_rights(1) & newer == 0
    assert landlock._fs_rights(3) & newer == ACCESS_FS["REFER"] | ACCESS_FS["TRUNCATE"]
    assert landlock._fs_rights(4) == landlock._fs_rights(3)
    assert landlock._fs_rights(5) & ACCESS_FS["IOCTL_DEV"]
    assert landlock._fs_rights(7) == sum(ACCESS_FS.values())


def test_plan_is_an_immutable_value() -> None:
    plan = Plan(read=[Path("/usr")], write=("/tmp/x",), deny_tcp=True)
    assert plan.read == ("/usr",)
    assert plan == Plan(read=("/usr",), write=["/tmp/x"], deny_tcp=True)
    assert plan != Plan(read=("/usr",), write=["/tmp/x"])
    with pytest.raises(AttributeError):
        plan.scope = True  # type: ignore[misc]


@needs_landlock
def test_restrict_reports_what_was_applied(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    plan = {"read": ["/", missing], "deny_tcp": True, "scope": True}
    applied = _child(plan, "")["applied"]
    assert applied["abi"] == ABI >= 1
    assert applied["filesystem"] is True
    assert applied["missing"] == [str(missing)]
    assert applied["tcp"] is (ABI >= 4)
    assert applied["scopes"] == (["abstract unix sockets", "signals"] if ABI >= 6 else [])
    assert applied["ioctl"] is (ABI >= 5)


@needs_landlock
def test_filesystem_reads_everywhere_writes_only_in_write_dirs(tmp_path: Path) -> None:
    (tmp_path / "readable.txt").write_text("hello")
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    stray = Path("/tmp") / f"ge-landlock-{uuid.uuid4().hex}"
    body = f"""
    import stat
    t, w = {str(tmp_path)!r}, {str(work)!r}
    attempt("read", lambda: open(t + "/readable.txt").read())
    attempt("write outside", lambda: open(t + "/outside.txt", "w").close())
    attempt("write /tmp", lambda: open({str(stray)!r}, "w").close())
    attempt("create", lambda: open(w + "/a", "w").write("x") and None)
    attempt("truncate", lambda: os.truncate(w + "/a", 0))
    attempt("rename", lambda: os.rename(w + "/a", w + "/b"))
    attempt("rename across dirs", lambda: os.rename(w + "/b", w + "/sub/c"))
    attempt("mkdir", lambda: os.mkdir(w + "/d"))
    attempt("rmdir", lambda: os.rmdir(w + "/d"))
    attempt("symlink", lambda: os.symlink("sub", w + "/link"))
    attempt("fifo", lambda: os.mkfifo(w + "/fifo"))
    attempt("char device", lambda: os.mknod(w + "/null", stat.S_IFCHR | 0o600, os.makedev(1, 3)))
    attempt("move out", lambda: os.rename(w + "/sub/c", t + "/c"))
    attempt("delete", lambda: os.unlink(w + "/sub/c"))
    attempt("/dev/null", lambda: open("/dev/null", "w").write("x") and None)
    attempt("/dev/zero", lambda: open("/dev/zero", "w").close())
    attempt("exec", lambda: subprocess.run(["true"]).returncode)
    """
    try:
        plan = {"read": ["/"], "write": [work], "devices": ["/dev/null"]}
        results = _child(plan, body, pre="import subprocess")["results"]
    finally:
        stray.unlink(missing_ok=True)
    denied = ("write outside", "write /tmp", "char device", "move out", "/dev/zero")
    assert {k: results.pop(k) for k in denied} == dict.fromkeys(denied, "EACCES")
    assert (results.pop("read"), results.pop("exec")) == ("hello", 0)
    assert results == dict.fromkeys(results, "ok")
    assert len(results) == 10
    assert not (tmp_path / "outside.txt").exists()


@needs_landlock
def test_deny_tcp_blocks_connect_and_bind() -> None:
    if ABI < 4:
        pytest.skip(f"TCP rules need Landlock ABI 4, this kernel has {ABI}")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        body = f"""
        attempt("connect", lambda: socket.create_connection(("127.0.0.1", {port})).close())
        attempt("bind", lambda: socket.create_server(("127.0.0.1", 0)).close())
        """
        denied = _child({"read": ["/"], "deny_tcp": True}, body, pre="import socket")
        allowed = _child({"read": ["/"], "deny_tcp": False}, body, pre="import socket")
    assert denied["results"] == {"connect": "EACCES", "bind": "EACCES"}
    assert allowed["results"] == {"connect": "ok", "bind": "ok"}


@needs_landlock
def test_scope_blocks_signals_and_abstract_sockets_outside() -> None:
    if ABI < 6:
        pytest.skip(f"scopes need Landlock ABI 6, this kernel has {ABI}")
    name = f"\0ge-landlock-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen()
        body = f"""
        attempt("signal parent", lambda: os.kill(os.getppid(), 0))
        def connect():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect({name!r})
        attempt("abstract socket", connect)
        """
        scoped = _child({"read": ["/"], "scope": True}, body, pre="import socket")
        control = _child({"read": ["/"], "scope": False}, body, pre="import socket")
    assert scoped["results"] == {"signal parent": "EPERM", "abstract socket": "EPERM"}
    assert control["results"] == {"signal parent": "ok", "abstract socket": "ok"}


NAMESPACES = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def check(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), "")
def mount(target):
    check(libc.mount(b"none", target.encode(), b"tmpfs", 0, None))
# a user + mount namespace of its own: the mounts below never reach the host
attempt("unshare", lambda: check(libc.unshare(0x10000000 | 0x00020000)))
attempt("private", lambda: check(libc.mount(None, b"/", None, 0x4000 | 0x40000, None)))
attempt("premount", lambda: mount({m1!r}))
"""


@needs_landlock
def test_mount_and_umount_are_denied(tmp_path: Path) -> None:
    m1, m2 = tmp_path / "m1", tmp_path / "m2"
    m1.mkdir()
    m2.mkdir()
    body = f"""
    attempt("mount", lambda: mount({str(m2)!r}))
    attempt("umount", lambda: check(libc.umount2({str(m1)!r}.encode(), 0)))
    """
    pre = NAMESPACES.format(m1=str(m1))
    control = _child(None, body, pre=pre)["results"]
    if control["unshare"] != "ok":
        pytest.skip(f"no user namespaces here ({control['unshare']}) to try mounts safely")
    assert control == dict.fromkeys(control, "ok")
    restricted = _child({"read": ["/"]}, body, pre=pre)["results"]
    assert restricted == {
        "unshare": "ok",
        "private": "ok",
        "premount": "ok",
        "mount": "EPERM",
        "umount": "EPERM",
    }


@needs_landlock
def test_ptrace_attach_outside_the_sandbox_is_denied() -> None:
    target = subprocess.Popen(["sleep", "60"])  # a stranger to trace, so pytest is never stopped
    try:
        body = f"""
        import ctypes
        ptrace = ctypes.CDLL(None, use_errno=True).ptrace
        def attach():
            if ptrace(16, {target.pid}, None, None) != 0:  # PTRACE_ATTACH
                raise OSError(ctypes.get_errno(), "")
        attempt("ptrace", attach)
        """
        control = _child(None, body)["results"]
        restricted = _child({"read": ["/"]}, body)["results"]
    finally:
        target.kill()
        target.wait()
    if control["ptrace"] != "ok":
        pytest.skip(f"ptrace is refused here even without Landlock ({control['ptrace']})")
    assert restricted == {"ptrace": "EPERM"}


@needs_landlock
def test_hiding_rules_hide_a_directory_from_a_child(tmp_path: Path) -> None:
    (tmp_path / "visible.txt").write_text("seen")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.txt").write_text("hidden")
    read = hiding_rules([str(tmp_path / "secret")], root=str(tmp_path))
    body = f"""
    attempt("sibling", lambda: open({str(tmp_path / "visible.txt")!r}).read())
    attempt("secret", lambda: open({str(tmp_path / "secret" / "key.txt")!r}).read())
    """
    assert _child({"read": read}, body)["results"] == {"sibling": "seen", "secret": "EACCES"}
    unhidden = _child({"read": [tmp_path]}, body)["results"]  # the control
    assert unhidden == {"sibling": "seen", "secret": "hidden"}


def test_hiding_rules_grant_everything_but_the_hidden_paths(tmp_path: Path) -> None:
    for directory in ("a/b/hidden", "a/b/kept", "a/c", "d", "other/hidden2"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "a" / "file.txt").write_text("x")
    (tmp_path / "alias").symlink_to(tmp_path / "a" / "b" / "hidden")  # a rule on it would leak
    (tmp_path / "up").symlink_to(tmp_path)  # so would this one
    (tmp_path / "elsewhere").symlink_to(tmp_path / "d")
    root = str(tmp_path)
    hidden = [f"{root}/a/b/hidden", f"{root}/other/hidden2", f"{root}/missing", "/usr"]
    assert hiding_rules(hidden, root=root) == [
        f"{root}/a/b/kept",
        f"{root}/a/c",
        f"{root}/a/file.txt",
        f"{root}/d",
        f"{root}/elsewhere",
    ]
    nested = [f"{root}/a/b/hidden", f"{root}/a"]
    assert hiding_rules(nested, root=root) == [f"{root}/d", f"{root}/elsewhere", f"{root}/other"]
    assert hiding_rules([root], root=root) == []
    assert hiding_rules([f"{root}/missing"], root=root) == [root]
