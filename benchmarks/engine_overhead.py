"""Engine scheduling benchmark: overlap of LLM calls with evaluations, and per-child overhead.

    python benchmarks/engine_overhead.py            # both parts, scaling up to 10,000 children
    python benchmarks/engine_overhead.py --quick    # scaling up to 1,000 children
    python benchmarks/engine_overhead.py --mix-only --repeat 3   # GE's operator mix, both modes

Part 1 (overlap): a fake OpenAI-compatible server answers every call after 0.5 s, the evaluator
sleeps 0.5 s, 4 concurrent LLM calls and 2 evaluation slots, 100 children. The overlapped ideal
is max(100 x 0.5 / 4, 100 x 0.5 / 2) = 25 s; a worker that runs LLM-then-evaluate serially would
need 100 x 1.0 / 2 = 50 s.

Part 1b (operator mix): the same latencies with GE's real operator mix (crossover p=0.35, then
mutation p=0.8, a quarter of which is Evolution of Thought with its two turns), so a child
costs one to three chained LLM calls; about 100 children (initial population 24, then 4
generations of 22), in the generational and in the steady-state mode. The ideal is the larger of
the LLM work (calls x 0.5 s / 4) and the evaluation work (evaluations x 0.5 s / 2), about 25 s;
the ratio to it is reported with the median of ``--repeat`` runs, with the ratio to the ideal
at the evaluations' measured durations (sandbox start and machine load included) and the idle
time per slot, the scheduler's own share. ``--evolution KEY=VALUE`` (JSON values) changes the
[evolution] table, e.g. ``--evolution population=10 --evolution overlap_tail=2``.

Part 2 (overhead): zero-latency proposals (the built-in offline operators) and an evaluator that
only writes its metrics (a shell builtin), one slot. Per-child wall time minus the cost of the same
sandboxed evaluator process run on its own is ge's overhead; it is reported per window of
generations to show it stays flat from 100 to 10,000 children (``--overhead-mode steady``: per
window of evaluation ends). Medians throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guided_evolution.runstore.run_index import RunIndex  # noqa: E402
from tests.support.openai_server import hang, serve  # noqa: E402
from tests.support.seeds import CodeWriter, template_seed, write_config  # noqa: E402

METRICS_ONLY = 'echo \'{"score": 1.0, "size": 10}\' > "$GE_METRICS"'


def ge(
    args: list[str], cwd: Path, env: dict[str, str] | None = None,
    launcher: tuple[str, ...] = ("-m", "guided_evolution"),
) -> float:
    """Run `ge ARGS --json` (``launcher``: what follows the interpreter); wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *launcher, *args, "--json"],
        cwd=cwd, env={**os.environ, "LITELLM_OFFLINE_MODE": "true", **(env or {})},
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ge {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


OBJECTIVES = [{"name": "score", "direction": "max"}, {"name": "size", "direction": "min"}]


def configure(
    seed: Path, *, evaluator: str, evolution: dict, llm: dict, slots: int, sandbox: str,
    objectives: list[dict] = OBJECTIVES,
) -> None:
    write_config(
        seed / "ge.toml",
        {
            "seed": {"files": ["model.py"]},
            "llm": llm,
            "evolution": {"hall_of_fame": 20, "seed": 3, **evolution},
            "evaluator": {"command": evaluator, "timeout_s": 60, "sandbox": sandbox},
            "executor": {"slots": slots, "gpus": []},
        },
        objectives,
    )


def generation_times(run_dir: Path) -> list[tuple[int, int, float]]:
    """(generation, plans, seconds) from the run's events."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        started: dict[int, tuple[float, int]] = {}
        out = []
        for ev in index.events():
            if ev.kind == "generation_started":
                started[ev.data["generation"]] = (ev.time, ev.data.get("plans", 0))
            elif ev.kind == "generation_finished":
                t0, plans = started[ev.data["generation"]]
                out.append((ev.data["generation"], plans, ev.time - t0))
        return out
    finally:
        index.close()


def overlap(tmp: Path) -> None:
    print("== Part 1: overlap of LLM calls and evaluations (100 children) ==")
    writer = CodeWriter()
    seed = template_seed(tmp / "seed-overlap")
    with serve(responder=lambda req: hang(0.5, then=writer(req))) as server:
        configure(
            seed,
            evaluator=f"sleep 0.5; {METRICS_ONLY}",
            evolution={"initial_population": 100, "population": 4, "elites": 2, "generations": 0},
            llm={"models": ["openai/bench"], "api_base": server.base_url, "concurrency": 4, "timeout_s": 30},
            slots=2,
            sandbox="auto",
        )
        wall = ge(["run", str(seed), "--run-dir", str(tmp / "run-overlap")], cwd=tmp)
    gen_wall = generation_times(tmp / "run-overlap")[0][2]
    ideal = max(100 * 0.5 / 4, 100 * 0.5 / 2)
    print("  100 children, LLM 0.5 s x 4 concurrent, evaluation 0.5 s x 2 slots")
    print(f"  generation wall {gen_wall:.2f} s (process wall incl. start-up and seed evaluation {wall:.2f} s)")
    print(f"  overlapped ideal {ideal:.1f} s -> ratio {gen_wall / ideal:.3f} (target <= 1.15)")
    print(f"  serial LLM-then-evaluate per worker would take {100 * 1.0 / 2:.0f} s")


VARIED_METRICS = (  # metrics that differ between variants, so that some beat the seed (EoT teachers)
    's=$(cksum < model.py | cut -d" " -f1); '
    'echo "{\\"score\\": $((s % 1000)), \\"size\\": $((s % 97))}" > "$GE_METRICS"'
)
MIX = {"crossover_probability": 0.35, "mutation_probability": 0.8, "eot_probability": 0.25}


def llm_work(run_dir: Path) -> tuple[int, int, float, list[float], str]:
    """(LLM calls, evaluations, wall from generation 0's start to the last generation's end,
    seconds of evaluation, the children's operators) of a finished run."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        counts = index.counts()
        events = index.events()
        first = next(ev.time for ev in events if ev.kind == "generation_started")
        last = max(ev.time for ev in events if ev.kind == "generation_finished")
        evals = [e for e in index.evaluations() if e.started_at and e.started_at >= first - 1e-3]
        busy = [e.duration_s or 0.0 for e in evals]
        variants = [v for v in index.variants() if v.operator != "seed"]
    finally:
        index.close()
    ops = Counter(v.operator for v in variants)
    ops["eot-reflection"] = sum(1 for v in variants if v.eot_reflection)
    mix = ", ".join(f"{k} {n}" for k, n in sorted(ops.items()))
    return counts["llm_calls"], len(evals), last - first, busy, mix


def operator_mix(tmp: Path, mode: str, repeat: int, extra: dict, sandbox: str) -> None:
    """Part 1b: GE's operator mix in one mode, ``repeat`` runs; medians."""
    ratios, walls, lines, measured, idle = [], [], [], [], []
    for n in range(repeat):
        writer = CodeWriter()
        seed = template_seed(tmp / f"seed-mix-{mode}-{n}")
        run_dir = tmp / f"run-mix-{mode}-{n}"
        with serve(responder=lambda req, w=writer: hang(0.5, then=w(req))) as server:
            configure(
                seed,
                evaluator=f"sleep 0.5; {VARIED_METRICS}",
                evolution={
                    "initial_population": 24, "population": 22, "elites": 10, "generations": 4,
                    "eot_start_generation": 1, **MIX, **extra,
                    **({"mode": mode} if mode != "generational" else {}),
                },
                llm={"models": ["openai/bench"], "api_base": server.base_url, "concurrency": 4, "timeout_s": 30},
                slots=2,
                sandbox=sandbox,
            )
            ge(["run", str(seed), "--run-dir", str(run_dir)], cwd=tmp)
        calls, evals, wall, busy, mix = llm_work(run_dir)
        ideal = max(calls * 0.5 / 4, evals * 0.5 / 2)
        ratios.append(wall / ideal)
        walls.append(wall)
        measured.append(wall / max(calls * 0.5 / 4, sum(busy) / 2))
        idle.append(wall - sum(busy) / 2)
        lines.append(
            f"    run {n + 1}: {evals} evaluations, {calls} LLM calls, wall {wall:.2f} s, "
            f"ideal {ideal:.2f} s, ratio {wall / ideal:.3f}, slot use {sum(busy) / (2 * wall):.0%}, "
            f"idle {wall - sum(busy) / 2:.2f} s per slot, median evaluation {statistics.median(busy):.3f} s"
            f"\n      children: {mix}"
        )
    target = 1.15 if mode == "steady" else 1.35
    label = f"{mode}, sandbox={sandbox}" + (f" {extra}" if extra else "")
    print(f"== Part 1b: GE's operator mix, {label} ==")
    print("\n".join(lines))
    print(
        f"  median wall {statistics.median(walls):.2f} s, median ratio to the ideal "
        f"{statistics.median(ratios):.3f} (target <= {target}); to the ideal with the evaluations' "
        f"measured durations (sandbox start included) {statistics.median(measured):.3f}; median "
        f"idle time per slot {statistics.median(idle):.2f} s"
    )


def evaluator_process_cost(tmp: Path, sandbox: str, samples: int = 30) -> float:
    """Median seconds of the sandboxed metrics-only evaluator run alone (no ge around it)."""
    from guided_evolution.evaluation.sandbox.env import scrub_env
    from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy

    box = Sandbox(SandboxPolicy(backend=sandbox))
    box.probe()
    work = tmp / f"alone-{sandbox}"
    work.mkdir(exist_ok=True)
    times = []
    for _ in range(samples):
        command = box.wrap(["/bin/sh", "-c", METRICS_ONLY], work, scrub_env(os.environ), [])
        env = {**command.env, "GE_METRICS": str(work / "metrics.json")}
        start = time.perf_counter()
        subprocess.run(
            command.argv, env=env, preexec_fn=command.preexec, pass_fds=command.pass_fds,
            cwd=work, check=True,
        )
        times.append(time.perf_counter() - start)
        box.cleanup(work)
    return statistics.median(times)


def steady_per_child(run_dir: Path, windows: list[tuple[str, int, int]]) -> dict[str, float]:
    """Seconds per child between the ends of evaluations number lo and hi (steady mode has no
    generation spans to divide)."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        ends = sorted((e.started_at or 0.0) + (e.duration_s or 0.0) for e in index.evaluations())
    finally:
        index.close()
    out = {}
    for label, lo, hi in windows:
        hi = min(hi, len(ends) - 1)
        if hi - lo >= 50:
            out[label] = (ends[hi] - ends[lo]) / (hi - lo)
    return out


def overhead(tmp: Path, total: int, sandbox: str, mode: str = "generational") -> None:
    per_gen = 100
    generations = total // per_gen - 1
    print(f"== Part 2: per-child overhead, {total} children, sandbox={sandbox}, mode={mode} ==")
    seed = template_seed(tmp / f"seed-{sandbox}-{total}")
    configure(
        seed,
        evaluator=METRICS_ONLY,
        evolution={
            "initial_population": per_gen, "population": per_gen, "elites": 20, "generations": generations,
            **({"mode": mode} if mode != "generational" else {}),
        },
        llm={"models": ["offline"]},
        slots=1,
        sandbox=sandbox,
    )
    run_dir = tmp / f"run-{sandbox}-{total}-{mode}"
    wall = ge(["run", str(seed), "--run-dir", str(run_dir)], cwd=tmp)
    alone = evaluator_process_cost(tmp, sandbox)
    gens = generation_times(run_dir)
    per_child = [(g, secs / plans) for g, plans, secs in gens if plans and g > 0]
    windows = {}
    for label, lo, hi in (("~100", 1, 3), ("~1,000", 8, 11), ("~10,000", 97, 100)):
        sel = [c for g, c in per_child if lo <= g <= hi]
        if sel:
            windows[label] = statistics.median(sel)
    if mode == "steady":
        spans = [("~100", 100, 300), ("~1,000", 700, 1000), ("~10,000", 9700, 9999)]
        windows = steady_per_child(run_dir, spans)
    print(f"  total wall {wall:.1f} s for {sum(p for _, p, _ in gens)} proposals in {len(gens)} generations")
    print(f"  evaluator process alone (sandbox={sandbox}): {alone * 1000:.2f} ms (median of 30)")
    for label, value in windows.items():
        print(f"  children {label:>8}: {value * 1000:6.2f} ms per child, overhead {(value - alone) * 1000:6.2f} ms (target <= 15)")
    if len(windows) > 1:
        values = list(windows.values())
        first, last = values[0], values[-1]
        print(f"  last/first per-child ratio: {last / first:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scale to 1,000 children instead of 10,000")
    parser.add_argument("--skip-overlap", action="store_true")
    parser.add_argument("--sandbox", default="auto", choices=["auto", "none", "bwrap", "landlock"])
    parser.add_argument("--mix-only", action="store_true", help="only part 1b (the operator mix)")
    parser.add_argument("--overhead-mode", default="generational", choices=["generational", "steady"])
    parser.add_argument("--skip-mix", action="store_true")
    parser.add_argument("--modes", default="generational,steady", help="modes of part 1b")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode in part 1b")
    parser.add_argument(
        "--evolution", action="append", default=[], metavar="KEY=VALUE",
        help="extra [evolution] settings for part 1b (JSON values)",
    )
    args = parser.parse_args()
    extra = {k: json.loads(v) for k, _, v in (e.partition("=") for e in args.evolution)}
    with tempfile.TemporaryDirectory(prefix="ge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_mix:
            for mode in args.modes.split(","):
                operator_mix(tmp, mode, args.repeat, extra, args.sandbox)
        if args.mix_only:
            return
        if not args.skip_overlap:
            overlap(tmp)
        overhead(tmp, 1_000 if args.quick else 10_000, args.sandbox, args.overhead_mode)
    print(json.dumps({"python": sys.version.split()[0], "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
