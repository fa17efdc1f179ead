"""The Python API's front on a large run (issue 28): ``ge.open_run(RUN).front()``.

    python benchmarks/api_front.py --cache /tmp/ge-scale            # the 10,000-variant run
    python benchmarks/api_front.py --run runs/NAME --repeat 9

The run is ``benchmarks/scale.py``'s (built there with ``ge run --model offline``, cached as
``DIR/n10000/run``; built first when missing: about ten minutes of CPU). Printed: the variants
and front size, the first call in a fresh process (its imports included: deap, the inspection
modules) and the median over ``--repeat`` later calls of ``open_run(...).front()``, wall and
CPU (the machine may be shared: CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_ONE = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import guided_evolution as ge
front = ge.open_run(sys.argv[1]).front()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
walls, cpus = [], []
for _ in range(int(sys.argv[2])):
    t0, c0 = time.perf_counter(), time.process_time()
    ge.open_run(sys.argv[1]).front()
    walls.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
variants = len(ge.open_run(sys.argv[1]).variants())
print(json.dumps({"front": len(front), "variants": variants, "first": [wall, cpu], "walls": walls, "cpus": cpus}))
"""


def _run_of(args: argparse.Namespace) -> Path:
    if args.run is not None:
        return Path(args.run)
    run = args.cache / "n10000" / "run"
    if not (run / "config.json").exists():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import scale

        scale.build(args.cache, 10000)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--cache", type=Path, help="benchmarks/scale.py's cache of built runs")
    where.add_argument("--run", type=Path, help="time this run instead")
    parser.add_argument("--repeat", type=int, default=7, help="calls after the first (median)")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes (first calls)")
    args = parser.parse_args()
    run = _run_of(args)
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(ROOT)}
    import json

    results = []
    for _ in range(args.processes):
        done = subprocess.run(
            [sys.executable, "-c", _ONE, str(run), str(args.repeat)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(done.stdout))
    first = results[0]
    walls = [w for r in results for w in r["walls"]]
    cpus = [c for r in results for c in r["cpus"]]
    print(f"run: {run}  ({first['variants']:,} variants, front of {first['front']:,} rows)")
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(
        f"first call in a fresh process (imports included), median of {len(results)}: "
        f"wall {statistics.median(r['first'][0] for r in results):.3f} s, "
        f"CPU {statistics.median(r['first'][1] for r in results):.3f} s"
    )
    print(
        f"open_run(...).front(), median of {len(walls)} calls: "
        f"wall {statistics.median(walls):.3f} s, CPU {statistics.median(cpus):.3f} s"
    )


if __name__ == "__main__":
    main()
