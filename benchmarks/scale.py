"""ge at scale (issue 29): runs of 1,000, 10,000 and 100,000 variants, and every inspection
command, ``ge doctor`` and ``ge resume`` timed on them.

    python benchmarks/scale.py --cache /tmp/ge-scale                    # 1,000, 10,000, 100,000
    python benchmarks/scale.py --cache /tmp/ge-scale --sizes 1000        # only 1,000
    python benchmarks/scale.py --cache /tmp/ge-scale --build-only        # build (or reuse), no timing

The 1,000 and 10,000 runs are what a user makes: ``ge init`` 's template seed (its evaluator fits
and scores a small model in a few milliseconds; the default preload runs each stage in a boxed
fork of a warm worker), then ``ge run SEED --model offline --population 100
--initial-population 100 --generations G --slots 2`` (G chosen for about ``size`` children, as
identical children are one variant), under the default sandbox. The 100,000 run is NOT evaluated:
it is the 1,000 run extended through ge's store and index writers by
``benchmarks/scale_store.py`` (offline-operator children, a stand-in score computed in-process;
said in its output), because evaluating 100,000 children takes hours here. A built run is cached
under ``--cache DIR`` (``DIR/nSIZE/run`` with ``build.json``) and reused.

Printed per size:

* **build**: children, wall and CPU (ge, its sandboxes and workers: ``RUSAGE_CHILDREN``) per
  child, and the wall per child by thousand (from the variants' creation times in the index);
  for the 100,000 run only how it was made;
* **inspection**: each command's wall time, median of ``--repeat`` runs of a fresh
  ``python -m guided_evolution`` process (start-up included, as a user sees it; bytecode compiled
  once first, as a pip install has it), its CPU and peak RSS; ``ge report``'s file size;
  ``ge doctor``; ``ge resume`` of a copy with one more generation: the seconds until its first
  child's evaluation starts; and the machine's load average (figures taken beside other work are
  noisy: CPU seconds are the steadier ones). The first ``ge status`` of a run whose index has no
  stored generation measures (an older ge's run) computes and stores them: timed apart as
  ``status (first read)`` on a copy when ``--first-read`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GE = [sys.executable, "-m", "guided_evolution"]


def _env(code: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env["LITELLM_OFFLINE_MODE"] = "true"
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled once, as a pip-installed ge is
    env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build(cache: Path, size: int) -> dict:
    """The cached run of ``size`` variants (built first when missing): its build record."""
    where = cache / f"n{size}"
    record_path = where / "build.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    seed = where / "seed"
    subprocess.run([*GE, "init", str(seed)], check=True, env=_env(), capture_output=True)
    generations = _generations(size)
    argv = [
        *GE, "run", str(seed), "--run-dir", str(where / "run"), "--model", "offline",
        "--population", "100", "--initial-population", "100",
        "--generations", str(generations), "--slots", "2", "--json",
    ]  # fmt: skip
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    finished = _finished(where / "run" / "index.sqlite")
    if done.returncode != 0 and not finished:
        raise SystemExit(f"ge run failed ({done.returncode}): {done.stderr[-2000:]}")
    record = {"size": size, "wall_s": wall, "cpu_s": cpu, "argv": argv[2:]}
    if done.returncode != 0:  # e.g. its closing summary met a module being edited
        record["note"] = f"the run finished, ge exited {done.returncode}: {done.stderr[-300:]}"
    record["children"], record["by_thousand"] = _per_thousand(where / "run" / "index.sqlite")
    record_path.write_text(json.dumps(record, indent=1))
    return record


RECORDED = 100_000  # sizes from here on are built by benchmarks/scale_store.py (no evaluations)
RECORDED_NOTE = (
    "built through ge's store and index writers WITHOUT evaluations (benchmarks/scale_store.py): "
    "the 1,000-variant run, evaluated by ge, extended with offline-operator children whose "
    "metrics are a stand-in computed in-process; its build time is not ge's cost per child"
)


def build_recorded(cache: Path, size: int) -> dict:
    """The cached run of ``size`` variants made by ``benchmarks/scale_store.py`` from a copy of
    the 1,000-variant run (see ``RECORDED_NOTE``), extended until it has ``size`` children."""
    where = cache / f"n{size}"
    record_path = where / "build.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    small = build(cache, 1000)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    shutil.copytree(cache / "n1000" / "run", where / "run", symlinks=True)
    (where / "run" / "lock").unlink(missing_ok=True)
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    generations = small["children"] // 100
    while _children(where / "run" / "index.sqlite") < size:
        generations += max((size - _children(where / "run" / "index.sqlite")) // 80, 1)
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "scale_store.py"), str(where / "run"),
             str(generations)], env=_env(), check=True,
        )  # fmt: skip
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    record = {"size": size, "wall_s": wall, "cpu_s": cpu, "note": RECORDED_NOTE, "recorded": True}
    record["children"], record["by_thousand"] = _per_thousand(where / "run" / "index.sqlite")
    record_path.write_text(json.dumps(record, indent=1))
    return record


def _children(index: Path) -> int:
    conn = sqlite3.connect(index.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM variants WHERE operator != 'seed'").fetchone()[0])
    finally:
        conn.close()


def _fake_score(files: dict[str, str]) -> dict[str, float | str] | str:
    """The in-process evaluator of ``--evaluator fake``: the template's two objectives from the
    code alone (``size``: syntax nodes; ``score``: a deterministic stand-in), a crash where the
    code does not parse."""
    import ast
    import zlib

    text = files.get("model.py", "")
    try:
        size = sum(1 for _ in ast.walk(ast.parse(text)))
    except SyntaxError as err:
        return f"exit code 1: SyntaxError: {err.msg}"
    return {"score": -(zlib.crc32(text.encode()) % 10_000) / 1000.0, "size": float(size)}


def build_fake(cache: Path, size: int) -> dict:
    """As :func:`build`, in this process through the test harness (``tests.support.harness``:
    the real engine, offline operators, git store, index and recorder) with its in-process
    ``FakeExecutor`` instead of sandboxed evaluations: the same run for the inspection commands,
    built in a minute instead of tens; its per-child figures are not ge's (no evaluator)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.harness import FakeExecutor, run_engine

    where = cache / f"n{size}-fake"
    record_path = where / "build.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    seed = where / "seed"
    subprocess.run([*GE, "init", str(seed)], check=True, env=_env(), capture_output=True)
    os.environ["LITELLM_OFFLINE_MODE"] = "true"
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run_engine(
        seed, where / "run", executor=FakeExecutor(_fake_score).factory, model="offline",
        population=100, initial_population=100, generations=_generations(size), slots=2,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    record = {"size": size, "wall_s": wall, "cpu_s": cpu, "evaluator": "fake (in-process)"}
    record["children"], record["by_thousand"] = _per_thousand(where / "run" / "index.sqlite")
    record_path.write_text(json.dumps(record, indent=1))
    return record


def _finished(index: Path) -> bool:
    if not index.exists():
        return False
    conn = sqlite3.connect(index.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM meta WHERE key = 'finished'").fetchone() is not None
    finally:
        conn.close()


def _generations(size: int) -> int:
    """Generations of 100 after the initial 100 that make about ``size`` children: the offline
    operators' children repeat a parent or a sibling now and then (one variant; about 15 % at
    population 100), so 18 % more are planned. The built run's own count is printed."""
    return max(round(size * 1.18 / 100) - 1, 1)


def _per_thousand(index: Path) -> tuple[int, list[float]]:
    """The children's count and the wall seconds per child of each thousand children, in the
    order they were created (the first child's creation to the thousandth's, and so on)."""
    conn = sqlite3.connect(index.resolve().as_uri() + "?mode=ro", uri=True)
    times = [
        row[0]
        for row in conn.execute(
            "SELECT created_at FROM variants WHERE operator != 'seed' ORDER BY created_at"
        )
    ]
    conn.close()
    per = []
    for start in range(0, len(times) - 1, 1000):
        chunk = times[start : start + 1001]
        if len(chunk) > 1:
            per.append((chunk[-1] - chunk[0]) / (len(chunk) - 1))
    return len(times), per


def _commands(run: Path, variant: str, out: Path) -> list[tuple[str, list[str]]]:
    r = str(run)
    return [
        ("ge status", ["status", r]),
        ("ge status --json", ["status", r, "--json"]),
        ("ge best", ["best", r]),
        ("ge best --json", ["best", r, "--json"]),
        ("ge show ID", ["show", r, variant]),
        ("ge lineage ID", ["lineage", r, variant]),
        ("ge log", ["log", r]),
        ("ge log --eot", ["log", r, "--eot"]),
        ("ge log --failures", ["log", r, "--failures"]),
        ("ge log --bandit", ["log", r, "--bandit"]),
        ("ge diff ID (vs seed)", ["diff", r, variant]),
        ("ge report", ["report", r, "-o", str(out)]),
    ]


def _run_ge(argv: list[str], code: Path = ROOT) -> tuple[float, float, int, int]:
    """Wall and CPU seconds, exit code and peak RSS (KB) of one ``ge ARGV`` process."""
    wall0 = time.perf_counter()
    proc = subprocess.Popen(
        [*GE, *argv], env=_env(code), cwd=code, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (time.perf_counter() - wall0, usage.ru_utime + usage.ru_stime, proc.returncode,
            usage.ru_maxrss)  # fmt: skip


def _time(argv: list[str], repeat: int, code: Path = ROOT) -> tuple[float, float, int, int]:
    """Median wall and CPU seconds of ``repeat`` runs of ``ge ARGV`` (the package in ``code``),
    the last exit code and the largest peak RSS (KB)."""
    runs = [_run_ge(argv, code) for _ in range(repeat)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    return wall, cpu, next((r[2] for r in runs if r[2]), 0), max(r[3] for r in runs)


def _best_variant(run: Path) -> str:
    done = subprocess.run(
        [*GE, "best", str(run), "--json"], env=_env(), capture_output=True, text=True, check=True
    )
    front = json.loads(done.stdout)["front"]
    return str(front[0]["id"])


def inspect(run: Path, repeat: int, first_read: bool, code: Path = ROOT) -> list[dict]:
    """Each inspection command's median wall and CPU on ``run`` (and the report's size); with
    another ``code`` (an earlier ge's checkout, ``--baseline``), on a copy of the run as that ge
    reads it (schema version 3: no measures table)."""
    out = run.parent / "report.html"
    rows = []
    if first_read:
        rows.append(_first_read(run))
    variant = _best_variant(run)
    if code != ROOT:
        run = _as_schema_3(run, run.parent / "baseline-copy")
    _run_ge(["status", str(run)], code)  # a first run compiles the package's bytecode
    for label, argv in _commands(run, variant, out):
        wall, cpu, rc, rss = _time(argv, repeat, code)
        row = {"command": label, "wall_s": wall, "cpu_s": cpu, "rc": rc, "rss_kb": rss}
        if label == "ge report" and out.exists():
            row["bytes"] = out.stat().st_size
        rows.append(row)
    wall, cpu, rc, rss = _time(["doctor", str(run)], 1, code)
    rows.append({"command": "ge doctor", "wall_s": wall, "cpu_s": cpu, "rc": rc, "rss_kb": rss})
    if code == ROOT:
        rows.append(resume_start(run))
    return rows


def resume_start(run: Path) -> dict:
    """`ge resume` of a copy of ``run`` with one more generation: the seconds until its first
    child's evaluation starts (its directory appears under ``work/``), then it is stopped
    (SIGTERM: resumable); its CPU and peak RSS until then."""
    copy = run.parent / "resume-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, symlinks=True)
    conn = sqlite3.connect(copy / "index.sqlite")
    last = conn.execute("SELECT max(generation) FROM generations").fetchone()[0] or 0
    conn.close()
    work = copy / "work"
    before = set(os.listdir(work)) if work.is_dir() else set()
    argv = [*GE, "resume", str(copy), "--generations", str(last + 1)]
    wall0 = time.perf_counter()
    log = (run.parent / "resume-stderr.txt").open("w+b")  # a pipe could fill and stall it
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=log)
    started, done = None, (0, 0, None)
    while time.perf_counter() - wall0 < 600:
        done = os.wait4(proc.pid, os.WNOHANG)
        if done[0]:  # it ended before evaluating anything
            break
        if work.is_dir() and set(os.listdir(work)) - before:
            started = time.perf_counter() - wall0
            break
        time.sleep(0.01)
    if not done[0]:
        proc.terminate()
        done = os.wait4(proc.pid, 0)
    _, status, usage = done
    log.seek(0)
    err = log.read().decode(errors="replace")
    log.close()
    shutil.rmtree(copy, ignore_errors=True)
    return {
        "command": "ge resume: first evaluation starts",
        "wall_s": started if started is not None else math.nan,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rc": 0 if started is not None else (os.waitstatus_to_exitcode(status) or 1),
        "rss_kb": usage.ru_maxrss,
        "note": "" if started is not None else err[-300:],
    }


def _first_read(run: Path) -> dict:
    """`ge status --json` on a copy of the run whose index has no measures table (as an earlier
    ge left it): the one read that computes and stores every generation's measures."""
    copy = _as_schema_3(run, run.parent / "first-read")
    wall, cpu, rc = _time(["status", str(copy), "--json"], 1)
    shutil.rmtree(copy, ignore_errors=True)
    return {
        "command": "ge status --json (first read, old run)",
        "wall_s": wall,
        "cpu_s": cpu,
        "rc": rc,
    }


def _as_schema_3(run: Path, copy: Path) -> Path:
    """A copy of ``run`` whose index is as ge left it before the measures table (version 3)."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, symlinks=True)
    conn = sqlite3.connect(copy / "index.sqlite")
    conn.execute("DROP TABLE IF EXISTS generation_measures")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    return copy


def _print_build(record: dict) -> None:
    n = record["children"]
    if record.get("recorded"):  # not ge's per-child figures: nothing was evaluated
        print(f"build: {n} children, not evaluated: {record['note']}")
        return
    print(
        f"build: {n} children ({record['size']} asked) in {record['wall_s']:.0f} s wall, "
        f"{record['cpu_s']:.0f} s CPU (ge, its sandboxes and workers): "
        f"{1000 * record['wall_s'] / n:.1f} ms wall, {1000 * record['cpu_s'] / n:.1f} ms CPU per child"
    )
    per = "  ".join(f"{1000 * x:.0f}" for x in record["by_thousand"])
    print(f"  wall per child (ms) by thousand children: {per}")
    if record.get("note"):
        print(f"  note: {record['note']}")


def _print_rows(rows: list[dict]) -> None:
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"  machine load (1/5/15 min) after timing: {load} on {os.cpu_count()} CPUs")
    print(f"  {'command':42} {'wall s':>7} {'CPU s':>7} {'peak RSS':>9}")
    for r in rows:
        extra = f"  {r['bytes'] / 1e6:.2f} MB" if "bytes" in r else ""
        failed = f"  (exit {r['rc']}) {r.get('note', '')}" if r["rc"] else ""
        rss = f"{r['rss_kb'] / 1024:.0f} MB" if r.get("rss_kb") else "-"
        print(f"  {r['command']:42} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {rss:>9}{extra}{failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="where built runs are kept")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command (median)")
    parser.add_argument(
        "--first-read", action="store_true", help="also time an old run's first read"
    )
    parser.add_argument(
        "--evaluator", choices=["real", "fake"], default="real",
        help="fake: build in-process with the test harness's evaluator (inspection timing only)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", type=Path,
        help="a directory holding an earlier ge's guided_evolution package (`git archive REV "
        "guided_evolution | tar -x -C DIR`): time the commands with it instead",
    )  # fmt: skip
    parser.add_argument("--run", type=Path, help="time the commands on this run instead (no build)")
    args = parser.parse_args()
    code = args.baseline.resolve() if args.baseline else ROOT
    if args.baseline:
        print(f"baseline: the commands of the ge in {code}")
    if args.run is not None:
        _print_rows(inspect(args.run.resolve(), args.repeat, args.first_read, code))
        return
    for size in args.sizes:
        fake = args.evaluator == "fake"
        builder = build_recorded if size >= RECORDED else build_fake if fake else build
        record = builder(args.cache.resolve(), size)
        name = f"n{size}-fake" if fake else f"n{size}"
        print(f"== {size} variants: {args.cache / name / 'run'}")
        _print_build(record)
        if not args.build_only:
            _print_rows(
                inspect(args.cache.resolve() / f"n{size}" / "run", args.repeat, args.first_read)
            )


if __name__ == "__main__":
    main()
