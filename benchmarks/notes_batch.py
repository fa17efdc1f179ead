"""Cost of a generation's batch of git notes on a large run: the first batch of a process (a
fresh ``GitStore``: the notes tree is read, then written) and the batches after it.

Runs on a copy of the repository of a ``benchmarks/scale.py`` run (``--cache DIR``:
``DIR/nSIZE/run/repo.git``; nothing is written to the original). Each batch notes ``--batch``
commits picked at random among the run's branches (a generation's evaluations); the copy is made
anew for each of ``--repeat`` rounds. Prints the medians of this process's CPU milliseconds.

    python benchmarks/notes_batch.py --cache /tmp/ge-scale --size 100000
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guided_evolution.runstore.git_store import GitStore


def one_round(repo: Path, batch: int, later: int, seed: int) -> tuple[float, float, int]:
    """(first batch CPU s, mean CPU s of the ``later`` batches after it, notes in the tree)."""
    rng = random.Random(seed)
    with GitStore.open(repo) as store:
        commits = sorted(store.branches().values())

        def notes(tag: int) -> dict[str, str]:
            return {
                sha: f'{{"score": {tag}, "of": "{sha[:8]}"}}' for sha in rng.sample(commits, batch)
            }

        start = time.process_time()
        store.set_notes(notes(0))
        first = time.process_time() - start
        start = time.process_time()
        for tag in range(1, later + 1):
            store.set_notes(notes(tag))
        each = (time.process_time() - start) / later
        return first, each, len(store.note_blobs())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="scale.py's cache directory")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100, help="notes per batch (a generation)")
    parser.add_argument("--later", type=int, default=3, help="batches after the first")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    source = args.cache / f"n{args.size}" / "run" / "repo.git"
    if not source.is_dir():
        raise SystemExit(f"{source} is missing: python benchmarks/scale.py --cache {args.cache}")
    firsts, laters, count = [], [], 0
    for seed in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="ge-notes-", dir=source.parent.parent) as tmp:
            repo = Path(tmp) / "repo.git"
            shutil.copytree(source, repo, symlinks=True)
            first, each, count = one_round(repo, args.batch, args.later, seed)
        firsts.append(first)
        laters.append(each)
    print(
        f"{count:,} notes, batches of {args.batch}: first batch of a process (tree read "
        f"included) {1000 * statistics.median(firsts):.0f} ms CPU, each later batch "
        f"{1000 * statistics.median(laters):.0f} ms (medians of {args.repeat})"
    )


if __name__ == "__main__":
    main()
