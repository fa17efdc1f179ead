"""Safe resource defaults through `ge run`: a memory bound per evaluation and a disk reserve.

By default every evaluation gets a share of the machine's memory (3/4 of it over the slots; a
cgroup of its own where the machine allows) and ge keeps free space on the run directory's file
system: a variant that fills the disk is stopped and failed, its big files removed, and the run
goes on with its state intact. The run's `isolation` event says both; without them the
`resources` aspect is not contained and the run warns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guided_evolution.evaluation.sandbox.cgroups import find_cgroups
from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import (
    PayloadWriter,
    assert_store_intact,
    evaluate_stage_only,
    llm_config,
    set_config,
    variants_by_payload,
)
from tests.support.cli import ge_here, here_json
from tests.support.openai_server import serve
from tests.support.seeds import template_seed

pytestmark = pytest.mark.timeout(240)

MB = 1 << 20
# A shell command, not `python SCRIPT`: every stage is a fresh sandboxed process (the path these
# tests cover) whatever evaluator.preload defaults to.
FRESH = {"command": "exec python evaluate.py", "check": "exec python evaluate.py --check"}


def _isolation(run_dir: Path) -> dict:
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        return [e.data for e in index.events("isolation")][-1]
    finally:
        index.close()


def _memory_cgroup() -> bool:
    found, _why = find_cgroups(("memory",))
    return found is not None


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_by_default_each_evaluation_has_a_memory_bound_and_the_disk_a_reserve(
    tmp_path: Path,
) -> None:
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=1)
    set_config(seed, "executor", slots=2)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _isolation(tmp_path / "run")
    text = data["resources"]
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MB
    assert "ge's default: 3/4 of" in text and "over 2 slots" in text, text
    share = int(text.split("memory ")[1].split(" MB")[0]) if text.startswith("memory ") else None
    if _memory_cgroup():
        assert share is not None and share <= total * 3 // 8, (share, total, text)
        assert " MB per evaluation (cgroup" in text, text
        assert data["contained"]["resources"] is True, data
    else:  # the default is there, but only per process: said, and warned about
        assert "NOT bounded per evaluation" in text, text
        assert data["contained"]["resources"] is False, data
        assert any(": resources: " in w for w in data["warnings"]), data["warnings"]
    assert "an evaluation is stopped when free space on " in text, text
    assert "(disk reserve; ge's default: 1 % of the file system" in text, text


def test_without_the_bounds_the_resources_aspect_warns(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=1)
    set_config(seed, "evaluator", memory_mb=0, disk_reserve_mb=0)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = _isolation(tmp_path / "run")
    assert data["contained"]["resources"] is False, data
    assert "memory UNBOUNDED (evaluator.limits.memory_mb = 0)" in data["resources"], data
    assert "NO disk reserve" in data["resources"], data
    printed = " ".join(proc.stderr.split())
    assert f"sandbox ({data['backend']}): resources: memory UNBOUNDED" in printed, proc.stderr


def test_a_variant_that_fills_the_disk_is_stopped_and_the_run_goes_on(tmp_path: Path) -> None:
    """The floor is set 400 MB under today's free space; the variant writes up to 2.5 GB in its
    directory. It is failed with the reason, its files are gone, later variants evaluate and the
    run's store is intact."""
    fill = evaluate_stage_only(
        "import os as _os, time as _t\n_chunk = b'x' * (64 << 20)\n"
        "for _n in range(40):\n"
        "    with open(f'fill-{_n}.bin', 'wb') as _fh:\n"
        "        _fh.write(_chunk)\n"
        "print('GE-FILL-DONE', flush=True)\n"
        "_t.sleep(50)"
    )
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=3)
    set_config(seed, "executor", slots=1)
    floor_mb = _free(tmp_path) // MB - 400
    set_config(seed, "evaluator", disk_reserve_mb=floor_mb, timeout_s=120, **FRESH)
    writer = PayloadWriter([("fill", fill), ("after", "print('after the filler')")])
    with serve(responder=writer) as server:
        llm_config(seed, server.base_url, concurrency=1)
        summary = here_json(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            cwd=tmp_path,
            env={"OPENAI_API_KEY": "sk-test"},
        )
    assert summary["finished"], summary
    run_dir = tmp_path / "run"
    found = variants_by_payload(run_dir)
    ev = found["fill"]["evaluation"]
    assert found["fill"]["status"] == "failed" and ev is not None, found["fill"]
    assert ev.failure_reason.startswith("the variant filled the disk (free space on "), ev
    assert f"fell below {floor_mb} MB" in ev.failure_reason, ev.failure_reason
    assert ev.duration_s < 60, ev.duration_s  # stopped, not timed out
    log = (run_dir / "logs" / f"{found['fill']['id']}.log").read_text(errors="replace")
    assert "GE-FILL-DONE" not in log, "the filler wrote all of its 2.5 GB"
    assert found["after"]["status"] == "evaluated", found["after"]
    assert summary["evaluated"] >= 2, summary  # the seed and the variant after the filler
    assert _free(tmp_path) >= floor_mb * MB, "the filler's space did not come back"
    assert not list(run_dir.rglob("fill-*.bin")), "the filler's files stayed"
    assert_store_intact(run_dir, tmp_path)


def _own_memory_cgroup_v1() -> Path | None:
    """ge's memory cgroup (v1) where a child may be made, or None."""
    mount = own = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        rest = tail.split()
        if len(rest) >= 3 and rest[0] == "cgroup" and "memory" in rest[2].split(","):
            mount = head.split()[4]
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if "memory" in names.split(","):
            own = path
    if mount is None or own is None:
        return None
    base = Path(mount) / own.lstrip("/")
    return base if os.access(base, os.W_OK) else None


def _own_memory_cgroup_v2() -> Path | None:
    """A cgroup v2 directory with the memory controller for its children (as root), or None."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        head, _, tail = line.partition(" - ")
        if tail.split()[:1] == ["cgroup2"]:
            root = Path(head.split()[4])
            if "memory" in (root / "cgroup.subtree_control").read_text().split():
                return root if os.access(root, os.W_OK) else None
    return None


@pytest.mark.parametrize("preload", [False, True])
def test_a_variant_over_the_default_memory_bound_fails_with_a_clear_reason(
    tmp_path: Path, preload: bool
) -> None:
    """ge in a cgroup limited to 2 GB (a container's limit): the default bound is 3/4 of it, 1536
    MB for one slot. The seed and a plain variant pass; a variant that fills 3 GB is killed with
    the reason, as a fresh process and as a preloaded fork (where the worker's cgroup holds it)."""
    if os.geteuid() != 0:
        pytest.skip("making a memory-limited cgroup for ge needs root")
    base = _own_memory_cgroup_v1() or _own_memory_cgroup_v2()
    if base is None or not _memory_cgroup():
        pytest.skip("no memory cgroup to put ge in here")
    limit_file = "memory.limit_in_bytes" if (base / "memory.limit_in_bytes").exists() else "memory.max"
    box = base / f"ge-test-{os.getpid()}"
    box.mkdir()
    try:
        (box / limit_file).write_text(str(2048 * MB))
        hog = evaluate_stage_only(
            "_hog = []\nfor _ in range(48):\n    _hog.append(b'm' * (64 << 20))\n"
            "print('GE-HOG-DONE', flush=True)"
        )
        seed = template_seed(tmp_path / "seed", generations=0, initial_population=2)
        set_config(seed, "executor", slots=1)
        set_config(seed, "evaluator", timeout_s=120, **({} if preload else FRESH))
        payloads = [("hog", hog), ("fine", "print('within the bound')")]
        with serve(responder=PayloadWriter(payloads)) as server:
            llm_config(seed, server.base_url)
            proc = subprocess.run(
                [sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir",
                 str(tmp_path / "run"), "--json"],
                cwd=tmp_path,
                env={**os.environ, "LITELLM_OFFLINE_MODE": "true", "OPENAI_API_KEY": "sk-test"},
                capture_output=True,
                text=True,
                timeout=200,
                preexec_fn=lambda: (box / "cgroup.procs").write_text("0"),
                check=False,
            )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout)
    finally:
        box.rmdir()
    text = _isolation(tmp_path / "run")["resources"]
    assert text.startswith("memory 1536 MB per evaluation (cgroup"), text
    assert "3/4 of ge's cgroup limit (2048 MB) for 1 slot" in text, text
    found = variants_by_payload(tmp_path / "run")
    ev = found["hog"]["evaluation"]
    assert found["hog"]["status"] == "failed" and ev is not None, found["hog"]
    assert ev.failure_reason.startswith(
        "out of memory: the evaluation went over its bound of 1536 MB (evaluator.limits.memory_mb)"
    ), ev.failure_reason
    assert found["fine"]["status"] == "evaluated", found["fine"]
    assert summary["evaluated"] >= 2, summary  # the seed and the variant within the bound


def test_a_run_does_not_start_below_the_disk_reserve(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=1)
    set_config(seed, "evaluator", disk_reserve_mb=_free(tmp_path) // MB + 100_000)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "below the disk reserve of" in proc.stderr, proc.stderr
    assert "evaluator.limits.disk_reserve_mb" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_reserve_stops_the_evaluation_that_holds_the_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two evaluations run when free space falls below the floor: the one whose directory holds
    the space is stopped and its big files removed (not what a link there points to); the other
    goes on."""
    import asyncio

    from guided_evolution.evaluation.sandbox import disk_reserve

    monkeypatch.setattr(disk_reserve, "BLAME_MIN_BYTES", 2 * MB)
    big, small = tmp_path / "big", tmp_path / "small"
    for d in (big, small):
        d.mkdir()
    (big / "fill.bin").write_bytes(b"x" * (3 * MB))
    (big / "note.txt").write_text("small files stay")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"y" * (3 * MB))
    (big / "link.bin").symlink_to(outside)
    (small / "data.bin").write_bytes(b"z" * (1 * MB // 2))
    stopped: list[str] = []

    class Full(disk_reserve.DiskReserve):
        def free(self) -> int:
            return self.floor - 1

    async def scenario() -> tuple[str | None, str | None]:
        reserve = Full(tmp_path, 5 * MB, poll_s=0.01)
        a = reserve.watch(big, lambda: stopped.append("big"))
        b = reserve.watch(small, lambda: stopped.append("small"))
        await asyncio.sleep(0.1)
        a.close()
        b.close()
        return a.reason, b.reason

    reason_big, reason_small = asyncio.run(scenario())
    assert stopped == ["big"], stopped
    assert reason_big is not None and reason_big.startswith("the variant filled the disk (free ")
    assert "fell below 5 MB" in reason_big and "its directory held 3 MB" in reason_big, reason_big
    assert reason_small is None
    assert not (big / "fill.bin").exists(), "its big file stayed"
    assert (big / "note.txt").exists() and (big / "link.bin").is_symlink()
    assert outside.stat().st_size == 3 * MB, "a link's target was touched"
    assert (small / "data.bin").exists()
