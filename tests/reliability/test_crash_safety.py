"""Crash safety: `ge run` / `ge resume` killed with SIGKILL again and again, then finished.

The kill moments are drawn from a seeded RNG (``GE_KILL_SEED``, printed on failure) and always
include: an LLM call in flight (the fake LLM kills `ge` while it answers), a commit (objects
written, branch ref not), an index write (a new variant's row), the transaction that records an
evaluation (killed before COMMIT), the gap between the index and git's note, and an evaluation
running in the sandbox; the rest are random delays.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import (
    assert_store_intact,
    llm_config,
    set_config,
    stray_processes,
)
from tests.support.cli import ge_here, here_json
from tests.support.openai_server import Action, hang, serve
from tests.support.seeds import CodeWriter, template_seed

KILL_SEED = int(os.environ.get("GE_KILL_SEED", "20250101"))
KILLS = int(os.environ.get("GE_KILLS", "12"))
"""Starts killed: each targeted moment once and as many random delays, all early in the run
(``GE_KILLS=24`` adds 12 more random ones for a longer soak)."""
TARGETED = ("llm", "ref", "variant", "evaluation", "note", "evaluating")

pytestmark = pytest.mark.timeout(600)


class SlowKillingWriter:
    """CodeWriter with a latency; when armed with a pid, SIGKILLs it while answering a request."""

    def __init__(self, rng: random.Random) -> None:
        self.writer = CodeWriter()
        self.rng = rng
        self.lock = threading.Lock()
        self.armed: int | None = None
        self.killed = threading.Event()

    def arm(self, pid: int) -> None:
        with self.lock:
            self.armed = pid
            self.killed.clear()

    def __call__(self, request: dict[str, Any]) -> Action:
        with self.lock:
            pid, self.armed = self.armed, None
            delay = self.rng.uniform(0.05, 0.3)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)  # the client is waiting for this very reply
            self.killed.set()
        return hang(delay, self.writer(request))


def slow_seed(tmp_path: Path, **evolution: Any) -> Path:
    seed = template_seed(tmp_path / "seed", **evolution)
    evaluate = seed / "evaluate.py"
    evaluate.write_text(
        evaluate.read_text().replace(
            "    rng = random.Random(0)",
            "    import time\n    time.sleep(0.3)\n    rng = random.Random(0)",
        )
    )
    return seed


def _start(point: str | None, nth: int, args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    launcher = (
        ["-m", "tests.reliability.killpoint", point, str(nth)]
        if point
        else ["-m", "guided_evolution"]
    )
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "LITELLM_OFFLINE_MODE": "true",
        "PYTHONPATH": str(root),
        "OPENAI_API_KEY": "sk-x",
    }
    return subprocess.Popen(
        [sys.executable, *launcher, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _completed(run_dir: Path) -> tuple[set[str], bool]:
    """(variants with a recorded evaluation, finished) as the index says now."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        return {ev.variant_id for ev in index.evaluations()}, bool(index.get_meta("finished"))
    finally:
        index.close()


def _evaluating(run_dir: Path) -> bool:
    work = run_dir / "work"
    return work.is_dir() and any((d / ".ge").is_dir() for d in work.iterdir())


def test_kill_9_many_times_then_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    rng = random.Random(KILL_SEED)
    print(f"kill seed {KILL_SEED}, kills {KILLS}")
    seed = slow_seed(
        tmp_path, generations=max(7, KILLS * 7 // 24), initial_population=6, population=6
    )
    set_config(seed, "executor", slots=2)
    run_dir = tmp_path / "run"
    early = [*TARGETED, *["random"] * len(TARGETED)]  # every chosen moment comes early
    rng.shuffle(early)
    schedule = early + ["random"] * max(0, KILLS - len(early))
    kills: dict[str, int] = {}
    seen_done: set[str] = set()
    doctor_found: list[str] = []
    writer = SlowKillingWriter(rng)
    with serve(responder=writer) as server:
        llm_config(seed, server.base_url)
        for attempt, kind in enumerate(schedule):
            args = (
                ["resume", str(run_dir), "--json"]
                if run_dir.exists()
                else ["run", str(seed), "--run-dir", str(run_dir), "--json"]
            )
            point = kind if kind in ("ref", "variant", "evaluation", "note") else None
            proc = _start(point, rng.randint(1, 3), args, tmp_path)
            if kind == "llm":
                writer.arm(proc.pid)
            elif kind == "evaluating":
                deadline = time.monotonic() + 60
                while (
                    not _evaluating(run_dir) and proc.poll() is None and time.monotonic() < deadline
                ):
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.2))
                proc.kill()
            elif kind == "random":
                time.sleep(rng.uniform(0.3, 2.0))
                proc.kill()
            try:
                proc.wait(timeout=120)
            finally:
                proc.kill()
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            assert proc.returncode in (0, -signal.SIGKILL), (attempt, kind, stderr[-3000:])
            print(f"start {attempt}: {kind} -> exit {proc.returncode}")
            if proc.returncode == -signal.SIGKILL:
                kills[kind] = kills.get(kind, 0) + 1
            if not (run_dir / "index.sqlite").exists():
                continue  # killed while the run directory was being created: nothing to check
            if point is not None and proc.returncode == -signal.SIGKILL:
                check = ge_here("doctor", str(run_dir), "--json", cwd=tmp_path)
                doctor_found += json.loads(check.stdout)["problems"] if check.stdout else []
                repaired = ge_here("doctor", str(run_dir), "--repair", "--json", cwd=tmp_path)
                assert json.loads(repaired.stdout)["ok"], repaired.stdout + repaired.stderr
            done, finished = _completed(run_dir)
            seen_done |= done
            if finished:
                break
        summary = here_json("resume", str(run_dir), cwd=tmp_path, env={"OPENAI_API_KEY": "sk-x"})
    total = sum(kills.values())
    print(f"kills survived: {total} {kills}; doctor found {len(doctor_found)} problems")
    assert summary["finished"], summary
    assert total >= min(20, KILLS * 5 // 6), (
        f"the run finished after {total} kills: make it longer ({kills})"
    )
    assert set(TARGETED) <= set(kills), f"moments never hit: {set(TARGETED) - set(kills)}"
    assert doctor_found, "the kills left nothing for doctor to find (note/ref gaps expected)"
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        per_variant: dict[str, int] = {}
        for ev in index.evaluations():
            per_variant[ev.variant_id] = per_variant.get(ev.variant_id, 0) + 1
        variants = index.variants()
    finally:
        index.close()
    twice = {vid: n for vid, n in per_variant.items() if n > 1}
    assert not twice, f"evaluated to completion more than once: {twice}"
    assert seen_done <= set(per_variant), f"lost evaluations: {seen_done - set(per_variant)}"
    for v in variants:
        assert v.status in ("evaluated", "failed", "invalid"), (v.id, v.status)
        if v.status != "invalid":
            assert per_variant.get(v.id) == 1, (v.id, v.status)
    assert len(variants) >= 10
    assert_store_intact(run_dir, tmp_path)
    assert not stray_processes([str(run_dir)]), stray_processes([str(run_dir)])


def _gated(seed: Path) -> Path:
    """Make the children's evaluations wait until the returned file exists (the sandbox shows the
    seed directory read-only, files created there later included): the run stays live as long
    as the test needs it to, on a machine of any speed. The seed's own evaluation does not wait:
    the run directory is made once it evaluated ok."""
    evaluate = seed / "evaluate.py"
    evaluate.write_text(
        evaluate.read_text().replace(
            "    rng = random.Random(0)",
            "    import time\n"
            "    seed_dir = Path(os.environ['GE_SEED_DIR'])\n"
            "    is_seed = Path('model.py').read_text() == (seed_dir / 'model.py').read_text()\n"
            "    while not is_seed and not (seed_dir / 'release').exists():\n"
            "        time.sleep(0.05)\n"
            "    rng = random.Random(0)",
        )
    )
    return seed / "release"


def test_second_process_on_a_run_refuses_and_corrupts_nothing(tmp_path: Path) -> None:
    """The first run is held live (its evaluations wait for a file) while each second command
    is tried, so none of them can meet a finished run on a busy machine."""
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=4)
    release = _gated(seed)
    set_config(seed, "executor", slots=1)
    run_dir = tmp_path / "run"
    first = _start(None, 0, ["run", str(seed), "--run-dir", str(run_dir), "--json"], tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not (run_dir / "lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_dir / "lock").exists()
        for args, expected in (
            (["resume", str(run_dir)], "in use by another ge process"),
            (["doctor", str(run_dir), "--repair"], "in use by another ge process"),
            (["doctor", str(run_dir), "--rebuild-index"], "in use by another ge process"),
            (["run", str(seed), "--run-dir", str(run_dir)], "already exists"),
        ):
            second = ge_here(*args, cwd=tmp_path)
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert second.returncode == 2, (args, second.stderr)
            assert len(lines) == 1 and expected in lines[0], (args, second.stderr)
            assert first.poll() is None, "the first run ended before every second command ran"
        release.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read().decode() if first.stderr else ""
    finally:
        first.kill()
        first.wait()
    assert_store_intact(run_dir, tmp_path)
    done, finished = _completed(run_dir)
    assert finished and len(done) >= 2  # the first process finished its run undisturbed
