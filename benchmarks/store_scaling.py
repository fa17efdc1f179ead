"""Cost of adding one variant to a run store as the run grows.

Each variant is what the engine does per child: a mutation commit (one changed file) on its own
branch, an index row, an evaluation row and a git note. Prints the median ms per variant over
windows of 100 variants ending at 100, 1,000 and 10,000 variants, and the ratio 10,000 / 100,
both in wall-clock time and in this process's CPU time (steadier on a shared, noisy disk).

    python benchmarks/store_scaling.py [--variants 10000] [--dir DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guided_evolution.evolution.segments import variant_id
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.recording import record_variant
from guided_evolution.runstore.records import (
    SEED_BRANCH,
    EvaluationRecord,
    VariantRecord,
    variant_branch,
)
from guided_evolution.runstore.run_index import RunIndex

WINDOW = 100


def seed_files() -> dict[str, bytes]:
    """About 10 KB over a few files, one of them in a subdirectory."""
    body = "".join(f"def f{i}(x):\n    return x * {i} + 1\n\n" for i in range(120))
    return {
        "model.py": body[:4000].encode(),
        "train.py": body[4000:7000].encode(),
        "lib/util.py": body[7000:9000].encode(),
        "README.md": b"# seed\n" * 100,
    }


def add_variant(
    store: GitStore, index: RunIndex, files: dict[str, bytes], parent: VariantRecord, n: int
) -> VariantRecord:
    """One child as the engine records it: commit + branch + index row, evaluation + note."""
    files = dict(files)
    files["model.py"] = files["model.py"] + f"\n# mutation {n}\nSCALE = {n * 0.5}\n".encode()
    vid = variant_id({"model.py": files["model.py"].decode()}, ["model.py"])
    generation = 1 + n // 100
    rec = VariantRecord(
        id=vid,
        generation=generation,
        operator="mutation",
        branch=variant_branch(generation, vid),
        parents=[parent.id],
        segment="SE0",
        prompt_name="mutate",
        persona="expert",
        model="bench",
        temperature=0.7,
    )
    rec = record_variant(store, index, rec, files, [parent.commit_sha or ""])
    evaluation = EvaluationRecord(vid, "ok", metrics={"loss": 1.0 / (n + 1)}, duration_s=0.1)
    index.add_evaluation(evaluation)
    store.set_note(rec.commit_sha or "", evaluation.to_note())
    index.set_variant_status(vid, "evaluated")
    return rec


def run(n_variants: int, root: Path) -> dict[int, tuple[float, float]]:
    store = GitStore.init(root / "repo.git")
    index = RunIndex.open(root / "index.sqlite")
    files = seed_files()
    seed_id = variant_id({"model.py": files["model.py"].decode()}, ["model.py"])
    seed = record_variant(store, index, VariantRecord(seed_id, 0, "seed", branch=SEED_BRANCH), files)
    checkpoints = sorted({c for c in (100, 1000, 10000, n_variants) if c <= n_variants})
    wall: list[float] = []
    cpu: list[float] = []
    medians: dict[int, tuple[float, float]] = {}
    parent = seed
    for n in range(1, n_variants + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        child = add_variant(store, index, files, parent, n)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if n % 10 == 0:
            parent = child  # a lineage, not a star: parents vary like in a real run
        if n in checkpoints:
            medians[n] = (
                statistics.median(wall[-WINDOW:]) * 1000,
                statistics.median(cpu[-WINDOW:]) * 1000,
            )
    store.close()
    index.close()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the run here instead of a temp dir")
    parser.add_argument("--dir", type=Path, help="parent of the temp dir (e.g. /dev/shm)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        medians = run(args.variants, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ge-bench-", dir=args.dir) as tmp:
            medians = run(args.variants, Path(tmp))
    total = time.perf_counter() - start
    for n, (ms, cpu_ms) in medians.items():
        print(
            f"{n:>6} variants: {ms:.3f} ms wall, {cpu_ms:.3f} ms CPU per variant (median of last {WINDOW})"
        )
    first, last = min(medians), max(medians)
    ratio = medians[last][0] / medians[first][0]
    cpu_ratio = medians[last][1] / medians[first][1]
    print(f"ratio {last}/{first}: {ratio:.2f} wall, {cpu_ratio:.2f} CPU (target <= 1.5)")
    print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
