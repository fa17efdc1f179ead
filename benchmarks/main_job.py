"""The README main job's wall time: `ge run seeds/tiny_cnn --run-dir <tmp>`, median of N runs.

    python benchmarks/main_job.py              # 3 runs of the seed as it is
    python benchmarks/main_job.py --repeat 5
    python benchmarks/main_job.py --no-preload # the same seed without [evaluator.preload] modules
    python benchmarks/main_job.py --compare    # both, alternating run by run (same load)

Each run uses a fresh run directory and the seed's own ge.toml (offline operators, 2 slots). The
1-minute load average before each run is printed too: the figures mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "tiny_cnn"


def seed_copy(tmp: Path, preload: bool) -> Path:
    """The seed itself, or a copy of it without its preload modules (the stdlib preload stays)."""
    if preload:
        return SEED
    copy = tmp / "tiny_cnn"
    shutil.copytree(SEED, copy, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    toml = copy / "ge.toml"
    lines = toml.read_text().splitlines()
    toml.write_text("\n".join(x for x in lines if not x.startswith("modules")) + "\n")
    return copy


def one_run(seed: Path, run_dir: Path) -> float:
    """Wall seconds of one `ge run`; exits when it fails."""
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir", str(run_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ge run failed:\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs (the median is printed)")
    parser.add_argument("--no-preload", action="store_true", help="drop [evaluator.preload] modules")
    parser.add_argument("--compare", action="store_true", help="with and without preload")
    args = parser.parse_args()
    modes = [True, False] if args.compare else [not args.no_preload]
    walls: dict[bool, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="ge-main-job-") as tmp:
        seeds = {m: seed_copy(Path(tmp), preload=m) for m in modes}
        for i in range(args.repeat):
            for mode in modes:
                load = os.getloadavg()[0]
                wall = one_run(seeds[mode], Path(tmp) / f"run-{mode}-{i}")
                walls[mode].append(wall)
                label = "preload" if mode else "no preload"
                print(
                    f"run {i + 1} ({label}): {wall:6.1f} s wall (load average before: {load:.2f})",
                    flush=True,
                )
    for mode, values in walls.items():
        label = "preload" if mode else "no preload"
        median = statistics.median(values)
        print(
            f"{label}: median wall of {len(values)} runs {median:.1f} s on {os.cpu_count()} cores"
        )


if __name__ == "__main__":
    main()
