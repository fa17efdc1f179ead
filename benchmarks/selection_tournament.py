"""NSGA-II parent tournament: our nsga2_parents vs deap's tools.selTournamentDCD.

Times both on random two-objective populations of 44 (the original GE's), 100 (a steady run
draws from such a population for every child) and 1,000 variants, choosing as many parents as
there are variants (the one size deap accepts for all three, as they are multiples of 4), median
of repeats; the rank/crowding pass is timed apart: ours (``selection.ranks_and_crowding``, plain
tuples) against deap's ``sortNondominated`` + ``assignCrowdingDist``, which it equals.
Then checks what the engine relies on: any number of parents for any population size (ours, and
``dcd_parents``: deap's rule padded to the sizes deap accepts, the paper profile's
``parent_tournament = "dcd"``), and how often the two rules decide a pair differently.

    python benchmarks/selection_tournament.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deap import tools
from deap.tools.emo import assignCrowdingDist

from guided_evolution.evolution.scoring import Scored
from guided_evolution.evolution.selection import (
    _isolated_random,
    _rank_and_crowd,
    _wrap,
    dcd_parents,
    nsga2_parents,
)

OBJ = (("acc", "max"), ("params", "min"))


def population(rng: random.Random, size: int) -> list[Scored]:
    return [Scored(f"v{i}", {"acc": rng.random(), "params": rng.random()}) for i in range(size)]


def deap_rank_and_crowd(inds: list[Any]) -> None:
    """deap's own NSGA-II ranking and crowding distances (what ``_rank_and_crowd`` equals)."""
    for rank, front in enumerate(tools.sortNondominated(inds, len(inds))):
        assignCrowdingDist(front)
        for ind in front:
            ind.rank = rank


def deap_parents(pop: list[Scored], n: int, rng: random.Random) -> list[Scored]:
    """The same job done by deap: rank and crowd, then selTournamentDCD with isolated random."""
    inds = _wrap(pop, OBJ)
    deap_rank_and_crowd(inds)
    with _isolated_random(rng.getrandbits(64)):
        chosen = tools.selTournamentDCD(inds, n)
    return [pop[ind.index] for ind in chosen]


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def timings(repeats: int) -> None:
    print(
        f"{'population':>10} {'ours ms':>9} {'deap ms':>9} {'deap/ours':>9}"
        f" {'rank+crowd ours ms':>19} {'deap ms':>9}"
    )
    for size in (44, 100, 1000):
        pop = population(random.Random(size), size)
        rng = random.Random(1)
        reps = repeats if size < 500 else max(5, repeats // 20)
        ours = median_ms(lambda p=pop, r=rng: nsga2_parents(p, len(p), OBJ, r), reps)
        theirs = median_ms(lambda p=pop, r=rng: deap_parents(p, len(p), r), reps)
        mine = median_ms(lambda p=pop: _rank_and_crowd(_wrap(p, OBJ)), reps)
        deaps = median_ms(lambda p=pop: deap_rank_and_crowd(_wrap(p, OBJ)), reps)
        print(
            f"{size:>10} {ours:>9.3f} {theirs:>9.3f} {theirs / ours:>9.2f}"
            f" {mine:>19.3f} {deaps:>9.3f}"
        )


def attempt(fn: Callable[[], list[Scored]]) -> str:
    try:
        return f"{len(fn())} parents"
    except (ValueError, IndexError) as err:
        return f"{type(err).__name__}: {err}"


def sizes() -> None:
    """n parents from a population of size p, as the engine asks (p valid of n wanted)."""
    print("\nparents wanted from a population (engine: population=44, fewer valid variants):")
    for size, n in ((44, 44), (1, 44), (37, 44), (40, 44), (43, 43), (44, 43), (6, 5)):
        pop = population(random.Random(size), size)
        rng = random.Random(0)
        ours = attempt(lambda p=pop, k=n, r=rng: nsga2_parents(p, k, OBJ, r))
        theirs = attempt(lambda p=pop, k=n, r=rng: deap_parents(p, k, r))
        padded = attempt(lambda p=pop, k=n, r=rng: dcd_parents(p, k, OBJ, r))
        print(f"  {n:>3} of {size:>3}: ours {ours:<12} dcd_parents {padded:<12} deap {theirs}")


def rule(trials: int) -> None:
    """How often the two rules pick a different winner for the same pair (ties excluded)."""
    rng = random.Random(7)
    pairs = differ = 0
    for _ in range(trials):
        inds = _wrap(population(rng, 44), OBJ)
        _rank_and_crowd(inds)
        for a in inds:
            for b in inds:
                if a is b or a.rank == b.rank:
                    continue
                pairs += 1
                by_rank = a if a.rank < b.rank else b
                fa, fb = a.fitness, b.fitness
                if fa.dominates(fb) or fb.dominates(fa):
                    continue  # deap decides by dominance, the same winner
                by_crowd = a if fa.crowding_dist > fb.crowding_dist else b
                differ += by_crowd is not by_rank and fa.crowding_dist != fb.crowding_dist
    print(
        f"\npairs from different fronts (44 variants, {trials} populations): {pairs}; "
        f"deap's dominance-then-crowding picks the higher-rank one in {differ} "
        f"({100 * differ / pairs:.1f}%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    timings(args.repeats)
    sizes()
    rule(20)


if __name__ == "__main__":
    main()
