"""The damage check the engine makes twice per child (``runstore.damage.RunWatch.damage``): its CPU
per call on a copy of a run, the quick path beside the full look it falls back to.

    python benchmarks/damage_check.py RUN_DIR            # e.g. /tmp/ge-scale/n1000/run
    python benchmarks/damage_check.py RUN_DIR --calls 5000

The run is copied first (the check only reads, but a run of someone else's is left alone).
Prints the median over ``--repeat`` rounds of CPU microseconds per call.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from guided_evolution.runstore import damage
from guided_evolution.runstore.git_store import GitStore


def _per_call(watch: damage.RunWatch, calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        if watch.damage():
            raise SystemExit("the copy has damage: pass an intact run")
    return 1e6 * (time.thread_time() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.run, copy, symlinks=True)
        with GitStore.open(copy / "repo.git") as store:
            watch = damage.RunWatch(copy / "index.sqlite", store, store.branch_sha("seed"))
            quick, full = [], []
            for _ in range(args.repeat):
                quick.append(_per_call(watch, args.calls))
                whole = watch._whole
                watch._whole = lambda: False  # type: ignore[method-assign]
                full.append(_per_call(watch, args.calls))
                watch._whole = whole  # type: ignore[method-assign]
    print(f"damage check, CPU per call: {statistics.median(quick):.1f} us "
          f"(the full look: {statistics.median(full):.1f} us)")  # fmt: skip


if __name__ == "__main__":
    main()
