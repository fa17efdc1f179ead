"""The generational mode (the GE paper's loop): generation after generation, each planned from the
whole evaluated previous population, its children run together over the shared scheduler.

With ``[evolution.islands] count = K``, each island is planned from its own population and all their
children share the slots; migration follows some generations (``evolution.islands.count``). With
``overlap_tail = N``, a generation closes while at most N of its children are still evaluated;
they join the next generation's population (and, after a kill, are found again on resume). What
a closed generation leaves (populations, hall of fame, migration) is
``evolution.generations.close_generation``; this module runs the children and writes the
checkpoint.
"""

from __future__ import annotations

import asyncio

from guided_evolution.engine.outcome import Outcome
from guided_evolution.engine.scheduler import Scheduler
from guided_evolution.engine.stopping import StopRules
from guided_evolution.evolution.generations import close_generation
from guided_evolution.evolution.islands import island_configs
from guided_evolution.evolution.operators import registry
from guided_evolution.evolution.plan import GenerationPlan, Plan, Step, dedup, plan_generation
from guided_evolution.runstore.measures import Measurer
from guided_evolution.runstore.records import GenerationRecord


class GenerationalLoop:
    """Runs generations ``gen`` .. ``evolution.generations`` over one scheduler."""

    def __init__(self, scheduler: Scheduler, stops: StopRules) -> None:
        self.scheduler = scheduler
        self.stops = stops
        self.parts = scheduler.parts
        self.evo = scheduler.evo
        parts = self.parts
        self.measurer = Measurer(parts.recorder.store, parts.index, parts.resolved.config)
        self._carried: list[asyncio.Task[Outcome]] = []  # overlap_tail: last generation's late ones
        self._late_tasks: list[asyncio.Task[Outcome]] = []  # every late task (cancelled on failure)

    async def run(self, gen: int, islands: list[list[str]], hof: list[str]) -> None:
        """Each island planned from its whole evaluated previous population (its checkpoint's
        ``population``, or its ``islands``)."""
        session = self.parts.proposer.session
        self.scheduler.generation = max(gen - 1, 0)  # the last one made, until `gen` begins
        if self.evo.overlap_tail and gen > 0:
            self._carry_late(gen - 1, dedup([v for members in islands for v in members]))
        try:
            while gen <= self.evo.generations:
                if session.exhausted() is not None or self.stops.requested():
                    return  # before `gen` began: the run's generation stays the last one made
                self.scheduler.generation = gen
                islands, hof, cut_short = await self._generation(gen, islands, hof)
                if cut_short:
                    return
                if self.stops.reason is not None:  # the overlap tail's children end first
                    await asyncio.gather(*self._carried)
                    return
                gen += 1
        finally:
            left = [t for t in self._late_tasks if not t.done()]  # only when the loop failed
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    def _plan(self, gen: int, islands: list[list[str]]) -> list[GenerationPlan]:
        """Each island's plan, its children numbered after the previous islands' (``strategy =
        "best_of_n"``: the control, every child a mutation of the seed, nothing selected)."""
        parts, reader = self.parts, self.parts.reader
        if self.evo.strategy == "best_of_n":
            count = self.evo.initial_population if gen == 0 else self.evo.population
            step = (Step(registry.base().name),)
            return [GenerationPlan([Plan(gen, i, parts.seed_id, step) for i in range(count)], [])]
        seed = reader.scored([parts.seed_id])
        planned: list[GenerationPlan] = []
        for k, (evo, members) in enumerate(zip(island_configs(self.evo), islands, strict=True)):
            planned.append(plan_generation(
                gen, reader.scored(members), seed[0] if seed else None, parts.seed_id,
                evo, reader.objectives, eot=parts.proposer.supports_eot,
                island=k, first_index=sum(len(p.plans) for p in planned), mates=parts.mates,
            ))  # fmt: skip
        return planned

    async def _generation(
        self, gen: int, islands: list[list[str]], hof: list[str]
    ) -> tuple[list[list[str]], list[str], bool]:
        """Plan each island from its own population, propose and evaluate all their children
        together (they share the slots), migrate, then checkpoint the generation.

        Returns the islands' new populations, the hall of fame, and whether the LLM budget cut
        the generation short.
        """
        parts, scheduler, session = self.parts, self.scheduler, self.parts.proposer.session
        planned = self._plan(gen, islands)
        plans = [plan for p in planned for plan in p.plans]
        parts.index.add_event("generation_started", {"generation": gen, "plans": len(plans)})
        parts.progress.generation(gen, self.evo.generations, len(plans))
        session.start_generation()
        tail = self.evo.overlap_tail if gen < self.evo.generations else 0
        outcomes, late = await scheduler.run_batch(plans, tail)
        self._late_tasks = [*self._carried, *late]
        if session.exhausted() is not None and late:  # cut short: no next generation to join
            outcomes = sorted([*outcomes, *await asyncio.gather(*late)], key=lambda o: o.plan.index)
            late = []
        scheduler.end_generation(gen, outcomes, complete=not late)
        carried = [o for o in await asyncio.gather(*self._carried) if o.variant]
        self._carried = late
        closed = close_generation(
            gen, parts.seed_id, [p.elites for p in planned],
            [(o.plan.island, o.variant) for o in carried if o.variant],
            [(o.plan.island, o.variant) for o in outcomes if o.variant],
            hof, parts.reader.scored, self.evo, parts.reader.objectives,
        )  # fmt: skip
        record = GenerationRecord(
            gen, closed.population, closed.elites, closed.hall_of_fame,
            islands=closed.islands if self.evo.islands.count > 1 else [],
        )  # fmt: skip
        cut_short = session.exhausted() is not None and any(o.reason == "budget" for o in outcomes)
        children = sum(1 for o in outcomes if o.variant)
        moves = [m.as_event() for m in closed.moves]
        scheduler.checkpoint(record, children, moves, cut_short=cut_short)
        self.measurer.record(gen, record.population)  # for inspection: computed once
        self.stops.closed(gen, parts.reader.scored([o.variant for o in [*carried, *outcomes] if o.variant]))
        return closed.islands, closed.hall_of_fame, cut_short

    def _carry_late(self, gen: int, population: list[str]) -> None:
        """On resume with ``overlap_tail``: generation ``gen``'s children that were still being
        evaluated at its checkpoint (its variants outside its population) join this generation,
        evaluated first where they have no result."""
        late = self.parts.reader.outside(gen, population)
        self._carried = [asyncio.create_task(self._late(gen, v, island)) for v, island in late]
        self._late_tasks = list(self._carried)

    async def _late(self, gen: int, vid: str, island: int) -> Outcome:
        plan = Plan(gen, -1, vid, (), island)
        done = self.parts.reader.latest_evaluation(vid)
        if done is None:
            await self.scheduler.pending.acquire()  # evaluate_once releases it
            result = await self.scheduler.evaluate_once(vid)
            return Outcome(plan, vid, result.status == "ok", result.failure_reason)
        return Outcome(plan, vid, done.status == "ok", done.failure_reason)
