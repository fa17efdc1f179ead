"""Where a whole `ge run` spends its time: ~100 children against a zero-latency LLM server.

    python benchmarks/run_overhead.py                        # 5 runs: median wall, breakdown
    python benchmarks/run_overhead.py --runs 3 --profile 40  # and a cProfile top 40 of one run

The run a user would make (``python -m guided_evolution run SEED --run-dir RUN --json``) against
the fake OpenAI-compatible server of tests/support/openai_server.py (in this process), which
answers every call at once with code (``CodeWriter``): GE's operator mix as in
engine_overhead.py part 1b (initial population 24, then 4 generations of 22, crossover 0.35,
mutation 0.8, a quarter of them Evolution of Thought), 4 LLM calls in flight, 2 slots, and
``python evaluate.py`` that writes one metric, under ``sandbox = "auto"`` with the default
preload (every stage a boxed fork of the slot's worker: evaluation/workers/zygote.py). Issue 23's
target: <= 3.5 s wall, every evaluation sandboxed.

Printed:

* **wall**: the ge process's wall time, median of ``--runs``, with the CPU seconds of the whole
  process tree (ge, its sandboxes and workers) and of the fake server;
* **timeline** (medians, from each run's index and events): start-up until the run directory
  exists, the engine's start, the seed's evaluation (slot 0's worker start in it), generation 0
  until its first LLM request, the generations, the end (compaction, summary, exit);
* **generations** (medians over the span from generation 0's start to the last one's end):
  LLM calls (sum of latencies, time with one in flight), evaluations (sum, median, time with one
  running, both slots busy), slot idle time, and the time when nothing was in flight: ge's own
  work between an LLM reply and the next evaluation or request;
* **inside ge** (one more run through this file's ``--inside`` launcher: the same CLI, with
  timers around a few functions and the event loop's waits in ``select`` summed): how long ge's
  one thread was busy, and on what (git, index, plan, sandbox and worker files per stage, worker
  starts, the LLM client), and the loop's lag (how late a 5 ms timer fires: how long a reply or
  an evaluation's end waits behind other callbacks);
* ``--profile N``: cProfile's top N functions (cumulative) of one more run of the ge process.
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
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EVALUATE = (
    "import json, os, zlib\n"
    "score = zlib.crc32(open('model.py', 'rb').read()) % 1000\n"
    "json.dump({'score': score}, open(os.environ['GE_METRICS'], 'w'))\n"
)
"""The trivial evaluator: one metric that differs between variants (so EoT has teachers)."""

# (module, attribute, label): functions timed by the --inside launcher. Synchronous ones run on
# ge's thread and block its event loop; "async" ones are timed from start to end (they overlap).
SYNC_PROBES = [
    ("guided_evolution.engine.session", "_preflight", "start: LLM preflight (keys, /models)"),
    ("guided_evolution.engine.session", "check_sandbox", "start: the sandbox check (probe)"),
    ("guided_evolution.runstore.rundir", "create_run_dir", "start: create the run directory"),
    ("guided_evolution.engine.session", "_repair", "start: doctor"),
    ("guided_evolution.engine.driver", "Engine._start_executor", "start: executor, isolation"),
    ("guided_evolution.engine.recorder", "Recorder.commit", "commit a child (git, index row)"),
    ("guided_evolution.runstore.git_store", "GitStore.commit", "  of which the git commit"),
    ("guided_evolution.engine.recorder", "Recorder.checkout", "export a work tree (git)"),
    ("guided_evolution.fsutil", "remove_tree", "remove a tree (work tree: in a thread)"),
    ("guided_evolution.engine.recorder", "Recorder.record_evaluation", "record an evaluation"),
    ("guided_evolution.engine.recorder", "Recorder.check", "damage checks"),
    ("guided_evolution.engine.recorder", "Recorder.flush_notes", "git notes (per generation)"),
    ("guided_evolution.engine.recorder", "Recorder.compact", "compaction"),
    ("guided_evolution.runstore.run_index", "RunIndex.add_event", "index: events"),
    ("guided_evolution.runstore.run_index", "RunIndex.record_call", "index: LLM call records"),
    ("guided_evolution.runstore.run_index", "RunIndex.cache_put", "index: reply cache writes"),
    ("guided_evolution.runstore.run_index", "RunIndex.cache_get", "index: reply cache reads"),
    ("guided_evolution.runstore.run_index", "RunIndex.latest_evaluation", "index: evaluation reads"),
    ("guided_evolution.engine.generational", "plan_generation", "plan a generation (selection)"),
    ("guided_evolution.evolution.generations", "hall_of_fame", "hall of fame"),
    ("guided_evolution.evaluation.sandbox.wrap", "Sandbox.wrap", "sandbox: wrap a command"),
    ("guided_evolution.evaluation.workers.pool", "fresh_io", "stage: fresh io directory and FIFO"),
    ("guided_evolution.evaluation.workers.pool", "chown_tree", "stage: chown the variant's tree"),
    ("guided_evolution.evaluation.workers.pool", "remove_tree", "stage: remove trees in the slot"),
    ("guided_evolution.evaluation.workers.pool", "move_back", "stage: move the variant back"),
    ("guided_evolution.evaluation.workers.pool", "take_metrics", "stage: take metrics and feedback"),
    ("guided_evolution.evaluation.local", "read_metrics", "stage: read the metrics"),
    ("guided_evolution.evaluation.local", "read_feedback", "stage: read the feedback"),
    ("guided_evolution.runstore.damage", "verify_run", "end: verify the run's record"),
    ("guided_evolution.cli", "_finish", "end: the summary (front) printed"),
]
ASYNC_PROBES = [
    ("guided_evolution.engine.scheduler", "Scheduler.evaluate_seed", "the seed's evaluation"),
    ("guided_evolution.llm.client", "LLMClient.warm_up", "LLM client warm-up (a thread)"),
    ("guided_evolution.evaluation.local", "LocalExecutor._evaluate", "evaluation (executor)"),
    ("guided_evolution.evaluation.workers.pool", "WorkerPool._start", "worker start"),
    ("guided_evolution.evaluation.workers.pool", "WorkerPool._stop", "worker stop"),
    ("guided_evolution.evaluation.workers.pool", "WorkerPool._run", "stage through a worker"),
    ("guided_evolution.evaluation.workers.pool", "WorkerPool._exchange", "  request to end reply"),
    ("guided_evolution.engine.proposer", "LLMProposer.propose", "propose a child"),
    ("guided_evolution.llm.client", "LLMClient.complete", "LLM client call"),
    ("guided_evolution.llm.direct", "OpenAIBackend.send", "  of which the HTTP request"),
    ("guided_evolution.evaluation.local", "LocalExecutor.aclose", "end: close the executor"),
]


# ----------------------------------------------------------------------------- the --inside side


def _wrap(module: str, attribute: str, label: str, totals: dict, is_async: bool) -> None:
    """Time every call of ``module.attribute`` (a function or ``Class.method``) into totals."""
    import functools
    import importlib

    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    clock = time.perf_counter

    if is_async:

        @functools.wraps(original)
        async def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = clock()
            try:
                return await original(*args, **kwargs)
            finally:
                totals[label][0] += clock() - start
                totals[label][1] += 1
    else:

        @functools.wraps(original)
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                totals[label][0] += clock() - start
                totals[label][1] += 1

    setattr(owner, name, timed)


def _watch_lag(lags: list[float], every: float = 0.005) -> None:
    """While the engine runs, how late a timer of ``every`` seconds fires (the loop's lag: how
    long whatever wakes up, a reply or an evaluation's end, waits behind other callbacks)."""
    import asyncio

    from guided_evolution.engine import driver

    run = driver.Engine.run

    async def watched(self):  # type: ignore[no-untyped-def]
        async def watch() -> None:
            loop = asyncio.get_running_loop()
            while True:
                start = loop.time()
                await asyncio.sleep(every)
                lags.append(loop.time() - start - every)

        watcher = asyncio.ensure_future(watch())
        try:
            return await run(self)
        finally:
            watcher.cancel()

    driver.Engine.run = watched  # type: ignore[method-assign]


def inside(out: Path, profile: bool, ge_args: list[str]) -> None:
    """Run ge's CLI in this process with the probes (or cProfile) on; results into ``out``."""
    launched = time.time()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    lags: list[float] = []
    loop = {"first": None, "last": 0.0, "idle": 0.0, "waits": 0}
    if not profile:
        import selectors

        select = selectors.EpollSelector.select

        def timed_select(self, timeout=None):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return select(self, timeout)
            finally:
                end = time.perf_counter()
                loop["first"] = loop["first"] or start
                loop["last"] = end
                loop["idle"] += end - start
                loop["waits"] += 1

        selectors.EpollSelector.select = timed_select  # type: ignore[method-assign]
        _watch_lag(lags)
        for module, attribute, label in SYNC_PROBES:
            _wrap(module, attribute, label, totals, is_async=False)
        for module, attribute, label in ASYNC_PROBES:
            _wrap(module, attribute, label, totals, is_async=True)

    def report() -> None:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(out))
            return
        own = resource.getrusage(resource.RUSAGE_SELF)
        data = {
            "launched": launched,
            "totals": {k: v for k, v in totals.items()},
            "loop_span": (loop["last"] - loop["first"]) if loop["first"] else 0.0,
            "loop_idle": loop["idle"],
            "loop_waits": loop["waits"],
            "ge_cpu": own.ru_utime + own.ru_stime,
            "lags": sorted(lags),
            "imports": main_entered - launched,
            "exit": time.time() - launched,
        }
        out.write_text(json.dumps(data))

    atexit.register(report)
    sys.argv = ["ge", *ge_args]
    from guided_evolution.cli import main

    main_entered = time.time()
    main()


# ----------------------------------------------------------------------------- the benchmark side


def make_seed(tmp: Path, name: str, base_url: str) -> Path:
    from engine_overhead import MIX, configure

    from tests.support.seeds import template_seed

    seed = template_seed(tmp / name)
    (seed / "evaluate.py").write_text(EVALUATE)
    configure(
        seed,
        evaluator="python evaluate.py",
        evolution={
            "initial_population": 24, "population": 22, "elites": 10, "generations": 4,
            "eot_start_generation": 1, **MIX,
        },
        llm={"models": ["openai/bench"], "api_base": base_url, "concurrency": 4, "timeout_s": 30},
        slots=2,
        sandbox="auto",
        objectives=[{"name": "score", "direction": "max"}],
    )
    return seed


def distinct_edit(code: str, n: int) -> str:
    """The fake LLM's edit: CodeWriter's integer bump plus a statement naming the request, so no
    two children are the same program (ge merges children that differ only in comments, and
    the bump alone repeats values across parents)."""
    from tests.support.seeds import bump_first_integer, with_statement

    return with_statement(bump_first_integer(code, n), f"_request_{n} = {n}")


def one_run(
    tmp: Path, n: str, launcher: tuple[str, ...] | None = None, source: Path | None = None
) -> dict:
    """One `ge run` against a fresh zero-latency server; its wall, CPU and timeline. ``source``:
    run the guided_evolution package of that source tree (on PYTHONPATH) instead."""
    from engine_overhead import ge

    from tests.support.openai_server import serve
    from tests.support.seeds import CodeWriter

    writer = CodeWriter(edit=distinct_edit)
    env = {"PYTHONPATH": str(source)} if source is not None else None
    with serve(responder=writer) as server:
        seed = make_seed(tmp, f"seed-{n}", server.base_url)
        run_dir = tmp / f"run-{n}"
        tree = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        launched = time.time()
        args = ["run", str(seed), "--run-dir", str(run_dir)]
        if launcher:
            wall = ge(args, cwd=tmp, env=env, launcher=launcher)
        else:
            wall = ge(args, cwd=tmp, env=env)
        tree_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_after = resource.getrusage(resource.RUSAGE_SELF)
    data = timeline(run_dir, launched, wall)
    data["cpu_tree"] = (tree_after.ru_utime + tree_after.ru_stime) - (tree.ru_utime + tree.ru_stime)
    data["cpu_server"] = (own_after.ru_utime + own_after.ru_stime) - (own.ru_utime + own.ru_stime)
    return data


def _union(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of ``intervals``."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _covered(intervals: list[tuple[float, float]], depth: int) -> float:
    """Seconds covered by at least ``depth`` of ``intervals`` at once."""
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    total, level, last = 0.0, 0, 0.0
    for t, step in points:
        if level >= depth:
            total += t - last
        level += step
        last = t
    return total


def timeline(run_dir: Path, launched: float, wall: float) -> dict:
    """What a finished run's index says about where its wall time went."""
    from guided_evolution.runstore.records import META_SEED
    from guided_evolution.runstore.run_index import RunIndex

    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        events = index.events()
        seed_id = index.get_meta(META_SEED)
        evals = index.evaluations()
        calls = [c for c in index.calls() if c.outcome == "ok"]
        counts = index.counts()
    finally:
        index.close()
    first = {}
    for ev in events:
        first.setdefault(ev.kind, ev.time)
    gen_start = {ev.data["generation"]: ev.time for ev in events if ev.kind == "generation_started"}
    gen_end = {ev.data["generation"]: ev.time for ev in events if ev.kind == "generation_finished"}
    g0, g_end = gen_start[0], max(gen_end.values())
    seed_eval = next(e for e in evals if e.variant_id == seed_id)
    seed_done = (seed_eval.started_at or 0.0) + (seed_eval.duration_s or 0.0)
    call_spans = sorted((c.created_at - c.latency_s, c.created_at) for c in calls)
    eval_spans = [
        (e.started_at or 0.0, (e.started_at or 0.0) + (e.duration_s or 0.0))
        for e in evals if e.variant_id != seed_id
    ]  # fmt: skip
    span = g_end - g0
    clipped = [(max(a, g0), min(b, g_end)) for a, b in call_spans + eval_spans if b > g0]
    return {
        "wall": wall,
        "children": counts["children"],
        "evaluations": len(eval_spans),
        "llm_calls": len(call_spans),
        "steps": {
            "start-up until the run directory exists": first["run_created"] - launched,
            "engine start (doctor, executor, isolation)": first["run_started"] - first["run_created"],
            "the seed's evaluation (slot 0's worker start)": seed_done - first["run_started"],
            "seed done until generation 0 starts": g0 - seed_done,
            "generation 0 until its first LLM request": call_spans[0][0] - g0,
            "generations 0-4 (first start to last end)": span,
            "last generation's end until run_finished": first["run_finished"] - g_end,
            "run_finished until the process exits": launched + wall - first["run_finished"],
        },
        "generations": [gen_end[g] - gen_start[g] for g in sorted(gen_end)],
        "span": {
            "LLM calls, sum of latencies": sum(b - a for a, b in call_spans),
            "LLM calls, median latency": statistics.median(b - a for a, b in call_spans),
            "at least one LLM call in flight": _union(call_spans),
            "evaluations, sum of durations": sum(b - a for a, b in eval_spans),
            "evaluations, median duration": statistics.median(b - a for a, b in eval_spans),
            "at least one evaluation running": _union(eval_spans),
            "both slots evaluating": _covered(eval_spans, 2),
            "slot idle time (2 x span - evaluations)": 2 * span - sum(b - a for a, b in eval_spans),
            "nothing in flight (ge's own work)": span - _union(clipped),
        },
    }


def _median_dict(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(d[k] for d in dicts) for k in dicts[0]}


def print_runs(runs: list[dict], label: str = "") -> None:
    walls = [r["wall"] for r in runs]
    print(
        f"{label}wall: median {statistics.median(walls):.2f} s over {len(runs)} runs "
        f"(min {min(walls):.2f}, max {max(walls):.2f}; target <= 3.5 s)"
    )
    print("  runs: " + ", ".join(f"{w:.2f}" for w in walls))
    print(
        f"  children {runs[0]['children']}, evaluations {runs[0]['evaluations']} (+ the seed), "
        f"LLM calls {runs[0]['llm_calls']} (first run)"
    )
    print(
        f"  CPU: ge's process tree {statistics.median(r['cpu_tree'] for r in runs):.2f} s, "
        f"fake server {statistics.median(r['cpu_server'] for r in runs):.2f} s (medians)"
    )
    print("timeline (medians, s):")
    for label, value in _median_dict([r["steps"] for r in runs]).items():
        print(f"  {label:<48} {value:7.3f}")
    gens = [statistics.median(r["generations"][g] for r in runs) for g in range(5)]
    print("  per generation: " + ", ".join(f"g{g} {v:.2f}" for g, v in enumerate(gens)))
    print("generations 0-4 (medians, s):")
    for label, value in _median_dict([r["span"] for r in runs]).items():
        print(f"  {label:<48} {value:7.3f}")


def print_inside(data: dict, wall: float) -> None:
    busy = data["loop_span"] - data["loop_idle"]
    print(f"inside ge (one run through --inside, wall {wall:.2f} s):")
    print(
        f"  ge's process CPU {data['ge_cpu']:.2f} s; its event loop ran {data['loop_span']:.2f} s, "
        f"busy {busy:.2f} s, waiting in select {data['loop_idle']:.2f} s ({data['loop_waits']} waits)"
    )
    print(f"  the CLI's imports {data['imports']:.3f} s; exit handlers at {data['exit']:.3f} s")
    lags = data["lags"]
    if lags:
        at = [lags[int(q * (len(lags) - 1))] * 1000 for q in (0.5, 0.9, 0.99)]
        print(
            f"  loop lag (a 5 ms timer, {len(lags)} samples): median {at[0]:.1f} ms, p90 "
            f"{at[1]:.1f} ms, p99 {at[2]:.1f} ms, mean {1000 * statistics.mean(lags):.1f} ms"
        )
    print("  on ge's thread (blocking the loop), s and calls:")
    sync = {label for _, _, label in SYNC_PROBES}
    for _, _, label in SYNC_PROBES + ASYNC_PROBES:
        if label in data["totals"] and label in sync:
            total, count = data["totals"][label]
            print(f"    {label:<46} {total:7.3f} {int(count):5d}")
    print("  awaited (start to end, overlapping; includes waits), s and calls:")
    for _, _, label in ASYNC_PROBES:
        if label in data["totals"]:
            total, count = data["totals"][label]
            print(f"    {label:<46} {total:7.3f} {int(count):5d}  ({1000 * total / count:.1f} ms each)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="plain runs (medians)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N")
    parser.add_argument("--profile-out", type=Path, help="keep the profile's pstats file here")
    parser.add_argument(
        "--sort", default="cumulative", help="pstats sort key of the profile (e.g. tottime)"
    )
    parser.add_argument("--no-inside", action="store_true", help="skip the instrumented run")
    parser.add_argument(
        "--compare", type=Path, metavar="SOURCE",
        help="also time the guided_evolution package of another source tree (e.g. `git archive` "
        "of an older commit), its runs taking turns with this tree's under the same load",
    )
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inside-profile", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.inside is not None:  # the launcher of one instrumented ge process
        inside(args.inside, args.inside_profile, [a for a in rest if a != "--"])
        return
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="ge-run-bench-") as tmp_name:
        tmp = Path(tmp_name)
        runs: list[dict] = []
        other: list[dict] = []
        for n in range(args.runs):
            order = [False, True] if n % 2 == 0 else [True, False]
            for compared in order if args.compare else [False]:
                if compared:
                    other.append(one_run(tmp, f"compare-{n}", source=args.compare))
                else:
                    runs.append(one_run(tmp, str(n)))
        if runs:
            print_runs(runs, "this tree: " if args.compare else "")
        if other:
            print_runs(other, f"{args.compare}: ")
            pairs = sorted(a["wall"] - b["wall"] for a, b in zip(runs, other, strict=True))
            cpu = sorted(a["cpu_tree"] - b["cpu_tree"] for a, b in zip(runs, other, strict=True))
            print(
                f"paired (this tree - {args.compare}, runs taking turns): wall median "
                f"{statistics.median(pairs):+.2f} s, faster in {sum(d < 0 for d in pairs)} of "
                f"{len(pairs)}; process tree CPU median {statistics.median(cpu):+.2f} s"
            )
        me = str(Path(__file__).resolve())
        if not args.no_inside:
            out = tmp / "inside.json"
            probed = one_run(tmp, "inside", launcher=(me, "--inside", str(out), "--"))
            print_inside(json.loads(out.read_text()), probed["wall"])
        if args.profile:
            import pstats

            out = args.profile_out or tmp / "profile.out"
            launcher = (me, "--inside", str(out), "--inside-profile", "--")
            profiled = one_run(tmp, "profile", launcher=launcher)
            print(f"cProfile of one run (wall {profiled['wall']:.2f} s under the profiler):")
            stats = pstats.Stats(str(out))
            stats.sort_stats(args.sort).print_stats(args.profile)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
