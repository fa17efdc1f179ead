"""The scheduler both loops share (``engine.generational``, ``engine.steady``): one child's way
from its plan to its recorded result, with the proposals and evaluations of many children
overlapped.

Per child: propose → commit (git, then index) → evaluate (in a sandbox) → record (index; the git
note per generation). While evaluation slots are busy, the next children are already proposed;
``pending`` bounds the children proposed but not yet evaluating. A batch of children starts
fewest LLM calls first (:func:`start_order`), the next call of a chain goes before new first
calls (``proposer.CallGate``), and a child holds its slot only while it is evaluated (not while
it is exported or recorded). A child whose evaluation fails may be fixed (``fix_attempts``). The
same child made by two plans is evaluated once. Single-threaded asyncio: all store and index
writes happen on this thread, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.config import ResolvedConfig
from guided_evolution.engine.mates import RunMates
from guided_evolution.engine.outcome import Outcome, failed_generation
from guided_evolution.engine.progress import Progress
from guided_evolution.engine.proposer import NoChild, Proposer
from guided_evolution.engine.reader import RunReader
from guided_evolution.engine.recorder import Recorder
from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalRequest, EvalResult, Executor
from guided_evolution.evolution.operators import registry
from guided_evolution.evolution.plan import Plan
from guided_evolution.fsutil import remove_tree_soon
from guided_evolution.runstore.records import GenerationRecord
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunPaths

SlotHold = Callable[[], AbstractAsyncContextManager[None]]  # holds an evaluation slot


@dataclass
class RunParts:
    """What the scheduler and the loops work with: the run, its writer and reader, the source of
    children, and mate choice's distances."""

    paths: RunPaths
    resolved: ResolvedConfig
    recorder: Recorder
    reader: RunReader
    proposer: Proposer
    seed_id: str
    mates: RunMates | None

    @property
    def index(self) -> RunIndex:
        return self.recorder.index

    @property
    def progress(self) -> Progress:
        return self.recorder.progress


class Scheduler:
    """Slots, the pending bound, the children in flight, and the stop of a generation that
    failed for one reason; the loops decide which children to make and when a generation ends."""

    def __init__(self, parts: RunParts, executor: Executor, retry: dict[str, int]) -> None:
        self.parts = parts
        self.cfg = parts.resolved.config
        self.evo = self.cfg.evolution
        self.executor = executor
        self.retry = retry  # failed children of a stopped generation to evaluate again
        self.slots = asyncio.Semaphore(executor.capacity)
        bound = self.evo.max_pending or 2 * executor.capacity + self.cfg.llm.concurrency
        self.pending = asyncio.Semaphore(bound)
        self.generation = 0  # the generation being made (for the summary and Ctrl-C)
        self._inflight: dict[str, asyncio.Future[EvalResult]] = {}
        self._in_slot: set[asyncio.Task[Outcome] | None] = set()  # plan tasks now evaluating
        self._slot_taken = asyncio.Event()
        self._removals: list[asyncio.Future[bool]] = []  # work trees being removed (evaluate)

    async def removed(self) -> None:
        """Wait for every work tree's removal (started by :meth:`evaluate`)."""
        await asyncio.gather(*self._removals)

    # ----------------------------------------------------------------- batches

    async def run_batch(
        self, plans: list[Plan], tail: int = 0
    ) -> tuple[list[Outcome], list[asyncio.Task[Outcome]]]:
        """The outcomes of ``plans`` in plan order, once all are resolved but at most ``tail``
        children that are being evaluated (their tasks are returned, still running)."""
        tasks = [asyncio.create_task(self.run_plan(p)) for p in start_order(plans)]
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

    async def run_plan(self, plan: Plan) -> Outcome:
        await self.pending.acquire()
        return await self.run_held(plan)

    # ----------------------------------------------------------------- one child

    async def run_held(self, plan: Plan) -> Outcome:
        """Propose, commit, evaluate and record one plan's child; the caller holds a place of
        ``pending``, released once the child holds a slot (or made nothing)."""
        outcome = Outcome(plan)
        released = False
        try:
            proposed = await self._propose(plan, outcome)
            if proposed is None:
                return outcome
            vid = outcome.variant = proposed
            shared = self._inflight.get(vid)
            if shared is not None:  # the same child from another plan is being evaluated now
                self.pending.release()
                released = True
                result = await asyncio.shield(shared)
                return _resolved(outcome, result)
            released = True  # evaluate_once releases `pending` once the child holds a slot
            result = await self.evaluate_once(vid)
            outcome = _resolved(outcome, result)
            if not outcome.ok and self.evo.fix_attempts and self.parts.proposer.supports_fix:
                outcome = await self._fix(plan, vid, result, outcome)
            return outcome
        finally:
            if not released:
                self.pending.release()

    async def _propose(self, plan: Plan, outcome: Outcome) -> str | None:
        """The plan's new child to evaluate, committed; None when there is none (``outcome``
        then says why: a rejection, the budget, or the child's earlier evaluation)."""
        proposer, recorder = self.parts.proposer, self.parts.recorder
        if proposer.session.exhausted() is not None:
            outcome.reason = "budget"
            return None
        progress = self.parts.progress
        progress.count("proposing", +1)
        try:
            child = await proposer.propose(plan)
        except NoChild as err:
            recorder.reject(plan, err.operator, err.reason, proposer.take_calls(plan))
            outcome.reason = "budget" if err.budget else err.reason
            return None
        finally:
            progress.count("proposing", -1)
        vid, fresh = recorder.commit(plan, child, proposer.take_calls(plan))
        outcome.variant = vid
        done = None if fresh else self.parts.reader.latest_evaluation(vid)
        if done is not None and self.retry.get(vid) == done.attempt and done.status != "ok":
            del self.retry[vid]  # a child of a stopped generation: the user fixed the cause
            done = None
        if done is not None:  # evaluated before (this run or before a kill): never again
            outcome.ok = done.status == "ok"
            outcome.reason = done.failure_reason
            return None
        return vid

    async def evaluate_once(self, vid: str) -> EvalResult:
        """Evaluate a new child in a slot, sharing the result with plans that made it too; the
        caller's place of ``pending`` is released once the child holds a slot."""
        shared = asyncio.get_running_loop().create_future()
        self._inflight[vid] = shared
        released = False

        @contextlib.asynccontextmanager
        async def slot() -> AsyncIterator[None]:
            nonlocal released
            progress = self.parts.progress
            progress.count("queued", +1)
            async with self.slots:
                progress.count("queued", -1)
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
            result = await self.evaluate(vid, slot)
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
        proposer, recorder = self.parts.proposer, self.parts.recorder
        rng = plan.fix_rng(self.evo.seed)
        for attempt in range(self.evo.fix_attempts):
            try:
                child = await proposer.fix(
                    plan, vid, result.failure_reason or "failed", result.output_tail or "", rng, attempt
                )
            except NoChild as err:
                recorder.reject(plan, registry.repair().name, err.reason, proposer.take_calls(plan))
                return outcome
            fixed, fresh = recorder.commit(plan, child, proposer.take_calls(plan), fix_of=vid)
            if not fresh:
                return outcome
            async with self.slots:
                result = await self.evaluate(fixed)
            outcome = Outcome(plan, fixed, result.status == "ok", result.failure_reason)
            if outcome.ok:
                return outcome
            vid = fixed
        return outcome

    async def evaluate(self, vid: str, slot: SlotHold | None = None) -> EvalResult:
        """Export, evaluate (sandboxed), record; then the work tree's removal starts in a thread,
        not awaited (the outcome returns where it did: steady draws depend on it; the engine
        awaits :meth:`removed`). Only the evaluation holds ``slot``: export and record leave it
        to the next child."""
        parts = self.parts
        workdir = parts.recorder.checkout(vid, parts.paths.work)
        request = self._request(vid, workdir)
        async with slot() if slot is not None else contextlib.nullcontext():
            parts.progress.count("evaluating", +1)
            try:
                result = await self.executor.evaluate(request)
            finally:
                parts.progress.count("evaluating", -1)
        parts.recorder.record_evaluation(vid, result)
        self._removals = [*(r for r in self._removals if not r.done()), remove_tree_soon(workdir)]
        if result.status == "ok":
            parts.progress.count("done", +1)
            parts.progress.best(parts.reader.best_metrics([vid]))
        else:
            parts.progress.count("failed", +1)
        return result

    def _request(self, vid: str, workdir: Path) -> EvalRequest:
        ev_cfg = self.cfg.evaluator
        return EvalRequest(
            variant_id=vid,
            workdir=workdir,
            run_dir=self.parts.paths.root,
            command=ev_cfg.command,
            check_command=ev_cfg.check,
            timeout_s=ev_cfg.timeout_s,
            check_timeout_s=ev_cfg.check_timeout_s,
            metrics_path=workdir / ".ge" / "metrics.json",
            log_path=self.parts.paths.logs / f"{vid}.log",
            objectives=tuple(name for name, _ in self.parts.reader.objectives),
            env={"GE_SEED_DIR": str(Path(self.parts.resolved.seed_dir))},
            feedback_max_chars=ev_cfg.feedback_max_chars,
        )

    async def evaluate_seed(self) -> None:
        """Evaluate the seed unless it evaluated ok before; a GeError when it fails."""
        parts = self.parts
        result = parts.reader.latest_evaluation(parts.seed_id)
        if result is None or result.status != "ok":
            # A failed seed is retried by every `ge resume`: the cause may have been the
            # environment (missing data, a busy GPU), which the user can fix in place.
            result = await self.evaluate(parts.seed_id)
        if result.status != "ok":
            log = parts.paths.logs / f"{parts.seed_id}.log"
            last = _last_output_line(result.output_tail)
            raise GeError(
                f"the seed failed its own evaluation: {result.failure_reason}"
                + (f" (last output: {last})" if last else ""),
                f"see {log}; fix the evaluator (its files or [evaluator] in ge.toml) or its "
                f"environment, then `ge resume {parts.paths.root} --reload-evaluator`",
            )
        parts.progress.best(parts.reader.best_metrics([parts.seed_id]))

    # ----------------------------------------------------------------- generations

    def end_generation(self, gen: int, outcomes: list[Outcome], complete: bool = True) -> None:
        """Stop the run when every LLM call of the generation failed (the proposer's rule), or
        when no child of it succeeded for one common reason (``outcome.failed_generation``;
        not while some of its children are still evaluated: ``complete`` False)."""
        self.parts.proposer.session.end_generation(gen, [o.reason for o in outcomes if o.reason])
        if not complete:
            return
        attempts = {}
        for o in outcomes:
            if o.variant is not None and not o.ok:
                done = self.parts.reader.latest_evaluation(o.variant)
                attempts[o.variant] = done.attempt if done is not None else 0
        failed = failed_generation(gen, outcomes, attempts)
        if failed is None:
            return
        error = failed.error(self.parts.paths.root, self.parts.resolved.seed_dir)
        self.parts.index.add_event(
            "run_stopped", {"reason": error.args[0], "generation": gen, "retry": failed.retry}
        )
        raise error

    def checkpoint(
        self, record: GenerationRecord, children: int, moves: list[dict[str, object]] | None = None,
        *, cut_short: bool = False,
    ) -> None:  # fmt: skip
        """Record a closed generation: its notes (unless ``cut_short`` by the budget: the run
        stops), its checkpoint with its migration (together, or neither), then the
        ``generation_finished`` event and, now and then, compaction."""
        recorder, index = self.parts.recorder, self.parts.index
        if not cut_short:
            recorder.flush_notes()
        with index.transaction():
            index.save_generation(record)
            if moves:
                index.add_event("migration", {"generation": record.generation, "moves": moves})
        if cut_short:
            return
        index.add_event(
            "generation_finished", {"generation": record.generation, "children": children}
        )
        recorder.compact(force=False)


def _resolved(outcome: Outcome, result: EvalResult) -> Outcome:
    outcome.ok = result.status == "ok"
    outcome.reason = result.failure_reason
    return outcome


def start_order(plans: list[Plan]) -> list[Plan]:
    """The order a generation's children start in (which children it makes does not change):
    the fewest LLM calls first (a mutation, then crossover-then-mutation and EoT's two turns,
    then crossover-then-EoT), in plan order among equals. Evaluations then start one LLM latency
    after the generation does, and the LLM, faster than the slots, proposes the longer chains
    while the first children are evaluated; the pending bound keeps it from running ahead."""
    return sorted(plans, key=lambda plan: plan.llm_calls)


def _last_output_line(output_tail: str | None, limit: int = 400) -> str:
    """The evaluator's last line of output (its error, usually), without ge's own notes."""
    for line in reversed((output_tail or "").splitlines()):
        text = line.strip()
        if text and not text.startswith("[ge] "):
            return text if len(text) <= limit else text[: limit - 3] + "..."
    return ""
