"""What a run's periodic compaction costs as the run grows: ``GitStore.pack_loose`` (the new
loose objects only, what the engine does every 2,000 children) against ``GitStore.compact``
(``git repack -a`` and prune: the whole repository, what it did before and still does at a
run's end).

    python benchmarks/compaction.py                       # 2,000 / 10,000 / 40,000 variants
    python benchmarks/compaction.py --sizes 1000,20000 --repeat 3

For each size: a repository of that many variant commits (a 30-line file each, one line
changed, a note batch every 50, packed), then 2,000 more children written loose; the median
seconds of each way of packing them, each on its own copy. A flat per-child cost means
pack_loose's time stays the same while the repository grows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guided_evolution.runstore.git_store import GitStore

NEW = 2000  # children between two compactions (engine/recorder.py COMPACT_EVERY)


def _text(i: int) -> bytes:
    lines = [f"layer_{k} = {k * 3}" for k in range(30)]
    lines[i % 30] = f"layer_{i % 30} = {i}"
    return ("\n".join(lines) + "\n").encode()


def _add(store: GitStore, start: int, count: int, parent: str) -> str:
    notes: dict[str, str] = {}
    for i in range(start, start + count):
        parent = store.commit({"model.py": _text(i), "evaluate.py": b"print(1)\n"}, [parent], f"v{i}", f"v{i}")
        notes[parent] = f"score {i}"
        if len(notes) == 50:
            store.set_notes(notes)
            notes = {}
    store.set_notes(notes)
    return parent


def measure(size: int, repeat: int, tmp: Path) -> tuple[float, float]:
    base = tmp / f"base-{size}.git"
    with GitStore.init(base) as store:
        head = store.commit({"model.py": _text(0)}, [], "seed", "ge/seed")
        head = _add(store, 1, size, head)
        store.compact()
        _add(store, size + 1, NEW, head)
    times: dict[str, list[float]] = {"pack_loose": [], "compact": []}
    for _ in range(repeat):
        for way in times:
            copy = tmp / f"copy-{size}.git"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(base, copy)
            with GitStore.open(copy) as store:
                start = time.perf_counter()
                getattr(store, way)()
                times[way].append(time.perf_counter() - start)
    shutil.rmtree(base)
    return statistics.median(times["pack_loose"]), statistics.median(times["compact"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,10000,40000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'variants':>9}  {'pack_loose':>11}  {'compact':>9}   (seconds to pack {NEW:,} new children)")
    with tempfile.TemporaryDirectory(prefix="ge-compaction-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            loose, full = measure(size, args.repeat, Path(tmp))
            print(f"{size:>9,}  {loose:>11.2f}  {full:>9.2f}   per child: {1000 * loose / NEW:.2f} ms vs {1000 * full / NEW:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
