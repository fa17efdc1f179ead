"""Sandbox: scrubbed environment, backend probe, file-system layout, fork-bomb containment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from guided_evolution.errors import GeError
from guided_evolution.evaluation.sandbox.bwrap import traversable_by_others
from guided_evolution.evaluation.sandbox.env import scrub_env
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from tests.support.cli import processes_with


def _run(sandbox: Sandbox, script: str, workdir: Path, hide: list[Path] | None = None, **env):
    command = sandbox.wrap(
        [sys.executable, "-c", textwrap.dedent(script)],
        workdir,
        {**scrub_env(os.environ), **env},
        [],
        hide or [],
    )
    try:
        return subprocess.run(
            command.argv,
            cwd=workdir,
            env=command.env,
            preexec_fn=command.preexec,
            pass_fds=command.pass_fds,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        sandbox.cleanup(workdir)


@pytest.fixture(scope="module", params=["bwrap", "landlock"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Each backend that stops writes outside the variant's directory, where it works here."""
    box = Sandbox(SandboxPolicy(backend=request.param))
    try:
        box.probe()
    except GeError as exc:
        pytest.skip(f"sandbox {request.param} does not work here: {exc}")
    return box


def test_scrub_env_keeps_allow_list_and_drops_secrets() -> None:
    environ = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "NVIDIA_DRIVER_CAPABILITIES": "all",
        "NVIDIA_API_KEY": "nv-secret",
        "OPENAI_API_KEY": "sk-secret",
        "AWS_ACCESS_KEY_ID": "x",
        "GITHUB_TOKEN": "x",
        "DB_PASSWORD": "x",
        "RANDOM_THING": "x",
        "MY_SETTING": "on",
    }
    env = scrub_env(environ, allow=("MY_SETTING",))
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "NVIDIA_DRIVER_CAPABILITIES": "all",
        "MY_SETTING": "on",
    }


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "MY_SECRET", "AWS_REGION"])
def test_scrub_env_refuses_secret_in_pass_env(name: str) -> None:
    with pytest.raises(GeError, match=name):
        scrub_env({name: "x"}, allow=(name,))


def test_unknown_backend_is_a_user_error() -> None:
    with pytest.raises(GeError, match="backend"):
        Sandbox(SandboxPolicy(backend="docker"))


def test_probe_is_cached_and_consistent(sandbox: Sandbox) -> None:
    info = sandbox.probe()
    assert sandbox.probe() is info
    assert info.backend == sandbox.policy.backend
    assert info.network_isolated
    assert info.isolation.contained["filesystem"]
    # The fixture's policy sets no memory bound and no disk reserve (the executor's): only the
    # resources aspect may warn (tests/evaluation/test_resource_limits.py checks it with both).
    others = [w for w in info.isolation.warnings() if ": resources: " not in w]
    assert not others, others


def test_python_runs_inside_with_private_home(sandbox: Sandbox, tmp_path: Path) -> None:
    workdir = tmp_path / "work" / "v1"
    workdir.mkdir(parents=True)
    result = _run(
        sandbox,
        """
        import os, pathlib
        home = pathlib.Path(os.environ["HOME"])
        (home / "cache").write_text("ok")
        pathlib.Path("out.txt").write_text("written")
        print(home)
        """,
        workdir,
    )
    assert result.returncode == 0, result.stderr
    home = Path(result.stdout.strip())
    assert workdir in home.parents
    assert (workdir / "out.txt").read_text() == "written"


def test_run_dir_hidden_and_read_only_outside_workdir(sandbox: Sandbox, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    workdir = run_dir / "work" / "v1"
    workdir.mkdir(parents=True)
    (run_dir / "index.sqlite").write_text("index")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    result = _run(
        sandbox,
        """
        import os, pathlib
        run = pathlib.Path(os.environ["RUN"])
        print("index visible:", (run / "index.sqlite").exists())
        for target in (os.environ["OUTSIDE"], "/etc/ge-test-file"):
            try:
                pathlib.Path(target).write_text("pwned")
                print("wrote", target)
            except OSError as exc:
                print("refused", target, type(exc).__name__)
        """,
        workdir,
        hide=[run_dir],
        RUN=str(run_dir),
        OUTSIDE=str(outside),
    )
    assert result.returncode == 0, result.stderr
    assert "index visible: False" in result.stdout
    assert "wrote" not in result.stdout
    assert outside.read_text() == "keep"
    assert (run_dir / "index.sqlite").read_text() == "index"
    assert not Path("/etc/ge-test-file").exists()


@pytest.mark.parametrize("backend", ["bwrap", "landlock"])
def test_fork_bomb_is_contained(tmp_path: Path, backend: str) -> None:
    """Also as root: the dedicated uid makes RLIMIT_NPROC hold (uid 0 is exempt from it)."""
    limit = 40
    sandbox = Sandbox(SandboxPolicy(max_processes=limit, backend=backend))
    try:
        sandbox.probe()
    except GeError as exc:
        pytest.skip(f"sandbox {backend} does not work here: {exc}")
    workdir = tmp_path / "bomb"
    workdir.mkdir()
    marker = f"ge-bomb-{uuid.uuid4().hex}"
    # Bounded: at most 10,000 forks, each child sleeps (and carries the marker in its argv).
    script = f"""
        import os, sys, time
        forked = 0
        for _ in range(10_000):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                os.execvp(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)", "{marker}"])
            forked += 1
        print(forked, flush=True)
    """
    command = sandbox.wrap(
        [sys.executable, "-c", textwrap.dedent(script)], workdir, scrub_env(os.environ), []
    )
    if os.geteuid() == 0 and command.uid is None:
        sandbox.cleanup(workdir)
        pytest.skip("root without a dedicated uid here: RLIMIT_NPROC would not hold")
    proc = subprocess.Popen(
        command.argv,
        cwd=workdir,
        env=command.env,
        preexec_fn=command.preexec,
        pass_fds=command.pass_fds,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        sandbox.cleanup(workdir)
    forked = int(out.strip())
    assert 0 < forked < limit
    # SIGKILL is asynchronous: a killed process may still be listed for a moment.
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


_AS_USER = """
import os, subprocess, sys
from pathlib import Path
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.sandbox.env import scrub_env
box = Sandbox(SandboxPolicy(backend="landlock"))
info = box.probe()
print("MODE", info.mode.label, "|", "; ".join(info.isolation.layers))
work = Path(sys.argv[1]) / "run" / "work" / "v1"
work.mkdir(parents=True)
(Path(sys.argv[1]) / "run" / "index.sqlite").write_text("index")
script = (
    "import os, pathlib\\n"
    "for t in (os.environ['OUTSIDE'], os.environ['INDEX']):\\n"
    "    try:\\n        pathlib.Path(t).write_text('pwned'); print('WROTE', t)\\n"
    "    except OSError as e:\\n        print('refused', type(e).__name__)\\n"
    "pathlib.Path('mine.txt').write_text('ok')\\n"
)
env = {**scrub_env(os.environ), "OUTSIDE": sys.argv[2], "INDEX": str(work.parents[1] / "index.sqlite")}
command = box.wrap([sys.executable, "-c", script], work, env, [], [work.parents[1]])
result = subprocess.run(command.argv, env=command.env, cwd=work, capture_output=True, text=True)
box.cleanup(work)
print(result.stdout, result.stderr, "MINE", (work / "mine.txt").read_text())
"""


def test_landlock_backend_works_for_an_unprivileged_user(tmp_path: Path) -> None:
    """Not root: ge's own sandbox uses a user namespace (no setuid helper, no package)."""
    import shutil
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to become an unprivileged user for the test) and setpriv")
    base = Path(tempfile.mkdtemp(prefix="ge-unpriv-"))
    try:
        os.chmod(base, 0o755)
        outside = base / "outside.txt"
        outside.write_text("keep")
        os.chown(base, 65534, 65534)
        repo = Path(__file__).resolve().parents[2]
        # An interpreter every user can run (a venv under root's 0700 home is not one).
        python = next(
            (
                p
                for p in (sys.executable, "/usr/bin/python3")
                if traversable_by_others(Path(os.path.realpath(p)))
            ),
            None,
        )
        if python is None:
            pytest.skip("no Python interpreter here that an unprivileged user can run")
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
             "--", python, "-c", _AS_USER, str(base), str(outside)],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(repo), "HOME": str(base)},
            cwd=base, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if "No module named" in result.stderr or "Permission denied" in result.stderr:
            last = result.stderr.strip().splitlines()[-1]  # the error, not its traceback
            pytest.skip(f"ge is not readable by an unprivileged user here: {last}")
        assert result.returncode == 0, result.stderr[-2000:]
        out = result.stdout
        assert "MODE namespaces + Landlock" in out, out
        assert "MINE ok" in out, out
        # A write may land in the private /tmp (a tmpfs of its own): the real files never change.
        assert outside.read_text() == "keep"
        assert (base / "run" / "index.sqlite").read_text() == "index"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_devices_work_and_socket_directories_are_empty(sandbox: Sandbox, tmp_path: Path) -> None:
    """/dev/null stays a device (also when a credential file is masked with it); the directories
    that hold path-named unix sockets (/run, /var/tmp) are empty; /etc is read-only."""
    workdir = tmp_path / "work" / "v1"
    workdir.mkdir(parents=True)
    result = _run(
        sandbox,
        """
        import os, stat
        print("null is a device:", stat.S_ISCHR(os.stat("/dev/null").st_mode))
        with open("/dev/null", "r+b") as fh:
            fh.write(b"x")
        for d in ("/run", "/var/tmp"):
            if os.path.isdir(d):
                print("listing", d, os.listdir(d))
        try:
            open("/etc/ge-test-file", "w")
            print("wrote /etc")
        except OSError as exc:
            print("refused", type(exc).__name__)
        """,
        workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "null is a device: True" in result.stdout
    for line in result.stdout.splitlines():
        if line.startswith("listing"):
            assert line.endswith("[]"), line
    assert "wrote /etc" not in result.stdout
    assert not Path("/etc/ge-test-file").exists()


def test_private_tmp_and_shm_are_size_capped(tmp_path: Path) -> None:
    """A variant cannot fill the machine's RAM through its private /tmp or /dev/shm."""
    tried = []
    for backend in ("bwrap", "landlock"):
        sandbox = Sandbox(SandboxPolicy(backend=backend, tmpfs_mb=2))
        try:
            info = sandbox.probe()
        except GeError:
            continue
        if "2 MB" not in info.isolation.text["resources"]:
            continue  # a bwrap without --size: the isolation event says "uncapped"
        workdir = tmp_path / backend
        workdir.mkdir()
        result = _run(
            sandbox,
            """
            import errno
            for d in ("/tmp", "/dev/shm"):
                try:
                    with open(d + "/fill", "wb") as fh:
                        for _ in range(8):
                            fh.write(b"x" * (1 << 20))
                            fh.flush()
                    print(d, "filled 8 MB")
                except OSError as exc:
                    print(d, "stopped", errno.errorcode[exc.errno])
            """,
            workdir,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("stopped ENOSPC") == 2, (backend, result.stdout)
        tried.append(backend)
    if not tried:
        pytest.skip("no backend with size-capped private /tmp works here")


@pytest.mark.parametrize("backend", ["bwrap", "landlock", "none"])
def test_memory_is_capped_per_evaluation_not_only_per_process(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four children of 200 MB each pass RLIMIT_AS = 400 MB one by one, not together: the
    evaluation's cgroup (v2, or v1 where that is what the machine offers) stops them."""
    from guided_evolution.evaluation.sandbox.cgroups import Cgroups, find_cgroups

    found, why = find_cgroups(("memory",))
    if found is None:
        pytest.skip(f"no cgroup memory controller ge may use here: {why}")
    sandbox = Sandbox(SandboxPolicy(backend=backend, memory_mb=400))
    # The cgroups this process makes (other runs, e.g. other test workers, make theirs meanwhile).
    made: list[Path] = []
    create = Cgroups.create

    def recorded(self: Cgroups, *args: object, **kwargs: object) -> object:
        lease = create(self, *args, **kwargs)  # type: ignore[arg-type]
        made.extend(lease.dirs)
        return lease

    monkeypatch.setattr(Cgroups, "create", recorded)
    try:
        info = sandbox.probe()
    except GeError as exc:
        pytest.skip(f"sandbox {backend} does not work here: {exc}")
    assert "per evaluation" in info.isolation.text["resources"], info.isolation.text
    # The probe ran `true` in a cgroup of its own: it is gone, not left for a later cleanup.
    assert not [d for d in made if d.exists()], "the probe's cgroup"
    probed = len(made)
    workdir = tmp_path / "hog"
    workdir.mkdir()
    script = """
        import os, time
        kids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                hog = b"x" * (200 << 20)
                time.sleep(3)
                os._exit(0)
            kids.append(pid)
        codes = [os.waitpid(pid, 0)[1] for pid in kids]
        print("killed:", sum(os.WIFSIGNALED(c) for c in codes))
    """
    result = _run(sandbox, script, workdir)
    killed = re.search(r"killed: (\d)", result.stdout)
    assert (killed and int(killed.group(1)) > 0) or result.returncode != 0, (
        result.returncode,
        result.stdout,
        result.stderr[-500:],
    )
    sandbox.close()
    left = [d for d in made if d.exists()]
    assert len(made) > probed and not left, f"the evaluation's cgroup stayed: {left}"
