"""Files a variant controls: ge never follows a link the variant planted, never trusts a path below
the variant's directory, cleans any tree it leaves without crashing, and never quotes its bytes.

End to end, hostile payloads run in `ge run` against the fake OpenAI server; the helpers of
``guided_evolution.fsutil`` and ``read_metrics`` are also tested directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from guided_evolution.evaluation.contract import METRICS_MAX_BYTES, EvalRequest, read_metrics
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.slurm.outcomes import read_result
from guided_evolution.evaluation.workers.pool import WorkerPool
from guided_evolution.fsutil import (
    UnsafeFileError,
    UnsafePathError,
    chown_tree,
    open_beneath,
    read_beneath,
    remove_tree,
    unlink_beneath,
)
from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import (
    PayloadWriter,
    assert_store_intact,
    evaluate_stage_only,
    llm_config,
    set_config,
    variants_by_payload,
)
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import template_seed

pytestmark = pytest.mark.timeout(240)

DEPTH = 5000
MARK = "VARIANT-BYTES-5e1c"
NOBODY = 65534


def _snapshot(root: Path) -> dict[str, str]:
    """relative path -> its type and, for a regular file, its bytes; never opens anything else
    (a FIFO that ge was tricked into making there must not block the test)."""
    out: dict[str, str] = {}
    for path in sorted([root, *root.rglob("*")]):
        mode = os.lstat(path).st_mode
        kind = stat.S_IFMT(mode)
        text = path.read_bytes().hex() if stat.S_ISREG(mode) else ""
        out[str(path.relative_to(root))] = f"{kind:o}:{text}"
    return out


def _nest(top: Path, depth: int, *, files: bool = False) -> None:
    """``depth`` directories ``d/d/d/...`` below ``top`` (through descriptors: the path is far
    longer than PATH_MAX), with a file in each with ``files``."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            if files:
                os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- remove_tree


def test_remove_tree_removes_a_tree_deeper_than_recursion_and_path_max(tmp_path: Path) -> None:
    top = tmp_path / "work" / "variant"
    _nest(top, DEPTH, files=True)
    assert remove_tree(top) is True
    assert not top.exists() and (tmp_path / "work").is_dir()
    assert remove_tree(top) is True  # nothing there: nothing to do


def test_remove_tree_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "keep.txt").write_text("keep")
    top = tmp_path / "variant"
    (top / "a").mkdir(parents=True)
    (top / "a" / "link").symlink_to(outside)
    (top / "a" / "file-link").symlink_to(outside / "sub" / "keep.txt")
    (top / "dangling").symlink_to(tmp_path / "nowhere")
    assert remove_tree(top) is True
    link = tmp_path / "link-variant"
    link.symlink_to(outside)
    assert remove_tree(link) is True
    assert not link.is_symlink() and not top.exists()
    assert (outside / "sub" / "keep.txt").read_text() == "keep"


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A temporary directory that another user (``nobody``) can reach."""
    path = Path(tempfile.mkdtemp(prefix="ge-variant-files-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        remove_tree(path)


def _as_non_root(*paths: Path) -> list[bool]:
    """``remove_tree`` of each path as an ordinary user: in a forked child that became
    ``nobody`` when the tests run as root (no ``CAP_DAC_OVERRIDE``: modes apply)."""
    if os.geteuid() != 0:
        return [remove_tree(p) for p in paths]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            os.write(write, json.dumps([remove_tree(p) for p in paths]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data
    return json.loads(data)


def _give_to_nobody(path: Path) -> None:
    if os.geteuid() == 0:
        assert chown_tree(path, NOBODY, NOBODY) is True


def test_remove_tree_as_an_ordinary_user_opens_up_locked_directories(shared_tmp: Path) -> None:
    top = shared_tmp / "work" / "variant"
    for sub in ("locked/inner", "readonly", "noexec/deeper"):
        (top / sub).mkdir(parents=True)
    (top / "locked" / "inner" / "f").write_text("x")
    (top / "readonly" / "f").write_text("x")
    (top / "noexec" / "deeper" / "f").write_text("x")
    _nest(top / "deep", 1500)
    _give_to_nobody(top.parent)
    (top / "locked").chmod(0)
    (top / "readonly").chmod(0o500)
    (top / "noexec").chmod(0o600)
    assert _as_non_root(top) == [True]
    assert not top.exists()


def test_remove_tree_never_raises_and_says_what_it_left(shared_tmp: Path) -> None:
    parent = shared_tmp / "parent"
    (parent / "variant" / "sub").mkdir(parents=True)
    (parent / "variant" / "sub" / "f").write_text("x")
    _give_to_nobody(parent)
    parent.chmod(0o555)  # ge's own directory: remove_tree does not change it
    try:
        assert _as_non_root(parent / "variant", Path("/proc/1/root/x")) == [False, False]
    finally:
        parent.chmod(0o755)
    assert (parent / "variant").is_dir()  # what could not go stays


def test_chown_tree_is_iterative_and_never_follows(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing owners needs root")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    top = tmp_path / "variant"
    _nest(top, DEPTH)
    (top / "link").symlink_to(outside)
    assert chown_tree(top, NOBODY, NOBODY) is True
    assert top.stat().st_uid == NOBODY and os.lstat(top / "link").st_uid == NOBODY
    assert outside.stat().st_uid == 0
    assert remove_tree(top)


# --------------------------------------------------------------------------- no-follow access


def _variant_with_metrics(tmp_path: Path) -> Path:
    ge_dir = tmp_path / "work" / "v1" / ".ge"
    ge_dir.mkdir(parents=True)
    (tmp_path / "secret.json").write_text('{"score": 4242, "size": 1}')
    return ge_dir


@pytest.mark.parametrize("kind", ["symlink", "fifo", "hard_link", "directory", "too_large"])
def test_read_beneath_refuses_what_is_not_a_plain_file(tmp_path: Path, kind: str) -> None:
    ge_dir = _variant_with_metrics(tmp_path)
    target = ge_dir / "metrics.json"
    if kind == "symlink":
        target.symlink_to(tmp_path / "secret.json")
    elif kind == "fifo":
        os.mkfifo(target)  # must not block: no writer ever opens it
    elif kind == "hard_link":
        os.link(tmp_path / "secret.json", target)
    elif kind == "directory":
        target.mkdir()
    else:
        target.write_bytes(b" " * 101)
    with pytest.raises(UnsafeFileError) as caught:
        read_beneath(tmp_path / "work", "v1/.ge/metrics.json", 100)
    expected = {"fifo": "not_regular", "directory": "not_regular", "hard_link": "hard_links"}
    assert caught.value.kind == expected.get(kind, kind)


def test_beneath_helpers_never_go_through_a_replaced_directory(tmp_path: Path) -> None:
    ge_dir = _variant_with_metrics(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "metrics.json").write_text('{"score": 1}')
    shutil.rmtree(ge_dir)
    ge_dir.symlink_to(elsewhere)
    work = tmp_path / "work"
    for call in (
        lambda: read_beneath(work, "v1/.ge/metrics.json", 100),
        lambda: unlink_beneath(work, "v1/.ge/metrics.json"),
        lambda: open_beneath(work, "v1/.ge/metrics.json", os.O_RDONLY),
    ):
        with pytest.raises(UnsafePathError) as caught:
            call()
        assert caught.value.component == ".ge"
    assert (elsewhere / "metrics.json").exists()
    (work / "v1" / "file").write_text("x")
    with pytest.raises(UnsafePathError):
        read_beneath(work, "v1/file/metrics.json", 100)
    with pytest.raises(ValueError):
        read_beneath(work, "v1/../secret.json", 100)
    assert unlink_beneath(work, "v1/missing/metrics.json") is True
    assert unlink_beneath(work, "v1/.ge") is True  # the link itself, not its target
    assert (elsewhere / "metrics.json").exists()


# --------------------------------------------------------------------------- read_metrics


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b'{"score": 1, "note": "\xf8' + MARK.encode() + b'"}',
            "metrics file is not UTF-8 (byte offset 22)",
        ),
        (
            b'{"score": 1,\n "x": "\\' + MARK.encode() + b'"}',
            "metrics file is not valid JSON (line 2, column 8)",
        ),
        (
            b'{"score": "\x1b[2J' + MARK.encode() + b'\x07"}',
            "metrics file is not valid JSON (line 1, column 12)",
        ),
        (b"[" * 200_000, "metrics file is nested too deeply"),
        (b'{"score": 1, "x": ' + b"[" * 900 + b"]" * 900 + b"}", None),
        pytest.param(
            b'{"score": 1' + b"9" * 5000 + b"}",
            "metrics file is not valid JSON (a value cannot be read)",
            marks=pytest.mark.skipif(
                not hasattr(sys, "get_int_max_str_digits"), reason="no digit limit in this Python"
            ),
        ),
    ],
)
def test_metrics_reasons_never_quote_the_file(
    tmp_path: Path, content: bytes, reason: str | None
) -> None:
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    _metrics, got = read_metrics(path, ["score"])
    assert got == reason
    assert MARK not in (got or "") and "xf8" not in (got or "")


def test_read_metrics_judges_everything_below_the_variant_directory(tmp_path: Path) -> None:
    ge_dir = _variant_with_metrics(tmp_path)
    workdir = ge_dir.parent
    metrics = ge_dir / "metrics.json"
    metrics.symlink_to(tmp_path / "secret.json")
    assert read_metrics(metrics, ["score"], root=workdir) == ({}, "metrics file is a symbolic link")
    assert read_metrics(metrics, ["score"]) == ({}, "metrics file is a symbolic link")
    metrics.unlink()
    os.link(tmp_path / "secret.json", metrics)
    assert read_metrics(metrics, ["score"], root=workdir)[1] == "metrics file has other hard links"
    metrics.unlink()
    metrics.write_text('{"score": 2}')
    assert read_metrics(metrics, ["score"], root=workdir) == ({"score": 2.0}, None)
    moved = tmp_path / "moved"
    workdir.rename(moved)
    workdir.symlink_to(moved)  # the variant's directory itself replaced by a link
    assert read_metrics(metrics, ["score"], root=workdir) == (
        {},
        "the variant replaced its own directory",
    )
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "big.json").write_bytes(b" " * (METRICS_MAX_BYTES + 1))
    assert read_metrics(tmp_path / "x" / "big.json", ["score"])[1] == (
        f"metrics file too large ({METRICS_MAX_BYTES + 1} bytes)"
    )


def test_slurm_result_copies_the_metrics_file_only_when_it_is_a_plain_file(tmp_path: Path) -> None:
    job_dir = tmp_path / "slurm" / "v1" / "tok"
    ge_dir = job_dir / "work" / ".ge"
    ge_dir.mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text('{"root-only": 1}')
    secret.chmod(0o600)
    (ge_dir / "metrics.json").symlink_to(secret)
    spec = {"metrics_path": str(ge_dir / "metrics.json")}
    (job_dir / "spec.json").write_text(json.dumps(spec))
    (job_dir / "result.json").write_text(
        json.dumps({"status": "failed", "failure_reason": "metrics file is a symbolic link"})
    )
    request = EvalRequest(
        "v1",
        job_dir / "work",
        tmp_path,
        "true",
        None,
        1.0,
        1.0,
        ge_dir / "metrics.json",
        None,
        ("score",),
    )
    result = read_result(job_dir, request, 0.0)
    assert result is not None and result.status == "failed"
    assert not (job_dir / "metrics.json").exists()
    (ge_dir / "metrics.json").unlink()
    (ge_dir / "metrics.json").write_text('{"score": 1}')
    assert read_result(job_dir, request, 0.0) is not None
    assert (job_dir / "metrics.json").read_text() == '{"score": 1}'


# --------------------------------------------------------------------------- end to end


def _run(
    tmp_path: Path, payloads: list[tuple[str, str]], outside: Path, **evaluator: object
) -> tuple[Path, dict]:
    """One generation-0 `ge run` where every child carries one payload; the run must finish,
    the store stay intact, nothing in ``outside`` change and no variant directory stay behind.
    ``evaluator``: more [evaluator] settings."""
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=len(payloads))
    set_config(seed, "executor", slots=2)
    set_config(seed, "evaluator", timeout_s=60, **evaluator)
    run_dir = tmp_path / "run"
    before = _snapshot(outside)
    try:
        with serve(responder=PayloadWriter(payloads)) as server:
            llm_config(seed, server.base_url, concurrency=2)
            summary = here_json(
                "run",
                str(seed),
                "--run-dir",
                str(run_dir),
                cwd=tmp_path,
                env={"OPENAI_API_KEY": "sk-variant-files"},
            )
        assert [p.name for p in (run_dir / "work").iterdir()] == []
    finally:  # a tree that ge left (when it fails) would crash pytest's own clean-up
        remove_tree(run_dir / "work")
    assert summary["finished"], summary
    assert _snapshot(outside) == before, "ge changed files outside the variants' directories"
    assert_store_intact(run_dir, tmp_path)
    found = variants_by_payload(run_dir)
    assert set(found) == {name for name, _ in payloads}, sorted(found)
    return run_dir, found


def _failed_with(found: dict, name: str, reason: str) -> None:
    ev = found[name]["evaluation"]
    assert found[name]["status"] == "failed" and ev is not None, (name, found[name])
    assert ev.failure_reason == reason, (name, ev.failure_reason)


def _metrics_payload(action: str) -> str:
    return evaluate_stage_only(
        f"import os as _os\n_m = _os.environ['GE_METRICS']\n{action}\n_os._exit(0)"
    )


def test_hostile_metrics_files_and_trees_are_refused_and_cleaned(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text('{"score": 4242.0, "size": 1}')
    secret.chmod(0o600)
    valid = "open(_m, 'w').write('{\"score\": 1.0, \"size\": 2}')"
    payloads = [
        ("symlink", _metrics_payload(f"_os.symlink({str(secret)!r}, _m)")),
        (
            "hard-link",
            _metrics_payload(
                "open('m2.json', 'w').write('{\"score\": 5, \"size\": 1}')\n_os.link('m2.json', _m)"
            ),
        ),
        ("fifo", _metrics_payload("_os.mkfifo(_m)")),
        ("directory", _metrics_payload("_os.mkdir(_m)")),
        (
            "not-utf8",
            _metrics_payload(f'open(_m, \'wb\').write(b\'{{"score": 1, "s": "\\xf8{MARK}"}}\')'),
        ),
        ("deep-json", _metrics_payload("open(_m, 'w').write('[' * 200000)")),
        (
            "deep-tree",
            _metrics_payload(
                f"{valid}\nfor _ in range(3000):\n    _os.mkdir('d')\n    _os.chdir('d')"
            ),
        ),
        (
            "locked",
            _metrics_payload(
                f"{valid}\n_os.makedirs('l/i')\nopen('l/i/f', 'w').close()\n_os.chmod('l/i', 0)\n_os.chmod('l', 0)"
            ),
        ),
    ]
    run_dir, found = _run(tmp_path, payloads, outside)
    _failed_with(found, "symlink", "metrics file is a symbolic link")
    _failed_with(found, "hard-link", "metrics file has other hard links")
    _failed_with(found, "fifo", "metrics path is not a regular file")
    _failed_with(found, "directory", "metrics path is not a regular file")
    _failed_with(found, "not-utf8", "metrics file is not UTF-8 (byte offset 19)")
    _failed_with(found, "deep-json", "metrics file is nested too deeply")
    for name in ("deep-tree", "locked"):
        assert found[name]["status"] == "evaluated", found[name]
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        recorded = json.dumps([ev.metrics for ev in index.evaluations()])
        reasons = " ".join(ev.failure_reason or "" for ev in index.evaluations())
    finally:
        index.close()
    assert "4242" not in recorded and MARK not in reasons


def test_a_check_stage_that_replaces_ge_dir_fails_and_ge_touches_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text("the user's file\n")
    replace = (
        "import os as _os, shutil as _sh, sys as _sys\n"
        "if '--check' in _sys.argv and not _os.path.islink('.ge'):\n"
        "    _sh.rmtree('.ge')\n"
        f"    _os.symlink({str(outside)!r}, '.ge')\n"
    )
    # A plain child beside it: a generation in which every child fails stops the run.
    _run_dir, found = _run(tmp_path, [("replace-ge", replace), ("plain", "pass\n")], outside)
    _failed_with(found, "replace-ge", "the variant replaced its .ge directory")
    assert found["replace-ge"]["evaluation"].stage == "evaluate"
    assert (outside / "metrics.json").read_text() == "the user's file\n"


@pytest.mark.parametrize("preload", [False, True])
def test_a_check_stage_that_plants_a_deep_tree_or_a_home_link_never_crashes_ge(
    tmp_path: Path, preload: bool
) -> None:
    """Before the evaluate stage ge gives the variant's directory to the stage's uid (root) and
    makes its private HOME: a 3,000-deep tree must not crash that (chown was recursive), and a
    ``.ge-home`` link to a directory outside must not be followed. A fresh process fails on the
    link; a preloaded fork's HOME is its stage directory, so the link is never used."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("the user's file\n")
    deep = (
        "import os as _os, sys as _sys\n"
        "if '--check' in _sys.argv and not _os.path.isdir('d'):\n"
        "    _here = _os.open('.', _os.O_RDONLY)\n"
        "    for _ in range(3000):\n"
        "        _os.mkdir('d')\n"
        "        _os.chdir('d')\n"
        "    _os.fchdir(_here)\n"
    )
    home_link = (
        "import os as _os, shutil as _sh, sys as _sys\n"
        "if '--check' in _sys.argv and not _os.path.islink('.ge-home'):\n"
        "    _sh.rmtree('.ge-home', ignore_errors=True)\n"
        f"    _os.symlink({str(outside)!r}, '.ge-home')\n"
    )
    payloads = [("check-deep", deep), ("home-link", home_link)]
    _run_dir, found = _run(tmp_path, payloads, outside, preload=preload)
    assert found["check-deep"]["status"] in ("evaluated", "failed"), found["check-deep"]
    assert found["home-link"]["status"] == ("evaluated" if preload else "failed"), found[
        "home-link"
    ]
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


# --------------------------------------------------------------------------- workers

WORKER = r"""
import json, os, runpy, sys

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(req["log_path"], os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ.update(req["env"])
        os.chdir(req["workdir"])
        json.dump({"score": 1.0}, open(os.environ["GE_METRICS"], "w"))
        runpy.run_path("payload.py")
        os._exit(0)
    print(json.dumps({"variant_id": req["variant_id"], "pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"variant_id": req["variant_id"], "exit_code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


def test_a_worker_variant_cannot_redirect_the_slot_directory(tmp_path: Path) -> None:
    """Under `[evaluator] worker` the variant can write its slot's directory: a symlink in place
    of the slot's io directory or of its own directory must not make ge delete or read outside."""
    outside = tmp_path / "outside"
    (outside / "fake" / ".ge").mkdir(parents=True)
    (outside / "metrics.json").write_text("the user's file\n")
    (outside / "log.fifo").write_text("the user's other file\n")
    (outside / "fake" / ".ge" / "metrics.json").write_text('{"score": 9999}')
    before = _snapshot(outside)
    payloads = {
        # its metrics are already written: ge takes them from the io directory it made
        "io": f"import os\nos.rename('../io', '../io-old')\nos.symlink({str(outside)!r}, '../io')\n",
        "plain": "",
        "own": (
            "import os\nhere = os.getcwd()\nos.chdir('..')\nos.rename(here, here + '-moved')\n"
            f"os.symlink({str(outside / 'fake')!r}, here)\n"
        ),
    }
    run = tmp_path / "run"
    requests = []
    for vid, code in payloads.items():
        workdir = run / "work" / vid
        (workdir / ".ge").mkdir(parents=True)
        (workdir / "worker.py").write_text(WORKER)
        (workdir / "payload.py").write_text(code)
        requests.append(
            EvalRequest(
                vid,
                workdir,
                run,
                "false",
                None,
                30.0,
                30.0,
                workdir / ".ge" / "metrics.json",
                run / "logs" / f"{vid}.log",
                ("score",),
            )
        )
    sandbox = Sandbox(SandboxPolicy())
    pool = WorkerPool(
        f"{shlex.quote(sys.executable)} worker.py",
        sandbox,
        start_timeout_s=30.0,
        reply_timeout_s=10.0,
        kill_grace_s=0.5,
    )
    executor = LocalExecutor(1, None, None, sandbox, kill_grace_s=0.5, workers=pool)

    async def main() -> list:
        try:
            return [await executor.evaluate(r) for r in requests]
        finally:
            await executor.aclose()

    io, plain, own = asyncio.run(main())
    assert _snapshot(outside) == before, "ge changed files outside the slot"
    assert io.status == "ok" and plain.status == "ok", (io.failure_reason, plain.failure_reason)
    assert pool.stats()[0].evaluations == 3  # all three went to the worker
    assert own.status == "failed" and own.failure_reason == "the variant replaced its own directory"
    assert own.metrics.get("score") != 9999
    assert not (run / "work" / "own").is_symlink()
    assert not stat.S_ISLNK(os.lstat(outside / "fake").st_mode)
