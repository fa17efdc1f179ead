"""Running the real engine in-process: `ge run` / `ge resume` without a subprocess.

``run_engine`` and ``resume_engine`` call the session's own entry points (``start_run`` /
``resume_run``: validation, the run directory, git store, index, recorder, the real loop), so a
test gets the run directory and the ``RunSummary`` the CLI would print as JSON. Two parts can be
swapped for fakes:

* ``executor``: a callable ``(resolved, paths) -> Executor`` used where the engine builds its
  executor (default: the real one from the config, sandbox and all). ``FakeExecutor`` scores each
  variant from its files in-process: no evaluator, no sandbox, no subprocess.
* ``proposer``: a callable ``(resolved, recorder, seed_id) -> Proposer`` used where the session
  builds its proposer (default: the real LLM or offline proposer).

The swap points are found by name in the loaded ``guided_evolution.engine`` modules, so moving
the engine's wiring between its modules needs no change here. Use this wherever what is tested is
the run, not the CLI (exit codes, messages, ``--json`` output): those keep ``tests.support.cli``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.engine import session
from guided_evolution.evaluation.contract import EvalRequest, EvalResult, Executor
from guided_evolution.inspection import views_data

ExecutorFactory = Callable[[Any, Any], Executor]
ProposerFactory = Callable[[Any, Any, str], Any]
Score = Callable[[dict[str, str]], dict[str, float | str] | str]
"""A variant's files (path -> text) to its metrics, or a failure reason."""


@dataclass
class FakeExecutor:
    """An `Executor` that scores a variant's checked-out files with ``score``, in-process.

    ``score`` returns the metrics, or a string: the reason the variant failed. ``requests`` keeps
    every request, in order, for assertions. ``delay_s``: how long each evaluation takes (an
    ``asyncio.sleep``, so that the engine overlaps other work with it, as with a real evaluator).
    """

    score: Score
    capacity: int = 2
    warnings: list[str] = field(default_factory=list)
    requests: list[EvalRequest] = field(default_factory=list)
    delay_s: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"summary": f"fake executor: {self.capacity} in-process slots", "executor": "fake"}

    def isolation(self) -> dict[str, Any]:
        return {"summary": "none (in-process fake executor)"}

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        self.requests.append(request)
        files = {
            str(p.relative_to(request.workdir)): p.read_text(errors="replace")
            for p in sorted(request.workdir.rglob("*.py"))
            if ".ge" not in p.parts
        }
        started = time.time()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        outcome = self.score(files)
        failed = isinstance(outcome, str)
        return EvalResult(
            variant_id=request.variant_id,
            status="failed" if failed else "ok",
            metrics={} if failed else dict(outcome),  # type: ignore[arg-type]
            failure_reason=outcome if failed else None,  # type: ignore[arg-type]
            output_tail="",
            stage="evaluate",
            started_at=started,
            duration_s=time.time() - started,
            gpu=None,
        )

    async def aclose(self, cancel: bool = True) -> None:
        return None

    def factory(self, _resolved: Any, _paths: Any) -> FakeExecutor:
        """This executor as an ``executor=`` factory (the same instance for every start)."""
        return self


def size_score(files: dict[str, str]) -> dict[str, float | str]:
    """A deterministic score for the `ge init` seed's objectives: shorter code scores higher."""
    chars = sum(len(text) for text in files.values())
    return {"score": -chars / 1000.0, "size": float(chars)}


class Intercepted:
    """The run's real proposer with ``hook(plan, child) -> child`` applied to each proposal (the
    hook may change the child, or raise ``NoChild`` to reject it); ``plans`` records each plan.
    Everything else is the real proposer's."""

    def __init__(self, inner: Any, hook: Callable[[Any, Any], Any]) -> None:
        self.inner = inner
        self.hook = hook
        self.plans: list[Any] = []

    async def propose(self, plan: Any) -> Any:
        self.plans.append(plan)
        return self.hook(plan, await self.inner.propose(plan))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def intercepting(hook: Callable[[Any, Any], Any], made: list[Intercepted]) -> ProposerFactory:
    """A ``proposer=`` factory: the session's own proposer, ``Intercepted`` by ``hook``; each
    proposer made (one per start) is appended to ``made``."""
    real = session._proposer

    def factory(resolved: Any, recorder: Any, seed_id: str) -> Intercepted:
        made.append(Intercepted(real(resolved, recorder, seed_id), hook))
        return made[-1]

    return factory


@contextlib.contextmanager
def swapped(name: str, replacement: Callable[..., Any] | None) -> Iterator[None]:
    """Bind ``name`` to ``replacement`` in every loaded engine module that defines it."""
    if replacement is None:
        yield
        return
    modules = [
        m
        for key, m in list(sys.modules.items())
        if key.startswith("guided_evolution.engine") and m is not None and hasattr(m, name)
    ]
    assert modules, f"no engine module binds {name!r}: the harness's swap point moved"
    saved = [(m, getattr(m, name)) for m in modules]
    try:
        for m in modules:
            setattr(m, name, replacement)
        yield
    finally:
        for m, value in saved:
            setattr(m, name, value)


@contextlib.contextmanager
def _parts(executor: ExecutorFactory | None, proposer: ProposerFactory | None) -> Iterator[None]:
    with swapped("build_executor", executor), swapped("_proposer", proposer):
        yield


def cli_overrides(
    *,
    model: str | list[str] | None = None,
    api_base: str | None = None,
    generations: int | None = None,
    population: int | None = None,
    initial_population: int | None = None,
    slots: int | None = None,
    seed: int | None = None,
    no_sandbox: bool = False,
) -> dict[str, Any]:
    """The config overrides `ge run`'s flags of the same names make (``cli.run``)."""
    overrides: dict[str, Any] = {
        "llm.api_base": api_base,
        "evolution.generations": generations,
        "evolution.population": population,
        "evolution.initial_population": initial_population,
        "evolution.seed": seed,
        "executor.slots": slots,
    }
    if model:
        overrides["llm.models"] = [model] if isinstance(model, str) else list(model)
    if no_sandbox:
        overrides["evaluator.sandbox"] = "none"
    return overrides


def run_engine(
    seed: Path,
    run_dir: Path,
    *,
    executor: ExecutorFactory | None = None,
    proposer: ProposerFactory | None = None,
    config: Path | None = None,
    profile: str | None = None,
    **flags: Any,
) -> dict[str, Any]:
    """`ge run SEED --run-dir RUN_DIR [flags] --json` in-process: the summary as the CLI prints it
    (with the Pareto front). ``flags`` are ``cli_overrides``' keywords."""
    with _parts(executor, proposer):
        summary = session.start_run(
            seed, config, run_dir, cli_overrides(**flags), json_mode=True, profile=profile
        )
    return _with_front(summary)


def resume_engine(
    run_dir: Path,
    *,
    executor: ExecutorFactory | None = None,
    proposer: ProposerFactory | None = None,
    generations: int | None = None,
) -> dict[str, Any]:
    """`ge resume RUN_DIR [--generations N] --json` in-process: the summary, as ``run_engine``."""
    with _parts(executor, proposer):
        summary = session.resume_run(run_dir, json_mode=True, generations=generations)
    return _with_front(summary)


def view_json(view: str, run_dir: Path, **options: Any) -> dict[str, Any]:
    """`ge VIEW RUN_DIR [options] --json` in-process: ``views_data.VIEW(run_dir, **options)``'s
    JSON, as the CLI prints it (``view_json("log", run, bandit=True)`` is `ge log --bandit`)."""
    return getattr(views_data, view)(run_dir, **options).to_json()


def _with_front(summary: session.RunSummary) -> dict[str, Any]:
    summary.front = [row.to_json() for row in views_data.best(Path(summary.run_dir)).front]
    return summary.as_dict()
