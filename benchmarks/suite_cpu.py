"""Where the suite's CPU goes: sums the per-test lines of ``tests/support/cpu_per_test.py``.

    GE_CPU_PER_TEST_DIR=/tmp/cpu python -m pytest -q -p no:cacheprovider \\
        -p tests.support.cpu_per_test [tests...]
    python benchmarks/suite_cpu.py /tmp/cpu              # by file, then the top 30 tests
    python benchmarks/suite_cpu.py /tmp/cpu --top 60 --files 40
    python benchmarks/suite_cpu.py /tmp/cpu --compare /tmp/cpu-before   # per file, before/after

Printed: the total CPU seconds (user+system of each test process and the children it waited
for; ``self``: the test process's own share) and wall seconds summed over tests, then files by
CPU (CPU-s, share, self, wall-s, tests), then
the single tests by CPU. With ``--compare``, each file present in either directory with its CPU
before, after and the difference (only the files of this directory, the "after").
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load(directory: Path) -> list[dict[str, object]]:
    """Every test line of every ``cpu-*.jsonl`` in ``directory`` (the last line of a test wins)."""
    rows: dict[str, dict[str, object]] = {}
    for path in sorted(directory.glob("cpu-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[str(row["test"])] = row
    return list(rows.values())


def by_file(rows: list[dict[str, object]]) -> dict[str, tuple[int, float, float, float]]:
    """file -> (tests, CPU-s, wall-s, the test process's own CPU-s)."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for row in rows:
        acc = sums[str(row["file"])]
        acc[0] += 1
        acc[1] += float(row["cpu_s"])  # type: ignore[arg-type]
        acc[2] += float(row["wall_s"])  # type: ignore[arg-type]
        acc[3] += float(row.get("self_s", 0.0))  # type: ignore[arg-type]
    return {f: (int(a[0]), a[1], a[2], a[3]) for f, a in sums.items()}


def report(rows: list[dict[str, object]], files: int, top: int) -> None:
    total = sum(float(r["cpu_s"]) for r in rows)  # type: ignore[arg-type]
    wall = sum(float(r["wall_s"]) for r in rows)  # type: ignore[arg-type]
    own = sum(float(r.get("self_s", 0.0)) for r in rows)  # type: ignore[arg-type]
    print(
        f"{len(rows)} tests: {total:.1f} CPU-s ({own:.1f} in the test processes themselves), "
        f"{wall:.1f} wall-s summed over tests"
    )
    print(f"\n{'CPU-s':>8} {'share':>6} {'self':>7} {'wall-s':>8} {'tests':>5}  file")
    table = sorted(by_file(rows).items(), key=lambda kv: -kv[1][1])
    for name, (count, cpu, secs, mine) in table[:files]:
        share = 100 * cpu / max(total, 1e-9)
        print(f"{cpu:8.1f} {share:5.1f}% {mine:7.1f} {secs:8.1f} {count:5d}  {name}")
    print(f"\n{'CPU-s':>8} {'self':>7} {'wall-s':>8}  test")
    for row in sorted(rows, key=lambda r: -float(r["cpu_s"]))[:top]:  # type: ignore[arg-type]
        mine = float(row.get("self_s", 0.0))  # type: ignore[arg-type]
        print(f"{float(row['cpu_s']):8.2f} {mine:7.2f} {float(row['wall_s']):8.2f}  {row['test']}")  # type: ignore[arg-type]


def compare(after: list[dict[str, object]], before: list[dict[str, object]]) -> None:
    new, old = by_file(after), by_file(before)
    print(f"{'before':>8} {'after':>8} {'diff':>8}  file (CPU-s; tests before -> after)")
    tb = ta = 0.0
    for name in sorted(new, key=lambda f: new[f][1] - old.get(f, (0, 0.0, 0.0, 0.0))[1]):
        b, a = old.get(name, (0, 0.0, 0.0, 0.0)), new[name]
        tb, ta = tb + b[1], ta + a[1]
        print(f"{b[1]:8.1f} {a[1]:8.1f} {a[1] - b[1]:+8.1f}  {name} ({b[0]} -> {a[0]})")
    print(f"{tb:8.1f} {ta:8.1f} {ta - tb:+8.1f}  total of these files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=30, help="single tests to list")
    parser.add_argument("--files", type=int, default=60, help="files to list")
    parser.add_argument("--compare", type=Path, help="an earlier directory: per file before/after")
    args = parser.parse_args()
    rows = load(args.directory)
    if args.compare:
        compare(rows, load(args.compare))
    else:
        report(rows, args.files, args.top)


if __name__ == "__main__":
    main()
