"""Small file-system helpers shared by every package: atomic writes, containment checks, and
access to directories that evaluated code controls.

A variant's directory is written by untrusted code while ge (often root) reads and cleans it, so
below such a directory ge never follows a symbolic link: ``open_beneath``, ``read_beneath`` and
``unlink_beneath`` walk a relative path one component at a time through directory descriptors
opened with ``O_NOFOLLOW``, and ``remove_tree`` / ``chown_tree`` work iteratively through
descriptors (no recursion, no path longer than one name), so neither a symlink, a tree 5,000
levels deep nor a ``chmod 000`` directory can redirect, crash or stop them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

TMP_PREFIX = ".ge-tmp-"  # a dot-file: git skips it when it scans loose refs; short: any name fits
DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
READ_CHUNK = 1 << 20


def atomic_write(
    path: Path,
    data: bytes | str,
    *,
    prefix: str = TMP_PREFIX,
    mode: int = 0o644,
    fsync: bool = False,
) -> None:
    """Write ``data`` to a temporary sibling of ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never half of one; a failure leaves no temp file.
    The temp name is short (``prefix`` + pid + random hex), so it fits wherever ``path`` does.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f"{prefix}{os.getpid()}_{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_within(path: Path, parent: Path, *, resolve: bool = False) -> bool:
    """Whether ``path`` is ``parent`` or below it (lexically; with ``resolve``, after symlinks)."""
    if resolve:
        path, parent = Path(path).resolve(), Path(parent).resolve()
    return Path(path).is_relative_to(parent)


def error_text(exc: BaseException) -> str:
    """What went wrong, without the file names an ``OSError`` carries (a variant chose them)."""
    return (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__


# --------------------------------------------------------------------------- no-follow access


class UnsafePathError(OSError):
    """A directory on the way is not a real directory any more (a symlink, a file, ...)."""

    def __init__(self, component: str) -> None:
        super().__init__(errno.ELOOP, f"{component} is not a real directory")
        self.component = component
        """The component of the relative path (ge's own name, never the variant's bytes)."""


class UnsafeFileError(OSError):
    """The file is not one ge may read: ``kind`` is "symlink", "not_regular", "hard_links" or
    "too_large" (then ``size`` is its size in bytes)."""

    def __init__(self, kind: str, size: int = 0) -> None:
        super().__init__(errno.EPERM, f"unsafe file ({kind})")
        self.kind = kind
        self.size = size


def _parts(relpath: str | PurePosixPath | Path) -> list[str]:
    """The components of a plain relative path, as ``PurePosixPath(relpath).parts`` (empty and
    "." components dropped), split as text: every evaluation asks this a dozen times."""
    text = relpath if isinstance(relpath, str) else str(relpath)
    parts = [p for p in text.split("/") if p and p != "."]
    if not parts or text.startswith("/") or ".." in parts:
        raise ValueError(f"not a plain relative path: {text!r}")
    return parts


def open_dir_beneath(
    base: Path, relpath: str | PurePosixPath | Path, *, create: bool = False
) -> int:
    """A descriptor of the directory ``base/relpath``.

    ``base`` is ge's own directory and is opened as it is; no component of ``relpath`` is
    followed: one that is a symlink or not a directory raises ``UnsafePathError``; a missing one
    raises ``FileNotFoundError`` (with ``create``, it is made).
    """
    text = relpath if isinstance(relpath, str) else str(relpath)
    return _open_dir_parts(base, _parts(text) if text not in ("", ".") else [], create)


def _open_dir_parts(base: Path, parts: list[str], create: bool = False) -> int:
    """``open_dir_beneath`` given the components of the relative path."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                nxt = os.open(part, DIR_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(part) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_beneath(
    base: Path, relpath: str | PurePosixPath | Path, flags: int, mode: int = 0o600
) -> int:
    """``os.open(base/relpath, flags | O_NOFOLLOW | O_CLOEXEC)`` without following any link in
    ``relpath`` (see ``open_dir_beneath``); a final symlink raises ``ELOOP``."""
    parts = _parts(relpath)
    dir_fd = _open_dir_parts(base, parts[:-1])
    try:
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _file_problem(st: os.stat_result, max_bytes: int | None) -> UnsafeFileError | None:
    if stat.S_ISLNK(st.st_mode):
        return UnsafeFileError("symlink")
    if not stat.S_ISREG(st.st_mode):
        return UnsafeFileError("not_regular")
    if st.st_nlink != 1:
        return UnsafeFileError("hard_links")
    if max_bytes is not None and st.st_size > max_bytes:
        return UnsafeFileError("too_large", st.st_size)
    return None


def _open_beneath(
    base: Path, relpath: str | PurePosixPath | Path, max_bytes: int | None
) -> tuple[int, os.stat_result]:
    """A read-only fd of the regular file ``base/relpath`` and its ``fstat``, checked before and
    after opening (see `read_beneath`); ``max_bytes`` None: any size."""
    parts = _parts(relpath)
    dir_fd = _open_dir_parts(base, parts[:-1])
    try:
        problem = _file_problem(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False), max_bytes)
        if problem is not None:
            raise problem
        try:
            fd = os.open(parts[-1], FILE_NOFOLLOW, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFileError("symlink") from None
            raise
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    problem = _file_problem(st, max_bytes)
    if problem is not None:
        os.close(fd)
        raise problem
    return fd, st


def read_beneath(base: Path, relpath: str | PurePosixPath | Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``base/relpath``, never following a link in ``relpath``.

    Raises ``FileNotFoundError``, ``UnsafePathError`` (a directory on the way was replaced) or
    ``UnsafeFileError`` (a symlink, not a regular file - a FIFO is never opened for a blocking
    read -, another hard link to the same file, more than ``max_bytes``).
    """
    fd, _ = _open_beneath(base, relpath, max_bytes)
    try:
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise UnsafeFileError("too_large", total)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_head_beneath(
    base: Path, relpath: str | PurePosixPath | Path, limit: int
) -> tuple[bytes, int]:
    """The first ``limit`` bytes of the regular file ``base/relpath`` and its size; raises like
    `read_beneath`, except that a larger file is cut, not refused."""
    fd, st = _open_beneath(base, relpath, None)
    try:
        chunks: list[bytes] = []
        total = 0
        while total < limit and (chunk := os.read(fd, limit - total)):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks), max(st.st_size, total)
    finally:
        os.close(fd)


def unlink_beneath(base: Path, relpath: str | PurePosixPath | Path) -> bool:
    """Remove ``base/relpath`` (a directory there with everything in it), never following a link
    in ``relpath``; True when nothing is left there (also when it was missing).

    Raises ``UnsafePathError`` when a directory on the way was replaced: then nothing is touched.
    """
    parts = _parts(relpath)
    try:
        dir_fd = _open_dir_parts(base, parts[:-1])
    except FileNotFoundError:
        return True
    try:
        return _remove_entry(dir_fd, parts[-1])
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------- whole trees


def remove_tree(path: Path) -> bool:
    """Remove ``path`` and everything below it; True when nothing is left, never raises.

    ``path``'s parent is ge's own directory; ``path`` itself and everything below are never
    followed (a symlink is removed, not its target). It works iteratively through directory
    descriptors (any depth, paths longer than PATH_MAX) and gives a directory that is not
    readable, writable or searchable back to its owner (u+rwx) where it can. What it cannot
    remove stays.
    """
    try:
        path = Path(os.path.abspath(path))
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    try:
        return _remove_entry(parent, path.name)
    except (OSError, ValueError):
        return False
    finally:
        os.close(parent)


def remove_tree_soon(path: Path) -> asyncio.Future[bool]:
    """``remove_tree`` in the running event loop's default thread pool, for the caller to await
    later: removing directories waits on the file system's journal (milliseconds each on a busy
    disk), time in which the loop serves others."""
    import asyncio  # only the engine's loop calls this: the inspection commands need no asyncio

    return asyncio.get_running_loop().run_in_executor(None, remove_tree, path)


def chown_tree(path: Path, uid: int, gid: int) -> bool:
    """``lchown`` ``path`` and everything below it; True when all of it changed, never raises.

    Like ``remove_tree``: iterative, through descriptors, never following a symlink.
    """
    try:
        path = Path(os.path.abspath(path))
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return False

    def change(dir_fd: int, name: str) -> bool:
        return _quietly(lambda: os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False))

    def entered(fd: int) -> bool:
        return _quietly(lambda: os.fchown(fd, uid, gid))

    try:
        if not stat.S_ISDIR(os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode):
            return change(parent, path.name)
        return _walk(parent, path.name, _Visit(file=change, entered=entered))
    except (OSError, ValueError):
        return False
    finally:
        os.close(parent)


def _quietly(action: Callable[[], object]) -> bool:
    try:
        action()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


@dataclass
class _Visit:
    """What ``_walk`` does: with each non-directory (by name in its directory's descriptor), with
    each directory once opened, and with each directory after its contents (by name in its
    parent's descriptor); each says whether it succeeded."""

    file: Callable[[int, str], bool]
    entered: Callable[[int], bool] = lambda fd: True
    left: Callable[[int, str], bool] = lambda dir_fd, name: True
    fix_modes: bool = False


@dataclass
class _Level:
    name: str
    ident: tuple[int, int]
    subdirs: list[str] = field(default_factory=list)


def _remove_entry(dir_fd: int, name: str) -> bool:
    """Remove the entry ``name`` of ``dir_fd``, a directory with everything below it."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        return _quietly(lambda: os.unlink(name, dir_fd=dir_fd))
    visit = _Visit(
        file=lambda fd, entry: _quietly(lambda: os.unlink(entry, dir_fd=fd)),
        left=lambda fd, entry: _quietly(lambda: os.rmdir(entry, dir_fd=fd)),
        fix_modes=True,
    )
    done = _walk(dir_fd, name, visit)
    return _quietly(lambda: os.rmdir(name, dir_fd=dir_fd)) and done


def _walk(parent_fd: int, name: str, visit: _Visit) -> bool:
    """Visit the directory ``name`` of ``parent_fd`` depth first, without recursion, holding one
    descriptor at a time (up through "..", checked against the directory it came from)."""
    fd = _enter(parent_fd, name, visit.fix_modes)
    if fd is None:
        return False
    ok = visit.entered(fd)
    levels = [_Level(name, _ident(fd))]
    try:
        ok = _scan(fd, visit, levels[-1]) and ok
        while levels:
            level = levels[-1]
            if level.subdirs:
                sub = level.subdirs.pop()
                child = _enter(fd, sub, visit.fix_modes)
                if child is None:
                    ok = False
                    continue
                os.close(fd)
                fd = child
                ok = visit.entered(fd) and ok
                levels.append(_Level(sub, _ident(fd)))
                ok = _scan(fd, visit, levels[-1]) and ok
                continue
            levels.pop()
            if not levels:
                break
            parent = os.open("..", DIR_NOFOLLOW, dir_fd=fd)
            if _ident(parent) != levels[-1].ident:  # moved meanwhile: stop rather than stray
                os.close(parent)
                return False
            os.close(fd)
            fd = parent
            ok = visit.left(fd, level.name) and ok
    finally:
        os.close(fd)
    return ok


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _enter(dir_fd: int, name: str, fix_modes: bool) -> int | None:
    """The subdirectory ``name`` opened without following it; with ``fix_modes``, made u+rwx."""
    try:
        fd = os.open(name, DIR_NOFOLLOW, dir_fd=dir_fd)
    except PermissionError:
        if not fix_modes or not _chmod_dir(dir_fd, name):
            return None
        try:
            fd = os.open(name, DIR_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            return None
    except OSError:
        return None
    if fix_modes:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            _quietly(lambda: os.fchmod(fd, mode | stat.S_IRWXU))
    return fd


def _chmod_dir(dir_fd: int, name: str) -> bool:
    """u+rwx on the directory ``name`` (not on what a symlink there points to)."""
    try:
        os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except (NotImplementedError, OSError):
        pass
    try:  # no fchmodat(AT_SYMLINK_NOFOLLOW) here: check the entry is still a directory
        if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return False
        os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd)
        return True
    except OSError:
        return False


def _scan(fd: int, visit: _Visit, level: _Level) -> bool:
    """Visit the non-directories of ``fd`` and list its subdirectories in ``level``."""
    ok = True
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, _is_dir(e)) for e in it]
    except OSError:
        return False
    for name, is_dir in entries:
        if is_dir:
            level.subdirs.append(name)
        else:
            ok = visit.file(fd, name) and ok
    return ok


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False
