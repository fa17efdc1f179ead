"""The generation plan: each configured probability and rule shows in thousands of seeded draws.

Frequencies are checked against their expected value within 5 binomial standard deviations, so a
test fails when a probability is ignored or a rule is skipped (each was checked by breaking the
code on purpose), and passes on any seed with overwhelming probability.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.config import EvolutionConfig
from guided_evolution.config_moved import migrate
from guided_evolution.evolution.plan import (
    EOT_BY_BANDIT,
    GenerationPlan,
    Plan,
    Step,
    dedup,
    eot_teachers,
    hall_of_fame,
    plan_generation,
)
from guided_evolution.evolution.scoring import Scored, dominates
from guided_evolution.evolution.selection import HallOfFame, nsga2_parents, spea2_elites
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, template_seed, with_statement

OBJ = (("score", "max"), ("size", "min"))
SEED = Scored("seed", {"score": 0.5, "size": 50.0})
GENERATIONS = range(1, 41)  # each generation draws from its own RNG: independent samples


def evo(**kw: Any) -> EvolutionConfig:
    base: dict[str, Any] = {
        "population": 100,
        "elites": 4,
        "crossover_probability": 0.0,
        "mutation_probability": 1.0,
        "eot_probability": 0.0,
        "eot_start_generation": 1,
    }
    base.update(kw)
    # flat names of the sections' knobs (mate_choice=..., islands=...) go to their tables
    return EvolutionConfig.model_validate(migrate({"evolution": base})["evolution"])


def front(n: int) -> list[Scored]:
    """``n`` mutually non-dominated variants; all but the first beat the seed on score."""
    return [Scored(f"f{i}", {"score": 0.5 + i / n, "size": 50.0 + i}) for i in range(n)]


def chain(n: int) -> list[Scored]:
    """``n`` variants, each dominating the next: c0 is best, c{n-1} worst (one per front)."""
    return [Scored(f"c{i}", {"score": 1.0 - i / n, "size": 10.0 + i}) for i in range(n)]


def plans(
    cfg: EvolutionConfig,
    pop: Sequence[Scored],
    generations: Sequence[int] = GENERATIONS,
    **kw: Any,
) -> list[Plan]:
    out: list[Plan] = []
    for g in generations:
        out += plan_generation(g, pop, SEED, "seed", cfg, OBJ, **kw).plans
    return out


def assert_rate(k: int, n: int, p: float, what: str) -> None:
    """``k`` successes in ``n`` draws agree with probability ``p`` within 5 sigma."""
    sigma = math.sqrt(n * p * (1 - p))
    assert n > 0 and abs(k - n * p) <= 5 * sigma + 1e-9, (
        f"{what}: {k}/{n} = {k / n:.3f}, expected {p:.3f} ± {5 * sigma / n:.3f}"
    )


def ops(plan: Plan) -> tuple[str, ...]:
    return tuple(s.op for s in plan.steps)


# --------------------------------------------------------------------------- generation 0


def test_generation_zero_mutates_the_seed_initial_population_times() -> None:
    cfg = evo(initial_population=7, mutation_probability=0.0, crossover_probability=1.0)
    out = plan_generation(0, front(5), SEED, "seed", cfg, OBJ)
    assert out.elites == []
    assert [(p.generation, p.index, p.parent, p.steps) for p in out.plans] == [
        (0, i, "seed", (Step("mutation"),)) for i in range(7)
    ]


# --------------------------------------------------------------------------- probabilities


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8])
def test_mutation_probability_is_the_share_of_parents_mutated(p: float) -> None:
    cfg = evo(mutation_probability=p)
    out = plans(cfg, front(10))
    draws = 100 * len(GENERATIONS)  # every parent draws once; a parent not mutated has no child
    assert all(ops(x) == ("mutation",) for x in out)
    assert_rate(len(out), draws, p, "mutated parents")


def test_mutation_probability_applies_after_a_crossover_too() -> None:
    cfg = evo(mutation_probability=0.3, crossover_probability=1.0)
    crossed = [x for x in plans(cfg, front(10)) if x.steps[0].op == "crossover"]
    mutated = sum(ops(x) == ("crossover", "mutation") for x in crossed)
    assert all(ops(x) in {("crossover",), ("crossover", "mutation")} for x in crossed)
    assert_rate(mutated, len(crossed), 0.3, "crossover children also mutated")


def pairs(out: list[Plan]) -> list[tuple[Plan, Plan]]:
    """With every parent mutated, plans 2k and 2k+1 are the two children of the k-th pair."""
    assert len(out) % 2 == 0
    return [(out[i], out[i + 1]) for i in range(0, len(out), 2)]


@pytest.mark.parametrize("c", [0.0, 0.35, 1.0])
def test_crossover_probability_is_the_share_of_distinct_pairs_crossed(c: float) -> None:
    cfg = evo(crossover_probability=c)
    distinct = crossed = 0
    for g in GENERATIONS:
        for a, b in pairs(plans(cfg, front(10), [g])):
            if a.parent == b.parent:  # a parent never crosses with itself
                assert ops(a) == ops(b) == ("mutation",)
                continue
            distinct += 1
            if a.steps[0].op == "crossover":
                crossed += 1
                # both directions, each mutated afterwards (mutation_probability = 1)
                assert a.steps == (Step("crossover", b.parent), Step("mutation"))
                assert b.steps == (Step("crossover", a.parent), Step("mutation"))
                assert a.parents == (a.parent, b.parent)
            else:
                assert ops(a) == ops(b) == ("mutation",)
    assert_rate(crossed, distinct, c, "pairs crossed")


@pytest.mark.parametrize("q", [0.0, 0.25, 1.0])
def test_eot_probability_is_the_share_of_mutations_that_are_eot(q: float) -> None:
    cfg = evo(eot_probability=q, crossover_probability=0.5)
    out = plans(cfg, front(10))
    last = [x.steps[-1] for x in out]
    assert all(s.op in {"eot", "mutation"} for s in last)
    assert_rate(sum(s.op == "eot" for s in last), len(last), q, "EoT mutations")


def test_eot_learns_from_each_teacher_alike_and_only_from_teachers() -> None:
    pop = front(10)
    cfg = evo(eot_probability=1.0, elites=6)
    elites = [s.id for s in spea2_elites(pop, 6, OBJ)]
    teachers = eot_teachers([s for s in pop if s.id in elites], SEED, OBJ)
    assert "f0" not in teachers  # ties the seed's score and is worse in size
    chosen = Counter(x.steps[-1].other for x in plans(cfg, pop))
    assert set(chosen) == set(teachers)
    total = sum(chosen.values())
    for t in teachers:
        assert_rate(chosen[t], total, 1 / len(teachers), f"teacher {t}")


def test_no_eot_before_eot_start_generation() -> None:
    cfg = evo(eot_probability=1.0, eot_start_generation=4)
    for g in range(1, 8):
        steps = {x.steps[-1].op for x in plans(cfg, front(10), [g])}
        assert steps == ({"mutation"} if g < 4 else {"eot"}), f"generation {g}"


def test_no_eot_without_teachers_or_support() -> None:
    cfg = evo(eot_probability=1.0)
    assert {ops(x) for x in plans(cfg, front(10), eot=False)} == {("mutation",)}
    worse = [Scored(f"w{i}", {"score": 0.1, "size": 90.0 + i}) for i in range(5)]
    assert {ops(x) for x in plans(cfg, worse)} == {("mutation",)}
    assert {ops(x) for x in plans(cfg, front(10), generations=[1])} == {("eot",)}


def test_with_the_bandit_mutations_carry_a_teacher_and_no_coin_makes_eot() -> None:
    """eot=EOT_BY_BANDIT: where EoT is possible each mutation step carries a teacher (the same
    teachers the coin would use) for the proposer's bandit; eot_probability 0 keeps EoT off."""
    pop = front(10)
    coin = Counter(x.steps[-1].other for x in plans(evo(eot_probability=1.0), pop))
    steps = [x.steps[-1] for x in plans(evo(eot_probability=0.3), pop, eot=EOT_BY_BANDIT)]
    assert {s.op for s in steps} == {"mutation"}
    assert {s.other for s in steps} == set(coin) and len(coin) > 1
    off = plans(evo(eot_probability=0.0), pop, eot=EOT_BY_BANDIT)
    assert {x.steps[-1] for x in off} == {Step("mutation")}
    early = plans(evo(eot_probability=0.3, eot_start_generation=5), pop, [1], eot=EOT_BY_BANDIT)
    assert {x.steps[-1] for x in early} == {Step("mutation")}


def test_an_islands_plans_carry_it_and_draw_from_its_own_stream() -> None:
    pop = front(10)
    cfg = evo(population=7, crossover_probability=0.5, initial_population=3)
    for g in (0, 1, 2):
        out = plan_generation(g, pop, SEED, "seed", cfg, OBJ, island=2, first_index=5).plans
        assert {x.island for x in out} == {2}
        assert [x.index for x in out] == list(range(5, 5 + len(out)))
    shape = [
        [
            (x.parent, x.steps)
            for x in plan_generation(g, pop, SEED, "seed", cfg, OBJ, island=i).plans
        ]
        for i in (0, 1)
        for g in GENERATIONS
    ]
    half = len(GENERATIONS)
    assert shape[:half] != shape[half:]


# --------------------------------------------------------------------------- parents


@pytest.mark.parametrize("n", [3, 5, 10])
def test_parents_come_from_nsga2_tournaments(n: int) -> None:
    """Every child's parent is a tournament winner and every variant plays as often: the best
    wins each of its tournaments, the worst none; uniform draws would pick each 1/n of the time.
    (An odd population exercises the permutation boundary, where no variant may meet itself.)"""
    cfg = evo(population=200)
    parents = Counter(x.parent for x in plans(cfg, chain(n)))
    total = sum(parents.values())
    assert total == 200 * len(GENERATIONS)
    assert parents[f"c{n - 1}"] == 0
    for j in range(n):  # member j plays 2 picks in n and beats the n-1-j worse of n-1 opponents
        assert_rate(parents[f"c{j}"], total, 2 / n * (n - 1 - j) / (n - 1), f"c{j}'s share")


def test_plan_parents_are_the_tournament_winners_in_order() -> None:
    pop = front(10)
    cfg = evo(population=31, mutation_probability=1.0)
    for g in (1, 2, 3):
        rng = random.Random(f"ge:{cfg.seed}:{g}:plan")
        winners = [s.id for s in nsga2_parents(pop, 31, OBJ, rng)]
        got = plan_generation(g, pop, SEED, "seed", cfg, OBJ).plans
        assert [x.parent for x in got] == winners
        assert [x.index for x in got] == list(range(31))
        assert {x.generation for x in got} == {g}


def test_odd_last_parent_is_always_mutated() -> None:
    """A parent without a partner gets a child even when mutation_probability is 0."""
    never = evo(population=3, mutation_probability=0.0, eot_probability=1.0)
    for g in GENERATIONS:
        out = plan_generation(g, front(10), SEED, "seed", never, OBJ).plans
        assert [(x.index, ops(x)) for x in out] == [(0, ("mutation",))]
    always = evo(population=3, eot_probability=1.0)
    out = plan_generation(1, front(10), SEED, "seed", always, OBJ).plans
    assert [ops(x) for x in out] == [("eot",)] * 3


def test_an_empty_population_plans_from_the_seed() -> None:
    cfg = evo(population=6, eot_probability=1.0)
    out = plan_generation(1, [], SEED, "seed", cfg, OBJ)
    assert out.elites == ["seed"]
    assert {x.parent for x in out.plans} == {"seed"} and len(out.plans) == 6
    assert {ops(x) for x in out.plans} == {("mutation",)}  # the seed cannot teach itself
    assert plan_generation(1, [], None, "seed", cfg, OBJ) == GenerationPlan([], [])


# --------------------------------------------------------------------------- elites


@pytest.mark.parametrize("k", [0, 3, 12, 30])
def test_elites_are_spea2_of_the_population(k: int) -> None:
    pop = front(6) + chain(10)
    cfg = evo(elites=k, population=4)
    out = plan_generation(1, pop, SEED, "seed", cfg, OBJ)
    assert out.elites == [s.id for s in spea2_elites(pop, min(k, len(pop)), OBJ)]
    assert len(out.elites) == min(k, len(pop)) == len(set(out.elites))
    non_dominated = {s.id for s in pop if not any(dominates(o, s, OBJ) for o in pop)}
    if k >= len(non_dominated):  # the first front first, then the best of the rest
        assert set(out.elites[: len(non_dominated)]) == non_dominated
    else:
        assert set(out.elites) <= non_dominated


def test_spea2_elites_do_not_depend_on_objective_units_or_offsets() -> None:
    """SPEA2 truncates a front too large for ``k`` by distances on objectives rescaled to [0, 1]:
    the same elites whatever the units (a parameter count next to an accuracy)."""
    for trial in range(20):
        rng = random.Random(trial)
        xs = sorted(rng.random() for _ in range(15))
        pop = [
            Scored(f"v{i}", {"score": x, "size": x * x + rng.random() / 50})
            for i, x in enumerate(xs)
        ]
        pop = [s for s in pop if not any(dominates(o, s, OBJ) for o in pop)]
        scaled = [
            Scored(s.id, {"score": s.metrics["score"], "size": 1e6 * s.metrics["size"] + 3e5})
            for s in pop
        ]
        shifted = [
            Scored(s.id, {"score": s.metrics["score"] + 7, "size": s.metrics["size"]}) for s in pop
        ]
        ids = [s.id for s in spea2_elites(pop, 5, OBJ)]
        assert ids == [s.id for s in spea2_elites(scaled, 5, OBJ)], trial
        assert ids == [s.id for s in spea2_elites(shifted, 5, OBJ)], trial


# --------------------------------------------------------------------------- teachers


def test_eot_teachers_beat_the_seed_somewhere() -> None:
    elites = [
        Scored("seed", {"score": 0.9, "size": 1.0}),  # the seed itself, even if better
        Scored("tie", dict(SEED.metrics)),
        Scored("worse", {"score": 0.4, "size": 60.0}),
        Scored("smaller", {"score": 0.1, "size": 49.0}),
        Scored("better", {"score": 0.6, "size": 99.0}),
    ]
    assert eot_teachers(elites, SEED, OBJ) == ["smaller", "better"]
    assert eot_teachers(elites[::-1], SEED, OBJ) == ["better", "smaller"]
    assert eot_teachers(elites, None, OBJ) == []


# --------------------------------------------------------------------------- determinism


def test_plans_are_deterministic_and_differ_by_generation_and_seed() -> None:
    cfg = evo(crossover_probability=0.5, mutation_probability=0.5, eot_probability=0.5)
    one = plan_generation(2, front(10), SEED, "seed", cfg, OBJ)
    assert one == plan_generation(2, front(10), SEED, "seed", cfg, OBJ)
    assert one != plan_generation(3, front(10), SEED, "seed", cfg, OBJ)
    other_seed = cfg.model_copy(update={"seed": 7})
    assert one != plan_generation(2, front(10), SEED, "seed", other_seed, OBJ)


def test_plan_rngs_are_per_child_and_reproducible() -> None:
    a, b = Plan(1, 0, "p", ()), Plan(1, 1, "p", ())
    assert a.rng(0).random() == a.rng(0).random()
    assert a.fix_rng(0).random() == a.fix_rng(0).random()
    draws = {a.rng(0).random(), b.rng(0).random(), a.rng(1).random(), a.fix_rng(0).random()}
    assert len(draws) == 4
    assert Plan(1, 0, "p", (Step("crossover", "q"), Step("eot", "e"))).parents == ("p", "q")


def test_dedup_keeps_first_occurrences_in_order() -> None:
    assert dedup(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


# --------------------------------------------------------------------------- hall of fame


def test_hall_of_fame_is_the_bounded_front_of_all_candidates() -> None:
    pop = front(8) + chain(5)
    non_dominated = [s.id for s in pop if not any(dominates(o, s, OBJ) for o in pop)]
    assert hall_of_fame(pop + pop[:3], 100, OBJ) == non_dominated
    kept = hall_of_fame(pop, 3, OBJ)
    assert len(kept) == 3
    by_id = {s.id: s for s in pop}
    assert not any(dominates(o, by_id[k], OBJ) for o in pop for k in kept)


# --------------------------------------------------------------------------- temperatures


def test_initial_temperature_only_in_generation_zero(tmp_path: Path) -> None:
    """The LLM run sends generation 0's mutations at the initial temperature, later ones at the
    mutation temperature (one-point ranges, so each call's temperature names its range). Every
    reply is a new program (CodeWriter's default edit repeats itself every third request: two of
    generation 0's four children could be one, and ge keeps a duplicate as no variant)."""
    seed = template_seed(tmp_path / "seed", generations=1)
    with (seed / "ge.toml").open("a") as toml:
        toml.write("\n[evolution.temperature]\ninitial = [1.5, 1.5]\nmutation = [0.3, 0.3]\n")
    writer = CodeWriter(edit=lambda code, n: with_statement(code, f"_revision = {n}"))
    with serve(responder=writer) as server:
        here_json(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "openai/m",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
        )
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        made = [(v.generation, v.operator, v.temperature) for v in index.variants()]
    finally:
        index.close()
    gen0 = [t for g, op, t in made if g == 0 and op != "seed"]
    later = [t for g, op, t in made if g >= 1 and op == "mutation"]
    assert len(gen0) == 4 and set(gen0) == {1.5}
    assert later and set(later) == {0.3}


def test_hall_of_fame_of_one_keeps_one_and_rejects_zero() -> None:
    assert len(hall_of_fame(front(8), 1, OBJ)) == 1
    with pytest.raises(ValueError, match="hall of fame size must be >= 1, got 0"):
        HallOfFame(0, OBJ)


def test_hall_of_fame_membership_and_newest_last() -> None:
    hof = HallOfFame(10, OBJ)
    a, b = front(3)[1:]
    hof.update([a, b])
    hof.update([Scored(a.id, dict(a.metrics))])  # seen again: moves to the end, the newest
    assert [s.id for s in hof] == [b.id, a.id] and len(hof) == 2
    assert a.id in hof and "nobody" not in hof
