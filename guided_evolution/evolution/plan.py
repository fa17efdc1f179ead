"""The generation plan (the GE paper's loop), pure: which children to make, from whom, and how.

Generation 0 is ``initial_population`` mutations of the seed. After that, from the evaluated
population: SPEA2 picks the elites (carried over); NSGA-II tournaments pick ``population``
parents; each pair is crossed over with ``crossover_probability`` (both directions); each child is
then mutated with ``mutation_probability``, and such a mutation is Evolution of Thought with
``eot_probability`` (from ``eot_start_generation``) once there are teachers: elites that beat the
seed on some selection objective (``eot_teachers = "beat_seed"``), or the paper's SPEA2 top
``eot_teacher_pool`` (``"spea2_top"``). ``parent_tournament = "dcd"`` swaps the tournament for
deap's selTournamentDCD (the paper's). A planned child that draws neither crossover nor mutation
is dropped, as GE's unchanged offspring were clones of their parent (see README, "Differences
from the GE paper").

With the bandit on (``[llm] bandit``, an LLM run: ``eot=EOT_BY_BANDIT``), a mutation step where EoT
is possible (``eot_probability > 0``, from ``eot_start_generation``, with teachers) is
``Step("mutation", teacher)``: the proposer's bandit chooses mutation (with a persona) or EoT (with
that teacher) instead of the ``eot_probability`` coin; crossover keeps its probability.

Every draw comes from an RNG seeded by (run seed, generation), and each plan has its own RNG
seeded by (run seed, generation, child index), so a resumed run re-derives the same plans.
``plan_child`` is the steady-state mode's plan of one child, drawn from the population as it
stands, with the same rules.

``[evolution] mate_choice`` other than ``"tournament"`` (see ``mate_choice.py``; ``mates`` gives
the run's code distances and genes): when a pair crosses over, the first parent's partner is drawn
by mate choice from the tournament winners (a pair of the same variant may then cross too), and
with ``"self_adaptive"`` every plan carries its child's ``mating_preference``, drawn after the
child's other draws. With ``"tournament"`` the draws are GE's, number for number.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.mate_choice import MateChoice, Mates, mate_choice
from guided_evolution.evolution.scoring import ObjectiveSpec, Scored, better_somewhere
from guided_evolution.evolution.selection import (
    HallOfFame,
    dcd_parents,
    nsga2_parents,
    spea2_elites,
)


@dataclass(frozen=True)
class Step:
    """One operator application in a child's plan."""

    op: str  # 'mutation' | 'crossover' | 'eot'
    # The crossover partner, or the EoT elite; of a mutation, the teacher the bandit may choose
    # EoT with (only with the bandit on, see EOT_BY_BANDIT).
    other: str | None = None


EOT_BY_BANDIT = "bandit"  # plan ``eot``: the proposer's bandit chooses EoT, not the coin


@dataclass(frozen=True)
class Plan:
    """How one child of a generation is made: a parent and the operators applied in order."""

    generation: int
    index: int
    parent: str
    steps: tuple[Step, ...]
    island: int = 0  # the island the child is born on ([evolution] islands > 1)
    mating_preference: float | None = None  # its gene (mate_choice = "self_adaptive")

    @property
    def parents(self) -> tuple[str, ...]:
        partners = [s.other for s in self.steps if s.op == "crossover" and s.other]
        return (self.parent, *partners)

    def rng(self, seed: int) -> random.Random:
        """The child's own RNG: the same plan always draws the same numbers."""
        return random.Random(f"ge:{seed}:{self.generation}:{self.index}")

    def fix_rng(self, seed: int) -> random.Random:
        """The RNG of the fix attempts that follow this plan's child."""
        return random.Random(f"ge:{seed}:{self.generation}:{self.index}:fix")


@dataclass(frozen=True)
class GenerationPlan:
    """The children to make in one generation and the elites carried over into the next."""

    plans: list[Plan]
    elites: list[str]


def dedup(ids: Sequence[str]) -> list[str]:
    """``ids`` in order, each once."""
    return list(dict.fromkeys(ids))


def eot_teachers(
    elites: Sequence[Scored], seed: Scored | None, objectives: Sequence[ObjectiveSpec]
) -> list[str]:
    """The elites better than the seed on at least one objective, in order.

    EoT learns from an elite's change to the seed, so the elite must have measured better than the
    seed on some objective (what the EoT prompt tells the model); the seed itself and elites that
    merely tie with it have nothing to teach.
    """
    if seed is None:
        return []
    return [e.id for e in elites if e.id != seed.id and better_somewhere(e, seed, objectives)]


def spea2_teachers(
    population: Sequence[Scored], seed_id: str, pool: int, objectives: Sequence[ObjectiveSpec]
) -> list[str]:
    """The GE paper's EoT teachers: the SPEA2 top ``pool`` of the population, less the seed itself
    (it has no change to teach); whether a teacher beat the seed is not asked."""
    top = spea2_elites(population, min(pool, len(population)), objectives)
    return [s.id for s in top if s.id != seed_id]


def plan_generation(
    generation: int,
    population: Sequence[Scored],
    seed: Scored | None,
    seed_id: str,
    evo: EvolutionConfig,
    objectives: Sequence[ObjectiveSpec],
    *,
    eot: bool | str = True,
    island: int = 0,
    first_index: int = 0,
    mates: Mates | None = None,
) -> GenerationPlan:
    """Plans for ``generation`` from the valid members of the previous ``population``.

    ``seed`` is the seed's score (None when it has none); it stands in for an empty population.
    ``eot`` is False when the proposer cannot do Evolution of Thought (the offline operators), and
    EOT_BY_BANDIT when its bandit chooses EoT (mutation steps carry a teacher where EoT is possible).
    ``island`` (> 0: its own RNG stream) is stamped on every plan; plans are numbered from
    ``first_index`` (an island's plans follow the earlier islands' in the generation). ``mates``
    (needed unless ``mate_choice = "tournament"``) gives code distances and genes.
    """
    rng = random.Random(f"ge:{evo.seed}:{generation}:plan" + (f":{island}" if island else ""))
    mating = mate_choice(evo.mate_choice, mates, evo.mate_strength, evo.mating_sigma)
    if generation == 0:
        plans = [
            Plan(0, first_index + i, seed_id, (Step("mutation"),), island, _gene(mating, (), rng))
            for i in range(evo.initial_population)
        ]
        return GenerationPlan(plans, [])
    valid = list(population) or ([seed] if seed is not None else [])
    elites = [s.id for s in spea2_elites(valid, min(evo.elites, len(valid)), objectives)]
    tournament = dcd_parents if evo.parent_tournament == "dcd" else nsga2_parents
    parents = [s.id for s in tournament(valid, evo.population, objectives, rng)]
    if evo.eot_teachers == "spea2_top":
        teachers = spea2_teachers(valid, seed_id, evo.eot_teacher_pool, objectives)
    else:
        elite_ids = set(elites)
        teachers = eot_teachers([s for s in valid if s.id in elite_ids], seed, objectives)
    eot_on = bool(eot) and generation >= evo.eot_start_generation and bool(teachers)
    by_bandit = eot_on and eot == EOT_BY_BANDIT and evo.eot_probability > 0

    def mutate_step() -> Step | None:
        if rng.random() >= evo.mutation_probability:
            return None
        if by_bandit:
            return Step("mutation", rng.choice(teachers))
        if eot_on and rng.random() < evo.eot_probability:
            return Step("eot", rng.choice(teachers))
        return Step("mutation")

    plans: list[Plan] = []
    for i in range(0, len(parents) - 1, 2):
        a, b = parents[i], parents[i + 1]
        if mating is None:
            crossed = a != b and rng.random() < evo.crossover_probability
        elif rng.random() < evo.crossover_probability:
            chosen = mating.partner(a, parents, rng)
            crossed, b = chosen is not None, chosen or b
        else:
            crossed = False
        for primary, partner in ((a, b), (b, a)):
            steps = [Step("crossover", partner)] if crossed else []
            mut = mutate_step()
            if mut is not None:
                steps.append(mut)
            if steps:
                gene = _gene(mating, (primary, partner) if crossed else (primary,), rng)
                index = first_index + len(plans)
                plans.append(Plan(generation, index, primary, tuple(steps), island, gene))
    if len(parents) % 2:
        mut = mutate_step() or Step("mutation")
        gene = _gene(mating, (parents[-1],), rng)
        plans.append(Plan(generation, first_index + len(plans), parents[-1], (mut,), island, gene))
    return GenerationPlan(plans, elites)


def _gene(mating: MateChoice | None, parents: tuple[str, ...], rng: random.Random) -> float | None:
    """The child's mating preference (self-adaptive mate choice only; no draw otherwise)."""
    return None if mating is None else mating.gene(parents, rng)


def plan_child(
    generation: int,
    index: int,
    population: Sequence[Scored],
    seed: Scored | None,
    seed_id: str,
    evo: EvolutionConfig,
    objectives: Sequence[ObjectiveSpec],
    *,
    eot: bool | str = True,
    mates: Mates | None = None,
) -> Plan | None:
    """The steady-state mode's plan of child ``index`` of virtual ``generation``, drawn from the
    ``population`` as it stands (the SPEA2 archive and the children evaluated since); None when
    the child draws neither crossover nor mutation (a clone, dropped as in ``plan_generation``).

    The same rules as a generation's plan, per child: generation 0 mutates the seed; later, an
    NSGA-II (or ``dcd``) tournament over the population picks the parent and, with
    ``crossover_probability``, a partner; then the mutation, EoT, teacher and start-generation
    rules of ``plan_generation``. Every draw comes from an RNG seeded by (run seed, generation,
    index), so a child planned from the same population is always the same plan.

    With mate choice, a crossover's partner is drawn by it from ``population`` more tournament
    winners (drawn for this child only when it crosses over).
    """
    rng = random.Random(f"ge:{evo.seed}:{generation}:{index}:steady")
    mating = mate_choice(evo.mate_choice, mates, evo.mate_strength, evo.mating_sigma)
    if generation == 0:
        return Plan(0, index, seed_id, (Step("mutation"),), 0, _gene(mating, (), rng))
    valid = list(population) or ([seed] if seed is not None else [])
    if not valid:
        return Plan(generation, index, seed_id, (Step("mutation"),), 0, _gene(mating, (), rng))
    tournament = dcd_parents if evo.parent_tournament == "dcd" else nsga2_parents
    parent, partner = (s.id for s in tournament(valid, 2, objectives, rng))
    steps: list[Step] = []
    if mating is None:
        if parent != partner and rng.random() < evo.crossover_probability:
            steps.append(Step("crossover", partner))
    elif rng.random() < evo.crossover_probability:
        pool = [s.id for s in tournament(valid, evo.population, objectives, rng)]
        chosen = mating.partner(parent, pool, rng)
        if chosen is not None:
            steps.append(Step("crossover", chosen))
    if rng.random() < evo.mutation_probability:
        # Drawn before the teachers are known, so that SPEA2 runs only for the EoT children.
        wants_eot = bool(eot) and generation >= evo.eot_start_generation
        by_bandit = wants_eot and eot == EOT_BY_BANDIT and evo.eot_probability > 0
        wants_eot = by_bandit or (wants_eot and rng.random() < evo.eot_probability)
        teachers = _teachers(valid, seed, seed_id, evo, objectives) if wants_eot else []
        op = "mutation" if by_bandit else "eot"
        steps.append(Step(op, rng.choice(teachers)) if teachers else Step("mutation"))
    if not steps:
        return None
    partners = [s.other for s in steps if s.op == "crossover" and s.other]
    gene = _gene(mating, (parent, *partners), rng)
    return Plan(generation, index, parent, tuple(steps), 0, gene)


def _teachers(
    valid: Sequence[Scored],
    seed: Scored | None,
    seed_id: str,
    evo: EvolutionConfig,
    objectives: Sequence[ObjectiveSpec],
) -> list[str]:
    """EoT teachers of a population: as in ``plan_generation`` (its SPEA2 elites that beat the
    seed, or the paper's SPEA2 top ``eot_teacher_pool``)."""
    if evo.eot_teachers == "spea2_top":
        return spea2_teachers(valid, seed_id, evo.eot_teacher_pool, objectives)
    elite_ids = {s.id for s in spea2_elites(valid, min(evo.elites, len(valid)), objectives)}
    return eot_teachers([s for s in valid if s.id in elite_ids], seed, objectives)


def hall_of_fame(
    candidates: Sequence[Scored], size: int, objectives: Sequence[ObjectiveSpec]
) -> list[str]:
    """The Pareto hall of fame after a generation: ids of the best ``size`` of ``candidates`` (the
    previous hall of fame and the new population, each variant once)."""
    hof = HallOfFame(size, objectives)
    hof.update(list(candidates))
    return [s.id for s in hof.items]
