"""Proposers turn a plan into a child: the LLM operators, or the offline baseline operators.

The driver sees one interface (:class:`Proposer`) and asks it what it supports (EoT, fixing a
failed child) instead of branching on the kind of model. A plan that yields no child raises
:class:`NoChild` with a one-line reason; LLM errors that will repeat on every call raise
:class:`RunStopped`, which stops the whole run (unfinished, resumable).

The module is long because the LLM proposer's call gate and health rules live beside the
operators they govern.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from guided_evolution.config import GeConfig
from guided_evolution.engine.bandits import Bandits
from guided_evolution.engine.novelty_gate import NoveltyGate
from guided_evolution.engine.progress import Progress
from guided_evolution.engine.recorder import Recorder
from guided_evolution.evolution import operators as ops
from guided_evolution.evolution.diff_ops import EDIT_DIFF, EDIT_WHOLE
from guided_evolution.evolution.heldout import HeldOut
from guided_evolution.evolution.novelty import NearDuplicate
from guided_evolution.evolution.operators import (
    Child,
    OperatorSpec,
    Rejected,
    StepContext,
    offline,
    registry,
)
from guided_evolution.evolution.operators.common import objectives_of, objectives_text
from guided_evolution.evolution.operators.spec import PAIR, REPAIR, SINGLE
from guided_evolution.evolution.plan import EOT_BY_BANDIT, Plan, Step
from guided_evolution.evolution.prompts import NO_TASK, PromptLibrary
from guided_evolution.evolution.segments import Genome, parse_genome
from guided_evolution.evolution.splice import SpliceError
from guided_evolution.llm.errors import BudgetExhausted, LLMError
from guided_evolution.llm.records import sample_index

FATAL_STREAK = 5  # HTTP 400s in a row from one model that stop a run


class NoChild(Exception):
    """A plan (or a fix) that made no child; ``reason`` is one line."""

    def __init__(self, reason: str, operator: str, budget: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.operator = operator
        self.budget = budget  # the LLM budget ran out: the generation is cut short


class RunStopped(Exception):
    """The LLM cannot be reached or keeps refusing: the run stops, unfinished."""

    def __init__(self, reason: str, model: str | None, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.model = model
        self.hint = hint


class ProposerSession(Protocol):
    """A proposer's run-level side: its client's start and end, the LLM budget, and the rule
    that stops a run whose every LLM call of a generation failed."""

    async def warm_up(self) -> None: ...

    def ready(self) -> None:
        """The loop starts proposing now (the give-up clock starts here)."""
        ...

    def exhausted(self) -> str | None:
        """Why the LLM budget is spent (the run then stops, finished); None while it lasts."""
        ...

    def start_generation(self) -> None: ...

    def end_generation(self, generation: int, reasons: list[str]) -> None:
        """Raise RunStopped when every LLM call of the generation failed."""
        ...

    async def aclose(self) -> None: ...


class Proposer(Protocol):
    """What the engine needs of a source of children: what it can make, the children, and its
    run-level side (``session``)."""

    # Can make Evolution of Thought children: True (where the plan's eot_probability coin says), or
    # EOT_BY_BANDIT (its bandit chooses EoT or a mutation where the plan says EoT is possible).
    supports_eot: bool | str
    supports_fix: bool  # can feed an evaluation failure back and propose a repaired child

    @property
    def session(self) -> ProposerSession: ...

    async def propose(self, plan: Plan) -> Child:
        """The plan's child; NoChild when none was made, RunStopped when the run must stop."""
        ...

    async def fix(self, plan: Plan, vid: str, failure: str, output_tail: str,
                  rng: random.Random, attempt: int) -> Child: ...

    def take_calls(self, plan: Plan) -> list[int]:
        """The LLM call ids spent on ``plan`` since the last take (for the child or rejection)."""
        ...


class _StepProposer:
    """Applies a plan's steps in order, each to the previous step's result."""

    offline = False  # makes each step with the registry's offline counterpart

    def __init__(self, cfg: GeConfig, source: Recorder) -> None:
        self.cfg = cfg
        self.evo = cfg.evolution
        self.source = source.reader  # what it reads; the recorder writes the novelty events
        # The arms: the ensemble's models, and (operator, persona) (offline: the edit classes).
        self.bandits = Bandits(cfg, source.index, self.source.objectives)
        self.novelty = NoveltyGate(cfg, self.source, source) if self.evo.novelty.distance > 0 else None

    async def apply(self, step: Step, plan: Plan, genome: Genome, previous: Child | None,
                    rng: random.Random, sample: int) -> Child:
        raise NotImplementedError

    async def propose(self, plan: Plan) -> Child:
        rng = plan.rng(self.evo.seed)
        current = self.source.genome(plan.parent)
        child: Child | None = None
        previous: Child | None = None
        descriptions: list[str] = []
        try:
            for n, step in enumerate(plan.steps):
                if child is not None:  # the next step works on the previous step's result
                    current = parse_genome(
                        child.files, self.cfg.seed.files, self.cfg.seed.marker, current.kept
                    )
                previous, child = child, await self.apply(step, plan, current, child, rng, sample=n)
                descriptions.append(child.description)
            if self.novelty is not None and child is not None:
                child = await self.novelty.novel(
                    plan, child, self.evo.novelty.retries,
                    lambda near, k, last: self.repropose(plan, current, previous, last, near, rng, k),
                )
                descriptions[-1] = child.description
        except (Rejected, SpliceError) as err:
            self.bandits.rejected(plan.generation, plan.index)
            raise NoChild(err.reason, plan.steps[0].op) from None
        except NoChild as err:
            self.bandits.rejected(plan.generation, plan.index)
            raise NoChild(err.reason, plan.steps[0].op, err.budget) from None
        assert child is not None
        self.bandits.proposed(plan.generation, plan.index, child.files, self.pending_calls(plan))
        if len(plan.steps) > 1:
            # A crossover child that was mutated afterwards is still a merge of two parents: it is
            # recorded as a crossover, and the description names every step.
            pair = registry.pair(self.offline)
            operator = pair.name if registry.spec(plan.steps[0].op).role == PAIR else child.operator
            child = dataclasses.replace(child, operator=operator, description="; then ".join(descriptions))
        return child

    async def repropose(self, plan: Plan, genome: Genome, previous: Child | None, child: Child,
                        near: NearDuplicate, rng: random.Random, attempt: int) -> Child:
        """The plan's last step again (offline: another draw from the plan's RNG)."""
        return await self.apply(plan.steps[-1], plan, genome, previous, rng, sample=len(plan.steps))

    def take_calls(self, plan: Plan) -> list[int]:
        return []

    def pending_calls(self, plan: Plan) -> list[int]:
        """The LLM call ids spent on ``plan`` so far (not taken)."""
        return []

    @property
    def session(self) -> _StepProposer:
        """The run-level side (``ProposerSession``): the proposer itself."""
        return self

    def exhausted(self) -> str | None:
        return (self.exhausted_reason() or "budget reached") if self.budget_reached() else None

    def start_generation(self) -> None:
        return None

    def end_generation(self, generation: int, reasons: list[str]) -> None:
        return None

    def ready(self) -> None:
        return None

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class OfflineProposer(_StepProposer):
    """The built-in no-LLM baseline (``--model offline``): classic GP edits, no EoT, no fixing."""

    offline = True
    supports_eot = False
    supports_fix = False

    async def apply(self, step: Step, plan: Plan, genome: Genome, previous: Child | None,
                    rng: random.Random, sample: int) -> Child:
        made = registry.counterpart(step.op)
        if made.role == PAIR and step.other is not None:
            return offline.crossover_child(genome, self.source.genome(step.other), plan.parents, rng)
        arm = self.bandits.persona(plan.generation, rng, plan.index)  # None unless it is on
        return offline.mutation_child(genome, plan.parents, rng, arm)

    async def fix(self, plan: Plan, vid: str, failure: str, output_tail: str,
                  rng: random.Random, attempt: int) -> Child:
        raise NoChild("the offline operators cannot fix a failed child", registry.repair().name)

    def budget_reached(self) -> bool:
        return False

    def exhausted_reason(self) -> str | None:
        return None


def with_reply(child: Child, reply: Any, parents: tuple[str, ...] | None = None) -> Child:
    """The child with the model and call id of the reply that made it (and merged parents)."""
    changes: dict[str, Any] = {"model": reply.model, "call_id": reply.call_id}
    if parents is not None:
        changes["parents"] = parents
    return dataclasses.replace(child, **changes)


def _merged_parents(previous: Child | None, plan: Plan) -> tuple[str, ...]:
    return tuple(previous.parents) if previous is not None else plan.parents


@dataclass(frozen=True)
class _StepSource:
    """What the operators' request builders read (``StepSource``): the run's genomes and metrics,
    and the evaluator's feedback as the proposer scrubs it."""

    reader: Any
    feedback_of: Callable[[str], str]

    def genome(self, vid: str) -> Genome:
        return self.reader.genome(vid)

    def objective_metrics(self, vid: str) -> dict[str, float] | None:
        return self.reader.objective_metrics(vid)

    def feedback(self, vid: str) -> str:
        return self.feedback_of(vid)


class LLMHealth:
    """Tells an LLM error that will repeat on every call from one that will pass.

    A rejected key or an unknown model/endpoint (HTTP 401/403/404) stops at once; a rejected
    request (HTTP 400) only after FATAL_STREAK in a row from one model, since a single over-long
    prompt gets one too; no success for ``give_up_after_s`` stops as well. Otherwise every
    proposal would be rejected and the run would "finish" having evolved nothing.
    """

    def __init__(self, give_up_after_s: float) -> None:
        self.give_up_after_s = give_up_after_s
        self.streak: dict[str, int] = {}  # model -> LLM errors in a row that will repeat
        self.ok = self.failed = 0  # LLM calls of the current generation
        self.ok_at = time.monotonic()  # the last successful LLM call (or the loop's start)

    def succeeded(self, model: str) -> None:
        self.streak.pop(model, None)
        self.ok += 1
        self.ok_at = time.monotonic()

    def failed_call(self, model: str, err: Any) -> None:
        """Count a failed call; RunStopped when the failure will repeat."""
        self.failed += 1
        if not err.fatal:
            silent = time.monotonic() - self.ok_at
            if silent >= self.give_up_after_s:
                raise RunStopped(
                    f"no LLM call has succeeded for {silent:.0f} s (llm.give_up_after_s); the "
                    f"last error: {err.reason}",
                    model,
                )
            return
        streak = self.streak.get(model, 0) + 1
        self.streak[model] = streak
        if err.kind == "bad_request" and streak < FATAL_STREAK:
            return
        raise RunStopped(err.reason, model, err.hint)


class CallGate:
    """At most ``size`` LLM calls at once, and a waiting call that continues a child's chain
    (a crossover's mutation, EoT's second turn, a fix) goes before a child's first call, so
    that children already begun reach their evaluation first; FIFO otherwise."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, urgent: bool) -> None:
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if urgent else 1, next(self._order), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted, then cancelled before it ran: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class LLMProposer(_StepProposer):
    """The LLM operators: mutation with personas, crossover, Evolution of Thought, and fix."""

    supports_eot = True
    supports_fix = True

    def __init__(self, cfg: GeConfig, source: Recorder, prompts: PromptLibrary, llm: Any,
                 progress: Progress, seed_id: str) -> None:
        super().__init__(cfg, source)
        self.supports_eot = EOT_BY_BANDIT if self.bandits.chooses_eot else True
        self.directions = {o.name: o.direction for o in cfg.selected_objectives}
        # The run's goal reaches every prompt: its task (a line naming a reported-only metric
        # withheld, as in any other text: evolution.heldout) and its selecting objectives only.
        held = HeldOut(tuple(o.name for o in cfg.objectives if not o.select))
        self.prompts = prompts.with_values(
            task=held.scrub((cfg.seed.task or "").strip()) or NO_TASK,
            objectives=objectives_text(self.directions),
        )
        self.llm = llm
        self.progress = progress
        self.seed_id = seed_id
        self.health = LLMHealth(cfg.llm.give_up_after_s)
        self._calls: dict[tuple[int, int], list[int]] = {}
        self._last: dict[tuple[int, int], tuple[Any, Any]] = {}  # the plan's last (request, reply)
        self.gate = CallGate(cfg.llm.concurrency)
        self.step_source = _StepSource(self.source, self._feedback)

    async def repropose(self, plan: Plan, genome: Genome, previous: Child | None, child: Child,
                        near: NearDuplicate, rng: random.Random, attempt: int) -> Child:
        """The last request again, continued with its reply and ``prompts/novelty.txt``."""
        req, reply = self._last[(plan.generation, plan.index)]
        again = ops.novelty_request(
            self.prompts, req, reply.text, genome, near.variant, near.code, near.distance
        )
        answer = await self._ask(again, rng, plan, sample=300 + attempt)
        new = ops.child_from_reply(again, genome, answer.text, reflection=child.reflection)
        return with_reply(new, answer, child.parents)

    def take_calls(self, plan: Plan) -> list[int]:
        self._last.pop((plan.generation, plan.index), None)  # the plan's child is decided
        return self._calls.pop((plan.generation, plan.index), [])

    def pending_calls(self, plan: Plan) -> list[int]:
        return list(self._calls.get((plan.generation, plan.index), []))

    def budget_reached(self) -> bool:
        return bool(self.llm.exhausted)

    def exhausted_reason(self) -> str | None:
        return self.llm.exhausted_reason

    def start_generation(self) -> None:
        self.health.ok = self.health.failed = 0

    def end_generation(self, generation: int, reasons: list[str]) -> None:
        if self.health.failed and not self.health.ok and not self.budget_reached():
            # Every proposal of the generation died in its LLM call: nothing would evolve.
            raise RunStopped(
                f"all {self.health.failed} LLM calls of generation {generation} failed (e.g. "
                f"{reasons[-1] if reasons else 'unknown'})",
                None,
            )

    async def warm_up(self) -> None:
        await self.llm.warm_up()

    def ready(self) -> None:
        self.health.ok_at = time.monotonic()

    async def aclose(self) -> None:
        await self.llm.aclose()

    async def apply(self, step: Step, plan: Plan, genome: Genome, previous: Child | None,
                    rng: random.Random, sample: int) -> Child:
        spec = registry.spec(step.op)
        # With the bandit choosing EoT, a mutation step with a teacher is EoT or a mutation with a
        # persona, as its (operator, persona) arm says.
        arm = None
        if spec.role == SINGLE and step.other is not None:
            arm = self.bandits.operator(plan.generation, rng, plan.index, eot=True)
            spec = registry.spec(arm[0]) if arm is not None else spec
        persona = arm[1] if arm is not None else None
        child = await self._chain(spec, step, plan, genome, previous, rng, sample, persona)
        if child is None:  # identical parents, or a teacher with no change: a mutation instead
            base = registry.base()
            child = await self._chain(base, step, plan, genome, previous, rng, sample, None)
        assert child is not None  # a mutation always makes a request
        return child

    async def _chain(self, spec: OperatorSpec, step: Step, plan: Plan, genome: Genome,
                     previous: Child | None, rng: random.Random, sample: int,
                     persona: str | None) -> Child | None:
        """The step's LLM calls as ``spec`` says: its request, then (a two-turn chain, EoT) the
        next turn in the same conversation; None when the operator cannot apply here."""
        if spec.build is None:
            raise ValueError(f"the {spec.name} operator makes no step of a plan")

        def chosen_persona() -> str | None:  # drawn (from the plan's RNG) only when asked
            return persona if persona is not None else self.bandits.persona(plan.generation, rng, plan.index)

        ctx = StepContext(
            lib=self.prompts, genome=genome, parent_id=plan.parent, other=step.other, rng=rng,
            temperature_range=self._range(spec, plan.generation), source=self.step_source,
            seed_id=self.seed_id, of_parent=previous is None, personas=self.evo.personas,
            persona=chosen_persona, edit_mode=self.evo.diff.mode,
            diff_min_chars=self.evo.diff.min_chars, directions=self.directions,
        )
        req = spec.build(ctx)
        if req is None:
            return None
        reply = await self._ask(req, rng, plan, sample)
        reflection = None
        if spec.follow is not None:
            reflection = reply.text.strip()
            req = spec.follow(ctx, req, reply.text)
            reply = await self._ask(req, rng, plan, sample + 100)
        child = ops.child_from_reply(req, genome, reply.text, reflection=reflection)
        return with_reply(child, reply, _merged_parents(previous, plan))

    def _range(self, spec: OperatorSpec, generation: int) -> tuple[float, float]:
        """The temperature range of ``spec``'s calls in ``generation``."""
        key = spec.temperature_key(generation)
        if key is None:
            raise ValueError(f"the {spec.name} operator names no temperature")
        low, high = getattr(self.evo.temperature, key)
        return float(low), float(high)

    def _feedback(self, vid: str) -> str:
        """The evaluator's feedback on ``vid`` as a prompt may show it: values (its own or its
        parents') and lines of reported-only objectives (``select = false``) scrubbed."""
        evaluation = self.source.index.latest_evaluation(vid)
        return self.source.withheld(vid, evaluation.feedback or "") if evaluation else ""

    async def fix(self, plan: Plan, vid: str, failure: str, output_tail: str,
                  rng: random.Random, attempt: int) -> Child:
        genome = self.source.genome(vid)
        key = self.source.segment_of(vid) or genome.segments[0].key
        # The evaluator's words may quote a held-out metric (its parents' values too): scrubbed.
        failure, output_tail = self.source.withheld(vid, failure), self.source.withheld(vid, output_tail)
        row = self.source.index.get_variant(vid)
        versions = [("the version it was changed from", p) for p in (row.parents[:1] if row else ())]
        objectives = objectives_of(self.directions, self.step_source.objective_metrics, versions, self.seed_id)
        req = ops.fix_request(
            self.prompts, genome, vid, key, failure, output_tail, rng,
            temperature_range=self._range(registry.repair(), plan.generation),
            edit_mode=self.evo.diff.mode, diff_min_chars=self.evo.diff.min_chars,
            feedback=self._feedback(vid), objectives=objectives,
        )
        try:
            reply = await self._ask(req, rng, plan, sample=1000 + attempt)
            child = ops.child_from_reply(req, genome, reply.text)
        except Rejected as err:
            raise NoChild(err.reason, req.operator) from None
        except NoChild as err:
            raise NoChild(err.reason, req.operator, err.budget) from None
        return with_reply(child, reply)

    def _top_p(self, operator: str, generation: int) -> float | None:
        """The configured top_p of an operator's calls (its temperature key: a mutation of
        generation 0 is 'initial'); None: none is sent."""
        kind = registry.spec(operator).temperature_key(generation)
        value = getattr(self.evo.top_p, kind, None) if kind else None
        return float(value) if value is not None else None

    async def _ask(self, req: Any, rng: random.Random, plan: Plan, sample: int) -> Any:
        model = self.llm.pick_model(rng, self.bandits.model(plan.generation, rng, plan.index))
        stage = getattr(req, "stage", "final")
        purpose = f"{req.operator}:{stage}" if stage != "final" else req.operator
        if getattr(req, "edit", EDIT_WHOLE) == EDIT_DIFF:
            purpose += ":diff"  # tokens per operator and mode (whole segment or edit blocks)
        await self.gate.acquire(urgent=sample > 0)  # sample 0: the first call of a child
        try:
            reply = await self.llm.complete(
                req.messages,
                temperature=req.temperature,
                top_p=self._top_p(req.operator, plan.generation),
                model=model,
                sample_index=sample_index(plan.generation, plan.index, sample),
                purpose=purpose,
            )
        except BudgetExhausted as err:
            raise NoChild(err.reason, req.operator, budget=True) from None
        except LLMError as err:
            self.health.failed_call(model.label, err)
            raise NoChild(err.reason, req.operator) from None
        finally:
            self.gate.release()
        self.health.succeeded(model.label)
        self.progress.spend(self.llm.spent_usd)
        if reply.call_id is not None:
            self._calls.setdefault((plan.generation, plan.index), []).append(reply.call_id)
        if self.novelty is not None and stage != "reason" and registry.spec(req.operator).role != REPAIR:
            self._last[(plan.generation, plan.index)] = (req, reply)
        return reply
