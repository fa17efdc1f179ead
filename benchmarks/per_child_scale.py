"""ge's own cost per child as a run grows (issue 29, item 3): the same children made on runs of
1,000, 10,000 and 100,000 variants, in each mode.

    python benchmarks/per_child_scale.py --cache /tmp/ge-scale                  # every size and mode
    python benchmarks/per_child_scale.py --cache /tmp/ge-scale --sizes 1000 --modes gen100
    python benchmarks/per_child_scale.py --cache /tmp/ge-scale --children 1000 --repeat 3
    python benchmarks/per_child_scale.py --cache /tmp/ge-scale --sandbox landlock   # no bwrap

The runs are those of ``benchmarks/scale.py`` (``--cache DIR``: ``DIR/nSIZE/run``; build them
with ``python benchmarks/scale.py --cache DIR --build-only`` first). For each size and mode a
copy of the run is resumed (``ge resume COPY --generations N``) for about ``--children`` more
children, its frozen config set in the copy to the mode measured:

* ``gen100``: generational, population 100 (as the runs were made);
* ``gen1000``: generational, population 1,000 (one generation of 1,000 children);
* ``steady``: ``mode = "steady"``, population 100 (virtual generations of 100).

So every mode is measured on a store and index that already hold SIZE variants; the 100,000 run
was built without evaluations (``benchmarks/scale.py``, said there) and is evaluated here only
for the new children. Measured between the first new generation's ``generation_started`` event
and the last one's ``generation_finished`` (ge's start-up, its repair check and its closing
compaction are left out: those are timed by ``scale.py``; before it, the copy is resumed for one
generation as it was made, which pays the one-time upgrades of a run an earlier ge made: its code
keys and note blob ids): **ge's own CPU per child** (the ``ge``
process alone, every thread, sampled from ``/proc/PID/stat`` every 20 ms; its preload workers and
sandboxes, which do not depend on the run's size, are not in it), the wall seconds per child,
and the children made. Printed per mode: each size's medians over ``--repeat`` runs, and the
ratio of the largest size's CPU per child to the smallest's (issue 29 asks for at most 1.2).

The copies are removed only once every measurement is done: on ext4 without a journal each new
inode is looked for past every inode its group freed in the last ~30 s, so removing a copy (the
100,000 run's holds ~200,000 files) would charge its removal to the next measurement's system
time. For the same reason, leave ~30 s between two runs of this script, and expect the system
share to move with what else the machine removes. The state of the cache's own directories counts
too: on 2026-12-07 the 1,000 run, measured in a cache where copies had been made and removed all
day, gave 8.9-10.7 ms (system ~5 ms); the same run copied (``cp -a``) into a new directory, 6.4 ms
(system ~2.5). Compare sizes on copies made alike, e.g. a cache copied anew for the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GE = [sys.executable, "-m", "guided_evolution"]
MODES = {  # name -> (population, mode)
    "gen100": (100, "generational"),
    "gen1000": (1000, "generational"),
    "steady": (100, "steady"),
}
TICK = os.sysconf("SC_CLK_TCK")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["LITELLM_OFFLINE_MODE"] = "true"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cpu_of(pid: int) -> tuple[float, float] | None:
    """(utime, stime) of process ``pid`` alone (every thread), in seconds; None once it is
    gone. The kernel's share (file creation and removal above all) moves with what else the
    machine's file system is doing; the user share much less."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def _last_generation(index: Path) -> int:
    conn = sqlite3.connect(index.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT max(generation) FROM generations").fetchone()[0] or 0)
    finally:
        conn.close()


def _window(index: Path, first: int) -> tuple[float, float, int]:
    """(start, end, children) of the generations from ``first`` on: the first one's
    ``generation_started`` time, the last ``generation_finished`` time, the variants made."""
    conn = sqlite3.connect(index.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        events = conn.execute(
            "SELECT kind, time, data FROM events WHERE kind IN"
            " ('generation_started', 'generation_finished') ORDER BY id"
        ).fetchall()
        made = conn.execute(
            "SELECT count(*) FROM variants WHERE generation >= ? AND operator != 'seed'", (first,)
        ).fetchone()[0]
    finally:
        conn.close()
    starts = [t for k, t, d in events if k == "generation_started" and _gen(d) >= first]
    ends = [t for k, t, d in events if k == "generation_finished" and _gen(d) >= first]
    if not starts or not ends:
        raise SystemExit(f"no new generation was recorded in {index} (from {first} on)")
    return min(starts), max(ends), int(made)


def _gen(data: str) -> int:
    return int(json.loads(data or "{}").get("generation", -1))


def measure(
    run: Path, mode: str, children: int, sandbox: str | None = None, *, copies: list[Path]
) -> dict:
    """Resume a copy of ``run`` in ``mode`` for about ``children`` children: ge's CPU and the
    wall seconds per child between the first new generation's start and the last one's end.
    The copy's directory is added to ``copies`` (removed by the caller once all are measured)."""
    population, loop = MODES[mode]
    tmp = tempfile.mkdtemp(prefix="ge-per-child-", dir=run.parent)
    copies.append(Path(tmp))
    copy = Path(tmp) / "run"
    shutil.copytree(run, copy, symlinks=True)
    (copy / "lock").unlink(missing_ok=True)
    _resume(copy, _last_generation(copy / "index.sqlite") + 1)  # the one-time upgrades
    frozen = json.loads((copy / "config.json").read_text())
    evolution = frozen["config"]["evolution"]
    evolution["population"], evolution["mode"] = population, loop
    if sandbox:  # e.g. "landlock": the pip-only path where bubblewrap is installed
        frozen["config"]["evaluator"]["sandbox"] = sandbox
    (copy / "config.json").write_text(json.dumps(frozen, indent=1))
    last = _last_generation(copy / "index.sqlite")
    samples = _resume(copy, last + max(round(children / population), 1))
    start, end, made = _window(copy / "index.sqlite", last + 1)
    user = _at(samples, end, 0) - _at(samples, start, 0)
    system = _at(samples, end, 1) - _at(samples, start, 1)
    return {"mode": mode, "children": made, "ge_cpu_ms": 1000 * (user + system) / made,
            "ge_user_ms": 1000 * user / made, "ge_sys_ms": 1000 * system / made,
            "wall_ms": 1000 * (end - start) / made}  # fmt: skip


def _resume(copy: Path, generations: int) -> list[tuple[float, tuple[float, float]]]:
    """``ge resume COPY --generations N`` to its end: (wall clock, ge's (user, system) CPU
    seconds) samples."""
    proc = subprocess.Popen(
        [*GE, "resume", str(copy), "--generations", str(generations), "--json"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    samples: list[tuple[float, tuple[float, float]]] = []
    while proc.poll() is None:
        cpu = _cpu_of(proc.pid)
        if cpu is not None:
            samples.append((time.time(), cpu))
        time.sleep(0.02)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"ge resume exited {proc.returncode}: {err[-1500:]}")
    return samples


def _at(samples: list[tuple[float, tuple[float, float]]], when: float, part: int) -> float:
    """ge's CPU seconds (``part`` 0: user, 1: system) at time ``when``, interpolated between the
    samples around it."""
    before = [(t, c[part]) for t, c in samples if t <= when]
    after = [(t, c[part]) for t, c in samples if t >= when]
    if not before or not after:
        return (before or after)[-1 if before else 0][1]
    (t0, c0), (t1, c1) = before[-1], after[0]
    return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="scale.py's cache directory")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--children", type=int, default=1000, help="children per measurement")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every measurement here too")
    parser.add_argument("--sandbox", help="[evaluator] sandbox of the copies (default: the run's)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict] = []
    copies: list[Path] = []  # removed at the end: see the module doc
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    try:
        _measure_all(args, sizes, rows, copies)
    finally:
        for tmp in copies:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _measure_all(
    args: argparse.Namespace, sizes: list[int], rows: list[dict], copies: list[Path]
) -> None:
    """Measure every mode at every size, printing each row as it comes (added to ``rows``). The
    repeats go round the sizes (1,000, 100,000, 1,000, 100,000, ...), so that what the file
    system does meanwhile falls on every size alike, not on one size's block of runs."""
    for mode in args.modes.split(","):
        runs_of: dict[int, list[dict]] = {size: [] for size in sizes}
        for _ in range(args.repeat):
            for size in sizes:
                run = args.cache / f"n{size}" / "run"
                if not run.is_dir():
                    raise SystemExit(f"{run} is missing: python benchmarks/scale.py --cache "
                                     f"{args.cache} --sizes {size} --build-only")  # fmt: skip
                runs_of[size].append(measure(run, mode, args.children, args.sandbox, copies=copies))
        for size in sizes:
            runs = runs_of[size]
            row = {"mode": mode, "size": size, "runs": runs,
                   "children": statistics.median(r["children"] for r in runs),
                   "ge_cpu_ms": statistics.median(r["ge_cpu_ms"] for r in runs),
                   "ge_user_ms": statistics.median(r["ge_user_ms"] for r in runs),
                   "ge_sys_ms": statistics.median(r["ge_sys_ms"] for r in runs),
                   "wall_ms": statistics.median(r["wall_ms"] for r in runs),
                   "load": os.getloadavg()[0]}  # fmt: skip
            rows.append(row)
            print(f"{mode:8s} {size:>7,d} variants: {row['children']:>5.0f} children, ge CPU "
                  f"{row['ge_cpu_ms']:5.2f} ms/child (user {row['ge_user_ms']:.2f}, system "
                  f"{row['ge_sys_ms']:.2f}), wall {row['wall_ms']:6.2f} ms/child "
                  f"(load {row['load']:.1f})", flush=True)  # fmt: skip
        mine = [r for r in rows if r["mode"] == mode]
        if len(mine) > 1:
            ratio = mine[-1]["ge_cpu_ms"] / mine[0]["ge_cpu_ms"]
            user = mine[-1]["ge_user_ms"] / mine[0]["ge_user_ms"]
            print(f"{mode:8s} ge CPU per child, {mine[-1]['size']:,} / {mine[0]['size']:,}: "
                  f"{ratio:.2f}x (user part {user:.2f}x)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
