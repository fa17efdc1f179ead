"""Bad input to every `ge` command, through the real CLI: one line on stderr that names the problem
and the fix, exit code 2 (1 for `ge doctor` finding problems), no traceback, nothing on stdout
where the command failed, and nothing half-written. `ge run`/`ge resume`, a disk that fills up
(a file-size limit) and a lock held by another process go through a `ge` process; the other
commands through the CLI's entry point in this process (``ge_here``: the same parsing, errors,
exit codes and output, tests/test_cli_here.py)."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from guided_evolution.runstore.records import VariantRecord
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge, ge_here
from tests.support.harness import run_engine
from tests.support.seeds import template_seed

LONG = "x" * 300  # longer than a file name may be (255)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished offline run of the `ge init` seed."""
    root = tmp_path_factory.mktemp("cli_errors")
    seed = template_seed(root / "seed", generations=1, initial_population=2, population=2)
    (seed / "table.txt").write_text("0.5\n" * 25_000)  # a 100 kB file: a disk can fill up while exporting it
    run_engine(seed, root / "run")
    return root / "run"


@pytest.fixture()
def run(made: Path, tmp_path: Path) -> Path:
    """A private copy of the run that a test may damage."""
    return Path(shutil.copytree(made, tmp_path / "run"))


def variant_ids(run_dir: Path) -> list[str]:
    with RunIndex.open(run_dir / "index.sqlite", readonly=True) as index:
        return [v.id for v in index.variants()]


def child_id(run_dir: Path) -> str:
    with RunIndex.open(run_dir / "index.sqlite", readonly=True) as index:
        return next(v.id for v in index.variants() if v.branch != "seed" and v.status == "evaluated")


def one_line_exit_2(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The single `error:` line of a failed command (exit 2, empty stdout, no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ") and proc.stdout == "", (lines[0], proc.stdout[:500])
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


@contextmanager
def lock_held(run_dir: Path) -> Iterator[None]:
    """Hold the run lock the way a writing `ge run` does (fcntl, pid inside)."""
    fd = os.open(run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- not a run


@pytest.mark.parametrize("flags", [(), ("--repair",), ("--rebuild-index",)], ids=["check", "repair", "rebuild"])
@pytest.mark.parametrize("kind", ["missing", "plain-dir", "file"])
def test_doctor_of_something_that_is_not_a_run(tmp_path: Path, kind: str, flags: tuple[str, ...]) -> None:
    """`ge doctor --repair` created a lock file inside any directory, and called a missing one
    'not a ge git repository'."""
    target = tmp_path / "target"
    expected = {"missing": "run directory not found", "plain-dir": "not a ge run directory", "file": "is a file"}
    if kind == "plain-dir":
        target.mkdir()
    elif kind == "file":
        target.write_text("hello")
    proc = ge_here("doctor", str(target), *flags, "--json", cwd=tmp_path)
    one_line_exit_2(proc, expected[kind], "`ge run`")
    if kind == "plain-dir":
        assert list(target.iterdir()) == [], "doctor wrote into a directory that is not a run"


def test_a_run_dir_that_is_a_file_or_lost_its_parts(run: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line_exit_2(ge_here("status", str(tmp_path / "file"), "--json", cwd=tmp_path), "is a file, not a run directory")

    no_index = Path(shutil.copytree(run, tmp_path / "no_index"))
    (no_index / "index.sqlite").unlink()
    one_line_exit_2(ge_here("best", str(no_index), cwd=tmp_path), "no index.sqlite", "--rebuild-index")

    shutil.rmtree(run / "repo.git")
    line = one_line_exit_2(ge_here("status", str(run), cwd=tmp_path), "no repo.git", "backup")
    assert "--rebuild-index" not in line, "a rebuild needs repo.git: do not suggest it"


def test_a_damaged_frozen_config_says_what_to_do(run: Path, tmp_path: Path) -> None:
    (run / "config.json").write_text("garbage{{")
    for args in (("status", str(run), "--json"), ("resume", str(run)), ("show", str(run), "seed")):
        one_line_exit_2(ge_here(*args, cwd=tmp_path), "config.json", "restore")
    proc = ge_here("doctor", str(run), "--json", cwd=tmp_path)
    assert proc.returncode == 1, "doctor said ok about a run no other command can open"
    assert any("config.json" in p for p in json.loads(proc.stdout)["problems"])


# --------------------------------------------------------------------------- damaged index


@pytest.mark.parametrize("damage", ["empty", "garbage", "table-missing"])
def test_resume_after_the_index_is_damaged(run: Path, tmp_path: Path, damage: str) -> None:
    """The repair at the start of `ge resume` rebuilt the index without recording the seed, and
    the engine then crashed with a TypeError; a missing table crashed the rebuild itself."""
    index = run / "index.sqlite"
    if damage == "table-missing":
        sql(index, "DROP TABLE evaluations")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index}{suffix}").unlink(missing_ok=True)
        index.write_bytes(b"" if damage == "empty" else os.urandom(5000))
    proc = ge_here("resume", str(run), "--json", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["run_dir"] == str(run)
    diff = ge_here("diff", str(run), child_id(run), "--json", cwd=tmp_path)  # against the seed
    assert diff.returncode == 0, diff.stderr
    doctor = ge_here("doctor", str(run), "--json", cwd=tmp_path)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["ok"], doctor.stdout + doctor.stderr


def test_a_missing_table_is_one_line_from_every_reader(run: Path, tmp_path: Path) -> None:
    sql(run / "index.sqlite", "DROP TABLE evaluations")
    report = tmp_path / "r.html"
    for args in (("best",), ("log",), ("show", "seed"), ("lineage", "seed"), ("report", "-o", str(report))):
        one_line_exit_2(ge_here(args[0], str(run), *args[1:], "--json", cwd=tmp_path), "damaged", "ge doctor")
    assert not report.exists()
    proc = ge_here("doctor", str(run), "--json", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["problems"]
    repaired = ge_here("doctor", str(run), "--repair", "--json", cwd=tmp_path)
    assert repaired.returncode == 0 and json.loads(repaired.stdout)["ok"], repaired.stdout + repaired.stderr
    assert ge_here("best", str(run), "--json", cwd=tmp_path).returncode == 0


def test_doctor_never_rebuilds_over_an_index_of_a_newer_ge(run: Path, tmp_path: Path) -> None:
    """A repair rebuilt (and so emptied of LLM calls and checkpoints) an index it could not read
    because a newer ge wrote it."""
    index = run / "index.sqlite"
    sql(index, "PRAGMA user_version = 999")
    before = index.read_bytes()
    proc = ge_here("doctor", str(run), "--repair", cwd=tmp_path, env={"COLUMNS": "300"})
    assert proc.returncode == 1 and "upgrade ge" in proc.stdout and "try --repair" not in proc.stdout, proc.stdout
    one_line_exit_2(ge_here("doctor", str(run), "--rebuild-index", cwd=tmp_path), "newer", "upgrade ge")
    assert index.read_bytes() == before


def test_doctor_of_a_run_being_written_says_so(run: Path, tmp_path: Path) -> None:
    """While `ge run` writes, rows and notes in flight look like problems; doctor suggested a
    --repair that the lock then refuses."""
    sql(run / "index.sqlite", f"UPDATE variants SET status = 'pending' WHERE id = '{child_id(run)}'")
    with lock_held(run):
        text = ge("doctor", str(run), cwd=tmp_path, env={"COLUMNS": "300"})
        data = ge("doctor", str(run), "--json", cwd=tmp_path)
    assert text.returncode == 1 and "writes this run" in text.stdout and "try --repair" not in text.stdout
    assert json.loads(data.stdout)["writer_pid"] == str(os.getpid())
    assert json.loads(ge_here("doctor", str(run), "--json", cwd=tmp_path).stdout)["writer_pid"] is None


# --------------------------------------------------------------------------- variant ids


def test_variant_id_forms_and_mistakes(run: Path, tmp_path: Path) -> None:
    vid = child_id(run)
    branch = f"v/{json.loads(ge_here('show', str(run), vid, '--json', cwd=tmp_path).stdout)['generation']}/{vid}"
    for given in (branch, vid[:8].upper(), f"  {vid}  "):
        proc = ge_here("show", str(run), given, "--json", cwd=tmp_path)
        assert proc.returncode == 0 and json.loads(proc.stdout)["id"] == vid, (given, proc.stderr)
    # Odd characters were cut at the last '/' ('../' became an "empty variant id").
    for odd in ("../", "../../etc/passwd", "%s{}[/bold]"):
        one_line_exit_2(ge_here("show", str(run), odd, cwd=tmp_path), f"no variant {odd!r}", f"ge best {run}")
    one_line_exit_2(ge_here("lineage", str(run), "", cwd=tmp_path), "empty variant id")
    line = one_line_exit_2(ge_here("diff", str(run), "a" * 100_000, "--json", cwd=tmp_path), "no variant")
    assert len(line) < 400, "a huge argument is echoed in full"


def test_an_ambiguous_prefix_lists_the_candidates(run: Path, tmp_path: Path) -> None:
    real = child_id(run)
    twin = real[:6] + ("0" if real[6] != "0" else "1") + real[7:]
    with RunIndex.open(run / "index.sqlite") as index:
        index.add_variant(VariantRecord(twin, 1, "mutation", status="invalid"))
    line = one_line_exit_2(ge_here("export", str(run), real[:6], str(tmp_path / "out"), cwd=tmp_path), "ambiguous")
    assert real in line and twin in line and "more characters" in line
    assert not (tmp_path / "out").exists()


def test_diff_of_a_variant_with_itself_is_empty(run: Path, tmp_path: Path) -> None:
    vid = child_id(run)
    data = json.loads(ge_here("diff", str(run), vid, vid, "--json", cwd=tmp_path).stdout)
    assert data["from"] == data["to"] == vid and data["diff"] == "" and data["files"] == []


# --------------------------------------------------------------------------- export, report, init, run


def ge_limited(*args: str, cwd: Path, max_file_bytes: int) -> subprocess.CompletedProcess[str]:
    """`ge ARGS` that cannot write a file larger than ``max_file_bytes`` (a disk that fills up)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "guided_evolution", *args], cwd=cwd, capture_output=True, text=True,
        timeout=60, check=False, preexec_fn=limit, env={**os.environ, "LITELLM_OFFLINE_MODE": "true"},
    )


def test_an_export_that_fails_half_way_leaves_nothing(made: Path, tmp_path: Path) -> None:
    """The files were written straight into DEST (and its new parents), so a full disk left a
    directory with some files, one of them cut short."""
    vid = child_id(made)
    dest = tmp_path / "new" / "deeper" / "out"
    # Above the index's 32 kB shared-memory file (SQLite needs it), below table.txt.
    proc = ge_limited("export", str(made), vid, str(dest), cwd=tmp_path, max_file_bytes=60_000)
    one_line_exit_2(proc, "cannot export into", "File too large")
    assert list(tmp_path.iterdir()) == [], f"left behind: {sorted(p.name for p in tmp_path.rglob('*'))}"
    ok = ge_here("export", str(made), vid, str(dest), "--json", cwd=tmp_path)
    assert ok.returncode == 0 and (dest / "table.txt").stat().st_size == 100_000, ok.stderr


def test_export_destination_mistakes(made: Path, tmp_path: Path) -> None:
    vid = child_id(made)
    one_line_exit_2(ge_here("export", str(made), vid, "", cwd=tmp_path), "DEST is empty")
    one_line_exit_2(ge_here("export", str(made), vid, str(tmp_path / LONG), "--json", cwd=tmp_path), "File name too long")
    one_line_exit_2(ge_here("export", str(made), vid, str(tmp_path / LONG), "--patch", cwd=tmp_path), "File name too long")
    line = one_line_exit_2(ge_here("export", str(made), vid, str(made / "repo.git"), "--force", cwd=tmp_path))
    assert "inside the run directory" in line
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    one_line_exit_2(ge_here("export", str(made), vid, str(tmp_path / "busy"), cwd=tmp_path), "not empty", "--force")
    (tmp_path / "plain").write_text("x")
    one_line_exit_2(ge_here("export", str(made), vid, str(tmp_path / "plain"), cwd=tmp_path), "not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "plain"]
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["mine.txt"]
    assert not list((made / "repo.git").glob("*.py"))


def test_report_output_mistakes(made: Path, tmp_path: Path) -> None:
    one_line_exit_2(ge_here("report", str(made), "-o", "", cwd=tmp_path), "-o is empty")
    one_line_exit_2(ge_here("report", str(made), "-o", "-", "--json", cwd=tmp_path), "standard output")
    one_line_exit_2(ge_here("report", str(made), "-o", str(tmp_path / f"{LONG}.html"), cwd=tmp_path), "too long")
    one_line_exit_2(ge_here("report", str(made), "-o", str(tmp_path / "no" / "r.html"), cwd=tmp_path), "does not exist")
    assert list(tmp_path.iterdir()) == []
    # A name just under the file-system limit works: the temp file's name must not be longer.
    longest = tmp_path / ("r" * 250 + ".html")
    proc = ge_here("report", str(made), "-o", str(longest), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == [longest.name]


def test_init_path_mistakes(tmp_path: Path) -> None:
    one_line_exit_2(ge_here("init", "", cwd=tmp_path), "DIRECTORY is empty")
    one_line_exit_2(ge_here("init", LONG, cwd=tmp_path), "too long")
    (tmp_path / "file").write_text("x")
    one_line_exit_2(ge_here("init", "file", cwd=tmp_path), "cannot write the seed")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_run_into_an_impossible_run_dir_is_not_called_a_full_disk(tmp_path: Path) -> None:
    """Any OSError while creating the run counted as 'no space left' when the parent file system
    reported little free space, as /proc does."""
    seed = template_seed(tmp_path / "seed")
    line = one_line_exit_2(ge_here("run", str(seed), "--run-dir", "/proc/ge-no-such", cwd=tmp_path), "/proc/ge-no-such")
    assert "no space" not in line
    one_line_exit_2(ge_here("run", str(seed), "--run-dir", str(tmp_path / LONG), "--json", cwd=tmp_path), "too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed"]
