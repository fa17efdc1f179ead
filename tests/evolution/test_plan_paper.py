"""The GE paper's options for the generation plan: deap's DCD tournament, SPEA2-top EoT teachers,
EoT from the second evolved generation (``--profile paper``); the defaults stay ge's own."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from guided_evolution.config import EvolutionConfig, load_config
from guided_evolution.evolution.plan import plan_generation
from guided_evolution.evolution.scoring import Scored
from guided_evolution.evolution.selection import dcd_parents, nsga2_parents, spea2_elites

ROOT = Path(__file__).resolve().parents[2]
OBJ = (("acc", "max"), ("params", "min"))
# Front 0: X, Z, Y (Z has a finite crowding distance); C, alone in front 1, is dominated by X only.
# Z and C do not dominate each other: the paper's DCD picks C (infinite crowding), rank picks Z.
X, Z, Y, C = (
    Scored("X", {"acc": 1.0, "params": 0.5}),
    Scored("Z", {"acc": 0.7, "params": 0.2}),
    Scored("Y", {"acc": 0.5, "params": 0.0}),
    Scored("C", {"acc": 0.9, "params": 0.6}),
)
SEED = Scored("seed", {"acc": 0.0, "params": 1.0})


def _pop(rng: random.Random, size: int) -> list[Scored]:
    return [Scored(f"v{i:02d}", {"acc": rng.random(), "params": rng.random()}) for i in range(size)]


def _evo(**kw: object) -> EvolutionConfig:
    return EvolutionConfig.model_validate(kw)


def test_dcd_returns_n_parents_for_any_sizes_deterministically() -> None:
    state = random.getstate()
    for size, n in ((1, 44), (3, 5), (37, 44), (44, 44), (44, 43), (6, 5), (10, 1)):
        pop = _pop(random.Random(size), size)
        first = dcd_parents(pop, n, OBJ, random.Random(3))
        assert len(first) == n and {s.id for s in first} <= {s.id for s in pop}
        assert first == dcd_parents(pop, n, OBJ, random.Random(3))
    assert random.getstate() == state
    assert (
        dcd_parents([], 4, OBJ, random.Random(0))
        == []
        == dcd_parents([X], 0, OBJ, random.Random(0))
    )


def test_dcd_lets_a_non_dominated_member_of_a_worse_front_win_and_rank_does_not() -> None:
    dcd, rank = Counter(), Counter()
    for seed in range(300):
        dcd.update(s.id for s in dcd_parents([X, Z, Y, C], 4, OBJ, random.Random(seed)))
        rank.update(s.id for s in nsga2_parents([X, Z, Y, C], 4, OBJ, random.Random(seed)))
    assert rank["C"] == 0
    assert dcd["C"] > 100  # beats Z always, Y half the time: about 300 * 2 * 3/8 draws


def test_the_plan_uses_the_configured_tournament() -> None:
    def parents(tournament: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for seed in range(100):
            evo = _evo(
                population=4,
                mutation_probability=1.0,
                crossover_probability=0.0,
                parent_tournament=tournament,
                seed=seed,
            )
            out.update(
                p.parent for p in plan_generation(1, [X, Z, Y, C], SEED, "seed", evo, OBJ).plans
            )
        return out

    assert parents("rank_crowding")["C"] == 0
    assert parents("dcd")["C"] > 30


def _teachers(
    evo: EvolutionConfig, pop: list[Scored], seed: Scored, generation: int = 1
) -> Counter[str]:
    out: Counter[str] = Counter()
    for s in range(40):
        plan = plan_generation(
            generation, pop, seed, seed.id, evo.model_copy(update={"seed": s}), OBJ
        )
        out.update(st.other for p in plan.plans for st in p.steps if st.op == "eot" and st.other)
    return out


def test_spea2_top_teachers_need_not_beat_the_seed() -> None:
    best_seed = Scored("seed", {"acc": 2.0, "params": -1.0})  # dominates every member
    pop = [best_seed, *_pop(random.Random(1), 20)]
    common = {"population": 20, "elites": 20, "mutation_probability": 1.0, "eot_probability": 1.0}
    assert not _teachers(_evo(**common), pop, best_seed)  # beat_seed: nobody has anything to teach
    used = _teachers(_evo(**common, eot_teachers="spea2_top"), pop, best_seed)
    assert used and "seed" not in used


def test_spea2_top_teachers_are_the_top_pool_only() -> None:
    pop = _pop(random.Random(2), 30)
    evo = _evo(
        population=20,
        elites=30,
        mutation_probability=1.0,
        eot_probability=1.0,
        eot_teachers="spea2_top",
        eot_teacher_pool=5,
    )
    top = {s.id for s in spea2_elites(pop, 5, OBJ)}
    used = _teachers(evo, pop, SEED)
    assert set(used) == top  # all five drawn over 40 generations, none outside them
    beat = _teachers(evo.model_copy(update={"eot_teachers": "beat_seed"}), pop, SEED)
    assert len(beat) > 5  # every elite that beats the seed (here: all 30) teaches


def test_the_paper_profile_starts_eot_in_the_second_evolved_generation() -> None:
    evo = load_config(ROOT / "seeds/exquisitenet_v2/ge.toml", profile="paper").evolution
    assert (evo.eot_teachers, evo.eot_teacher_pool, evo.parent_tournament) == (
        "spea2_top",
        10,
        "dcd",
    )
    pop = _pop(random.Random(3), 44)
    assert not _teachers(evo, pop, SEED, generation=1)
    assert _teachers(evo, pop, SEED, generation=2)
    default = load_config(ROOT / "seeds/exquisitenet_v2/ge.toml").evolution
    assert (default.eot_teachers, default.parent_tournament, default.eot_start_generation) == (
        "beat_seed",
        "rank_crowding",
        1,
    )
    assert _teachers(default.model_copy(update={"population": 44, "elites": 44}), pop, SEED)


def test_a_pair_without_crossover_or_mutation_is_dropped_as_in_ge() -> None:
    # GE left such offspring as clones of their parents (removed as duplicates): no new child.
    evo = _evo(population=44, crossover_probability=0.0, mutation_probability=0.0)
    assert plan_generation(1, _pop(random.Random(4), 44), SEED, "seed", evo, OBJ).plans == []
    full = evo.model_copy(update={"mutation_probability": 1.0})
    assert len(plan_generation(1, _pop(random.Random(4), 44), SEED, "seed", full, OBJ).plans) == 44
