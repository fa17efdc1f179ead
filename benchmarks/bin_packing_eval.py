"""Time of one evaluation of the bin_packing seed (seeds/bin_packing/evaluate.py), both sets.

Runs `python evaluate.py` on the seed (best fit) `--repeat` times, pinned to one CPU core
(`--core`; the evaluator and its confined worker take turns on it), and prints the medians of
the wall time and of the CPU time (user + system of the evaluator and the worker together),
with the metrics of the last run. Interpreter start and numpy's import are included: it is
what ge pays per variant. The instances are found as evaluate.py finds them (its data/, else
shared/bin_packing/ of the ge repository).

    python benchmarks/bin_packing_eval.py [--repeat 7] [--core 0] [--heuristic FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = Path(__file__).resolve().parents[1] / "seeds" / "bin_packing"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(seed: Path, metrics: Path, core: int) -> tuple[float, float, dict]:
    """One evaluation: wall s, CPU s, metrics."""
    cpu, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--metrics", str(metrics)],
        cwd=seed,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"evaluate.py failed: {proc.stderr.strip()[-500:]}")
    return wall, _children_cpu() - cpu, json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--core", type=int, default=0, help="the CPU core to pin to")
    parser.add_argument("--heuristic", type=Path, help="a heuristic.py to time instead of the seed")
    args = parser.parse_args()
    seed = SEED
    with tempfile.TemporaryDirectory() as tmp:
        if args.heuristic is not None:
            seed = Path(tmp) / "seed"
            shutil.copytree(SEED, seed, ignore=shutil.ignore_patterns("__pycache__", "runs"))
            shutil.copyfile(args.heuristic, seed / "heuristic.py")
            if not (seed / "data").is_dir():
                (seed / "data").symlink_to(SEED.parents[1] / "shared" / "bin_packing")
        runs = [_once(seed, Path(tmp) / "metrics.json", args.core) for _ in range(args.repeat)]
    walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
    print(
        f"bin_packing evaluation, both sets (35,000 items) and the held-out ones (4,500), {args.repeat} runs on core {args.core}"
    )
    print(
        f"  median wall {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f})"
    )
    print(f"  median CPU  {statistics.median(cpus):.2f} s (evaluator + worker)")
    print(f"  metrics: {json.dumps(runs[-1][2])}")


if __name__ == "__main__":
    main()
