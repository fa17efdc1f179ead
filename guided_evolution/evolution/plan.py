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

With the bandit on (``[llm.bandit]``, an LLM run: ``eot=EOT_BY_BANDIT``), a mutation step where EoT
is possible (``eot_probability > 0``, from ``eot_start_generation``, with teachers) is
``Step("mutation", teacher)``: the proposer's bandit chooses mutation (with a persona) or EoT (with
that teacher) instead of the ``eot_probability`` coin; crossover keeps its probability.

Every draw comes from an RNG seeded by (run seed, generation), and each plan has its own RNG
seeded by (run seed, generation, child index), so a resumed run re-derives the same plans.
``plan_child`` is the steady-state mode's plan of one child, drawn from the population as it
stands, with the same rules.

``[evolution] mate_choice`` other than ``"tournament"`` (see ``mate_choice.py``; ``mates`` gives
the run's code distances and genes) changes only who the partner is: when a pair (A, B) crosses
over, both still reproduce as primary parents, A with the mate A chooses from the tournament
winners and B with the mate B chooses (a pair of the same variant may then cross too); with
``"self_adaptive"`` every plan carries its child's ``mating_preference``, drawn after the child's
other draws. With ``"tournament"`` the draws are GE's, number for number.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.mate_choice import MateChoice, Mates, mate_choice
from guided_evolution.evolution.operators import registry
from guided_evolution.evolution.operators.spec import PAIR, OperatorSpec
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

    op: str  # a registered operator's name: the base ('mutation'), the pair ('crossover') or an
    # alternative ('eot', ...); an offline proposer makes each with its counterpart
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
    island: int = 0  # the island the child is born on ([evolution.islands] count > 1)
    mating_preference: float | None = (
        None  # its gene ([evolution.mate_choice] kind = "self_adaptive")
    )

    @property
    def parents(self) -> tuple[str, ...]:
        partners = [s.other for s in self.steps if registry.spec(s.op).role == PAIR and s.other]
        return (self.parent, *partners)

    @property
    def llm_calls(self) -> int:
        """The LLM calls its steps make (EoT: two), for the driver's start order."""
        return sum(registry.llm_calls(s.op) for s in self.steps)

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
    ``eot`` is False when the proposer makes only the base operators (the offline operators: no
    EoT, no other alternative), and EOT_BY_BANDIT when its bandit chooses EoT (mutation steps carry
    a teacher where EoT is possible). ``island`` (> 0: its own RNG stream) is stamped on every
    plan; plans are numbered from ``first_index`` (an island's plans follow the earlier islands'
    in the generation). ``mates`` (needed unless ``[evolution.mate_choice] kind = "tournament"``) gives code
    distances and genes.
    """
    rng = random.Random(f"ge:{evo.seed}:{generation}:plan" + (f":{island}" if island else ""))
    mating = mate_choice(
        evo.mate_choice.kind, mates, evo.mate_choice.strength, evo.mate_choice.sigma
    )
    if generation == 0:
        plans = [
            Plan(0, first_index + i, seed_id, _first_steps(), island, _gene(mating, (), rng))
            for i in range(evo.initial_population)
        ]
        return GenerationPlan(plans, [])
    valid = list(population) or ([seed] if seed is not None else [])
    elites = [s.id for s in spea2_elites(valid, min(evo.elites, len(valid)), objectives)]
    tournament = dcd_parents if evo.parent_tournament == "dcd" else nsga2_parents
    parents = [s.id for s in tournament(valid, evo.population, objectives, rng)]
    # Teachers known before the coin: a generation without teachers draws no EoT coin.
    teachers = _Teachers(lambda: _teachers(valid, seed, seed_id, evo, objectives), first=True)
    draws = _Draws(evo, generation, eot, teachers)
    plans: list[Plan] = []
    for i in range(0, len(parents) - 1, 2):
        a, b = parents[i], parents[i + 1]
        crossed = _crosses(rng, draws, a, b, mating)
        for primary, other in ((a, b), (b, a)):
            partner = _partner(rng, primary, other, lambda: parents, mating) if crossed else None
            index = first_index + len(plans)
            plan = _child(rng, draws, index, island, primary, partner, mating)
            if plan is not None:
                plans.append(plan)
    if len(parents) % 2:
        single = _single_step(rng, draws) or Step(registry.base().name)
        gene = _gene(mating, (parents[-1],), rng)
        index = first_index + len(plans)
        plans.append(Plan(generation, index, parents[-1], (single,), island, gene))
    return GenerationPlan(plans, elites)


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

    The same rules as a generation's plan, per child (the same code draws the steps): generation
    0 mutates the seed; later, an NSGA-II (or ``dcd``) tournament over the population picks the
    parent and, with ``crossover_probability``, a partner; then the mutation, EoT, teacher and
    start-generation rules of ``plan_generation``, except that the EoT coin is drawn before the
    teachers are known (so that SPEA2 runs only for the EoT children). Every draw comes from an
    RNG seeded by (run seed, generation, index), so a child planned from the same population is
    always the same plan.

    With mate choice, a crossover's partner is drawn by it from ``population`` more tournament
    winners (drawn for this child only when it crosses over).
    """
    rng = random.Random(f"ge:{evo.seed}:{generation}:{index}:steady")
    mating = mate_choice(
        evo.mate_choice.kind, mates, evo.mate_choice.strength, evo.mate_choice.sigma
    )
    valid = list(population) or ([seed] if seed is not None else [])
    if generation == 0 or not valid:
        return Plan(generation, index, seed_id, _first_steps(), 0, _gene(mating, (), rng))
    tournament = dcd_parents if evo.parent_tournament == "dcd" else nsga2_parents
    parent, candidate = (s.id for s in tournament(valid, 2, objectives, rng))

    def pool() -> list[str]:
        return [s.id for s in tournament(valid, evo.population, objectives, rng)]

    teachers = _Teachers(lambda: _teachers(valid, seed, seed_id, evo, objectives), first=False)
    draws = _Draws(evo, generation, eot, teachers)
    crosses = _crosses(rng, draws, parent, candidate, mating)
    partner = _partner(rng, parent, candidate, pool, mating) if crosses else None
    return _child(rng, draws, index, 0, parent, partner, mating)


class _Teachers:
    """A population's EoT teachers, found at most once: ``first`` before the EoT coin (a
    generation's plan: no teachers, no coin), else only once a coin says EoT."""

    def __init__(self, find: Callable[[], list[str]], first: bool) -> None:
        self._find = find
        self._found: list[str] | None = None
        self.first = first

    def get(self) -> list[str]:
        if self._found is None:
            self._found = self._find()
        return self._found

    def allow_coin(self) -> bool:
        """Whether a teacher's coin is drawn: not when the teachers come first and are none."""
        return not self.first or bool(self.get())


@dataclass(frozen=True)
class _Draws:
    """What a child's step draws depend on besides the RNG."""

    evo: EvolutionConfig
    generation: int
    eot: bool | str  # the proposer's supports_eot (see plan_generation)
    teachers: _Teachers


def _first_steps() -> tuple[Step, ...]:
    """Generation 0 (or an empty population): a mutation of the seed, nothing drawn."""
    return (Step(registry.base().name),)


def _crosses(
    rng: random.Random, draws: _Draws, parent: str, candidate: str, mating: MateChoice | None
) -> bool:
    """Whether ``parent`` crosses over, with the pair operator's probability: never with itself
    as the tournament's ``candidate`` (no coin then), unless mate choice picks its partner."""
    probability = _probability(registry.pair(), draws.evo)
    if mating is None and parent == candidate:
        return False
    return rng.random() < probability


def _partner(
    rng: random.Random,
    parent: str,
    candidate: str,
    pool: Callable[[], list[str]],
    mating: MateChoice | None,
) -> str | None:
    """A crossing ``parent``'s partner: the tournament's ``candidate``, or with mate choice the
    mate ``parent`` chooses from ``pool()`` (None: no other candidate, no crossover). Only the
    partner role changes: ``parent`` stays the child's primary parent."""
    if mating is None:
        return candidate
    return mating.partner(parent, pool(), rng)


def _child(
    rng: random.Random,
    draws: _Draws,
    index: int,
    island: int,
    parent: str,
    partner: str | None,
    mating: MateChoice | None,
) -> Plan | None:
    """One child's plan: the crossover with ``partner`` (if any), then the single-parent step
    drawn; None when it has neither (a clone, dropped)."""
    steps = [Step(registry.pair().name, partner)] if partner is not None else []
    single = _single_step(rng, draws)
    if single is not None:
        steps.append(single)
    if not steps:
        return None
    gene = _gene(mating, (parent, partner) if partner is not None else (parent,), rng)
    return Plan(draws.generation, index, parent, tuple(steps), island, gene)


def _single_step(rng: random.Random, draws: _Draws) -> Step | None:
    """The step on one parent (None: the child is not mutated, with the base operator's
    probability): a mutation, or a registered alternative drawn in its place, each in registry
    order from its start generation with its probability (one that learns from a teacher only
    with teachers; with the bandit choosing EoT, a mutation that carries the teacher)."""
    evo, base = draws.evo, registry.base()
    if rng.random() >= _probability(base, evo):
        return None
    if not draws.eot:
        return Step(base.name)
    for alt in registry.alternatives():
        if draws.generation < alt.start_generation(evo):
            continue
        if alt.teacher and not draws.teachers.allow_coin():
            continue
        probability = _probability(alt, evo)
        if alt.teacher and draws.eot == EOT_BY_BANDIT and probability > 0:
            return _taught(base.name, draws.teachers.get(), rng)
        if rng.random() < probability:
            return _taught(alt.name, draws.teachers.get(), rng) if alt.teacher else Step(alt.name)
    return Step(base.name)


def _taught(op: str, teachers: list[str], rng: random.Random) -> Step:
    """A step of ``op`` with a teacher drawn; a plain mutation when there is none."""
    return Step(op, rng.choice(teachers)) if teachers else Step(registry.base().name)


def _probability(spec: OperatorSpec, evo: EvolutionConfig) -> float:
    if spec.probability is None:
        raise ValueError(f"the plan draws the {spec.name} operator, which has no probability")
    return spec.probability(evo)


def _gene(mating: MateChoice | None, parents: tuple[str, ...], rng: random.Random) -> float | None:
    """The child's mating preference (self-adaptive mate choice only; no draw otherwise)."""
    return None if mating is None else mating.gene(parents, rng)


def _teachers(
    valid: Sequence[Scored],
    seed: Scored | None,
    seed_id: str,
    evo: EvolutionConfig,
    objectives: Sequence[ObjectiveSpec],
) -> list[str]:
    """EoT teachers of a population: its SPEA2 elites that beat the seed, or the paper's SPEA2
    top ``eot_teacher_pool``."""
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
