"""Bad input not covered by tests/engine/test_engine.py: one clear line, exit code 2, nothing half-written.

Full disk and read-only file systems are simulated with small tmpfs mounts (root only); the tests
skip with a message where mounting is not possible.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.support import set_config
from tests.support.cli import ge_here
from tests.support.seeds import template_seed

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block; skips the test where mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}); full-disk test skipped"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert any(e in lines[0] for e in expected), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("size", "blob"),
    [("64k", True), ("600k", True), ("120k", False), ("160k", False)],
    ids=["full-at-config", "full-at-git", "full-at-index-io", "full-at-index"],
)
def test_full_disk_while_creating_the_run_leaves_no_run_dir(
    tmp_path: Path, size: str, blob: bool
) -> None:
    seed = template_seed(tmp_path / "seed")
    if blob:
        (seed / "blob.bin").write_bytes(
            os.urandom(580_000)
        )  # incompressible: git cannot squeeze it, and it does not fit beside the config
    with tmpfs(tmp_path / "disk", f"size={size}") as disk:
        proc = ge_here("run", str(seed), "--run-dir", str(disk / "runs" / "x"), cwd=tmp_path)
        line = _one_line_exit_2(proc, "no space left")
        assert "free some disk space" in line
        leftovers = (
            sorted(p.name for p in (disk / "runs").iterdir()) if (disk / "runs").exists() else []
        )
        assert leftovers == [], f"half-written run left behind: {leftovers}"


def test_read_only_file_system_is_a_clear_error(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        proc = ge_here("run", str(seed), "--run-dir", str(ro / "runs" / "x"), cwd=tmp_path)
        _one_line_exit_2(proc, "run directory")
        assert not (ro / "runs").exists()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: set_config(s, "evaluator", check="no-such-checker --fast"), "evaluator.check"),
        (lambda s: (s / "model.py").write_bytes(b"# --OPTION--\nx = '\xff\xfe'\n"), "UTF-8"),
        (lambda s: set_config(s, "seed", dir="does-not-exist"), "seed directory not found"),
        (lambda s: set_config(s, "evaluator", command="python 'unterminated"), "evaluator.command"),
        (lambda s: (s / "ge.toml").write_bytes(b"\xff\xfe\x00garbage"), "ge.toml"),
    ],
    ids=[
        "missing-check-command",
        "seed-not-utf8",
        "seed-dir-missing",
        "unparsable-command",
        "binary-toml",
    ],
)
def test_more_bad_seeds_are_one_line_exit_2(tmp_path: Path, mutate, expected: str) -> None:
    seed = template_seed(tmp_path / "seed")
    mutate(seed)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "runs" / "x"), cwd=tmp_path)
    _one_line_exit_2(proc, expected)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("target", ["missing", "not-a-run", "file"])
def test_resume_of_something_that_is_not_a_run(tmp_path: Path, target: str) -> None:
    path = tmp_path / target
    if target == "not-a-run":
        path.mkdir()
    elif target == "file":
        path.write_text("hello")
    proc = ge_here("resume", str(path), cwd=tmp_path)
    _one_line_exit_2(proc, "run directory", "not a ge run")
    if target == "not-a-run":
        assert list(path.iterdir()) == [], "resume wrote into a directory that is not a run"


def test_a_disk_full_while_the_run_is_created_is_one_line_and_a_new_run_works(
    tmp_path: Path,
) -> None:
    """The seed fits, its run does not (the seed is evaluated in the run's temporary directory
    before it is moved into place, issue 26): one line (it used to be a traceback from the run
    lock), nothing left on the disk, and the same `ge run` works once there is space again."""
    seed = template_seed(tmp_path / "seed")
    (seed / "blob.bin").write_bytes(os.urandom(400_000))  # the run fits in 600k, just
    with tmpfs(tmp_path / "disk", "size=600k") as disk:
        run_dir = disk / "runs" / "x"
        proc = ge_here("run", str(seed), "--run-dir", str(run_dir), cwd=tmp_path)
        line = _one_line_exit_2(proc, "no space left")
        assert "free some disk space" in line
        assert list(disk.iterdir()) == [], list(disk.rglob("*"))
        remount = subprocess.run(
            ["mount", "-o", "remount,size=20m", str(disk)], capture_output=True, text=True
        )
        assert remount.returncode == 0, remount.stderr
        resumed = ge_here("run", str(seed), "--run-dir", str(run_dir), "--json", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert '"finished": true' in resumed.stdout
