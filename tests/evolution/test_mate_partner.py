"""Mate choice picks only the partner (issue 25 item 4): both tournament winners of a pair still
reproduce as primary parents, each crossing with the mate it chooses; the tournament's plans
(mate choice off) draw what they drew before, number for number.

Before, mate choice dropped the pair's second winner and made the chosen mate the primary parent
of the second child, so it changed who reproduces, not only who the partner is.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from guided_evolution.config import EvolutionConfig
from guided_evolution.config_moved import migrate
from guided_evolution.evolution.plan import Plan, plan_child, plan_generation
from guided_evolution.evolution.scoring import Scored
from guided_evolution.evolution.selection import nsga2_parents

OBJ = (("score", "max"), ("size", "min"))
SEED = Scored("seed", {"score": 0.5, "size": 50.0})
FAR = "f5"


def evo(**kw: Any) -> EvolutionConfig:
    base: dict[str, Any] = {"population": 100, "elites": 4, "eot_probability": 0.0}
    base.update(kw)
    return EvolutionConfig.model_validate(migrate({"evolution": base})["evolution"])


def front(n: int) -> list[Scored]:
    return [Scored(f"f{i}", {"score": 0.5 + i / n, "size": 50.0 + i}) for i in range(n)]


def chain(n: int) -> list[Scored]:
    return [Scored(f"c{i}", {"score": 1.0 - i / n, "size": 10.0 + i}) for i in range(n)]


@dataclass
class LineMates:
    """Variants at points on a line: FAR at 0.9, every other near 0; genes by id."""

    at: dict[str, float]
    genes: dict[str, float] = field(default_factory=dict)

    def distance(self, a: str, b: str) -> float:
        return min(1.0, abs(self.at[a] - self.at[b]))

    def gene(self, vid: str) -> float | None:
        return self.genes.get(vid)


def one_far(pop: list[Scored]) -> LineMates:
    return LineMates({s.id: 0.9 if s.id == FAR else 0.005 * i for i, s in enumerate(pop)})


@pytest.mark.parametrize("kind", ["dissimilar", "self_adaptive"])
def test_both_winners_of_a_pair_stay_primary_parents(kind: str) -> None:
    pop = front(10)
    cfg = evo(
        population=40, crossover_probability=1.0, mutation_probability=1.0, mate_choice=kind,
        mate_strength=3.0,
    )  # fmt: skip
    mates = one_far(pop)
    for g in range(1, 30):
        winners = [
            s.id for s in nsga2_parents(pop, 40, OBJ, random.Random(f"ge:{cfg.seed}:{g}:plan"))
        ]
        got = plan_generation(g, pop, SEED, "seed", cfg, OBJ, mates=mates).plans
        assert [p.parent for p in got] == winners  # who reproduces: the tournament's winners
        for plan in got:
            assert plan.steps[0].op == "crossover" and plan.parents[1] != plan.parent


def test_each_primary_chooses_its_own_mate() -> None:
    """With a strong preference for distant code, a near primary mostly picks FAR, and FAR (as a
    primary) picks a near member; the second winner's child is not the first winner's mate's."""
    pop = front(10)
    cfg = evo(
        population=40, crossover_probability=1.0, mutation_probability=0.0,
        mate_choice="dissimilar", mate_strength=3.0,
    )  # fmt: skip
    mates = one_far(pop)
    near_far = near_total = 0
    second_partners: Counter[bool] = Counter()
    for g in range(1, 60):
        got = plan_generation(g, pop, SEED, "seed", cfg, OBJ, mates=mates).plans
        for plan in got:
            partner = plan.parents[1]
            if plan.parent == FAR:
                assert partner != FAR
                continue
            near_total += 1
            near_far += partner == FAR
        for first, second in zip(got[::2], got[1::2], strict=False):
            if first.parent != FAR and second.parent != FAR:
                second_partners[second.parents[1] == first.parent] += 1
    assert near_far / near_total > 0.8, (near_far, near_total)
    # B's mate is B's own choice: rarely the near A it was paired with (GE: always A)
    assert second_partners[True] < 0.2 * sum(second_partners.values()), second_partners


def test_a_steady_child_keeps_its_tournament_parent() -> None:
    pop = front(10)
    cfg = evo(
        population=20, crossover_probability=1.0, mutation_probability=1.0,
        mate_choice="dissimilar", mate_strength=3.0,
    )  # fmt: skip
    for i in range(200):
        rng = random.Random(f"ge:{cfg.seed}:3:{i}:steady")
        parent = nsga2_parents(pop, 2, OBJ, rng)[0].id
        plan = plan_child(3, i, pop, SEED, "seed", cfg, OBJ, mates=one_far(pop))
        assert plan is not None and plan.parent == parent and plan.parents[1] != parent


def plans_digest(plans: list[Plan | None]) -> str:
    text = repr(
        [
            None if p is None else (p.index, p.parent, [(s.op, s.other) for s in p.steps])
            for p in plans
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_without_mate_choice_the_plans_are_the_ones_drawn_before() -> None:
    """The tournament path's plans over several probabilities, populations and generations, pinned
    by their digest taken from the plan before this change (commit c00415d): one draw more or less
    anywhere changes it."""
    plans: list[Plan | None] = []
    for c, m, e in ((0.5, 0.7, 0.3), (1.0, 0.0, 0.0), (0.3, 1.0, 0.5)):
        cfg = evo(population=21, crossover_probability=c, mutation_probability=m, eot_probability=e)
        for pop in (front(10), chain(7)):
            for g in range(12):
                for eot in (True, False, "bandit"):
                    plans += plan_generation(g, pop, SEED, "seed", cfg, OBJ, eot=eot).plans
                    plans += [
                        plan_child(g, i, pop, SEED, "seed", cfg, OBJ, eot=eot) for i in range(6)
                    ]
    got = plans_digest(plans)
    assert got == "b8e8250932851e92", got
