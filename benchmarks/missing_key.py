"""How long `ge run` takes to report a missing API key, and whether it leaves a run directory.

Runs ``ge run SEED --model gpt-4o-mini`` (the `ge init` seed, offline evaluator) with
OPENAI_API_KEY and OPENAI_BASE_URL unset, ``--repeat`` times, and prints each wall time, the
median, the exit code and whether the run directory exists afterwards. ``--source DIR`` runs the
ge of another checkout (e.g. a `git worktree` of an older commit) through PYTHONPATH.

    python benchmarks/missing_key.py
    git worktree add /tmp/ge-before <commit> && python benchmarks/missing_key.py --source /tmp/ge-before
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

from guided_evolution import seedinit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--source", type=Path, default=None, help="checkout whose ge to run")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["LITELLM_OFFLINE_MODE"] = "true"
    if args.source is not None:
        env["PYTHONPATH"] = str(args.source.resolve())
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seedinit.write_template(root / "seed")
        for i in range(args.repeat):
            run = root / "run"
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "guided_evolution", "run", "seed", "--run-dir", "run",
                 "--model", "gpt-4o-mini", "--json"],
                cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            left = run.exists()
            print(f"run {i + 1}: {elapsed:.2f} s  exit {proc.returncode}  run dir left: {left}")
            shutil.rmtree(run, ignore_errors=True)
        last = proc.stderr.strip().splitlines()
        print(f"message: {last[-1] if last else '-'}")
    print(f"median: {statistics.median(times):.2f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
