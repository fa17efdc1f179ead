"""The steady-state mode's plan of one child (``plan.plan_child``): the generational rules, per
child, drawn from the population as it stands.

Frequencies are checked within 5 binomial standard deviations over thousands of seeded draws, as
in tests/evolution/test_plan.py.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.plan import EOT_BY_BANDIT, Plan, Step, plan_child
from guided_evolution.evolution.scoring import Scored
from tests.evolution.test_plan import OBJ, SEED, chain, evo, front
from tests.evolution.test_plan_paper import OBJ as PAPER_OBJ
from tests.evolution.test_plan_paper import C, X, Y, Z

DRAWS = 4000


def draws(cfg: EvolutionConfig, pop: list[Scored], n: int = DRAWS, **kw: Any) -> list[Plan | None]:
    """``n`` children drawn from ``pop``, spread over generations 1.. as a steady run numbers them."""
    per = cfg.population
    return [plan_child(1 + k // per, k % per, pop, SEED, "seed", cfg, OBJ, **kw) for k in range(n)]


def assert_rate(k: int, n: int, p: float, what: str) -> None:
    sigma = math.sqrt(n * p * (1 - p))
    assert n > 0 and abs(k - n * p) <= 5 * sigma + 1e-9, (
        f"{what}: {k}/{n} = {k / n:.3f}, expected {p:.3f} ± {5 * sigma / n:.3f}"
    )


def test_generation_zero_mutates_the_seed() -> None:
    for i in range(5):
        assert plan_child(0, i, front(6), SEED, "seed", evo(), OBJ) == Plan(
            0, i, "seed", (Step("mutation"),)
        )


def test_the_same_child_from_the_same_population_is_the_same_plan() -> None:
    cfg = evo(crossover_probability=0.5, eot_probability=0.5)
    pop = front(8)
    first = [plan_child(3, i, pop, SEED, "seed", cfg, OBJ) for i in range(50)]
    assert first == [plan_child(3, i, pop, SEED, "seed", cfg, OBJ) for i in range(50)]
    # ... and children, generations and run seeds draw differently
    assert len({(p.parent, p.steps) for p in first if p}) > 10
    other = [plan_child(4, i, pop, SEED, "seed", cfg, OBJ) for i in range(50)]
    assert other != first
    reseeded = [
        plan_child(3, i, pop, SEED, "seed", evo(seed=9, **_probs(cfg)), OBJ) for i in range(50)
    ]
    assert reseeded != first


def _probs(cfg: EvolutionConfig) -> dict[str, float]:
    return {
        "crossover_probability": cfg.crossover_probability,
        "eot_probability": cfg.eot_probability,
    }


def test_crossover_and_mutation_probabilities() -> None:
    cfg = evo(crossover_probability=0.35, mutation_probability=0.8)
    pop = front(20)
    out = draws(cfg, pop)
    made = [p for p in out if p is not None]
    crossed = [p for p in made if p.steps[0].op == "crossover"]
    # parent and partner differ unless the tournament drew the same member twice (rare in 20)
    assert_rate(len(crossed), DRAWS, 0.35 * 0.95, "crossover")
    mutated = sum(1 for p in made if p.steps[-1].op == "mutation")
    assert_rate(mutated, DRAWS, 0.8, "mutation")
    # a draw with neither operator is a clone: no child, as in the generational plan
    assert_rate(sum(1 for p in out if p is None), DRAWS, (1 - 0.35 * 0.95) * 0.2, "no child")
    for p in crossed:
        assert p.steps[0].other in {s.id for s in pop} and p.steps[0].other != p.parent
        assert p.parents == (p.parent, p.steps[0].other)


def test_eot_probability_teachers_and_start_generation() -> None:
    cfg = evo(eot_probability=0.25, eot_start_generation=3, population=50)
    pop = front(10)
    out = [p for p in draws(cfg, pop) if p is not None]
    late = [p for p in out if p.generation >= 3]
    eot = [p for p in late if p.steps[-1].op == "eot"]
    assert_rate(len(eot), len(late), 0.25, "EoT among mutations")
    assert not any(p.steps[-1].op == "eot" for p in out if p.generation < 3)
    # teachers: the SPEA2 elites (4) that beat the seed; f0 ties the seed on score
    teachers = Counter(p.steps[-1].other for p in eot)
    assert set(teachers) <= {s.id for s in pop} - {"f0"} and len(teachers) <= 4
    # a proposer without EoT never gets one
    assert not any(p and p.steps[-1].op == "eot" for p in draws(cfg, pop, eot=False))


def test_spea2_top_teachers_leave_out_only_the_seed() -> None:
    cfg = evo(eot_probability=1.0, eot_teachers="spea2_top", eot_teacher_pool=3)
    pop = [SEED, *front(6)]
    out = [p for p in draws(cfg, pop, 600) if p is not None]
    teachers = {p.steps[-1].other for p in out}
    assert "seed" not in teachers and 1 <= len(teachers) <= 3


def test_the_tournament_favours_better_fronts() -> None:
    """On a dominance chain of 8 a binary tournament's winner is the better contestant: member i
    is the parent when it meets a worse one, (7 - i) / 7 x 2 / 8 of draws (uniform: 1/8)."""
    pop = chain(8)
    for tournament in ("rank_crowding", "dcd"):
        out = [p for p in draws(evo(parent_tournament=tournament), pop) if p is not None]
        shares = Counter(p.parent for p in out)
        for i in (0, 3):
            assert_rate(shares[f"c{i}"], len(out), (7 - i) / 7 * 2 / 8, f"{tournament} c{i}")
        assert shares["c7"] == 0, tournament


def test_an_empty_population_falls_back_to_the_seed() -> None:
    plan = plan_child(2, 0, [], SEED, "seed", evo(), OBJ)
    assert plan is not None and plan.parent == "seed"
    assert plan_child(2, 0, [], None, "seed", evo(), OBJ) == Plan(2, 0, "seed", (Step("mutation"),))


def test_a_child_is_numbered_as_asked_on_island_zero() -> None:
    cfg = evo(population=7, crossover_probability=0.5)
    out = draws(cfg, front(8), 70)
    assert [(p.generation, p.index, p.island) for p in out if p] == [
        (1 + k // 7, k % 7, 0) for k, p in enumerate(out) if p
    ]


def test_an_empty_population_with_a_seed_plans_from_the_seed_like_a_population_of_one() -> None:
    """The seed is the only contestant: no crossover with itself, and the mutation coin applies."""
    assert all(p is None for p in draws(evo(mutation_probability=0.0), [], 50))
    made = draws(evo(crossover_probability=1.0, eot_probability=1.0), [], 50)
    assert {(p.parent, p.steps) for p in made if p} == {("seed", (Step("mutation"),))}


def test_with_the_bandit_mutations_carry_a_teacher_and_no_coin_makes_eot() -> None:
    pop = front(10)
    coin = {p.steps[-1].other for p in draws(evo(eot_probability=1.0), pop, 600) if p}
    bandit = [
        p.steps[-1] for p in draws(evo(eot_probability=0.3), pop, 600, eot=EOT_BY_BANDIT) if p
    ]
    assert {s.op for s in bandit} == {"mutation"}
    assert {s.other for s in bandit} == coin and len(coin) > 1
    off = draws(evo(eot_probability=0.0), pop, 300, eot=EOT_BY_BANDIT)
    assert {p.steps[-1] for p in off if p} == {Step("mutation")}


def test_spea2_top_teachers_need_not_beat_the_seed_but_are_never_the_seed() -> None:
    """A seed that dominates the population: no elite beats it (no EoT with ``beat_seed``), but
    the SPEA2 top less the seed teaches with ``spea2_top``."""
    best = Scored("seed", {"score": 2.0, "size": 1.0})
    pop = [best, *chain(6)]

    def children(cfg: EvolutionConfig) -> list[Plan]:
        out = [plan_child(1 + k // 9, k % 9, pop, best, "seed", cfg, OBJ) for k in range(300)]
        return [p for p in out if p]

    beat = children(evo(eot_probability=1.0, eot_teacher_pool=3))
    assert {p.steps[-1] for p in beat} == {Step("mutation")}
    top = children(evo(eot_probability=1.0, eot_teacher_pool=3, eot_teachers="spea2_top"))
    assert {p.steps[-1].op for p in top} == {"eot"}
    assert {p.steps[-1].other for p in top} == {"c0", "c1"}


def test_the_dcd_tournament_lets_a_non_dominated_member_of_a_worse_front_win() -> None:
    """tests/evolution/test_plan_paper.py's population: DCD picks C, rank never does."""
    pop = [X, Z, Y, C]
    parents = {}
    for tournament in ("rank_crowding", "dcd"):
        cfg = evo(parent_tournament=tournament, population=4)
        out = [plan_child(1 + k // 4, k % 4, pop, SEED, "seed", cfg, PAPER_OBJ) for k in range(800)]
        parents[tournament] = Counter(p.parent for p in out if p)
    assert parents["rank_crowding"]["C"] == 0
    assert parents["dcd"]["C"] > 50
