"""The run lock: a holder whose recorded pid has exited (a child of a killed ge that still holds
the lock's descriptor for a moment) is waited for; a live holder is refused at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guided_evolution.errors import RunStateError
from guided_evolution.runstore.rundir import RunLock

_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, sys.argv[2].encode())
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def _holder(lock: Path, recorded: str, seconds: float) -> subprocess.Popen[str]:
    """A process holding ``lock`` for ``seconds``, the file naming pid ``recorded``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(lock), recorded, str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _exited_pid() -> str:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_a_lock_kept_a_moment_after_its_holder_exited_is_waited_for(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "lock", _exited_pid(), 1.0)
    try:
        started = time.monotonic()
        with RunLock(tmp_path):  # refused at once before: "in use by another ge process"
            assert (tmp_path / "lock").read_text() == str(os.getpid())
        assert time.monotonic() - started < 5.0
    finally:
        holder.kill()
        holder.wait()


def test_a_live_holder_is_refused_at_once(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "lock", "", 30.0)
    try:
        (tmp_path / "lock").write_text(str(holder.pid))  # what a running ge records
        started = time.monotonic()
        with pytest.raises(RunStateError, match=f"in use by another ge process \\(pid {holder.pid}\\)"):
            RunLock(tmp_path).__enter__()
        assert time.monotonic() - started < 1.0
    finally:
        holder.kill()
        holder.wait()
