"""The run directory: creating it atomically from a seed, locking it, and resolving its paths."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import os
import shutil
import sqlite3
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guided_evolution import __version__
from guided_evolution.config import GeConfig, ResolvedConfig
from guided_evolution.errors import ConfigError, GeError, RunDamagedError, RunStateError
from guided_evolution.fsutil import atomic_write
from guided_evolution.runstore import damage

_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS = 0x80086601, 0x40086602  # ext2/3/4 inode flags (lsattr)
_FS_TOPDIR_FL = 0x00020000  # `chattr +T`: the top of a directory hierarchy

CONFIG_FILE = "config.json"
REPO_DIR = "repo.git"
INDEX_FILE = "index.sqlite"
LOCK_FILE = "lock"
WORK_DIR = "work"
LOG_DIR = "logs"
LATEST = "latest"  # in the runs directory: names the run created last (a link, or a file)
DAMAGE_FILE = "damage.json"  # written by a run that found its record damaged; cleared by doctor
STOP_REQUEST = "stop-request"  # `ge stop`: the lock holder's pid (engine.stopping removes it)
_OWN_MARKS = (CONFIG_FILE, REPO_DIR, INDEX_FILE, DAMAGE_FILE)  # only ge makes these
_SHARED_MARKS = (LOCK_FILE, LOG_DIR, WORK_DIR)  # common names: two of them make a run


@dataclass(frozen=True)
class RunPaths:
    """Where each part of a run directory lives."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def repo(self) -> Path:
        return self.root / REPO_DIR

    @property
    def index(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def work(self) -> Path:
        return self.root / WORK_DIR

    @property
    def damage(self) -> Path:
        return self.root / DAMAGE_FILE

    @property
    def logs(self) -> Path:
        return self.root / LOG_DIR


def looks_like_run(run_dir: Path) -> bool:
    """Whether a directory holds parts of a run (so it is a damaged run, not some directory):
    its config, repository, index or damage record, or two of its lock, logs/ and work/."""
    run_dir = Path(run_dir)
    if any((run_dir / name).exists() for name in _OWN_MARKS):
        return True
    return sum((run_dir / name).exists() for name in _SHARED_MARKS) >= 2


def require_run_dir(run_dir: Path) -> None:
    """Raise a one-line error unless ``run_dir`` is a run directory, whole or damaged (before a
    command takes its lock: never create a lock file elsewhere)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if run_dir.exists():
            raise RunStateError(
                f"{run_dir} is a file, not a run directory", "pass a directory created by `ge run`"
            )
        raise RunStateError(
            f"run directory not found: {run_dir}", "pass a directory created by `ge run`"
        )
    if not looks_like_run(run_dir):
        raise RunStateError(
            f"{run_dir} is not a ge run directory (no {REPO_DIR})",
            "pass a directory created by `ge run`",
        )


def open_run(run_dir: Path, check_damage: bool = True) -> tuple[RunPaths, ResolvedConfig]:
    """Paths and frozen config of an existing run; a clear error when it is not one.

    A directory that holds parts of a run but lost others is damaged, not "not a run": the error
    says what is gone and names `ge doctor`. With ``check_damage`` (every reader), the damage that
    a run recorded when it stopped and the cheap signs of damage (the index's header, the
    repository's layout and seed branch) are reported too; `ge resume` repairs instead.
    """
    if not run_dir.is_dir():
        require_run_dir(run_dir)
    paths = RunPaths(run_dir.resolve())
    left = f"restore it from a backup; `ge doctor {run_dir}` says what is left"
    if not paths.config.exists() and looks_like_run(paths.root):
        raise RunDamagedError(
            run_dir, f"its {CONFIG_FILE} is gone (the run's frozen config)", None, left
        )
    try:
        resolved = ResolvedConfig.load(paths.config)
    except ConfigError as err:
        if err.hint:
            raise
        raise ConfigError(
            f"the run's frozen config is damaged: {err.message}",
            f"restore {paths.config} from a backup, or start a new run",
        ) from None
    if not paths.repo.is_dir():
        raise RunDamagedError(
            run_dir, f"it has no {REPO_DIR} (the git record of its variants)", None, left
        )
    if not paths.index.exists():
        raise RunDamagedError(run_dir, f"it has no {INDEX_FILE}", damage.REBUILD)
    if check_damage:
        found = damage.recorded(paths.damage) + damage.current(paths.index, paths.repo)
        if found:
            raise damage.error(run_dir, found)
    return paths, resolved


def extend_generations(paths: RunPaths, resolved: ResolvedConfig, generations: int) -> ResolvedConfig:
    """The run's frozen config with ``generations`` in total, saved in its config.json (atomically),
    so that every later `ge resume` keeps the new total. Call it under the run lock."""
    evolution = resolved.config.evolution.model_copy(update={"generations": generations})
    config = resolved.config.model_copy(update={"evolution": evolution})
    extended = resolved.model_copy(update={"config": config})
    atomic_write(paths.config, extended.dump(), fsync=True)
    return extended


GONE_HOLDER_WAIT_S = 5.0
"""How long a run lock whose recorded holder has exited is waited for (``RunLock``)."""


def _pid_alive(owner: str) -> bool:
    """Whether the lock file's pid names a live process ("unknown": one starting, so yes)."""
    if not owner.isdigit():
        return True
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        return True
    return True


class RunLock:
    """An exclusive, non-blocking lock on a run directory (fcntl; released when the process dies)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunStateError(
                f"cannot open {self.path}: {err.strerror}",
                "check that the run directory is writable",
            ) from None
        self._take(fd)
        try:
            os.ftruncate(fd, 0)  # `ge stop` now says "starting" until the pid is written
            with contextlib.suppress(FileNotFoundError):  # asked of an earlier holder: stale
                (self.path.parent / STOP_REQUEST).unlink()
            os.write(fd, str(os.getpid()).encode())
        except OSError as err:  # a full disk, found before anything of the run is written
            os.close(fd)
            full = err.errno in (errno.ENOSPC, errno.EDQUOT)
            raise RunStateError(
                f"cannot lock {self.path.parent}: "
                + ("no space left on the device" if full else (err.strerror or str(err))),
                f"free some disk space, then `ge resume {self.path.parent}`"
                if full
                else "check that the run directory is writable",
            ) from None
        self._fd = fd
        return self

    def _take(self, fd: int) -> None:
        """The lock, or RunStateError naming its holder. A holder whose recorded pid has exited
        is waited for (``GONE_HOLDER_WAIT_S``): a child of a killed ge, caught between fork and
        exec, holds the lock's descriptor a moment longer (a resume at once was refused)."""
        deadline = time.monotonic() + GONE_HOLDER_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            if _pid_alive(owner) or time.monotonic() >= deadline:
                os.close(fd)
                raise RunStateError(
                    f"{self.path.parent} is in use by another ge process (pid {owner})",
                    "wait for it to finish or stop it (Ctrl-C, or kill the pid), then try again",
                )
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def collect_seed(seed_dir: Path, cfg: GeConfig) -> dict[str, bytes]:
    """Read the seed files (minus excluded patterns); validate that the evolvable files exist."""
    if not seed_dir.is_dir():
        raise ConfigError(f"seed directory not found: {seed_dir}", "fix [seed] dir in ge.toml")
    files: dict[str, bytes] = {}
    for path in sorted(seed_dir.rglob("*")):
        rel = path.relative_to(seed_dir).as_posix()
        parts = rel.split("/")
        if any(fnmatch.fnmatch(part, pat) for part in parts for pat in cfg.seed.exclude):
            continue
        if path.is_file() and not path.is_symlink():
            files[rel] = path.read_bytes()
    missing = [f for f in cfg.seed.files if f not in files]
    if missing:
        raise ConfigError(
            f"evolvable file(s) {', '.join(missing)} not found in seed directory {seed_dir}",
            "fix [seed] files in ge.toml",
        )
    return files


def default_run_name(seed_dir: Path) -> str:
    """`<seed dir name>-<local time>`."""
    name = seed_dir.resolve().name or "run"
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(resolved: ResolvedConfig, build: Callable[[RunPaths], None]) -> RunPaths:
    """Create the run directory atomically: build everything in a temp sibling, then rename it.

    A failure or a kill before the rename leaves no half-written run behind (only a temp dir
    that is removed on failure and ignored otherwise); on failure the folders made for it (e.g.
    ``runs/``) are removed too when they are still empty. ``build`` may take long (`ge run`
    evaluates the seed in it): ``runs/latest`` moves only once the run is in place.
    """
    final = Path(resolved.run_dir)
    if final.exists():
        raise RunStateError(
            f"run directory {final} already exists", "pass another --run-dir, or `ge resume` it"
        )
    parent = final.parent
    made = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GeError(
            f"cannot create run directory {parent}: {err.strerror}", "pass a writable --run-dir"
        ) from None
    if not os.access(parent, os.W_OK):
        raise GeError(f"run directory {parent} is not writable", "pass a writable --run-dir")
    tmp = parent / f".{final.name}.creating-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        paths = RunPaths(tmp)
        paths.work.mkdir()
        paths.logs.mkdir()
        paths.config.write_text(resolved.dump(), encoding="utf-8")
        build(paths)
        os.replace(tmp, final)
        runs = Path(resolved.config.run.dir).resolve()
        if runs == parent or runs.is_dir():
            point_latest(runs, final)
    except BaseException as err:
        full = isinstance(err, (OSError, GeError, sqlite3.Error)) and _disk_full(parent, err)
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        if full:
            raise GeError(
                f"cannot create run directory {final}: no space left on the device",
                "free some disk space or pass a --run-dir on another disk",
            ) from None
        if isinstance(err, OSError):
            raise GeError(
                f"cannot write run directory {final}: {err.strerror or err}",
                "check free disk space and permissions",
            ) from None
        raise
    return RunPaths(final)


def point_latest(runs_dir: Path, run: Path) -> None:
    """Make ``runs_dir/latest`` name ``run``, atomically (a temporary link renamed over it); a
    small file holding the name where links cannot be made. Never fails the run."""
    link = runs_dir / LATEST
    if run.name == LATEST or (link.is_dir() and not link.is_symlink()):
        return  # a run, or some directory, that is itself called "latest"
    target = run.name if run.parent == runs_dir else str(run)
    tmp = runs_dir / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.symlink(target, tmp)
        except OSError:
            tmp.write_text(target + "\n", encoding="utf-8")
        os.replace(tmp, link)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def latest_run(runs_dir: Path) -> Path | None:
    """The run that ``runs_dir/latest`` names, else the newest run directory in ``runs_dir``."""
    link = runs_dir / LATEST
    target: Path | None = None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if link.is_symlink():
            target = link.resolve()
        elif link.is_file():
            target = runs_dir / link.read_text(encoding="utf-8").strip()
    if target is not None and (target / CONFIG_FILE).is_file():
        return target
    try:
        runs = [d for d in runs_dir.iterdir() if d.name[0] != "." and d.name != LATEST]
    except OSError:
        return None
    runs = [d for d in runs if (d / CONFIG_FILE).is_file()]
    return max(runs, key=lambda d: (d / CONFIG_FILE).stat().st_mtime, default=None)


def runs_dir_of(directory: Path) -> Path:
    """Where `ge run` in ``directory`` puts runs: ``[run] dir`` of its ge.toml, else ``runs``."""
    import tomllib

    name = "runs"
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError, AttributeError):
        with (directory / "ge.toml").open("rb") as fh:
            value = tomllib.load(fh).get("run", {}).get("dir")
        name = value if isinstance(value, str) and value.strip() else name
    return directory / name


FULL_DISK_BYTES = 1 << 20
"""Less free space than this (for unprivileged users) while creating a run counts as a full disk."""


def spread_work(work: Path) -> bool:
    """Mark ``work/`` the top of a directory hierarchy (``chattr +T``, ext2/3/4); whether it is.

    ext4 then places each variant's directory (made and removed for every evaluation) in a
    block group of its own choosing, not beside the run's lasting files (logs, git objects).
    Where ext4 runs without a journal, a new inode is looked for past every inode of its group
    freed in the last ~30 s, so files made beside the removed trees cost ge system time at each
    child. Elsewhere the flag only spreads directories; a file system without it is left alone.
    """
    try:
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = struct.unpack("i4x", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8)))[0]
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i4x", flags | _FS_TOPDIR_FL))
        return True
    except OSError:  # not ext2/3/4 (ENOTTY, EOPNOTSUPP), or not ours to change (EPERM)
        return False
    finally:
        os.close(fd)


def _disk_full(directory: Path, err: BaseException) -> bool:
    """Whether ``err`` (raised while writing a new run under ``directory``) means the disk is full."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno in (errno.ENOSPC, errno.EDQUOT)  # the errno says it: no guessing
    text = str(err).lower()
    if "disk is full" in text or "no space left" in text:
        return True
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_DISK_BYTES


def resolve(cfg: GeConfig, config_path: Path, run_dir: Path | None) -> ResolvedConfig:
    """Freeze the config with absolute locations: the seed is relative to ge.toml, runs to the cwd."""
    base = config_path.resolve().parent
    seed_dir = (base / cfg.seed.dir).resolve()
    if run_dir is None:
        run_dir = Path(cfg.run.dir) / (cfg.run.name or default_run_name(seed_dir))
    return ResolvedConfig(
        config=cfg,
        config_path=str(config_path.resolve()),
        seed_dir=str(seed_dir),
        run_dir=str(run_dir.resolve()),
        ge_version=__version__,
    )
