"""Small file-system helpers shared by every package: atomic writes and containment checks."""

from __future__ import annotations

import os
from pathlib import Path

TMP_PREFIX = ".ge-tmp-"  # a dot-file: git skips it when it scans loose refs; short: any name fits


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
