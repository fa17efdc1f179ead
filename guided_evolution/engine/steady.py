"""The steady-state mode (``[evolution] mode = "steady"``): no generation barrier.

A new child is planned (``plan.plan_child``) whenever a place frees for one (an LLM call ended in
a child that now holds an evaluation slot, or in a rejection), from the population as it stands:
the SPEA2 archive of the last closed generation plus every child evaluated since. Children are
numbered in virtual generations of ``population`` (generation 0: ``initial_population``
mutations of the seed). A virtual generation closes once all its plans are resolved and the one
before it closed; it is then recorded exactly as a generation of the generational mode
(``GenerationRecord``: the archive it started from plus its children, the elites, the hall of
fame; the metrics notes; ``generation_started``/``generation_finished`` events), and its SPEA2
elites become the archive the later children are drawn from.

Crash safety: each draw is stored as a ``child_planned`` event before its first LLM call, so a
resumed run replays the plans drawn after the last closed generation (their replies come from the
cache, their variants are found, and only children without a result are evaluated) before it
draws new ones. Which plans are drawn depends on the order in which evaluations end, so two runs
are the same run only where that order is the same (one slot, or evaluations of fixed duration).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guided_evolution.engine.outcome import Outcome
from guided_evolution.evolution.plan import Plan, Step, dedup, hall_of_fame, plan_child
from guided_evolution.evolution.scoring import Scored
from guided_evolution.evolution.selection import spea2_elites
from guided_evolution.runstore.records import GenerationRecord

if TYPE_CHECKING:
    from guided_evolution.engine.driver import Engine

PLANNED = "child_planned"  # the event that stores one draw (steps empty: no child)


@dataclass
class _Generation:
    """One virtual generation while it is open."""

    number: int
    size: int  # draws it takes
    archive: list[str]  # the elites it started from (its record's ``elites``)
    drawn: int = 0
    open: int = 0  # plans drawn and not resolved yet
    outcomes: list[Outcome] = field(default_factory=list)


def plan_event(generation: int, index: int, plan: Plan | None) -> dict[str, Any]:
    """The ``child_planned`` event of one draw (its gene too, under self-adaptive mate choice)."""
    data: dict[str, Any] = {
        "generation": generation,
        "index": index,
        "parent": plan.parent if plan else None,
        "steps": [[s.op, s.other] for s in plan.steps] if plan else [],
    }
    if plan is not None and plan.mating_preference is not None:
        data["mating_preference"] = plan.mating_preference
    return data


def plan_from_event(data: dict[str, Any]) -> Plan | None:
    """The plan a ``child_planned`` event stored (None: the draw made no child)."""
    if not data.get("steps"):
        return None
    steps = tuple(Step(op, other) for op, other in data["steps"])
    gene = data.get("mating_preference")
    return Plan(
        int(data["generation"]),
        int(data["index"]),
        str(data["parent"]),
        steps,
        mating_preference=float(gene) if isinstance(gene, (int, float)) else None,
    )


class SteadyLoop:
    """Draws, runs and checkpoints the children of a steady-state run (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.evo = engine.evo
        self.index = engine.index
        self.recorder = engine.recorder
        self.hof: list[str] = []
        self.gens: dict[int, _Generation] = {}
        self.closing = 0  # the next generation to close
        self.fresh: list[tuple[int, str]] = []  # (generation, id): evaluated ok since the archive
        self.scores: dict[str, Scored | None] = {}
        self.failure: BaseException | None = None
        seed = self.recorder.scored([engine.seed_id])
        self.seed = seed[0] if seed else None

    def size(self, generation: int) -> int:
        return self.evo.initial_population if generation == 0 else self.evo.population

    # ----------------------------------------------------------------- the loop

    async def run(self, start: int, population: list[str], hof: list[str]) -> None:
        """Run virtual generations ``start`` .. ``evolution.generations`` from the checkpoint
        of ``start - 1`` (its population and hall of fame)."""
        self.hof = hof
        self.closing = start
        archive = self._archive(population) if start > 0 else []
        self.gens[start] = _Generation(start, self.size(start), archive)
        tasks: set[asyncio.Task[None]] = set()
        try:
            for gen, stored in self._draws(start):
                await self.engine.pending.acquire()
                if self.failure is not None or self.engine.proposer.budget_reached():
                    self.engine.pending.release()
                    break
                self._started(gen)
                plan = self._draw(gen, stored)
                if plan is None:
                    self.engine.pending.release()
                    self._close_ready()
                    continue
                task = asyncio.create_task(self._child(plan))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks and self.failure is None:
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
            if self.failure is not None:
                raise self.failure
            self._close_ready(force=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _draws(self, start: int) -> Iterator[tuple[_Generation, dict[str, Any] | None]]:
        """(generation, the draw stored before a kill or None) per draw to make, in order; the
        loop's ``_draw`` advances ``drawn``."""
        stored = {}
        for event in self.index.events(PLANNED):
            key = (int(event.data["generation"]), int(event.data["index"]))
            if key[0] >= start:
                stored[key] = event.data
        for generation in range(start, self.evo.generations + 1):
            gen = self.gens.setdefault(
                generation, _Generation(generation, self.size(generation), [])
            )
            while gen.drawn < gen.size:
                yield gen, stored.get((generation, gen.drawn))

    def _started(self, gen: _Generation) -> None:
        if gen.drawn == 0:
            self.engine.generation = gen.number
            self.index.add_event(
                "generation_started",
                {"generation": gen.number, "plans": gen.size, "mode": "steady"},
            )
            self.engine.progress.generation(gen.number, self.evo.generations, gen.size)

    def _draw(self, gen: _Generation, stored: dict[str, Any] | None) -> Plan | None:
        """Child ``gen.drawn``: the plan stored before a kill, or a new draw from the population
        as it stands (stored before anything is asked of the LLM)."""
        if stored is not None:
            plan = plan_from_event(stored)
        else:
            plan = plan_child(
                gen.number, gen.drawn, self._population(), self.seed, self.engine.seed_id,
                self.evo, self.recorder.objectives, eot=self.engine.proposer.supports_eot,
                mates=self.engine.mates,
            )  # fmt: skip
            self.index.add_event(PLANNED, plan_event(gen.number, gen.drawn, plan))
        gen.drawn += 1
        if plan is not None:
            gen.open += 1
        return plan

    async def _child(self, plan: Plan) -> None:
        try:
            outcome = await self.engine.run_held(plan)
            gen = self.gens[plan.generation]
            gen.outcomes.append(outcome)
            gen.open -= 1
            if outcome.ok and outcome.variant is not None:
                self.fresh.append((plan.generation, outcome.variant))
            self._close_ready()
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # RunStopped, a stopped generation, damage: stop drawing
            if self.failure is None:
                self.failure = err
            self.engine.pending.release()  # wake the draw loop, which then stops

    # ----------------------------------------------------------------- the population

    def _score(self, vid: str) -> Scored | None:
        if vid not in self.scores:
            found = self.recorder.scored([vid])
            self.scores[vid] = found[0] if found else None
        return self.scores[vid]

    def _population(self) -> list[Scored]:
        """The archive of the last closed generation plus the children evaluated since."""
        archive = self.gens[self.closing].archive if self.closing in self.gens else []
        if self.closing == 0:
            archive = [self.engine.seed_id]
        ids = dedup([*archive, *(vid for _, vid in self.fresh)])
        return [s for s in map(self._score, ids) if s is not None]

    def _archive(self, population: list[str]) -> list[str]:
        valid = [s for s in map(self._score, population) if s is not None]
        if not valid and self.seed is not None:
            valid = [self.seed]
        chosen = spea2_elites(valid, min(self.evo.elites, len(valid)), self.recorder.objectives)
        return [s.id for s in chosen]

    # ----------------------------------------------------------------- checkpoints

    def _close_ready(self, force: bool = False) -> None:
        """Close every generation, in order, whose plans are all drawn and resolved (``force``:
        also one cut short by the budget or the end of the loop)."""
        while self.closing in self.gens:
            gen = self.gens[self.closing]
            if gen.open or (gen.drawn < gen.size and not force):
                return
            if gen.drawn == 0 and force:
                return
            self._close(gen)

    def _close(self, gen: _Generation) -> None:
        engine = self.engine
        engine.end_generation(gen.number, gen.outcomes)
        engine.proposer.start_generation()
        children = [
            o.variant for o in sorted(gen.outcomes, key=lambda o: o.plan.index) if o.variant
        ]
        head = gen.archive if gen.number > 0 else [engine.seed_id]
        population = dedup([*head, *children])
        candidates = [s for s in map(self._score, dedup([*self.hof, *population])) if s]
        self.hof = hall_of_fame(candidates, self.evo.hall_of_fame, self.recorder.objectives)
        self.recorder.flush_notes()
        self.index.save_generation(GenerationRecord(gen.number, population, gen.archive, self.hof))
        self.index.add_event(
            "generation_finished", {"generation": gen.number, "children": len(children)}
        )
        self.recorder.compact(force=False)
        nxt = gen.number + 1
        self.gens.setdefault(nxt, _Generation(nxt, self.size(nxt), []))
        self.gens[nxt].archive = self._archive(population)
        self.fresh = [(g, vid) for g, vid in self.fresh if g > gen.number]
        del self.gens[gen.number]
        self.closing = nxt
