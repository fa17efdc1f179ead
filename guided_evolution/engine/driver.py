"""`ge run` / `ge resume`: the generational loop and the overlapped scheduler.

Each generation is planned from the previous population with a deterministic RNG (seed,
generation, child index), so a resumed run re-derives the same plans; cached LLM replies and
content-hash deduplication make re-running a plan free and idempotent.

Per child: propose (LLM or offline operators) → splice → commit (git) → record (index) →
evaluate (executor, in a sandbox) → record (index, git note). Proposals and evaluations overlap:
while evaluation slots are busy, the next children are already being proposed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import shlex
import shutil
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.config import (
    OFFLINE_MODEL,
    GeConfig,
    ResolvedConfig,
    find_config,
    load_config,
)
from guided_evolution.engine.progress import Progress, make_progress
from guided_evolution.errors import ConfigError, GeError
from guided_evolution.evolution.segments import (
    Genome,
    SpliceError,
    parse_genome,
    splice,
    variant_id,
)
from guided_evolution.runstore import rundir as rd
from guided_evolution.runstore.git_store import GitStore, format_trailers
from guided_evolution.runstore.run_index import GenerationRecord, ReflectionRecord

SEED_BRANCH = "seed"
COMPACT_EVERY = 2000  # children between repository compactions
FATAL_STREAK = 5  # HTTP 400s in a row from one model that stop a run


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Step:
    """One operator application in a child's plan."""

    op: str  # 'mutation' | 'crossover' | 'eot'
    other: str | None = None  # crossover partner, or the EoT elite


@dataclass(frozen=True)
class Plan:
    """How one child of a generation is made: a parent and the operators applied in order."""

    generation: int
    index: int
    parent: str
    steps: tuple[Step, ...]

    @property
    def parents(self) -> tuple[str, ...]:
        partners = [s.other for s in self.steps if s.op == "crossover" and s.other]
        return (self.parent, *partners)

    def rng(self, seed: int) -> random.Random:
        """The child's own RNG: the same plan always draws the same numbers."""
        return random.Random(f"ge:{seed}:{self.generation}:{self.index}")


@dataclass
class Outcome:
    """What became of one plan."""

    plan: Plan
    variant: str | None = None
    ok: bool = False
    reason: str | None = None


@dataclass
class RunSummary:
    """What `ge run` / `ge resume` print at the end."""

    run_dir: str
    generation: int
    children: int
    evaluated: int
    failed: int
    llm_calls: int
    cost_usd: float
    finished: bool
    stop_reason: str
    objectives: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- entry points


def start_run(
    seed_dir: Path | None,
    config_path: Path | None,
    run_dir: Path | None,
    overrides: dict[str, Any],
    *,
    json_mode: bool = False,
    detach: bool = False,
    profile: str | None = None,
) -> RunSummary:
    """Validate everything, create the run directory atomically, then drive the evolution."""
    cfg_path = find_config(seed_dir, config_path)
    cfg = load_config(cfg_path, overrides, profile)
    resolved = rd.resolve(cfg, cfg_path, run_dir)
    seed_path = Path(resolved.seed_dir)
    seed_files = rd.collect_seed(seed_path, cfg)
    text_files = _decode_evolvable(seed_files, cfg)
    parse_genome(text_files, cfg.seed.files, cfg.seed.marker)  # raises on a seed without markers
    _check_evaluator(cfg, seed_path)
    if not cfg.llm.offline:
        from guided_evolution.llm.client import LLMClient

        problems = LLMClient(_llm_settings(cfg)).credential_problems()
        if problems:
            raise ConfigError(problems[0], "export the variable, or set api_key_env in [[llm.models]]")

    def build(paths: rd.RunPaths) -> None:
        from guided_evolution.runstore.run_index import RunIndex, VariantRecord

        store = GitStore.init(paths.repo)
        try:
            vid = variant_id(text_files, cfg.seed.files)
            message = "seed\n\n" + format_trailers(
                {"Ge-Variant": vid, "Ge-Generation": "0", "Ge-Operator": "seed", "Ge-Parents": []}
            )
            commit = store.commit(seed_files, [], message, SEED_BRANCH)
        finally:
            store.close()
        index = RunIndex.open(paths.index)
        try:
            index.add_variant(
                VariantRecord(id=vid, commit_sha=commit, branch=SEED_BRANCH, generation=0, operator="seed", parents=[])
            )
            index.set_meta("seed_variant", vid)
            index.add_event("run_created", {"run_dir": resolved.run_dir, "seed_dir": resolved.seed_dir})
        finally:
            index.close()

    paths = rd.create_run_dir(resolved, build)
    return _drive(paths, resolved, json_mode, detach)


def resume_run(run_dir: Path, *, json_mode: bool = False, detach: bool = False) -> RunSummary:
    """Continue a run where it stopped."""
    paths, resolved = rd.open_run(Path(run_dir))
    return _drive(paths, resolved, json_mode, detach)


def _drive(paths: rd.RunPaths, resolved: ResolvedConfig, json_mode: bool, detach: bool) -> RunSummary:
    from guided_evolution.runstore import doctor
    from guided_evolution.runstore.run_index import RunIndex

    with rd.RunLock(paths.root):
        # A kill between a git write and an index write leaves them out of step: repair first.
        doctor.check(paths.root, repair=True)
        store = GitStore.open(paths.repo)
        index = RunIndex.open(paths.index)
        progress = make_progress(json_mode, [(o.name, o.direction) for o in resolved.config.selected_objectives])
        engine = Engine(paths, resolved, store, index, progress, detach=detach)
        try:
            with progress:
                asyncio.run(engine.run())
        finally:
            store.close()
        summary = engine.summary()
        index.close()
    return summary


def _decode_evolvable(files: dict[str, bytes], cfg: GeConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in cfg.seed.files:
        try:
            out[name] = files[name].decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError:
            raise ConfigError(f"evolvable file {name} is not UTF-8 text", "list only source files in [seed] files") from None
    return out


def _last_output_line(output_tail: str | None, limit: int = 400) -> str:
    """The evaluator's last line of output (its error, usually), without ge's own notes."""
    for line in reversed((output_tail or "").splitlines()):
        text = line.strip()
        if text and not text.startswith("[ge] "):
            return text if len(text) <= limit else text[: limit - 3] + "..."
    return ""


def _check_evaluator(cfg: GeConfig, seed_dir: Path) -> None:
    """The evaluator's program must exist (on PATH or in the seed directory)."""
    for key, command in (
        ("evaluator.command", cfg.evaluator.command),
        ("evaluator.check", cfg.evaluator.check),
        ("evaluator.worker", cfg.evaluator.worker),
    ):
        if not command:
            continue
        try:
            words = shlex.split(command)
        except ValueError as err:
            raise ConfigError(f"{key} = {command!r}: {err}") from None
        words = [w for w in words if "=" not in w.split("/")[0]] or words  # skip VAR=value prefixes
        program = words[0]
        if "/" in program:
            if not (seed_dir / program).exists() and not Path(program).exists():
                raise ConfigError(f"{key}: program {program!r} not found", "fix the path in ge.toml")
        elif shutil.which(program) is None and program not in {"exec", "cd", "true", "false", ":"}:
            raise ConfigError(f"{key}: command {program!r} not found on PATH", "install it or fix the command in ge.toml")


def _llm_settings(cfg: GeConfig) -> Any:
    from guided_evolution.llm.client import LLMSettings, ModelSpec

    return LLMSettings(
        models=tuple(
            ModelSpec(
                model=m.model,
                weight=m.weight,
                api_base=m.api_base or cfg.llm.api_base,
                api_key_env=m.api_key_env,
                input_cost_per_token=m.input_cost_per_token,
                output_cost_per_token=m.output_cost_per_token,
            )
            for m in cfg.llm.models
        ),
        concurrency=cfg.llm.concurrency,
        timeout_s=cfg.llm.timeout_s,
        retries=cfg.llm.retries,
        backoff_s=cfg.llm.backoff_s,
        budget_usd=cfg.llm.budget_usd,
        budget_tokens=cfg.llm.budget_tokens,
        max_tokens=cfg.llm.max_tokens,
    )


# --------------------------------------------------------------------------- the engine


class Engine:
    """One run's loop. Single-threaded asyncio: all store and index writes happen on this thread."""

    def __init__(
        self,
        paths: rd.RunPaths,
        resolved: ResolvedConfig,
        store: GitStore,
        index: Any,
        progress: Progress,
        *,
        detach: bool = False,
    ) -> None:
        from guided_evolution.evolution.prompts import PromptLibrary

        self.paths = paths
        self.resolved = resolved
        self.cfg = resolved.config
        self.evo = self.cfg.evolution
        self.store = store
        self.index = index
        self.progress = progress
        self.seed_dir = Path(resolved.seed_dir)
        self.objectives = [(o.name, o.direction) for o in self.cfg.selected_objectives]
        self.seed_id: str = index.get_meta("seed_variant")
        self.prompts = PromptLibrary.load([self.seed_dir / "prompts"])
        self.offline = self.cfg.llm.offline
        self.llm: Any = None
        self.executor: Any = None
        self._genomes: OrderedDict[str, Genome] = OrderedDict()
        self._commits: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._compacted_at = 0
        self._notes: dict[str, str] = {}
        self._calls: dict[tuple[int, int], list[int]] = {}
        self.stop_reason = ""
        self.detach = detach  # on Ctrl-C leave cluster jobs running for `ge resume` to re-attach
        self.warnings: list[str] = []
        self.generation = 0
        self._fatal_streak: dict[str, int] = {}  # model -> LLM errors in a row that will repeat
        self._llm_ok = self._llm_failed = 0  # LLM calls of the current generation
        self._llm_ok_at = time.monotonic()  # the last successful LLM call (or the loop's start)

    # ----------------------------------------------------------------- setup

    def _make_executor(self) -> Any:
        from guided_evolution.evaluation.factory import build_executor

        executor = build_executor(self.resolved, self.paths)
        self.warnings.extend(executor.warnings)
        for line in executor.warnings:
            self.progress.warn(line)
            self.index.add_event("warning", {"message": line})
        details = executor.describe()
        self.index.add_event("executor", details)
        self.progress.info(details["summary"])
        return executor

    def _make_llm(self) -> Any:
        if self.offline:
            return None
        from guided_evolution.llm.client import LLMClient

        counts = self.index.counts()
        return LLMClient(
            _llm_settings(self.cfg),
            recorder=self.index,
            spent_usd=counts["cost_usd"],
            spent_tokens=counts["prompt_tokens"] + counts["completion_tokens"],
        )

    # ----------------------------------------------------------------- loop

    async def run(self) -> None:
        self.executor = self._make_executor()
        self.llm = self._make_llm()
        self.n_slots = self.executor.capacity
        reported = len(self.executor.warnings)  # the rest arrive by the executor's close
        self.slots = asyncio.Semaphore(self.n_slots)
        bound = self.evo.max_pending or 2 * self.n_slots + self.cfg.llm.concurrency
        self.pending = asyncio.Semaphore(bound)
        try:
            await self._loop()
        finally:
            self._flush_notes()
            with contextlib.suppress(Exception):
                await self.executor.aclose(cancel=not self.detach)
            for line in self.executor.warnings[reported:]:
                self.warnings.append(line)
                self.index.add_event("warning", {"message": line})
            if self.llm is not None:
                with contextlib.suppress(Exception):
                    await self.llm.aclose()

    async def _loop(self) -> None:
        finished = self.index.get_meta("finished")
        if finished:
            self.stop_reason = finished
            last = self.index.last_generation()
            self.generation = last.generation if last else 0
            return
        self.index.add_event("run_resumed" if self.index.last_generation() else "run_started", {"pid": os.getpid()})
        # litellm takes seconds to import: do it while the seed is evaluated, not on the first call.
        warm = asyncio.create_task(self.llm.warm_up()) if self.llm is not None else None
        await self._ensure_seed_evaluated()
        if warm is not None:
            await warm
        self._llm_ok_at = time.monotonic()
        last = self.index.last_generation()
        gen = 0 if last is None else last.generation + 1
        population: list[str] = [self.seed_id] if last is None else list(last.population)
        hof = list(last.hall_of_fame) if last else []
        while gen <= self.evo.generations:
            self.generation = gen
            if self._budget_reached():
                break
            plans, elites = self._plan(gen, population)
            self.index.add_event("generation_started", {"generation": gen, "plans": len(plans)})
            self.progress.generation(gen, self.evo.generations, len(plans))
            self._llm_ok = self._llm_failed = 0
            outcomes = await self._run_plans(plans)
            if self._llm_failed and not self._llm_ok and not self._budget_reached():
                # Every proposal of the generation died in its LLM call: nothing would evolve.
                reasons = [o.reason for o in outcomes if o.reason]
                self._llm_stop(
                    f"all {self._llm_failed} LLM calls of generation {gen} failed (e.g. "
                    f"{reasons[-1] if reasons else 'unknown'})",
                    None,
                )
            children = [o.variant for o in sorted(outcomes, key=lambda o: o.plan.index) if o.variant]
            population = _dedup([*elites, *children]) if gen > 0 else _dedup([self.seed_id, *children])
            hof = self._hall_of_fame(hof, population)
            if self._budget_reached() and any(o.reason == "budget" for o in outcomes):
                # The generation was cut short: record it so the front is current, then stop.
                self.index.save_generation(GenerationRecord(gen, population, elites, hof))
                break
            self._flush_notes()
            self.index.save_generation(GenerationRecord(gen, population, elites, hof))
            self.index.add_event("generation_finished", {"generation": gen, "children": len(children)})
            self._compact(force=False)
            gen += 1
        if self._budget_reached():
            self.stop_reason = self.llm.exhausted_reason or "budget reached"
        else:
            self.stop_reason = f"completed {self.evo.generations} generations"
        self.index.set_meta("finished", self.stop_reason)
        self.index.add_event("run_finished", {"reason": self.stop_reason})
        self._compact(force=True)

    def _compact(self, force: bool) -> None:
        """Pack the repository's loose objects (about 35 KB per variant) between generations.

        Safe here: no plan is in flight, and the run lock keeps other writers out.
        """
        children = self.index.counts()["children"]
        if force or children - self._compacted_at >= COMPACT_EVERY:
            self.store.compact()
            self._compacted_at = children

    def _flush_notes(self) -> None:
        """Attach the metrics notes of this generation's evaluations in one notes commit.

        The index is the primary record; after a kill before this, `ge doctor` (run at every
        start) writes the missing notes from it.
        """
        notes, self._notes = self._notes, {}
        self.store.set_notes(notes)

    def _budget_reached(self) -> bool:
        return self.llm is not None and bool(self.llm.exhausted)

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
        self.progress.best(self._best_metrics([self.seed_id]))

    # ----------------------------------------------------------------- planning

    def _valid(self, ids: list[str]) -> list[Any]:
        from guided_evolution.evolution.selection import Scored

        out = []
        for vid in ids:
            ev = self.index.latest_evaluation(vid)
            if ev is None or ev.status != "ok":
                continue
            metrics = {name: ev.metrics.get(name) for name, _ in self.objectives}
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values()):
                out.append(Scored(vid, metrics))
        return out

    def _teachers(self, elites: list[Any]) -> list[str]:
        """The elites (Scored) better than the seed on at least one objective, in order."""
        from guided_evolution.evolution.selection import better_somewhere

        seed = self._valid([self.seed_id])
        if not seed:
            return []
        return [
            e.id for e in elites
            if e.id != self.seed_id and better_somewhere(e, seed[0], self.objectives)
        ]

    def _plan(self, gen: int, population: list[str]) -> tuple[list[Plan], list[str]]:
        """Plans for generation `gen` and the elites carried over (deterministic)."""
        from guided_evolution.evolution.selection import nsga2_parents, spea2_elites

        rng = random.Random(f"ge:{self.evo.seed}:{gen}:plan")
        if gen == 0:
            plans = [Plan(0, i, self.seed_id, (Step("mutation"),)) for i in range(self.evo.initial_population)]
            return plans, []
        valid = self._valid(population)
        if not valid:
            valid = self._valid([self.seed_id])
        elites = [s.id for s in spea2_elites(valid, min(self.evo.elites, len(valid)), self.objectives)]
        parents = [s.id for s in nsga2_parents(valid, self.evo.population, self.objectives, rng)]
        plans: list[Plan] = []
        # EoT learns from an elite's change to the seed, so the elite must have measured better
        # than the seed on some objective (what the EoT prompt tells the model); the seed itself
        # and elites that merely tie with it have nothing to teach.
        elite_ids = set(elites)
        teachers = self._teachers([s for s in valid if s.id in elite_ids])
        eot_on = gen >= self.evo.eot_start_generation and bool(teachers)

        def mutate_step() -> Step | None:
            if rng.random() >= self.evo.mutation_probability:
                return None
            if eot_on and not self.offline and rng.random() < self.evo.eot_probability:
                return Step("eot", rng.choice(teachers))
            return Step("mutation")

        for i in range(0, len(parents) - 1, 2):
            a, b = parents[i], parents[i + 1]
            crossed = a != b and rng.random() < self.evo.crossover_probability
            for primary, partner in ((a, b), (b, a)):
                steps = [Step("crossover", partner)] if crossed else []
                mut = mutate_step()
                if mut is not None:
                    steps.append(mut)
                if steps:
                    plans.append(Plan(gen, len(plans), primary, tuple(steps)))
        if len(parents) % 2:
            mut = mutate_step() or Step("mutation")
            plans.append(Plan(gen, len(plans), parents[-1], (mut,)))
        return plans, elites

    def _hall_of_fame(self, previous: list[str], population: list[str]) -> list[str]:
        from guided_evolution.evolution.selection import HallOfFame

        hof = HallOfFame(self.evo.hall_of_fame, self.objectives)
        hof.update(self._valid(_dedup([*previous, *population])))
        return [s.id for s in hof.items]

    # ----------------------------------------------------------------- execution

    async def _run_plans(self, plans: list[Plan]) -> list[Outcome]:
        tasks = [asyncio.create_task(self._run_plan(p)) for p in plans]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _run_plan(self, plan: Plan) -> Outcome:
        outcome = Outcome(plan)
        await self.pending.acquire()
        released = False
        try:
            if self._budget_reached():
                outcome.reason = "budget"
                return outcome
            self.progress.count("proposing", +1)
            try:
                child = await self._propose(plan)
            finally:
                self.progress.count("proposing", -1)
            if isinstance(child, str):
                outcome.reason = child
                return outcome
            vid, fresh = self._commit(plan, child)
            outcome.variant = vid
            done = None if fresh else self.index.latest_evaluation(vid)
            if done is not None:  # evaluated before (this run or before a kill): never again
                outcome.ok = done.status == "ok"
                return outcome
            shared = self._inflight.get(vid)
            if shared is not None:  # the same child from another plan is being evaluated now
                self.pending.release()
                released = True
                result = await asyncio.shield(shared)
                outcome.ok = result.status == "ok"
                return outcome
            shared = asyncio.get_running_loop().create_future()
            self._inflight[vid] = shared
            try:
                self.progress.count("queued", +1)
                async with self.slots:
                    self.progress.count("queued", -1)
                    self.pending.release()
                    released = True
                    result = await self._evaluate(vid)
                shared.set_result(result)
            except BaseException:
                shared.cancel()
                raise
            finally:
                del self._inflight[vid]
            outcome.ok = result.status == "ok"
            outcome.reason = result.failure_reason
            if not outcome.ok and self.evo.fix_attempts and not self.offline:
                outcome = await self._fix(plan, vid, result, outcome)
            return outcome
        finally:
            if not released:
                self.pending.release()

    async def _fix(self, plan: Plan, vid: str, result: Any, outcome: Outcome) -> Outcome:
        """Feed an evaluation failure back to the LLM, up to `fix_attempts` times."""
        from guided_evolution.evolution.operators import Rejected, child_from_reply, fix_request

        rng = random.Random(f"ge:{self.evo.seed}:{plan.generation}:{plan.index}:fix")
        for attempt in range(self.evo.fix_attempts):
            row = self.index.get_variant(vid)
            genome = self._genome(vid)
            key = row.segment if row.segment else genome.segments[0].key
            req = fix_request(
                self.prompts, genome, vid, key, result.failure_reason or "failed", result.output_tail or "", rng,
                temperature_range=self.evo.temperature.fix,
            )
            try:
                reply = await self._ask(req, rng, plan, sample=1000 + attempt)
                child = child_from_reply(req, genome, reply.text)
            except Rejected as err:
                self._reject(plan, "fix", err.reason)
                return outcome
            except _LLMFailed as err:
                self._reject(plan, "fix", err.reason)
                return outcome
            child = _with_model(child, reply)
            fixed, fresh = self._commit(plan, child, parents_override=(vid,))
            if not fresh:
                return outcome
            async with self.slots:
                result = await self._evaluate(fixed)
            outcome = Outcome(plan, fixed, result.status == "ok", result.failure_reason)
            if outcome.ok:
                return outcome
            vid = fixed
        return outcome

    # ----------------------------------------------------------------- proposing

    async def _propose(self, plan: Plan) -> Any:
        """A child (operators.Child) for the plan, or a one-line reason why none was made."""
        from guided_evolution.evolution.operators import Child, Rejected

        rng = plan.rng(self.evo.seed)
        current: Genome = self._genome(plan.parent)
        child: Child | None = None
        descriptions: list[str] = []
        try:
            for n, step in enumerate(plan.steps):
                if child is not None:  # the next step works on the previous step's result
                    current = parse_genome(child.files, self.cfg.seed.files, self.cfg.seed.marker)
                child = await self._apply(step, plan, current, child, rng, sample=n)
                descriptions.append(child.description)
        except Rejected as err:
            self._reject(plan, plan.steps[0].op, err.reason)
            return err.reason
        except _LLMFailed as err:
            self._reject(plan, plan.steps[0].op, err.reason)
            return "budget" if err.budget else err.reason
        except SpliceError as err:
            self._reject(plan, plan.steps[0].op, err.reason)
            return err.reason
        assert child is not None
        if len(plan.steps) > 1:
            # A crossover child that was mutated afterwards is still a merge of two parents: it is
            # recorded as a crossover, and the description names every step.
            import dataclasses

            first = plan.steps[0].op
            operator = child.operator if first != "crossover" else ("offline-crossover" if self.offline else "crossover")
            child = dataclasses.replace(child, operator=operator, description="; then ".join(descriptions))
        return child

    async def _apply(self, step: Step, plan: Plan, genome: Genome, previous: Any, rng: random.Random, sample: int) -> Any:
        from guided_evolution.evolution import operators as ops

        temps = self.evo.temperature
        mutation_range = temps.initial if plan.generation == 0 else temps.mutation
        if self.offline:
            return self._offline(step, plan, genome, rng)
        if step.op == "crossover":
            assert step.other is not None
            req = ops.crossover_request(
                self.prompts, genome, plan.parent, self._genome(step.other), step.other, rng, temperature_range=temps.crossover
            )
            if req is None:  # parents identical in every segment: mutate instead
                req = ops.mutation_request(
                    self.prompts, genome, plan.parent, rng, temperature_range=mutation_range, personas=self.evo.personas
                )
            reply = await self._ask(req, rng, plan, sample)
            return _with_model(ops.child_from_reply(req, genome, reply.text), reply, plan.parents)
        if step.op == "eot":
            assert step.other is not None
            seed_ev = self.index.latest_evaluation(self.seed_id)
            elite_ev = self.index.latest_evaluation(step.other)
            reason_req = ops.eot_reason_request(
                self.prompts, self._genome(step.other), step.other, self._objective_metrics(elite_ev) or {},
                self._genome(self.seed_id), self._objective_metrics(seed_ev), rng, temperature_range=temps.eot,
                directions={o.name: o.direction for o in self.cfg.objectives},
            )
            if reason_req is not None:
                thought = await self._ask(reason_req, rng, plan, sample)
                apply_req = ops.eot_apply_request(
                    self.prompts, reason_req, thought.text, genome, plan.parent, rng, temperature_range=temps.eot
                )
                reply = await self._ask(apply_req, rng, plan, sample + 100)
                child = ops.child_from_reply(apply_req, genome, reply.text, reflection=thought.text.strip())
                return _with_model(child, reply, _merge_parents(previous, plan))
        req = ops.mutation_request(
            self.prompts, genome, plan.parent, rng, temperature_range=mutation_range, personas=self.evo.personas
        )
        reply = await self._ask(req, rng, plan, sample)
        return _with_model(ops.child_from_reply(req, genome, reply.text), reply, _merge_parents(previous, plan))

    def _objective_metrics(self, evaluation: Any) -> dict[str, float] | None:
        """Only the configured objectives' numbers: other metric names and values are the
        variant's own text and never go into a prompt."""
        if evaluation is None or not evaluation.metrics:
            return None
        out = {}
        for objective in self.cfg.objectives:
            value = evaluation.metrics.get(objective.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[objective.name] = float(value)
        return out

    def _offline(self, step: Step, plan: Plan, genome: Genome, rng: random.Random) -> Any:
        from guided_evolution.evolution.offline_operators import offline_crossover, offline_mutate
        from guided_evolution.evolution.operators import Child

        if step.op == "crossover" and step.other is not None:
            files, description = offline_crossover(genome, self._genome(step.other), rng)
            return Child(files, "offline-crossover", "*", "offline", None, plan.parents, 0.0, None, description)
        segments = list(genome.segments)
        rng.shuffle(segments)
        last: SpliceError | None = None
        for segment in segments:  # some segments offer no edit (e.g. no literal, no known call)
            try:
                edit = offline_mutate(segment, rng)
                files = splice(genome, segment.key, edit.code)
            except SpliceError as err:
                last = err
                continue
            return Child(files, "offline-mutation", segment.key, "offline", None, plan.parents, 0.0, None, edit.description)
        raise last or SpliceError("no applicable offline edit")

    async def _ask(self, req: Any, rng: random.Random, plan: Plan, sample: int) -> Any:
        from guided_evolution.llm.client import BudgetExhausted, LLMError

        model = self.llm.pick_model(rng)
        try:
            reply = await self.llm.complete(
                req.messages,
                temperature=req.temperature,
                model=model,
                sample_index=plan.generation * 1_000_000 + plan.index * 1000 + sample,
                purpose=f"{req.operator}:{req.stage}" if getattr(req, "stage", "final") != "final" else req.operator,
            )
        except BudgetExhausted as err:
            raise _LLMFailed(err.reason, budget=True) from None
        except LLMError as err:
            self._llm_failed += 1
            self._stop_if_hopeless(model.label, err)
            raise _LLMFailed(err.reason) from None
        self._fatal_streak.pop(model.label, None)
        self._llm_ok += 1
        self._llm_ok_at = time.monotonic()
        self.progress.spend(self.llm.spent_usd)
        if reply.call_id is not None:
            self._calls.setdefault((plan.generation, plan.index), []).append(reply.call_id)
        return reply

    def _stop_if_hopeless(self, model: str, err: Any) -> None:
        """Stop the run (unfinished, resumable) on an LLM error that will repeat on every call.

        A rejected key or an unknown model/endpoint (HTTP 401/403/404) stops at once; a rejected
        request (HTTP 400) only after FATAL_STREAK in a row from one model, since a single
        over-long prompt gets one too. Otherwise every proposal would be rejected and the run
        would "finish" having evolved nothing.
        """
        if not err.fatal:
            silent = time.monotonic() - self._llm_ok_at
            if silent >= self.cfg.llm.give_up_after_s:
                self._llm_stop(
                    f"no LLM call has succeeded for {silent:.0f} s (llm.give_up_after_s); the "
                    f"last error: {err.reason}",
                    model,
                )
            return
        streak = self._fatal_streak.get(model, 0) + 1
        self._fatal_streak[model] = streak
        if err.kind == "bad_request" and streak < FATAL_STREAK:
            return
        self._llm_stop(err.reason, model, err.hint)

    def _llm_stop(self, reason: str, model: str | None, hint: str | None = None) -> None:
        """Stop the run, unfinished, because the LLM cannot be reached or keeps refusing."""
        self.index.add_event("run_stopped", {"reason": reason, "model": model})
        raise GeError(
            f"the LLM calls keep failing, so the run stopped: {reason}",
            f"{hint or 'check the model name, api_base, key and that the server is up'}, then "
            f"`ge resume {self.paths.root}`; a wrong model name or api_base needs a new `ge run`",
        )

    def _reject(self, plan: Plan, operator: str, reason: str) -> None:
        self.progress.count("rejected", +1)
        self.index.add_event(
            "proposal_rejected",
            {
                "generation": plan.generation,
                "plan": plan.index,
                "operator": operator,
                "parents": list(plan.parents),
                "reason": reason,
                "calls": self._calls.pop((plan.generation, plan.index), []),
            },
        )

    # ----------------------------------------------------------------- committing

    def _commit(self, plan: Plan, child: Any, parents_override: tuple[str, ...] | None = None) -> tuple[str, bool]:
        """Store the child as a commit on its own branch; (variant id, whether it is new)."""
        from guided_evolution.runstore.run_index import VariantRecord

        vid = variant_id(child.files, self.cfg.seed.files)
        if self.index.get_variant(vid) is not None:
            self.index.add_event("duplicate", {"variant": vid, "generation": plan.generation, "plan": plan.index})
            return vid, False
        parents = _dedup(list(parents_override or child.parents))
        parent_commits = [self._commit_of(p) for p in parents]
        base = self.store.read_files(parent_commits[0])
        tree = dict(base)
        for name, text in child.files.items():
            tree[name] = text.encode("utf-8")
        branch = f"v/{plan.generation}/{vid}"
        existing = self.store.branch_sha(branch)
        model = child.model or (OFFLINE_MODEL if self.offline else "")
        if existing is None:
            # A crossover that was then mutated names both steps; the segment is the last step's.
            steps = len(plan.steps) > 1 and parents_override is None  # not a later fix child
            what = " then ".join(s.op for s in plan.steps) if steps else child.operator
            subject = f"{what} of {child.segment} ({child.persona or child.prompt_name}, {model}, T={child.temperature:.2f})"
            trailers = {
                "Ge-Variant": vid,
                "Ge-Generation": str(plan.generation),
                "Ge-Operator": child.operator,
                "Ge-Prompt": child.prompt_name,
                "Ge-Persona": child.persona or "",
                "Ge-Model": model,
                "Ge-Temperature": f"{child.temperature:.4f}",
                "Ge-Segment": child.segment,
                "Ge-Parents": parents,
            }
            if child.reflection:
                trailers["Ge-Reflection"] = child.reflection  # JSON-escaped onto one line
            body = child.description.strip()
            message = f"{subject}\n\n{body}\n\n{format_trailers(trailers)}" if body else f"{subject}\n\n{format_trailers(trailers)}"
            existing = self.store.commit(tree, parent_commits, message, branch)
        self._commits[vid] = existing
        self.index.add_variant(
            VariantRecord(
                id=vid,
                commit_sha=existing,
                branch=branch,
                generation=plan.generation,
                operator=child.operator,
                parents=parents,
                segment=child.segment,
                prompt_name=child.prompt_name,
                persona=child.persona,
                model=model,
                temperature=child.temperature,
                status="pending",
                eot_reflection=child.reflection,
                llm_call_id=child.call_id,
            )
        )
        self.index.link_calls(vid, self._calls.pop((plan.generation, plan.index), []))
        if child.reflection:
            self.index.add_reflection(
                ReflectionRecord(variant_id=vid, text=child.reflection, elite_id=plan.steps[-1].other, segment=child.segment)
            )
        self.progress.count("proposed", +1)
        return vid, True

    def _commit_of(self, vid: str) -> str:
        if vid not in self._commits:
            self._commits[vid] = self.index.get_variant(vid).commit_sha
        return self._commits[vid]

    def _genome(self, vid: str) -> Genome:
        genome = self._genomes.get(vid)
        if genome is not None:
            self._genomes.move_to_end(vid)
            return genome
        files = self.store.read_files(self._commit_of(vid))
        text = {name: files[name].decode("utf-8") for name in self.cfg.seed.files if name in files}
        genome = parse_genome(text, self.cfg.seed.files, self.cfg.seed.marker)
        self._genomes[vid] = genome
        if len(self._genomes) > 512:
            self._genomes.popitem(last=False)
        return genome

    # ----------------------------------------------------------------- evaluating

    async def _evaluate(self, vid: str) -> Any:
        from guided_evolution.evaluation.contract import EvalRequest
        from guided_evolution.runstore.run_index import EvaluationRecord

        ev_cfg = self.cfg.evaluator
        workdir = self.paths.work / vid
        shutil.rmtree(workdir, ignore_errors=True)
        self.store.export(self._commit_of(vid), workdir)
        metrics_path = workdir / ".ge" / "metrics.json"
        metrics_path.parent.mkdir(exist_ok=True)
        self.index.set_variant_status(vid, "evaluating")
        self.progress.count("evaluating", +1)
        request = EvalRequest(
            variant_id=vid,
            workdir=workdir,
            run_dir=self.paths.root,
            command=ev_cfg.command,
            check_command=ev_cfg.check,
            timeout_s=ev_cfg.timeout_s,
            check_timeout_s=ev_cfg.check_timeout_s,
            metrics_path=metrics_path,
            log_path=self.paths.logs / f"{vid}.log",
            objectives=tuple(name for name, _ in self.objectives),
            env={"GE_SEED_DIR": str(self.seed_dir)},
        )
        try:
            result = await self.executor.evaluate(request)
        finally:
            self.progress.count("evaluating", -1)
        attempt = 1 + max((e.attempt for e in self.index.evaluations(vid)), default=0)
        record = EvaluationRecord(
            variant_id=vid,
            attempt=attempt,
            status=result.status,
            metrics=dict(result.metrics),
            started_at=result.started_at,
            duration_s=result.duration_s,
            failure_reason=result.failure_reason,
            output_tail=result.output_tail,
            stage=result.stage,
        )
        with self.index.transaction():  # the result and the status land together, or neither
            self.index.add_evaluation(record)
            self.index.set_variant_status(vid, "evaluated" if result.status == "ok" else "failed")
        self._notes[self._commit_of(vid)] = record.to_note()  # written per generation: see _flush_notes
        shutil.rmtree(workdir, ignore_errors=True)
        if result.status == "ok":
            self.progress.count("done", +1)
            self.progress.best(self._best_metrics([vid]))
        else:
            self.progress.count("failed", +1)
        return result

    def _best_metrics(self, ids: list[str]) -> dict[str, float]:
        valid = self._valid(ids)
        return dict(valid[0].metrics) if valid else {}

    # ----------------------------------------------------------------- summary

    def summary(self) -> RunSummary:
        from guided_evolution.inspection import views_data as inspection

        counts = self.index.counts()
        front = inspection.front_rows(self.index, self.cfg)
        return RunSummary(
            run_dir=str(self.paths.root),
            generation=self.generation,
            children=counts["children"],
            evaluated=counts["evaluated"],
            failed=counts["failed"],
            llm_calls=counts["llm_calls"],
            cost_usd=counts["cost_usd"],
            finished=bool(self.index.get_meta("finished")),
            stop_reason=self.stop_reason,
            objectives=[{"name": o.name, "direction": o.direction, "select": o.select} for o in self.cfg.objectives],
            front=front,
            warnings=self.warnings,
        )


class _LLMFailed(Exception):
    def __init__(self, reason: str, budget: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.budget = budget


def _with_model(child: Any, reply: Any, parents: tuple[str, ...] | None = None) -> Any:
    """Attach the model, call id (and merged parents) of the reply that made the child."""
    import dataclasses

    changes: dict[str, Any] = {"model": reply.model, "call_id": reply.call_id}
    if parents is not None:
        changes["parents"] = parents
    return dataclasses.replace(child, **changes)


def _merge_parents(previous: Any, plan: Plan) -> tuple[str, ...]:
    return tuple(previous.parents) if previous is not None else plan.parents


def _dedup(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))
