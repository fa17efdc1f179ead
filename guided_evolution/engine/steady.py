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
from typing import Any

from guided_evolution.engine.outcome import Outcome
from guided_evolution.engine.scheduler import Scheduler
from guided_evolution.engine.stopping import StopRules
from guided_evolution.evolution.generations import (
    VirtualGeneration,
    VirtualGenerations,
    archive,
    close_virtual,
)
from guided_evolution.evolution.plan import Plan, Step, plan_child
from guided_evolution.evolution.scoring import Scored
from guided_evolution.runstore.measures import Measurer
from guided_evolution.runstore.records import GenerationRecord

PLANNED = "child_planned"  # the event that stores one draw (steps empty: no child)
_Generation = VirtualGeneration[Outcome]


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
    """Draws, runs and checkpoints the children of a steady-state run (see the module) over
    one scheduler; which generation closes when is ``evolution.generations``' bookkeeping."""

    def __init__(self, scheduler: Scheduler, stops: StopRules) -> None:
        self.scheduler = scheduler
        self.stops = stops
        self.parts = scheduler.parts
        self.evo = scheduler.evo
        self.index = self.parts.index
        self.reader = self.parts.reader
        self.measurer = Measurer(self.parts.recorder.store, self.index, self.parts.resolved.config)
        self.hof: list[str] = []
        self.book: VirtualGenerations[Outcome] = VirtualGenerations(self.evo, 0, [])
        self.scores: dict[str, Scored | None] = {}
        self.failure: BaseException | None = None
        seed = self.reader.scored([self.parts.seed_id])
        self.seed = seed[0] if seed else None

    # ----------------------------------------------------------------- the loop

    async def run(self, start: int, population: list[str], hof: list[str]) -> None:
        """Run virtual generations ``start`` .. ``evolution.generations`` from the checkpoint
        of ``start - 1`` (its population and hall of fame)."""
        self.hof = hof
        self.scheduler.generation = max(start - 1, 0)  # the last one made, until `start` begins
        first = self._archive(population) if start > 0 else []
        self.book = VirtualGenerations(self.evo, start, first)
        pending = self.scheduler.pending
        tasks: set[asyncio.Task[None]] = set()
        try:
            for gen, stored in self._draws(start):
                await pending.acquire()
                session = self.parts.proposer.session
                if self.failure is not None or session.exhausted() is not None or self.stops.requested():
                    pending.release()
                    break
                self._started(gen)
                plan = self._draw(gen, stored)
                if plan is None:
                    pending.release()
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
            gen = self.book.get(generation)
            while gen.drawn < gen.size:
                yield gen, stored.get((generation, gen.drawn))

    def _started(self, gen: _Generation) -> None:
        if gen.drawn == 0:
            self.scheduler.generation = gen.number
            self.index.add_event(
                "generation_started",
                {"generation": gen.number, "plans": gen.size, "mode": "steady"},
            )
            self.parts.progress.generation(gen.number, self.evo.generations, gen.size)

    def _draw(self, gen: _Generation, stored: dict[str, Any] | None) -> Plan | None:
        """Child ``gen.drawn``: the plan stored before a kill, or a new draw from the population
        as it stands (stored before anything is asked of the LLM)."""
        if stored is not None:
            plan = plan_from_event(stored)
        else:
            population = self._scored(self.book.population_ids(self.parts.seed_id))
            plan = plan_child(
                gen.number, gen.drawn, population, self.seed, self.parts.seed_id,
                self.evo, self.reader.objectives, eot=self.parts.proposer.supports_eot,
                mates=self.parts.mates,
            )  # fmt: skip
            self.index.add_event(PLANNED, plan_event(gen.number, gen.drawn, plan))
        self.book.drew(gen, plan is not None)
        return plan

    async def _child(self, plan: Plan) -> None:
        try:
            outcome = await self.scheduler.run_held(plan)
            ok = outcome.variant if outcome.ok else None
            self.book.resolved(plan.generation, outcome, ok)
            self._close_ready()
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # RunStopped, a stopped generation, damage: stop drawing
            if self.failure is None:
                self.failure = err
            self.scheduler.pending.release()  # wake the draw loop, which then stops

    # ----------------------------------------------------------------- the population

    def _score(self, vid: str) -> Scored | None:
        if vid not in self.scores:
            found = self.reader.scored([vid])
            self.scores[vid] = found[0] if found else None
        return self.scores[vid]

    def _scored(self, ids: list[str]) -> list[Scored]:
        return [s for s in map(self._score, ids) if s is not None]

    def _archive(self, population: list[str]) -> list[str]:
        return archive(self._scored(population), self.seed, self.evo.elites, self.reader.objectives)

    # ----------------------------------------------------------------- checkpoints

    def _close_ready(self, force: bool = False) -> None:
        """Close every generation, in order, whose plans are all drawn and resolved (``force``:
        also one cut short by the budget or the end of the loop)."""
        while (gen := self.book.ready(force)) is not None:
            self._close(gen)

    def _close(self, gen: _Generation) -> None:
        scheduler = self.scheduler
        scheduler.end_generation(gen.number, gen.outcomes)
        self.parts.proposer.session.start_generation()
        children = [
            o.variant for o in sorted(gen.outcomes, key=lambda o: o.plan.index) if o.variant
        ]
        population, self.hof = close_virtual(
            gen, children, self.parts.seed_id, self.hof, self._scored, self.evo,
            self.reader.objectives,
        )  # fmt: skip
        record = GenerationRecord(gen.number, population, gen.archive, self.hof)
        scheduler.checkpoint(record, len(children))
        self.measurer.record(gen.number, population)  # for inspection: computed once
        self.stops.closed(gen.number, self._scored(children))
        self.book.closed(gen, self._archive(population))
