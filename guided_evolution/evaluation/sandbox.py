"""Wrapping an evaluation command: bwrap / unshare, scrubbed env, rlimits, a dedicated uid.

The evaluated code is untrusted. Layers, strongest first:

* ``bwrap``: new pid/net/ipc/uts namespaces, read-only ``/``, private ``/tmp`` and ``/dev/shm``,
  the run directory hidden behind a tmpfs, only the variant's directory (and the explicitly
  writable paths) writable, credential files of the home directory hidden.
* ``unshare``: new pid and net namespaces only (no read-only root).
* ``none``: rlimits and a new session only (a warning is reported).

When ge runs as root, RLIMIT_NPROC is not enforced for uid 0, so the command is switched to a
dedicated unprivileged uid (one per running evaluation, from ``UID_BASE``); the variant's directory
is chowned to it. That uid also makes the fork-bomb limit and the final "kill everything of this
evaluation" (``Sandbox.cleanup``) reliable.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import pwd
import re
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from guided_evolution.errors import GeError

UID_BASE = 1_900_000_000
"""First uid handed to sandboxed commands when ge runs as root (uids are used, not registered)."""
UID_POOL_SIZE = 4096
UID_LOCK_DIR = "ge-sandbox-uids"
"""Directory (in the system temp dir) of per-uid lock files: a uid is leased machine-wide."""
TOKEN_VAR = "GE_SANDBOX_TOKEN"
"""Environment marker of every sandboxed process tree, used to find leftovers when not root."""

BACKENDS = ("bwrap", "unshare", "none")

_ALLOWED_NAMES = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TERM",
    "TZ",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "LD_LIBRARY_PATH",
    "PYENV_ROOT",
    "PYENV_VERSION",
)
_ALLOWED_PATTERNS = ("LC_*", "NVIDIA_*")
_SECRET_PARTS = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "PRIVATE",
    "SESSION",
    "SIGNATURE",
    "CERT",
    "_API_",
    "DSN",
    "DATABASE_URL",
)
_SECRET_PREFIXES = (
    "AWS_",
    "AZURE_",
    "GOOGLE_",
    "GCP_",
    "GCLOUD_",
    "GITHUB_",
    "GH_",
    "GITLAB_",
    "HF_",
    "HUGGING",
    "OPENAI",
    "ANTHROPIC",
    "COHERE",
    "MISTRAL",
    "GROQ",
    "DEEPSEEK",
    "GEMINI",
    "TOGETHER",
    "REPLICATE",
    "WANDB",
    "SLACK",
    "STRIPE",
    "SSH_",
    "GPG_",
    "NPM_",
    "PYPI",
    "TWINE_",
    "DOCKER_",
    "LITELLM",
)
_CREDENTIAL_PATHS = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".netrc",
    ".git-credentials",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".huggingface",
    ".cache/huggingface/token",
    ".config/gcloud",
    ".config/gh",
    ".config/hub",
    ".config/litellm",
    ".config/openai",
    ".wandb",
    ".netrc",
)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable name looks like it carries a credential."""
    upper = name.upper()
    if any(part in upper for part in _SECRET_PARTS):
        return True
    return upper.startswith(_SECRET_PREFIXES) or upper.endswith("_API")


def scrub_env(environ: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """The allow-listed, secret-free subset of ``environ``.

    ``allow`` adds names (``fnmatch`` patterns allowed) the user lets through; naming a variable
    that looks like a secret raises ``GeError`` instead of leaking it. Pattern matches of the
    built-in allow-list that look like secrets (``NVIDIA_API_KEY``) are dropped silently.
    """
    extra = tuple(allow)
    for name in extra:
        if is_secret_name(name):
            raise GeError(
                f"evaluator.pass_env names {name!r}, which looks like a secret; "
                "ge never passes credentials to evaluated code",
                "remove it from pass_env and give the evaluator what it needs another way",
            )
    out: dict[str, str] = {}
    for name, value in environ.items():
        if is_secret_name(name):
            continue
        if (
            name in _ALLOWED_NAMES
            or any(fnmatch.fnmatchcase(name, p) for p in _ALLOWED_PATTERNS)
            or any(fnmatch.fnmatchcase(name, p) for p in extra)
        ):
            out[name] = value
    return out


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits and isolation of one evaluation command."""

    network: bool = False
    memory_mb: int | None = None
    cpu_seconds: int | None = None
    file_size_mb: int | None = 1024
    max_processes: int | None = 256
    output_cap_bytes: int = 1_000_000
    readonly_root: bool = True
    pass_env: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()  # directories the command may read (e.g. the seed dir and its data)
    backend: str = "auto"  # "auto" | "bwrap" | "unshare" | "none"


@dataclass(frozen=True)
class SandboxInfo:
    """What the probe found works here."""

    backend: str
    network_isolated: bool
    warning: str | None


@dataclass
class _Lease:
    uid: int | None
    token: str
    processes_limit: int | None = None
    lock_fd: int | None = None  # flock on the uid's lock file, held for the lease
    extra: dict[str, str] = field(default_factory=dict)


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _count_processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry.path).st_uid == uid:
                count += 1
        except OSError:
            continue
    return count


def _proc_owner(pid: str) -> int | None:
    """The effective uid of a process (owner of /proc/PID), or None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _has_token(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return marker in fh.read().split(b"\0")
    except OSError:
        return False


class Sandbox:
    """Builds the command line, environment and preexec hook of a sandboxed command."""

    def __init__(self, policy: SandboxPolicy) -> None:
        if policy.backend not in ("auto", *BACKENDS):
            raise GeError(
                f"unknown sandbox backend {policy.backend!r}",
                "use one of auto, bwrap, unshare, none",
            )
        self.policy = policy
        self._info: SandboxInfo | None = None
        self._is_root = os.geteuid() == 0
        self._leases: dict[Path, _Lease] = {}
        self._paths: tuple[list[Path], list[Path]] | None = None
        self._setpriv = shutil.which("setpriv")
        self._prlimit = shutil.which("prlimit")
        self.last_uid_switched = False
        """Whether the last wrapped command runs under a dedicated uid (root only)."""

    # ------------------------------------------------------------------ probing

    def probe(self) -> SandboxInfo:
        """Find (once, cached on this object) the strongest backend that actually runs here."""
        if self._info is not None:
            return self._info
        wanted = self.policy.backend
        candidates = BACKENDS if wanted == "auto" else (wanted,)
        failures: list[str] = []
        chosen = "none"
        for backend in candidates:
            error = self._try_backend(backend)
            if error is None:
                chosen = backend
                break
            failures.append(f"{backend}: {error}")
        else:
            if wanted != "auto":
                raise GeError(
                    f"sandbox backend {wanted!r} does not work here ({'; '.join(failures)})",
                    'set evaluator.sandbox = "auto" or install bubblewrap',
                )
        isolated = chosen in ("bwrap", "unshare") and not self.policy.network
        warning = None
        if chosen == "none" and wanted == "none":
            warning = (
                'sandbox: disabled (evaluator.sandbox = "none"); evaluated code runs WITH '
                "network access and without filesystem isolation"
            )
        elif chosen == "none":
            warning = (
                "sandbox: neither bwrap nor unshare works here"
                + (f" ({'; '.join(failures)})" if failures else "")
                + "; evaluated code runs WITH network access and without filesystem isolation"
                " (install bubblewrap)"
            )
        elif chosen == "unshare" and self.policy.readonly_root and not self._is_root:
            warning = (
                "sandbox: bwrap is unavailable; unshare isolates network and processes but "
                "the file system stays writable for evaluated code (install bubblewrap)"
            )
        self._info = SandboxInfo(backend=chosen, network_isolated=isolated, warning=warning)
        return self._info

    def _try_backend(self, backend: str) -> str | None:
        """Run ``true`` through the backend; None when it works, else a short reason."""
        if backend == "bwrap" and shutil.which("bwrap") is None:
            return "bwrap not installed"
        if backend == "unshare" and shutil.which("unshare") is None:
            return "unshare not installed"
        with tempfile.TemporaryDirectory(prefix="ge-sandbox-probe-") as tmp:
            workdir = Path(tmp)
            try:
                argv, env, preexec = self._build(
                    backend, ["true"], workdir, {"PATH": os.defpath}, [], []
                )
                result = subprocess.run(
                    argv,
                    env=env,
                    cwd=workdir,
                    preexec_fn=preexec,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    timeout=20,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                return str(exc)
            finally:
                self.cleanup(workdir)
        if result.returncode != 0:
            text = result.stdout.decode(errors="replace").strip().splitlines()
            return (text[-1] if text else f"exit code {result.returncode}")[:200]
        return None

    # ------------------------------------------------------------------ wrapping

    def wrap(
        self,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        writable: list[Path],
        hide: Sequence[Path] = (),
    ) -> tuple[list[str], dict[str, str], Callable[[], None] | None]:
        """The sandboxed argv, environment and preexec hook for running ``argv`` in ``workdir``.

        ``env`` must already be scrubbed (see ``scrub_env``); HOME is set to a private directory.
        ``writable`` paths stay writable; ``hide`` directories (the run directory) are replaced by
        an empty tmpfs, except ``workdir`` and ``writable`` inside them. When ge runs as root,
        ``workdir`` and ``writable`` are chowned to the evaluation's uid. Call ``cleanup(workdir)``
        after the command ended, it kills leftovers and releases the uid.
        """
        info = self.probe()
        return self._build(info.backend, argv, workdir, env, writable, hide)

    def cleanup(self, workdir: Path) -> int:
        """Kill every process left by the command started for ``workdir``; returns how many."""
        lease = self._leases.pop(Path(os.path.abspath(workdir)), None)
        if lease is None:
            return 0
        marker = f"{TOKEN_VAR}={lease.token}".encode()
        try:
            killed = self._kill_leftovers(lease, marker, rounds=1)
            if killed and lease.uid is not None:
                # Something survived (a fork bomb forks while we kill one by one): kill(-1) as
                # the uid hits all of them at once, then sweep until nothing is left. In the
                # common case nothing survived and no process is spawned here.
                self._kill_uid(lease.uid)
            return killed + (self._kill_leftovers(lease, marker) if killed else 0)
        finally:
            if lease.lock_fd is not None:
                os.close(lease.lock_fd)  # the uid is free for other ge processes again

    @staticmethod
    def _kill_leftovers(lease: _Lease, marker: bytes, rounds: int = 50) -> int:
        killed = 0
        for _ in range(rounds):
            victims = [
                pid
                for pid in os.listdir("/proc")
                if pid.isdigit()
                and int(pid) != os.getpid()
                and (
                    # With a dedicated uid (processes cannot change it: no-new-privs), the cheap
                    # owner of /proc/PID says enough; otherwise look for the token in environ.
                    _proc_owner(pid) == lease.uid
                    if lease.uid is not None
                    else _has_token(pid, marker)
                )
            ]
            if not victims:
                break
            for pid in victims:
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
        return killed

    def _kill_uid(self, uid: int) -> None:
        """kill(-1, SIGKILL) as ``uid``: atomically hits every process of that uid (fork bombs)."""
        kill = shutil.which("kill")
        if kill is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [kill, "-s", "KILL", "--", "-1"],
                user=uid,
                group=uid,
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )

    def _lease(self, workdir: Path, switch_uid: bool) -> _Lease:
        key = Path(os.path.abspath(workdir))
        uid = None
        if self._is_root and switch_uid:
            used = {lease.uid for lease in self._leases.values()}
            uid, lock_fd = _reserve_uid({u for u in used if u is not None})
        else:
            lock_fd = None
        lease = _Lease(uid=uid, token=secrets.token_hex(8), lock_fd=lock_fd)
        limit = self.policy.max_processes
        if limit is not None and not self._is_root:
            # RLIMIT_NPROC counts every process of the uid: leave room for the user's own.
            limit += _count_processes_of(os.getuid())
        lease.processes_limit = limit
        self._leases[key] = lease
        return lease

    def _build(
        self,
        backend: str,
        argv: list[str],
        workdir: Path,
        env: dict[str, str],
        writable: Sequence[Path],
        hide: Sequence[Path],
    ) -> tuple[list[str], dict[str, str], Callable[[], None] | None]:
        workdir = Path(os.path.abspath(workdir))
        writable = [Path(os.path.abspath(p)) for p in writable]
        # Outside bwrap the dedicated uid must be able to reach the directories and the
        # interpreter on the real file system; where it cannot, the command stays root.
        reachable = all(
            _traversable_by_others(p.parent)
            for p in (workdir, *writable, Path(os.path.realpath(sys.executable)))
        )
        lease = self._lease(workdir, switch_uid=backend == "bwrap" or reachable)
        self.last_uid_switched = lease.uid is not None
        home = workdir / ".ge-home"
        home.mkdir(parents=True, exist_ok=True)
        for path in writable:
            path.mkdir(parents=True, exist_ok=True)
        if lease.uid is not None:
            for path in (workdir, *writable):
                chown_tree(path, lease.uid)

        out_env = dict(env)
        out_env["HOME"] = str(home)
        out_env[TOKEN_VAR] = lease.token
        py_dir = os.path.dirname(sys.executable)
        path_parts = out_env.get("PATH", os.defpath).split(os.pathsep)
        if py_dir and py_dir not in path_parts:
            out_env["PATH"] = os.pathsep.join([py_dir, *path_parts])

        drop = self._drop_privileges_argv(lease.uid) if backend != "none" else []
        if backend == "bwrap":
            full = [
                shutil.which("bwrap") or "bwrap",
                *self._bwrap_args(
                    workdir, writable, [Path(os.path.abspath(p)) for p in hide], lease
                ),
                "--",
                *drop,
                *argv,
            ]
        elif backend == "unshare":
            ns = ["--pid", "--fork", "--kill-child", "--mount-proc"]
            if not self.policy.network:
                ns.append("--net")
            if not self._is_root:
                ns = ["--user", "--map-root-user", *ns]
            full = [shutil.which("unshare") or "unshare", *ns, "--", *drop, *argv]
        else:
            full = list(argv)
        switch_uid = lease.uid if backend == "none" else None
        limits = self._prlimit_argv(lease.processes_limit) if switch_uid is None else None
        if limits is not None:
            # rlimits through prlimit(1) rather than a Python preexec hook: without the hook the
            # parent can vfork, which saves a few ms per evaluation in a large ge process.
            return [*limits, *full], out_env, None
        return full, out_env, self._preexec(lease.processes_limit, switch_uid)

    def _prlimit_argv(self, processes: int | None) -> list[str] | None:
        """`prlimit --...=N --` applying the policy's rlimits, or None without prlimit."""
        if self._prlimit is None:
            return None
        p = self.policy
        args = [self._prlimit, "--core=0"]
        if p.memory_mb is not None:
            args.append(f"--as={p.memory_mb * 1024 * 1024}")
        if p.cpu_seconds is not None:
            args.append(f"--cpu={p.cpu_seconds}")
        if p.file_size_mb is not None:
            args.append(f"--fsize={p.file_size_mb * 1024 * 1024}")
        if processes is not None:
            args.append(f"--nproc={processes}")
        return [*args, "--"]

    def _drop_privileges_argv(self, uid: int | None) -> list[str]:
        if uid is None:
            return []
        if self._setpriv:
            return [
                self._setpriv,
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        code = (
            "import os,sys;os.setgroups([]);os.setgid(int(sys.argv[1]));"
            "os.setuid(int(sys.argv[1]));os.execvp(sys.argv[2],sys.argv[2:])"
        )
        return [sys.executable, "-I", "-c", code, str(uid)]

    def _bwrap_args(
        self, workdir: Path, writable: Sequence[Path], hide: Sequence[Path], lease: _Lease
    ) -> list[str]:
        p = self.policy
        args = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if not p.network:
            args.append("--unshare-net")
        if not self._is_root:
            # Unprivileged: a user namespace is needed (it is what --unshare-all adds).
            args.append("--unshare-user")
        args += ["--die-with-parent", "--new-session"]
        args += ["--ro-bind" if p.readonly_root else "--bind", "/", "/"]
        args += ["--dev", "/dev"]
        for dev in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(dev), str(dev)]
        args += ["--perms", "1777", "--tmpfs", "/dev/shm", "--proc", "/proc"]
        args += ["--perms", "1777", "--tmpfs", "/tmp"]
        masks = [Path("/tmp")]

        def parents(path: Path) -> None:
            # Parents that bwrap creates inside a tmpfs would be 0700 root: make them traversable.
            inner = [m for m in masks if _is_within(path, m) and m != path]
            if inner:
                top = max(inner, key=lambda m: len(m.parts))
                for depth in range(len(top.parts) + 1, len(path.parts)):
                    args.extend(["--perms", "0755", "--dir", str(Path(*path.parts[:depth]))])

        def bind(option: str, path: Path) -> None:
            parents(path)
            args.extend([option, str(path), str(path)])

        if self._paths is None:  # stat()s of sys.path & co: the same for every evaluation
            homes = _home_dirs()
            self._paths = (homes, _needed_paths(homes))
        homes, needed = self._paths
        if lease.uid is not None:
            # Root's home is private (0700); mask it and bring back what the command needs.
            for home in homes:
                if home.is_dir():
                    args += ["--perms", "0755", "--tmpfs", str(home)]
                    masks.append(home)
        readable = [Path(os.path.abspath(r)) for r in self.policy.readable if os.path.isdir(r)]
        if lease.uid is not None:
            # A private (0700) ancestor would stop the dedicated uid: mask it, bind back below.
            for target in (workdir, *writable, *readable):
                if any(_is_within(target, m) for m in masks):
                    continue
                blocked = [d for d in target.parents if not _traversable_by_others(d)]
                if blocked:
                    top = min(blocked, key=lambda d: len(d.parts))
                    if top != Path("/"):
                        args += ["--perms", "0755", "--tmpfs", str(top)]
                        masks.append(top)
        for path in needed:
            if any(_is_within(target, path) for target in (workdir, *writable)):
                # An ancestor of the variant's directory: bound back, its real (possibly 0700)
                # mode would lock the dedicated uid out. `parents()` makes the path instead.
                continue
            if any(_is_within(path, m) for m in masks) and not any(
                _is_within(m, path) for m in masks
            ):
                bind("--ro-bind", path)
        for path in readable:
            # Bound back read-only where a mask (private /tmp, a home, a 0700 ancestor) hid it;
            # the run directory inside it, if any, is hidden again just below.
            if os.stat(path).st_mode & 0o001 and any(_is_within(path, m) for m in masks):
                bind("--ro-bind", path)
        for path in hide:
            if path.is_dir() and not _is_within(path, workdir):
                parents(path)
                args += ["--perms", "0755", "--tmpfs", str(path)]
                masks.append(path)
        for home in homes:
            for rel in _CREDENTIAL_PATHS:
                cred = home / rel
                if cred.is_dir():
                    args += ["--tmpfs", str(cred)]
                elif cred.exists():
                    args += ["--ro-bind", "/dev/null", str(cred)]
        bind("--bind", workdir)
        for path in writable:
            bind("--bind", path)
        if lease.uid is not None:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        args += ["--chdir", str(workdir)]
        return args

    def _preexec(self, processes: int | None, uid: int | None) -> Callable[[], None] | None:
        p = self.policy
        limits: list[tuple[int, int]] = []
        if p.memory_mb is not None:
            limits.append((resource.RLIMIT_AS, p.memory_mb * 1024 * 1024))
        if p.cpu_seconds is not None:
            limits.append((resource.RLIMIT_CPU, p.cpu_seconds))
        if p.file_size_mb is not None:
            limits.append((resource.RLIMIT_FSIZE, p.file_size_mb * 1024 * 1024))
        if processes is not None:
            limits.append((resource.RLIMIT_NPROC, processes))
        limits.append((resource.RLIMIT_CORE, 0))
        if not limits and uid is None:
            return None

        def preexec() -> None:
            for kind, value in limits:
                _soft, hard = resource.getrlimit(kind)
                if hard != resource.RLIM_INFINITY:
                    value = min(value, hard)
                resource.setrlimit(kind, (value, value))
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return preexec


def _uid_lock_dir() -> Path | None:
    """The private directory of uid lock files, or None when it cannot be trusted."""
    path = Path(tempfile.gettempdir()) / UID_LOCK_DIR
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        return None
    return path


def _reserve_uid(taken: set[int]) -> tuple[int, int | None]:
    """A pool uid that no other ge process holds and that owns no process; (uid, lock fd).

    Every ge process on the machine draws from the same pool, and ``cleanup`` kills *every*
    process of the uid: without a machine-wide reservation (an flock per uid) two concurrent runs
    would kill each other's evaluations.
    """
    directory = _uid_lock_dir()
    start = secrets.randbelow(UID_POOL_SIZE)
    for step in range(UID_POOL_SIZE):
        uid = UID_BASE + (start + step) % UID_POOL_SIZE
        if uid in taken:
            continue
        fd: int | None = None
        if directory is not None:
            try:
                fd = os.open(
                    directory / str(uid),
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if fd is not None:
                    os.close(fd)
                continue
        if _count_processes_of(uid) == 0:
            return uid, fd
        if fd is not None:
            os.close(fd)
    raise GeError(
        f"no free sandbox uid in {UID_BASE}..{UID_BASE + UID_POOL_SIZE - 1}",
        "too many concurrent evaluations on this machine; lower executor.slots",
    )


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
    cwd = Path.cwd()
    if not any(_is_within(h, cwd) for h in homes) and cwd != Path("/"):
        raw.append(str(cwd))
    found: list[Path] = []
    for item in raw:
        if not item or not os.path.isabs(item):
            continue
        for candidate in (Path(os.path.normpath(item)), Path(os.path.realpath(item))):
            if candidate.exists() and candidate not in found and candidate != Path("/"):
                found.append(candidate)
    found.sort(key=lambda q: len(q.parts))
    kept: list[Path] = []
    for path in found:
        if not any(_is_within(path, k) for k in kept):
            kept.append(path)
    return kept


def _traversable_by_others(path: Path) -> bool:
    """Whether every directory from / down to ``path`` is searchable by any uid."""
    current = Path(os.path.abspath(path))
    for directory in (current, *current.parents):
        try:
            if not os.stat(directory).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def chown_tree(root: Path, uid: int) -> None:
    """Give a directory tree to ``uid`` (the evaluation's dedicated user), best effort."""
    with contextlib.suppress(OSError):
        os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(dirpath, name), uid, uid)


_SIGNAL_NAME = re.compile(r"^SIG[A-Z0-9]+$")


def signal_name(number: int) -> str | None:
    """``SIGKILL`` for 9, None for an unknown number."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return None
    return name if _SIGNAL_NAME.match(name) else None
