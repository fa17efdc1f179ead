"""The driver of one run (``Engine``): starts the executor, evaluates the seed while the LLM
client warms up, resumes from the last checkpoint, and runs the strategy the config names over
one ``engine.scheduler.Scheduler``: the generational loop (``engine.generational``) or
``mode = "steady"`` (``engine.steady``). It only schedules: the plan comes from
``evolution.plan``, children from a ``Proposer``, evaluations from an ``Executor``, every write
goes through the ``Recorder`` and every read of the run through the ``RunReader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from guided_evolution.config import ResolvedConfig
from guided_evolution.engine.generational import GenerationalLoop
from guided_evolution.engine.mates import run_mates
from guided_evolution.engine.proposer import Proposer, RunStopped
from guided_evolution.engine.reader import RunReader
from guided_evolution.engine.recorder import Recorder
from guided_evolution.engine.scheduler import RunParts, Scheduler
from guided_evolution.engine.steady import SteadyLoop
from guided_evolution.engine.stopping import StopRules
from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import Executor
from guided_evolution.evaluation.factory import build_executor
from guided_evolution.runstore.records import META_FINISHED
from guided_evolution.runstore.rundir import RunPaths


class Engine:
    """One run: its executor, its scheduler, and the loop its mode names."""

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
        self.evo = resolved.config.evolution
        self.recorder = recorder
        self.index = recorder.index
        self.progress = recorder.progress
        self.proposer = proposer
        self.detach = detach  # on Ctrl-C leave cluster jobs running for `ge resume` to re-attach
        reader: RunReader = recorder.reader
        self.parts = RunParts(
            paths, resolved, recorder, reader, proposer, seed_id, run_mates(reader, self.evo)
        )
        self.scheduler: Scheduler | None = None
        self._finished_at = 0  # a finished run's last generation
        self.stop_reason = ""
        self.warnings: list[str] = []

    @property
    def generation(self) -> int:
        """The generation being made (the last checkpoint's, for a finished run)."""
        return self._finished_at if self.scheduler is None else self.scheduler.generation

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
        executor = self._start_executor()
        seen_warnings = len(executor.warnings)
        try:
            await self._loop(executor)
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
                await self.proposer.session.aclose()
            if self.scheduler is not None:
                with contextlib.suppress(Exception):
                    await self.scheduler.removed()
            self._warn(executor.warnings[seen_warnings:], show=False)
            self.recorder.flush_notes()

    # ----------------------------------------------------------------- the loop

    async def _loop(self, executor: Executor) -> None:
        finished = self.index.get_meta(META_FINISHED)
        if finished:
            self.stop_reason = finished
            last = self.index.last_generation()
            self._finished_at = last.generation if last else 0
            return
        self.index.add_event("run_resumed" if self.index.last_generation() else "run_started", {"pid": os.getpid()})
        stops = self.index.events("run_stopped")
        retry = dict(stops[-1].data.get("retry") or {}) if stops else {}
        self.scheduler = scheduler = Scheduler(self.parts, executor, retry)
        stops = StopRules(self.resolved.config, self.index, self.paths.root)
        # The LLM client library (litellm for some providers) loads while the seed is evaluated, not on the first call.
        warm = asyncio.create_task(self.proposer.session.warm_up())
        await scheduler.evaluate_seed()
        await warm
        self.proposer.session.ready()
        stops.load(self.parts.reader.all_scored())
        await self._strategy(scheduler, stops)
        spent = self.proposer.session.exhausted()
        if stops.reason is not None:
            self.stop_reason, finish = stops.reason, stops.event()
        elif spent is not None:
            self.stop_reason, finish = spent, {"kind": "budget"}
        else:
            self.stop_reason = f"completed {self.evo.generations} generations"
            finish = {"kind": "completed"}
        self.index.set_meta(META_FINISHED, self.stop_reason)
        self.index.add_event("run_finished", {"reason": self.stop_reason, **finish})
        self.recorder.compact(force=True)

    async def _strategy(self, scheduler: Scheduler, stops: StopRules) -> None:
        """Resume after the last checkpoint with the loop of the run's mode."""
        last = self.index.last_generation()
        gen = 0 if last is None else last.generation + 1
        population: list[str] = [self.parts.seed_id] if last is None else list(last.population)
        hof = list(last.hall_of_fame) if last else []
        if self.evo.mode == "steady":
            await SteadyLoop(scheduler, stops).run(gen, population, hof)
        else:
            k = self.evo.islands.count
            islands = last.islands if last and k > 1 else [population] * k
            await GenerationalLoop(scheduler, stops).run(gen, islands, hof)
