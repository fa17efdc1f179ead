"""CPU seconds of one fresh evaluation of the CNN seeds (`python evaluate.py` in a new process,
as with ``preload = false``): tiny_cnn and ExquisiteNetV2, test-sized and ``--check``.

    python benchmarks/seed_eval_cpu.py                      # this checkout, 5 runs each
    python benchmarks/seed_eval_cpu.py --tree /tmp/before   # another tree (e.g. `git archive`)
    python benchmarks/seed_eval_cpu.py --runs 9 --seeds tiny_cnn

Each case copies the seed's ``evaluate.py`` and ``model.py`` from ``--tree`` into a temporary
directory and runs it there ``--runs`` times; printed: the median user+system CPU seconds of the
process (``RUSAGE_CHILDREN``), min and max, and the metrics of the last run without its timings
(two trees must print the same). ExquisiteNetV2 reads CIFAR-format data made by
``tests/support/cifar.py`` (200 training and 50 test images a class, seed 1): no download.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.cifar import write_cifar  # noqa: E402

CASES = {  # seed -> [(label, arguments)]
    "tiny_cnn": [
        ("2 epochs, 1,000 images", ["--epochs", "2", "--limit-train", "1000"]),
        ("--check", ["--check"]),
    ],
    "exquisitenet_v2": [
        ("2 epochs, tiny CIFAR", ["--epochs", "2", "--device", "cpu", "--seed", "3"]),
        ("--check", ["--check", "--device", "cpu"]),
    ],
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(work: Path, argv: list[str], runs: int) -> tuple[list[float], str]:
    times, metrics = [], ""
    for _ in range(runs):
        before = _cpu()
        proc = subprocess.run(
            [sys.executable, "evaluate.py", *argv, "--metrics", str(work / "m.json")],
            cwd=work, capture_output=True, text=True, check=False,
        )  # fmt: skip
        times.append(_cpu() - before)
        if proc.returncode != 0:
            raise SystemExit(f"{work.name} {' '.join(argv)} failed: {proc.stderr[-1500:]}")
    if "--check" not in argv:
        found = json.loads((work / "m.json").read_text())
        metrics = json.dumps({k: v for k, v in found.items() if "second" not in k}, sort_keys=True)
    return times, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="where seeds/ is read from")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seeds", nargs="+", choices=sorted(CASES), default=list(CASES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ge-seed-cpu-") as tmp:
        data = write_cifar(Path(tmp) / "cifar-10-batches-py", 200, 50, seed=1)
        print(f"{args.tree}: median CPU-s of {args.runs} fresh evaluations (min-max)")
        for seed in args.seeds:
            work = Path(tmp) / seed
            work.mkdir()
            for name in ("evaluate.py", "model.py"):
                shutil.copy(args.tree / "seeds" / seed / name, work / name)
            for label, argv in CASES[seed]:
                extra = ["--data", str(data)] if seed == "exquisitenet_v2" else []
                times, metrics = _measure(work, [*argv, *extra], args.runs)
                print(
                    f"  {seed:16s} {label:24s} {statistics.median(times):6.2f} "
                    f"({min(times):.2f}-{max(times):.2f})  {metrics}"
                )


if __name__ == "__main__":
    main()
