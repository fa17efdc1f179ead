"""Cost of the code distance and of the diversity measures (`evolution/diversity.py`).

On the segments of ExquisiteNetV2's and fast_exp's seeds: tokens per segment, ms to tokenize one,
ms per segment distance (tokens given: a small edit, and two unrelated segments), ms per variant
distance with an empty cache (tokenizing included), ms to measure a population of 44 variants
(each the seed with offline mutations of a few segments, 1 to 5 in a row; empty cache), and ms to
measure 31 paper-sized generations (144, then 44 carried over + 38 mutated children) with one
cache, as `ge status` does (git reads not included).
With ``--run RUN``: the seconds of `ge status --json` on that run and of its diversity rows alone
(`report_diversity.diversity_per_generation`). Every figure is the median of ``--repeat`` runs.

    python benchmarks/diversity_cost.py [--run runs/fast_exp-paper] [--repeat 5]
    PYTHONPATH=/tmp/before python benchmarks/diversity_cost.py --run RUN --status-only

The second line times `ge status --json` alone with another tree's ge (e.g. one whose status has
no diversity rows), for a before/after comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.evolution import diversity
from guided_evolution.evolution.operators.offline import offline_mutate
from guided_evolution.evolution.segments import Genome, parse_genome
from guided_evolution.evolution.splice import SpliceError

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {"exquisitenet_v2": "model.py", "fast_exp": "approx.py"}
POPULATION = 44


def _median_ms(fn: Callable[[], Any], repeat: int, inner: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) * 1000 / inner)
    return statistics.median(times)


def _seed_genome(name: str) -> Genome:
    path = SEEDS[name]
    text = (ROOT / "seeds" / name / path).read_text(encoding="utf-8")
    return parse_genome({path: text}, [path])


def _population(genome: Genome, n: int, rng: random.Random) -> list[dict[str, str]]:
    """``n`` variants: the seed with 1 to 5 offline mutations in a row on a few segments."""
    seed = diversity.segment_codes(genome)
    mutable = [s for s in genome.segments if s.code.strip()]
    out = []
    for _ in range(n):
        codes = dict(seed)
        for seg in rng.sample(mutable, k=min(len(mutable), rng.randint(1, 2))):
            current = seg
            for _ in range(rng.randint(1, 5)):
                try:
                    current = dataclasses.replace(current, code=offline_mutate(current, rng).code)
                except SpliceError:
                    break
            codes[seg.key] = current.code
        out.append(codes)
    return out


def _seed_figures(name: str, repeat: int) -> None:
    genome = _seed_genome(name)
    rng = random.Random(0)
    codes = [s.code for s in genome.segments if s.code.strip()]
    toks = [diversity.tokens(c) for c in codes]
    pop = _population(genome, POPULATION, rng)
    small = [
        (diversity.tokens(a[k]), diversity.tokens(b[k]))
        for a, b in itertools.pairwise(pop)
        for k in a
        if a[k] != b[k]
    ]
    big = max(toks, key=len)
    other = max((t for t in toks if t is not big), key=len, default=big)
    per_small = [_median_ms(lambda p=p: diversity.token_distance(*p), repeat, 20) for p in small]
    print(f"{name}: {len(codes)} segments, tokens per segment {sorted(len(t) for t in toks)}")
    tokenize = statistics.median(
        _median_ms(lambda c=c: diversity.tokens(c), repeat, 5) for c in codes
    )
    unrelated = _median_ms(lambda: diversity.token_distance(big, other), repeat, 5)
    print(f"  tokenize one segment (median)             {tokenize:.3f} ms")
    print(
        f"  segment distance, edited pairs (median)   {statistics.median(per_small):.3f} ms "
        f"over {len(small)} pairs"
    )
    print(
        f"  segment distance, largest vs next largest {unrelated:.3f} ms "
        f"({len(big)} x {len(other)} tokens)"
    )
    cold = _median_ms(lambda: diversity.distance(pop[0], pop[1], diversity.DistanceCache()), repeat)
    print(f"  variant distance, empty cache             {cold:.3f} ms")
    found = diversity.measure(pop)
    whole = _median_ms(lambda: diversity.measure(pop, diversity.DistanceCache()), repeat)
    print(
        f"  population of {POPULATION}: measure(), empty cache  {whole:.1f} ms "
        f"(mean distance {found.mean_distance:.3f}, distinct {list(found.distinct.values())})"
    )


def _generations(genome: Genome, rng: random.Random) -> list[list[dict[str, str]]]:
    """31 paper-sized populations: 44 members carried over (drawn at random: no fitness here)
    plus 38 children, each a member with one segment mutated offline (1 to 3 edits)."""
    mutable = [s for s in genome.segments if s.code.strip()]
    population = _population(genome, 144, rng)
    out = [population]
    for _ in range(30):
        kept = rng.sample(population, 44)
        children = []
        for _ in range(38):
            child = dict(rng.choice(kept))
            seg = mutable[rng.randrange(len(mutable))]
            current = dataclasses.replace(seg, code=child[seg.key])
            for _ in range(rng.randint(1, 3)):
                try:
                    current = dataclasses.replace(current, code=offline_mutate(current, rng).code)
                except SpliceError:
                    break
            child[seg.key] = current.code
            children.append(child)
        population = kept + children
        out.append(population)
    return out


def _paper_sized(name: str, repeat: int) -> None:
    gens = _generations(_seed_genome(name), random.Random(1))

    def measure_all() -> None:
        cache = diversity.DistanceCache()
        for population in gens:
            diversity.measure(population, cache)

    ms = _median_ms(measure_all, max(1, repeat // 2))
    print(f"  31 paper-sized generations (82 members, sampled pairs), one cache: {ms:.0f} ms")


def _run_figures(run: Path, repeat: int) -> None:
    from guided_evolution.inspection.report_diversity import diversity_per_generation
    from guided_evolution.inspection.run_data import open_run_index

    ge = [sys.executable, "-m", "guided_evolution", "status", str(run), "--json"]
    run = run.resolve()
    status_ms = _median_ms(
        lambda: subprocess.run(ge, check=True, capture_output=True, cwd=run.parent), repeat
    )

    def rows() -> list[dict[str, Any]]:
        with open_run_index(run) as (index, resolved, paths):
            return diversity_per_generation(index, resolved.config, paths.repo)

    found = rows()
    rows_ms = _median_ms(rows, repeat)
    sizes = sorted({r["population"] for r in found})
    print(f"run {run}: {len(found)} generations, population sizes {sizes[0]}..{sizes[-1]}")
    print(f"  ge status --json                          {status_ms / 1000:.2f} s")
    print(f"  diversity rows alone                      {rows_ms / 1000:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory to time `ge status --json` on")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--status-only",
        action="store_true",
        help="time `ge status --json` only (the baseline: run with PYTHONPATH=<a tree without it>)",
    )
    args = parser.parse_args()
    if args.status_only:
        ge = [sys.executable, "-m", "guided_evolution", "status", str(args.run), "--json"]
        out = args.run.resolve().parent  # not the repository: PYTHONPATH's tree is the one run
        ms = _median_ms(
            lambda: subprocess.run(ge, check=True, capture_output=True, cwd=out), args.repeat
        )
        print(f"ge status --json {args.run}: {ms / 1000:.2f} s")
        return
    for name in SEEDS:
        _seed_figures(name, args.repeat)
        _paper_sized(name, args.repeat)
    if args.run is not None:
        try:
            _run_figures(args.run, args.repeat)
        except GeError as err:
            sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
