"""The driver of one run: the generational loop (``mode = "steady"``: ``engine.steady``'s loop)
and the scheduler that overlaps proposals and evaluations. It only schedules: the plan comes from
``evolution.plan``, children from a ``Proposer``, evaluations from an ``Executor``, and every
write goes through the ``Recorder``.

Per child: propose → commit (git, then index) → evaluate (in a sandbox) → record (index; the git
note per generation). While evaluation slots are busy, the next children are already proposed;
``pending`` bounds the children proposed but not yet evaluating. A generation's children start
fewest LLM calls first, the next call of a chain goes before new first calls
(``proposer.CallGate``), and a child holds its slot only while it is evaluated (not while it is
exported or recorded). Single-threaded asyncio: all store and index writes happen on this
thread, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from guided_evolution.config import ResolvedConfig
from guided_evolution.engine.mates import run_mates
from guided_evolution.engine.outcome import Outcome, failed_generation
from guided_evolution.engine.proposer import NoChild, Proposer, RunStopped
from guided_evolution.engine.recorder import Recorder
from guided_evolution.engine.steady import SteadyLoop
from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalRequest, EvalResult, Executor
from guided_evolution.evaluation.factory import build_executor
from guided_evolution.evolution.islands import island_configs, migrate, migrates_after
from guided_evolution.evolution.plan import (
    GenerationPlan,
    Plan,
    dedup,
    hall_of_fame,
    plan_generation,
)
from guided_evolution.fsutil import remove_tree_soon
from guided_evolution.runstore.records import META_FINISHED, GenerationRecord
from guided_evolution.runstore.rundir import RunPaths

SlotHold = Callable[[], AbstractAsyncContextManager[None]]  # holds an evaluation slot


class Engine:
    """One run's loop."""

    def __init__(
        self,
        paths: RunPaths,
        resolved: ResolvedConfig,
        recorder: Recorder,
        proposer: Proposer,
        seed_id: str,
        *,
        detach: bool = False,
    ) -> None:
        self.paths = paths
        self.resolved = resolved
        self.cfg = resolved.config
        self.evo = self.cfg.evolution
        self.recorder = recorder
        self.index = recorder.index
        self.progress = recorder.progress
        self.proposer = proposer
        self.seed_id = seed_id
        self.detach = detach  # on Ctrl-C leave cluster jobs running for `ge resume` to re-attach
        self.executor: Executor | None = None
        self._inflight: dict[str, asyncio.Future[EvalResult]] = {}
        self._retry: dict[str, int] = {}  # failed children of a stopped generation to evaluate again
        self._carried: list[asyncio.Task[Outcome]] = []  # overlap_tail: last generation's late ones
        self._late_tasks: list[asyncio.Task[Outcome]] = []  # every late task (cancelled on failure)
        self._in_slot: set[asyncio.Task[Outcome] | None] = set()  # plan tasks now evaluating
        self._slot_taken = asyncio.Event()
        self._removals: list[asyncio.Future[bool]] = []  # work trees being removed (_evaluate)
        self.stop_reason = ""
        self.warnings: list[str] = []
        self.generation = 0
        self.mates = run_mates(recorder, self.evo)  # mate choice's distances and genes

    # ----------------------------------------------------------------- setup

    def _start_executor(self) -> Executor:
        executor = build_executor(self.resolved, self.paths)
        self._warn(executor.warnings)
        details = executor.describe()
        self.index.add_event("executor", details)
        self.progress.info(details["summary"])
        isolation = executor.isolation()
        self.index.add_event("isolation", isolation)
        self.progress.notice(f"isolation: {isolation['summary']}")
        return executor

    def _warn(self, lines: list[str], show: bool = True) -> None:
        for line in lines:
            self.warnings.append(line)
            if show:
                self.progress.warn(line)
            self.index.add_event("warning", {"message": line})

    async def run(self) -> None:
        self.executor = executor = self._start_executor()
        seen_warnings = len(executor.warnings)
        self.slots = asyncio.Semaphore(executor.capacity)
        bound = self.evo.max_pending or 2 * executor.capacity + self.cfg.llm.concurrency
        self.pending = asyncio.Semaphore(bound)
        try:
            await self._loop()
        except RunStopped as stop:
            self.index.add_event("run_stopped", {"reason": stop.reason, "model": stop.model})
            raise GeError(
                f"the LLM calls keep failing, so the run stopped: {stop.reason}",
                f"{stop.hint or 'check the model name, api_base, key and that the server is up'}, then "
                f"`ge resume {self.paths.root}`; a wrong model name or api_base needs a new `ge run`",
            ) from None
        finally:
            # Close first: a damaged store makes flush_notes raise, and the evaluations still
            # running and the LLM client must end either way.
            with contextlib.suppress(Exception):
                await executor.aclose(cancel=not self.detach)
            with contextlib.suppress(Exception):
                await self.proposer.aclose()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._removals)
            self._warn(executor.warnings[seen_warnings:], show=False)
            self.recorder.flush_notes()

    # ----------------------------------------------------------------- the loop

    async def _loop(self) -> None:
        finished = self.index.get_meta(META_FINISHED)
        if finished:
            self.stop_reason = finished
            last = self.index.last_generation()
            self.generation = last.generation if last else 0
            return
        self.index.add_event("run_resumed" if self.index.last_generation() else "run_started", {"pid": os.getpid()})
        stops = self.index.events("run_stopped")
        self._retry = dict(stops[-1].data.get("retry") or {}) if stops else {}
        # The LLM client library (litellm for some providers) loads while the seed is evaluated, not on the first call.
        warm = asyncio.create_task(self.proposer.warm_up())
        await self._ensure_seed_evaluated()
        await warm
        self.proposer.ready()
        last = self.index.last_generation()
        gen = 0 if last is None else last.generation + 1
        population: list[str] = [self.seed_id] if last is None else list(last.population)
        hof = list(last.hall_of_fame) if last else []
        if self.evo.mode == "steady":
            await SteadyLoop(self).run(gen, population, hof)
        else:
            k = self.evo.islands
            islands = last.islands if last and k > 1 else [population] * k
            await self._generations(gen, islands, hof)
        if self.proposer.budget_reached():
            self.stop_reason = self.proposer.exhausted_reason() or "budget reached"
        else:
            self.stop_reason = f"completed {self.evo.generations} generations"
        self.index.set_meta(META_FINISHED, self.stop_reason)
        self.index.add_event("run_finished", {"reason": self.stop_reason})
        self.recorder.compact(force=True)

    async def _generations(self, gen: int, islands: list[list[str]], hof: list[str]) -> None:
        """The generational mode: generations ``gen`` .. ``evolution.generations``, each island
        planned from its whole evaluated previous population (its checkpoint's ``population``,
        or its ``islands``)."""
        if self.evo.overlap_tail and gen > 0:
            self._carry_late(gen - 1, dedup([v for members in islands for v in members]))
        try:
            while gen <= self.evo.generations:
                self.generation = gen
                if self.proposer.budget_reached():
                    return
                islands, hof, cut_short = await self._generation(gen, islands, hof)
                if cut_short:
                    return
                gen += 1
        finally:
            left = [t for t in self._late_tasks if not t.done()]  # only when the loop failed
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    async def _generation(
        self, gen: int, islands: list[list[str]], hof: list[str]
    ) -> tuple[list[list[str]], list[str], bool]:
        """Plan each island from its own population, propose and evaluate all their children
        together (they share the slots), migrate, then checkpoint the generation.

        Returns the islands' new populations, the hall of fame, and whether the LLM budget cut
        the generation short.
        """
        seed = self.recorder.scored([self.seed_id])
        planned: list[GenerationPlan] = []
        for k, (evo, members) in enumerate(zip(island_configs(self.evo), islands, strict=True)):
            planned.append(plan_generation(
                gen, self.recorder.scored(members), seed[0] if seed else None, self.seed_id,
                evo, self.recorder.objectives, eot=self.proposer.supports_eot,
                island=k, first_index=sum(len(p.plans) for p in planned), mates=self.mates,
            ))  # fmt: skip
        plans = [plan for p in planned for plan in p.plans]
        self.index.add_event("generation_started", {"generation": gen, "plans": len(plans)})
        self.progress.generation(gen, self.evo.generations, len(plans))
        self.proposer.start_generation()
        tail = self.evo.overlap_tail if gen < self.evo.generations else 0
        outcomes, late = await self._run_plans(plans, tail)
        self._late_tasks = [*self._carried, *late]
        if self.proposer.budget_reached() and late:  # cut short: no next generation to join
            outcomes = sorted([*outcomes, *await asyncio.gather(*late)], key=lambda o: o.plan.index)
            late = []
        self.end_generation(gen, outcomes, complete=not late)
        carried = [o for o in await asyncio.gather(*self._carried) if o.variant]
        self._carried = late
        children = [o.variant for o in outcomes if o.variant]
        islands = [
            dedup([
                *([*p.elites, *(o.variant for o in carried if o.plan.island == k)]
                  if gen > 0 else [self.seed_id]),
                *(o.variant for o in outcomes if o.variant and o.plan.island == k),
            ])
            for k, p in enumerate(planned)
        ]  # fmt: skip
        population = dedup([v for members in islands for v in members])
        hof = hall_of_fame(
            self.recorder.scored(dedup([*hof, *population])), self.evo.hall_of_fame,
            self.recorder.objectives,
        )
        moves: list[dict[str, object]] = []
        if migrates_after(gen, self.evo):
            scored = [self.recorder.scored(members) for members in islands]
            islands, made = migrate(islands, scored, self.evo, self.recorder.objectives, gen)
            moves = [m.as_event() for m in made]
        elites = dedup([e for p in planned for e in p.elites])
        record = GenerationRecord(
            gen, population, elites, hof, islands=islands if self.evo.islands > 1 else []
        )
        cut_short = self.proposer.budget_reached() and any(o.reason == "budget" for o in outcomes)
        if not cut_short:  # cut short: record it so the front is current, then stop
            self.recorder.flush_notes()
        with self.index.transaction():  # the checkpoint and its migration, or neither
            self.index.save_generation(record)
            if moves:
                self.index.add_event("migration", {"generation": gen, "moves": moves})
        if cut_short:
            return islands, hof, True
        self.index.add_event("generation_finished", {"generation": gen, "children": len(children)})
        self.recorder.compact(force=False)
        return islands, hof, False

    def end_generation(self, gen: int, outcomes: list[Outcome], complete: bool = True) -> None:
        """Stop the run when every LLM call of the generation failed (the proposer's rule), or
        when no child of it succeeded for one common reason (``outcome.failed_generation``;
        not while some of its children are still evaluated: ``complete`` False)."""
        self.proposer.end_generation(gen, [o.reason for o in outcomes if o.reason])
        if not complete:
            return
        attempts = {}
        for o in outcomes:
            if o.variant is not None and not o.ok:
                done = self.index.latest_evaluation(o.variant)
                attempts[o.variant] = done.attempt if done is not None else 0
        failed = failed_generation(gen, outcomes, attempts)
        if failed is None:
            return
        error = failed.error(self.paths.root, self.resolved.seed_dir)
        self.index.add_event(
            "run_stopped", {"reason": error.args[0], "generation": gen, "retry": failed.retry}
        )
        raise error

    async def _ensure_seed_evaluated(self) -> None:
        result = self.index.latest_evaluation(self.seed_id)
        if result is None or result.status != "ok":
            # A failed seed is retried by every `ge resume`: the cause may have been the
            # environment (missing data, a busy GPU), which the user can fix in place.
            result = await self._evaluate(self.seed_id)
        if result.status != "ok":
            log = self.paths.logs / f"{self.seed_id}.log"
            last = _last_output_line(result.output_tail)
            raise GeError(
                f"the seed failed its own evaluation: {result.failure_reason}"
                + (f" (last output: {last})" if last else ""),
                f"see {log}; fix the environment and `ge resume {self.paths.root}`, "
                "or fix the seed's code and start a new `ge run`",
            )
        self.progress.best(self.recorder.best_metrics([self.seed_id]))

    # ----------------------------------------------------------------- the scheduler

    async def _run_plans(
        self, plans: list[Plan], tail: int = 0
    ) -> tuple[list[Outcome], list[asyncio.Task[Outcome]]]:
        """The outcomes of ``plans`` in plan order, once all are resolved but at most ``tail``
        children that are being evaluated (their tasks are returned, still running)."""
        tasks = [asyncio.create_task(self._run_plan(p)) for p in start_order(plans)]
        try:
            if not tail:
                await asyncio.gather(*tasks)
            while tail:
                waiting = [t for t in tasks if not t.done()]
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if len(waiting) <= tail and all(t in self._in_slot for t in waiting):
                    break
                self._slot_taken.clear()
                taken = asyncio.ensure_future(self._slot_taken.wait())
                await asyncio.wait([*waiting, taken], return_when=asyncio.FIRST_COMPLETED)
                taken.cancel()
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        done = sorted((t.result() for t in tasks if t.done()), key=lambda o: o.plan.index)
        return done, [t for t in tasks if not t.done()]

    def _carry_late(self, gen: int, population: list[str]) -> None:
        """On resume with ``overlap_tail``: generation ``gen``'s children that were still being
        evaluated at its checkpoint (its variants outside its population) join this generation,
        evaluated first where they have no result."""
        late = [
            (v.id, v.island or 0) for v in self.index.variants()
            if v.generation == gen and v.operator != "seed" and v.id not in population
        ]  # fmt: skip
        self._carried = [asyncio.create_task(self._late(gen, v, island)) for v, island in late]
        self._late_tasks = list(self._carried)

    async def _late(self, gen: int, vid: str, island: int) -> Outcome:
        plan = Plan(gen, -1, vid, (), island)
        done = self.index.latest_evaluation(vid)
        if done is None:
            await self.pending.acquire()  # _evaluate_once releases it
            result = await self._evaluate_once(vid)
            return Outcome(plan, vid, result.status == "ok", result.failure_reason)
        return Outcome(plan, vid, done.status == "ok", done.failure_reason)

    async def _run_plan(self, plan: Plan) -> Outcome:
        await self.pending.acquire()
        return await self.run_held(plan)

    async def run_held(self, plan: Plan) -> Outcome:
        """Propose, commit, evaluate and record one plan's child; the caller holds a place of
        ``pending``, released once the child holds a slot (or made nothing)."""
        outcome = Outcome(plan)
        released = False
        try:
            if self.proposer.budget_reached():
                outcome.reason = "budget"
                return outcome
            self.progress.count("proposing", +1)
            try:
                child = await self.proposer.propose(plan)
            except NoChild as err:
                self.recorder.reject(plan, err.operator, err.reason, self.proposer.take_calls(plan))
                outcome.reason = "budget" if err.budget else err.reason
                return outcome
            finally:
                self.progress.count("proposing", -1)
            vid, fresh = self.recorder.commit(plan, child, self.proposer.take_calls(plan))
            outcome.variant = vid
            done = None if fresh else self.index.latest_evaluation(vid)
            if done is not None and self._retry.get(vid) == done.attempt and done.status != "ok":
                del self._retry[vid]  # a child of a stopped generation: the user fixed the cause
                done = None
            if done is not None:  # evaluated before (this run or before a kill): never again
                outcome.ok = done.status == "ok"
                outcome.reason = done.failure_reason
                return outcome
            shared = self._inflight.get(vid)
            if shared is not None:  # the same child from another plan is being evaluated now
                self.pending.release()
                released = True
                result = await asyncio.shield(shared)
                outcome.ok = result.status == "ok"
                outcome.reason = result.failure_reason
                return outcome
            released = True  # _evaluate_once releases `pending` once the child holds a slot
            result = await self._evaluate_once(vid)
            outcome.ok = result.status == "ok"
            outcome.reason = result.failure_reason
            if not outcome.ok and self.evo.fix_attempts and self.proposer.supports_fix:
                outcome = await self._fix(plan, vid, result, outcome)
            return outcome
        finally:
            if not released:
                self.pending.release()

    async def _evaluate_once(self, vid: str) -> EvalResult:
        """Evaluate a new child in a slot, sharing the result with plans that made it too."""
        shared = asyncio.get_running_loop().create_future()
        self._inflight[vid] = shared
        released = False

        @contextlib.asynccontextmanager
        async def slot() -> AsyncIterator[None]:
            nonlocal released
            self.progress.count("queued", +1)
            async with self.slots:
                self.progress.count("queued", -1)
                self.pending.release()
                released = True
                task = asyncio.current_task()
                self._in_slot.add(task)  # type: ignore[arg-type]
                self._slot_taken.set()
                try:
                    yield
                finally:
                    self._in_slot.discard(task)  # type: ignore[arg-type]

        try:
            result = await self._evaluate(vid, slot)
            shared.set_result(result)
            return result
        except BaseException:
            shared.cancel()
            raise
        finally:
            del self._inflight[vid]
            if not released:
                self.pending.release()

    async def _fix(self, plan: Plan, vid: str, result: EvalResult, outcome: Outcome) -> Outcome:
        """Feed an evaluation failure back to the proposer, up to `fix_attempts` times."""
        rng = plan.fix_rng(self.evo.seed)
        for attempt in range(self.evo.fix_attempts):
            try:
                child = await self.proposer.fix(
                    plan, vid, result.failure_reason or "failed", result.output_tail or "", rng, attempt
                )
            except NoChild as err:
                self.recorder.reject(plan, "fix", err.reason, self.proposer.take_calls(plan))
                return outcome
            fixed, fresh = self.recorder.commit(plan, child, self.proposer.take_calls(plan), fix_of=vid)
            if not fresh:
                return outcome
            async with self.slots:
                result = await self._evaluate(fixed)
            outcome = Outcome(plan, fixed, result.status == "ok", result.failure_reason)
            if outcome.ok:
                return outcome
            vid = fixed
        return outcome

    async def _evaluate(self, vid: str, slot: SlotHold | None = None) -> EvalResult:
        """Export, evaluate (sandboxed), record; then the work tree's removal starts in a thread,
        not awaited (the outcome returns where it did: steady draws depend on it; ``run`` awaits
        it). Only the evaluation holds ``slot``: export and record leave it to the next child."""
        assert self.executor is not None
        ev_cfg = self.cfg.evaluator
        workdir = self.recorder.checkout(vid, self.paths.work)
        request = EvalRequest(
            variant_id=vid,
            workdir=workdir,
            run_dir=self.paths.root,
            command=ev_cfg.command,
            check_command=ev_cfg.check,
            timeout_s=ev_cfg.timeout_s,
            check_timeout_s=ev_cfg.check_timeout_s,
            metrics_path=workdir / ".ge" / "metrics.json",
            log_path=self.paths.logs / f"{vid}.log",
            objectives=tuple(name for name, _ in self.recorder.objectives),
            env={"GE_SEED_DIR": str(Path(self.resolved.seed_dir))},
            feedback_max_chars=ev_cfg.feedback_max_chars,
        )
        async with slot() if slot is not None else contextlib.nullcontext():
            self.progress.count("evaluating", +1)
            try:
                result = await self.executor.evaluate(request)
            finally:
                self.progress.count("evaluating", -1)
        self.recorder.record_evaluation(vid, result)
        self._removals = [*(r for r in self._removals if not r.done()), remove_tree_soon(workdir)]
        if result.status == "ok":
            self.progress.count("done", +1)
            self.progress.best(self.recorder.best_metrics([vid]))
        else:
            self.progress.count("failed", +1)
        return result


def start_order(plans: list[Plan]) -> list[Plan]:
    """The order a generation's children start in (which children it makes does not change):
    the fewest LLM calls first (a mutation, then crossover-then-mutation and EoT's two turns,
    then crossover-then-EoT), in plan order among equals. Evaluations then start one LLM latency
    after the generation does, and the LLM, faster than the slots, proposes the longer chains
    while the first children are evaluated; the pending bound keeps it from running ahead."""
    return sorted(plans, key=lambda plan: sum(2 if s.op == "eot" else 1 for s in plan.steps))


def _last_output_line(output_tail: str | None, limit: int = 400) -> str:
    """The evaluator's last line of output (its error, usually), without ge's own notes."""
    for line in reversed((output_tail or "").splitlines()):
        text = line.strip()
        if text and not text.startswith("[ge] "):
            return text if len(text) <= limit else text[: limit - 3] + "..."
    return ""
