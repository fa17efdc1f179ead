"""Per-child wall time with a trivial Python evaluator in the sandbox: fresh process vs preload.

    python benchmarks/zygote_overhead.py                      # 100 and 1,000 children, auto
    python benchmarks/zygote_overhead.py --sandbox landlock --children 100
    python benchmarks/zygote_overhead.py --modes preload

Zero-latency proposals (``--model offline`` operators), one slot, and ``python evaluate.py``
that only writes its metrics. ``fresh``: every evaluation is a new sandboxed interpreter
(``[evaluator.preload] enabled = false``); ``preload``: ``modules = ["json"]`` (the default for a Python
evaluator preloads the standard library the same way), so every evaluation is a fork of the
slot's worker, boxed in pid, mount and ipc namespaces of its own (evaluation/workers/zygote.py). Population 50; the per-child time is the median
over generations >= 1 of (generation wall / children planned), as in engine_overhead.py part 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine_overhead import ge, generation_times

from tests.support.seeds import template_seed, write_config

EVALUATE = (
    "import json, os\njson.dump({'score': 1.0, 'size': 10}, open(os.environ['GE_METRICS'], 'w'))\n"
)
POPULATION = 50


def seed_for(tmp: Path, children: int, mode: str, sandbox: str) -> Path:
    seed = template_seed(tmp / f"seed-{mode}-{sandbox}-{children}")
    (seed / "evaluate.py").write_text(EVALUATE)
    evaluator = {"command": "python evaluate.py", "timeout_s": 60, "sandbox": sandbox}
    evaluator["preload"] = {"modules": ["json"]} if mode == "preload" else {"enabled": False}
    write_config(
        seed / "ge.toml",
        {
            "seed": {"files": ["model.py"]},
            "llm": {"models": ["offline"]},
            "evolution": {
                "initial_population": POPULATION,
                "population": POPULATION,
                "elites": 10,
                "hall_of_fame": 20,
                "seed": 3,
                "generations": children // POPULATION - 1,
            },
            "evaluator": evaluator,
            "executor": {"slots": 1, "gpus": []},
        },
        [{"name": "score", "direction": "max"}, {"name": "size", "direction": "min"}],
    )
    return seed


def per_child(tmp: Path, children: int, mode: str, sandbox: str) -> tuple[float, float]:
    """(median seconds per child over generations >= 1, total wall seconds)."""
    seed = seed_for(tmp, children, mode, sandbox)
    run_dir = tmp / f"run-{mode}-{sandbox}-{children}"
    wall = ge(["run", str(seed), "--run-dir", str(run_dir)], cwd=tmp)
    values = [secs / plans for g, plans, secs in generation_times(run_dir) if plans and g > 0]
    return statistics.median(values), wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sandbox", default="auto", choices=["auto", "bwrap", "landlock"])
    parser.add_argument("--children", default="100,1000", help="comma-separated totals")
    parser.add_argument("--modes", default="fresh,preload", help="fresh and/or preload")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="ge-zygote-bench-") as tmp:
        for children in (int(c) for c in args.children.split(",")):
            for mode in args.modes.split(","):
                child, wall = per_child(Path(tmp), children, mode, args.sandbox)
                print(
                    f"{children:>6} children, {mode:>7}, sandbox={args.sandbox}: "
                    f"{child * 1000:6.1f} ms per child (median), {wall:6.1f} s wall "
                    "(target <= 25 ms per child with preload)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
