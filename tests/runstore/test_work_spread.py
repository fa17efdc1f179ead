"""``rundir.spread_work``: a run's ``work/`` is the top of a directory hierarchy where the file
system has the flag (ext2/3/4), and nothing changes or fails where it has not."""

from __future__ import annotations

import fcntl
import os
import struct
import tempfile
from pathlib import Path

import pytest

from guided_evolution.runstore.rundir import spread_work

TOPDIR = 0x00020000


def _flags(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return struct.unpack("i4x", fcntl.ioctl(fd, 0x80086601, bytes(8)))[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def test_work_is_marked_where_the_file_system_keeps_the_flag(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    before = _flags(work)
    if before is None:
        pytest.skip("this file system has no inode flags (not ext2/3/4)")
    assert spread_work(work) is True
    after = _flags(work)
    assert after is not None and after & TOPDIR
    assert after & ~TOPDIR == before & ~TOPDIR  # no other flag changed
    assert spread_work(work) is True  # marked already: nothing to do
    (work / "child").mkdir()  # directories beneath are made as before
    assert not (_flags(work / "child") or 0) & TOPDIR


def test_a_missing_directory_or_a_link_is_left_alone(tmp_path: Path) -> None:
    assert spread_work(tmp_path / "missing") is False
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    assert spread_work(tmp_path / "link") is False
    flags = _flags(target)
    assert flags is None or not flags & TOPDIR


def test_a_file_system_without_the_flag_is_not_an_error() -> None:
    """tmpfs keeps some inode flags but not this one: no error, False, nothing changed."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    work = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        before = _flags(work)
        marked = spread_work(work)
        after = _flags(work)
        assert marked == bool(after is not None and after & TOPDIR)
        if not marked:
            assert after == before
    finally:
        work.rmdir()
