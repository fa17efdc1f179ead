"""The README's test command timed on an idle machine and under a background load (issue 26).

    python benchmarks/suite_time.py                 # idle, then under 2 busy processes
    python benchmarks/suite_time.py --busy 4        # 4 busy-loop processes
    python benchmarks/suite_time.py --only busy     # one condition
    python benchmarks/suite_time.py --repeat 3      # medians of 3 runs per condition
    python benchmarks/suite_time.py --clone         # in a fresh `git clone` of HEAD
    python benchmarks/suite_time.py --log DIR       # pytest's whole output of each run in DIR
    python benchmarks/suite_time.py -- -m "not slow"   # arguments after -- go to pytest

Each run is `python -m pytest -q` (the README's command) in the repository, or with ``--clone``
in a clone of HEAD made for the run (no caches, nothing built; its package first on
PYTHONPATH so that every `ge` the tests start is the clone's). The busy condition starts N
processes that spin (``while True: pass``, one per core is what ``--busy`` counts) before pytest
and kills them (by pid) after it. Printed: each run's wall time, pytest's last line and exit
status, the 1-minute load average before it (a machine that is not idle before the "idle" run
gives a figure that means little), the CPU seconds of pytest's whole process tree (every
process it waited for: its workers, each `ge` and sandbox they started; the spinners are not
counted), then the median per condition. Where cgroup v1's ``cpuacct`` can be written (root), pytest runs in a
cgroup of its own and the CPU seconds of every process it started are printed too: those that
outlive their parent (a sandbox's processes) never reach the waited-for figure (on this 2-core VM
~680 against ~470). The CPU seconds depend little on the load: divided by the cores they bound
the idle wall time from below; a wall time far above that bound is waiting.
Which files and tests those CPU seconds go to: ``benchmarks/suite_cpu.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIN = "while True:\n    pass\n"


def busy_loops(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that keep one core busy each until killed."""
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def clone_of_head(tmp: Path) -> Path:
    """A fresh clone of this repository's HEAD (committed work only)."""
    dest = tmp / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)],
        check=True,
    )
    return dest


CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1's CPU accounting (root, v1 only)


def cpu_group() -> Path | None:
    """A new cgroup of the CPU accounting controller for one suite run, or None where there is
    none to make (cgroup v2, not root): every process the run starts is in it and stays in it,
    also those that outlive their parent (a sandbox's) and so never reach RUSAGE_CHILDREN."""
    group = CPUACCT / f"ge-suite-time-{os.getpid()}-{time.monotonic_ns()}"
    try:
        group.mkdir()
    except OSError:
        return None
    return group


def group_cpu_s(group: Path) -> float:
    """CPU seconds of every process that ran in ``group``; the group is removed when empty."""
    used = int((group / "cpuacct.usage").read_text()) / 1e9
    with contextlib.suppress(OSError):
        group.rmdir()  # a process still alive in it keeps it (the next run makes its own)
    return used


def children_cpu_s() -> float:
    """CPU seconds (user + system) of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(
    repo: Path, pytest_args: list[str], busy: int, log: Path | None
) -> tuple[float, float, float | None, int, str]:
    """(wall seconds, CPU seconds waited for, CPU seconds of every process in its cgroup or
    None, exit status, pytest's last line) of one suite run under ``busy`` spinners; pytest's
    output goes to ``log`` too."""
    paths = [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("PYTEST_XDIST_WORKER", None)
    spinners = busy_loops(busy)
    group = cpu_group()
    procs = str(group / "cgroup.procs") if group else None

    def join_group() -> None:  # in the child, before pytest starts
        if procs:
            Path(procs).write_text(str(os.getpid()))

    try:
        time.sleep(0.5 if busy else 0)  # the spinners are running before pytest starts
        start, cpu_before = time.monotonic(), children_cpu_s()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *pytest_args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=join_group if procs else None,
        )
        wall, cpu = time.monotonic() - start, children_cpu_s() - cpu_before
        every = group_cpu_s(group) if group else None
    finally:
        stop(spinners)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return wall, cpu, every, proc.returncode, (lines[-1] if lines else proc.stderr.strip()[-300:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes for the busy run")
    parser.add_argument("--only", choices=("idle", "busy"), default=None)
    parser.add_argument("--repeat", type=int, default=1, help="runs per condition (median)")
    parser.add_argument("--clone", action="store_true", help="run in a fresh clone of HEAD")
    parser.add_argument("--log", type=Path, default=None, help="directory for pytest's output")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    conditions = [c for c in ("idle", "busy") if args.only in (None, c)]
    print(f"{os.cpu_count()} cores; command: python -m pytest -q {' '.join(args.pytest_args)}")
    tmp = Path(tempfile.mkdtemp(prefix="ge-suite-time-"))
    if args.log:
        args.log.mkdir(parents=True, exist_ok=True)
    walls: dict[str, list[float]] = {c: [] for c in conditions}
    try:
        for n in range(args.repeat):
            for condition in conditions:
                repo = clone_of_head(tmp / f"{condition}-{n}") if args.clone else ROOT
                busy = args.busy if condition == "busy" else 0
                load = os.getloadavg()[0]
                log = args.log / f"{condition}-{n}.txt" if args.log else None
                wall, cpu, every, code, last = one_run(repo, args.pytest_args, busy, log)
                walls[condition].append(wall)
                label = f"{condition} ({busy} busy processes)" if busy else condition
                total = f" ({every:.0f} CPU-s with every process it started)" if every else ""
                print(
                    f"{label}: {wall:.0f} s, {cpu:.0f} CPU-s{total}, exit {code}, "
                    f"load before {load:.2f}: {last}",
                    flush=True,
                )
                if args.clone:
                    shutil.rmtree(repo, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for condition, values in walls.items():
        busy = f" under {args.busy} busy processes" if condition == "busy" else ""
        print(
            f"median {condition}{busy}: {statistics.median(values):.0f} s over {len(values)} run(s)"
        )


if __name__ == "__main__":
    main()
