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

Printed with it, where a child's time goes: CPU of ge's own process and of its sandboxes and
workers (every stage's box) per child over the whole run (rusage, start-up included), the
evaluation as the executor saw it in generations >= 1 (the stage's files on ge's side plus the
box, and any wait for ge's busy event loop; median), and how busy the one slot was. A slot busy
well under 100% means ge's own thread (the proposals, git, the index) sets the pace.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine_overhead import ge, generation_times

from guided_evolution.runstore.run_index import RunIndex
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


def per_child(tmp: Path, children: int, mode: str, sandbox: str) -> tuple[float, float, dict]:
    """(median seconds per child over generations >= 1, total wall seconds, the breakdown)."""
    seed = seed_for(tmp, children, mode, sandbox)
    run_dir = tmp / f"run-{mode}-{sandbox}-{children}"
    usage = tmp / f"rusage-{mode}-{sandbox}-{children}.json"
    wall = ge(
        ["run", str(seed), "--run-dir", str(run_dir)],
        cwd=tmp,
        launcher=(str(Path(__file__).resolve()), "--rusage-to", str(usage), "--"),
    )
    times = [(g, plans, secs) for g, plans, secs in generation_times(run_dir) if plans and g > 0]
    cpu = json.loads(usage.read_text())
    planned = sum(plans for _, plans, _ in times)
    return (
        statistics.median(secs / plans for _, plans, secs in times),
        wall,
        {
            "ge_cpu_ms": 1000 * cpu["self"] / children,
            "tree_cpu_ms": 1000 * cpu["children"] / children,
            **_evaluations(run_dir, planned, sum(secs for _, _, secs in times)),
        },
    )


def _evaluations(run_dir: Path, planned: int, span: float) -> dict:
    """The median evaluation and the slot's busy share over generations >= 1 (the last
    ``planned`` evaluations, the generations' ``span`` seconds)."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        durations = [e.duration_s or 0.0 for e in index.evaluations()][-planned:]
    finally:
        index.close()
    return {
        "evaluation_ms": 1000 * statistics.median(durations),
        "slot_busy": sum(durations) / span if span else 0.0,
    }


def _rusage_launcher(out: str, args: list[str]) -> None:
    """Run ge's CLI in this process; at exit, its own CPU and its children's into ``out``."""

    def report() -> None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        Path(out).write_text(
            json.dumps(
                {
                    "self": own.ru_utime + own.ru_stime,
                    "children": kids.ru_utime + kids.ru_stime,
                }
            )
        )

    atexit.register(report)
    sys.argv = ["ge", *args]
    from guided_evolution.cli import main as ge_main

    ge_main()


def main() -> None:
    if sys.argv[1:2] == ["--rusage-to"]:  # the launcher of one measured ge process
        _rusage_launcher(sys.argv[2], [a for a in sys.argv[3:] if a != "--"])
        return
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
                child, wall, parts = per_child(Path(tmp), children, mode, args.sandbox)
                print(
                    f"{children:>6} children, {mode:>7}, sandbox={args.sandbox}: "
                    f"{child * 1000:6.1f} ms per child (median), {wall:6.1f} s wall "
                    "(target <= 10 ms per child with preload)",
                    flush=True,
                )
                print(
                    f"{'':>8}per child (the whole run, start included): ge's process "
                    f"{parts['ge_cpu_ms']:.1f} ms CPU, its sandboxes and workers "
                    f"{parts['tree_cpu_ms']:.1f} ms CPU; an evaluation "
                    f"(ge's stage files + the box) {parts['evaluation_ms']:.1f} ms (median); "
                    f"the slot busy {100 * parts['slot_busy']:.0f}% of generations >= 1",
                    flush=True,
                )


if __name__ == "__main__":
    main()
