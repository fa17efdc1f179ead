"""What a closed generation leaves behind, in both modes. Pure: the engine reads the scores and
writes the checkpoint; this module only decides.

Generational mode (:func:`close_generation`): each island's next population (its elites, the
children carried over from the previous generation's tail, then its own children; the seed alone
after generation 0), the run's population, the Pareto hall of fame, and the migration that
follows the generation (``evolution.islands.count``).

Steady mode (:class:`VirtualGenerations`): the virtual generations open at once, how many draws
each took and which plans are still unresolved, which generation may close (in order, once all
its plans are drawn and resolved), the population new children are drawn from (the SPEA2 archive
of the last closed generation plus every child evaluated ok since), and what a closed virtual
generation records (:func:`close_virtual`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.islands import Move, migrate, migrates_after
from guided_evolution.evolution.plan import dedup, hall_of_fame
from guided_evolution.evolution.scoring import ObjectiveSpec, Scored
from guided_evolution.evolution.selection import spea2_elites

Score = Callable[[Sequence[str]], list[Scored]]
"""The selectable members of some ids, in order (the engine's read of their evaluations)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Closed:
    """A closed generation: its checkpoint's fields and the migration that followed it."""

    population: list[str]  # every island's members before migration, each once
    elites: list[str]
    hall_of_fame: list[str]
    islands: list[list[str]]  # each island's population after migration
    moves: list[Move]


def next_islands(
    generation: int,
    seed_id: str,
    elites: Sequence[Sequence[str]],
    carried: Sequence[tuple[int, str]],
    children: Sequence[tuple[int, str]],
) -> list[list[str]]:
    """Each island's population after ``generation``: its elites and the previous generation's
    late children that landed on it (the seed alone after generation 0), then its children.
    ``carried`` and ``children`` are (island, variant) pairs in plan order."""
    return [
        dedup([
            *([*kept, *(v for k, v in carried if k == island)] if generation > 0 else [seed_id]),
            *(v for k, v in children if k == island),
        ])
        for island, kept in enumerate(elites)
    ]  # fmt: skip


def close_generation(
    generation: int,
    seed_id: str,
    elites: Sequence[Sequence[str]],
    carried: Sequence[tuple[int, str]],
    children: Sequence[tuple[int, str]],
    hof: Sequence[str],
    score: Score,
    evo: EvolutionConfig,
    objectives: Sequence[ObjectiveSpec],
) -> Closed:
    """The checkpoint of a generational generation (see :func:`next_islands`), its hall of fame
    (the best of the previous one and the new population), and its migration."""
    islands = next_islands(generation, seed_id, elites, carried, children)
    population = dedup([v for members in islands for v in members])
    fame = hall_of_fame(score(dedup([*hof, *population])), evo.hall_of_fame, objectives)
    moves: list[Move] = []
    if migrates_after(generation, evo):
        islands, moves = migrate(
            islands, [score(members) for members in islands], evo, objectives, generation
        )
    kept = dedup([e for island in elites for e in island])
    return Closed(population, kept, fame, islands, moves)


def archive(
    population: Sequence[Scored], seed: Scored | None, size: int, objectives: Sequence[ObjectiveSpec]
) -> list[str]:
    """Steady mode's archive: the SPEA2 ``size`` best of ``population``'s selectable members (the
    seed when none is selectable)."""
    valid = list(population)
    if not valid and seed is not None:
        valid = [seed]
    return [s.id for s in spea2_elites(valid, min(size, len(valid)), objectives)]


@dataclass
class VirtualGeneration(Generic[T]):
    """One virtual generation of steady mode while it is open."""

    number: int
    size: int  # draws it takes
    archive: list[str]  # the elites it started from (its record's ``elites``)
    drawn: int = 0
    open: int = 0  # plans drawn and not resolved yet
    outcomes: list[T] = field(default_factory=list)


class VirtualGenerations(Generic[T]):
    """Steady mode's open virtual generations, numbered from ``closing`` (the next to close);
    ``T`` is what the engine keeps of a resolved plan."""

    def __init__(self, evo: EvolutionConfig, start: int, archive: list[str]) -> None:
        self.evo = evo
        self.closing = start
        self.open: dict[int, VirtualGeneration[T]] = {}
        self.fresh: list[tuple[int, str]] = []  # (generation, id): evaluated ok since the archive
        self.get(start).archive = archive

    def size(self, generation: int) -> int:
        return self.evo.initial_population if generation == 0 else self.evo.population

    def get(self, generation: int) -> VirtualGeneration[T]:
        """The virtual generation ``generation`` (opened when it is not yet)."""
        if generation not in self.open:
            self.open[generation] = VirtualGeneration(generation, self.size(generation), [])
        return self.open[generation]

    def drew(self, gen: VirtualGeneration[T], made_plan: bool) -> None:
        gen.drawn += 1
        if made_plan:
            gen.open += 1

    def resolved(self, generation: int, outcome: T, evaluated_ok: str | None) -> None:
        """A plan of ``generation`` is resolved (``evaluated_ok``: its child, evaluated ok)."""
        gen = self.open[generation]
        gen.outcomes.append(outcome)
        gen.open -= 1
        if evaluated_ok is not None:
            self.fresh.append((generation, evaluated_ok))

    def population_ids(self, seed_id: str) -> list[str]:
        """The ids new children are drawn from: the archive of the last closed generation (the
        seed before generation 0 closed) plus the children evaluated ok since."""
        kept = self.open[self.closing].archive if self.closing in self.open else []
        if self.closing == 0:
            kept = [seed_id]
        return dedup([*kept, *(vid for _, vid in self.fresh)])

    def ready(self, force: bool = False) -> VirtualGeneration[T] | None:
        """The next generation to close: all its plans drawn and resolved (``force``: also one
        cut short by the budget or the end of the loop, if it drew any); None if it may not."""
        gen = self.open.get(self.closing)
        if gen is None or gen.open or (gen.drawn < gen.size and not force):
            return None
        if gen.drawn == 0 and force:
            return None
        return gen

    def closed(self, gen: VirtualGeneration[T], next_archive: list[str]) -> None:
        """``gen`` is checkpointed: the next one draws from ``next_archive``."""
        self.get(gen.number + 1).archive = next_archive
        self.fresh = [(g, vid) for g, vid in self.fresh if g > gen.number]
        del self.open[gen.number]
        self.closing = gen.number + 1


def close_virtual(
    gen: VirtualGeneration[T],
    children: Sequence[str],
    seed_id: str,
    hof: Sequence[str],
    score: Score,
    evo: EvolutionConfig,
    objectives: Sequence[ObjectiveSpec],
) -> tuple[list[str], list[str]]:
    """A closed virtual generation's population (the archive it started from, the seed for
    generation 0, then its children in plan order) and the new hall of fame."""
    head = gen.archive if gen.number > 0 else [seed_id]
    population = dedup([*head, *children])
    fame = hall_of_fame(score(dedup([*hof, *population])), evo.hall_of_fame, objectives)
    return population, fame
