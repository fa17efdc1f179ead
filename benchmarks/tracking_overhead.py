"""What MLflow tracking costs a run: the same offline run with and without ``[tracking] mlflow``.

    python benchmarks/tracking_overhead.py                  # 5 pairs, 4 generations of 16
    python benchmarks/tracking_overhead.py --pairs 3 --generations 8 --population 32

Each pair runs the `ge init` seed in-process (``tests.support.harness.run_engine``: the real
engine, offline operators, the in-process ``FakeExecutor`` with ``--eval-ms`` per evaluation, so
that ge's own work is what is measured), once untracked and once logging to a fresh MLflow file
store, alternating which goes first. Printed, medians over the pairs:

* **evolution**: wall seconds until the engine's loop ended (before the follower's last look);
* **end wait**: seconds ``ge`` then waited for the follower's last look (tracked runs only);
* **ge CPU**: CPU seconds of the ge process (its threads included);
* **follower CPU**: CPU seconds of the follower process (a child: it runs at nice 10);
* the number of MLflow runs logged, which must equal the settled variants plus the parent.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guided_evolution.tracking import spawn  # noqa: E402
from tests.support.harness import FakeExecutor, run_engine, size_score  # noqa: E402
from tests.support.seeds import template_seed  # noqa: E402


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def one_run(root: Path, args: argparse.Namespace, tracked: bool) -> dict[str, float]:
    seed = template_seed(
        root / "seed",
        generations=args.generations,
        population=args.population,
        initial_population=args.population,
    )
    if tracked:
        text = (seed / "ge.toml").read_text()
        store = (root / "mlruns").as_uri()
        (seed / "ge.toml").write_text(text + f'\n[tracking]\nmlflow = "{store}"\n')
    waited: list[float] = []
    real_stop = spawn.Follower.stop

    def timed_stop(self: spawn.Follower, wait_s: float) -> None:
        started = time.perf_counter()
        real_stop(self, wait_s)
        waited.append(time.perf_counter() - started)

    spawn.Follower.stop = timed_stop  # type: ignore[method-assign]
    cpu, child_cpu, start = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    try:
        executor = FakeExecutor(size_score, delay_s=args.eval_ms / 1000)
        summary = run_engine(seed, root / "run", executor=executor.factory)
    finally:
        spawn.Follower.stop = real_stop  # type: ignore[method-assign]
    wall = time.perf_counter() - start
    end_wait = sum(waited)
    return {
        "evolution": wall - end_wait,
        "end wait": end_wait,
        "ge CPU": _cpu(resource.RUSAGE_SELF) - cpu,
        "follower CPU": _cpu(resource.RUSAGE_CHILDREN) - child_cpu,
        "variants": float(summary["children"] + 1),
        "mlflow runs": float(_mlflow_runs(root / "mlruns", root.name)) if tracked else 0.0,
    }


def _mlflow_runs(store: Path, _name: str) -> int:
    """MLflow runs in the store (a file store: one meta.yaml per run)."""
    return sum(1 for _ in store.glob("*/*/meta.yaml"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--eval-ms", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="ge-tracking-") as tmp:
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for tracked in order:
                root = Path(tmp) / f"{pair}-{'tracked' if tracked else 'plain'}"
                results[tracked].append(one_run(root, args, tracked))
    print(
        f"{args.pairs} pairs, {args.generations} generations of {args.population}, "
        f"{args.eval_ms:g} ms per evaluation (FakeExecutor); medians:"
    )
    keys = ["evolution", "end wait", "ge CPU", "follower CPU", "variants", "mlflow runs"]
    print(f"{'':>10} " + " ".join(f"{k:>13}" for k in keys))
    for tracked, rows in results.items():
        values: list[Any] = [statistics.median(r[k] for r in rows) for k in keys]
        label = "tracked" if tracked else "untracked"
        print(f"{label:>10} " + " ".join(f"{v:13.2f}" for v in values))


if __name__ == "__main__":
    main()
