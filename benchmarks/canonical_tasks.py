"""The canonical tasks' seeds (circle packing, cap set, online bin packing): per-evaluation time on one core, and what
an offline run of N evaluations reaches (README "ge on the field's tasks").

    python benchmarks/canonical_tasks.py                     # both seeds, 5 timed evaluations each
    python benchmarks/canonical_tasks.py --seeds cap_set --repeats 9 --generations 6 --population 8

Part 1 runs each seed's own evaluator (`python evaluate.py`) on a copy of the seed, pinned to one
CPU core (sched_setaffinity), `--repeats` times: the median wall time and the median CPU time of
the evaluator and its child process together (rusage of the waited children). Part 2 runs `ge run
SEED --model offline` (no LLM is reachable from this machine: the offline operators nudge
numbers, swap calls and drop or repeat statements, nothing more) with `--initial-population`
and `--population` children per generation for `--generations` generations, and prints the
seed's score, the best score, and how many evaluations were made and failed. Part 3 (unless
`--no-control`) spends the same budget with `[evolution] strategy = "best_of_n"` (every child a
mutation of the seed, no selection, no crossover) on a copy of the seed, and prints its best beside
the evolution run's: whether evolving pays over sampling the seed's neighbourhood.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# seed directory name -> its selecting objectives and their directions; one line per task
TASKS = {
    "circle_packing": (("sum_radii", "max"),),
    "cap_set": (("cap_set_size", "max"),),
    "bin_packing": (("or3_excess", "min"), ("weibull_excess", "min")),
}


def show(name: str, values: tuple[float, ...]) -> str:
    """``metric = value`` for each of the task's objectives."""
    return ", ".join(f"{m} = {v:g}" for (m, _), v in zip(TASKS[name], values, strict=True))


def one_core() -> None:
    """Pin the evaluator (and what it starts) to one CPU core."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def time_evaluations(seed: Path, repeats: int) -> tuple[float, float, tuple[float, ...]]:
    """(median wall s, median CPU s, the score) of `python evaluate.py` in a copy of the seed."""
    walls, cpus, scores = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(seed, Path(tmp) / seed.name,
                                    ignore=shutil.ignore_patterns("runs", "__pycache__")))  # fmt: skip
        metrics = Path(tmp) / "metrics.json"
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "evaluate.py", "--metrics", str(metrics)], cwd=copy,
                           check=True, capture_output=True, preexec_fn=one_core)  # fmt: skip
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            found = json.loads(metrics.read_text())
            scores.append(tuple(found[m] for m, _ in TASKS[seed.name]))
    assert len(set(scores)) == 1, f"{seed.name}: the seed's score varies: {scores}"
    return statistics.median(walls), statistics.median(cpus), scores[0]


def control_seed(seed: Path, tmp: Path) -> Path:
    """A copy of the seed whose ge.toml says `strategy = "best_of_n"` in its [evolution] table."""
    copy = Path(shutil.copytree(seed, tmp / seed.name, ignore=shutil.ignore_patterns("runs", "__pycache__")))
    toml = copy / "ge.toml"
    text = toml.read_text()
    assert "\n[evolution]\n" in text and "strategy" not in text, f"{seed.name}: no plain [evolution] table"
    toml.write_text(text.replace("\n[evolution]\n", '\n[evolution]\nstrategy = "best_of_n"\n', 1))
    return copy


def offline_run(seed: Path, args: argparse.Namespace, control: bool = False) -> dict:
    """`ge run SEED --model offline` with the sizes given (``control``: as the best_of_n
    control): evaluations, failures, best score."""
    with tempfile.TemporaryDirectory() as tmp:
        if control:
            seed = control_seed(seed, Path(tmp))
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir",
             str(Path(tmp) / "run"), "--model", "offline", "--generations", str(args.generations),
             "--population", str(args.population), "--initial-population", str(args.population),
             "--json"], cwd=tmp, capture_output=True, text=True, check=False,
            env={**os.environ, "LITELLM_OFFLINE_MODE": "true"},
        )  # fmt: skip
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:300], "wall_s": wall}
    summary = json.loads(proc.stdout)
    best = tuple(  # each objective's best over the front (the copy keeps the seed's name)
        (max if d == "max" else min)(row["metrics"][m] for row in summary["front"])
        for m, d in TASKS[seed.name]
    )
    return {"children": summary["children"], "evaluated": summary["evaluated"],
            "failed": summary["failed"], "best": best, "wall_s": wall}  # fmt: skip


def report_control(seed: Path, args: argparse.Namespace, evolved: tuple[float, ...]) -> None:
    """Part 3: the best_of_n control at the same sizes, printed beside the evolution run's best."""
    run = offline_run(seed, args, control=True)
    if "error" in run:
        print(f"  best_of_n control failed: {run['error']}")
        return
    print(f"  best_of_n control, same budget: {run['children']} distinct children, "
          f"{run['evaluated']} evaluations ok, {run['failed']} failed, best "
          f"{show(seed.name, run['best'])} (evolution: {show(seed.name, evolved)}), "
          f"{run['wall_s']:.0f} s wall")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", default=sorted(TASKS), choices=sorted(TASKS))
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluations per seed")
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--no-run", action="store_true", help="time the evaluators only")
    parser.add_argument("--no-control", action="store_true", help="skip the best_of_n control runs")
    args = parser.parse_args()
    print("No LLM is reachable from this machine: part 2 uses ge's offline operators only.")
    for name in args.seeds:
        seed = ROOT / "seeds" / name
        wall, cpu, score = time_evaluations(seed, args.repeats)
        print(f"{name}: seed {show(name, score)}; one evaluation on one core: "
              f"median wall {wall:.2f} s, median CPU {cpu:.2f} s ({args.repeats} runs)")  # fmt: skip
        if not args.no_run:
            run = offline_run(seed, args)
            if "error" in run:
                print(f"  offline run failed: {run['error']}")
                continue
            print(f"  offline run ({args.population} + {args.generations} x {args.population} "
                  f"planned): {run['children']} distinct children, {run['evaluated']} evaluations "
                  f"ok (the seed's included), {run['failed']} failed, best "
                  f"{show(name, run['best'])}, {run['wall_s']:.0f} s wall")  # fmt: skip
            if not args.no_control:
                report_control(seed, args, run["best"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
