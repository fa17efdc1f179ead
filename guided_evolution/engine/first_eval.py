"""The seed's evaluation before its run exists (issue 26): `ge run` evaluates the seed inside the
run's temporary directory (``rundir.create_run_dir`` builds it there and renames it into place
only once the seed evaluated ok). A seed that fails (its evaluator broken or too slow, an
objective it does not write) leaves no run directory and does not move ``runs/latest``; the one
line says what to change in the seed directory and to run the same `ge run` again, which then
reads it. A missing metric names the metrics the evaluator did write and the closest one.

The evaluation is the engine's own (``Scheduler.evaluate``: export, sandbox, record), and its
result is recorded in the run, so the run does not evaluate its seed a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import re
import shutil
import tempfile
from pathlib import Path

from guided_evolution.config import ResolvedConfig
from guided_evolution.engine.guard import RecordGuard
from guided_evolution.engine.progress import make_progress
from guided_evolution.engine.reader import RunReader
from guided_evolution.engine.recorder import Recorder
from guided_evolution.engine.scheduler import RunParts, Scheduler, _last_output_line
from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalResult
from guided_evolution.evaluation.factory import build_executor
from guided_evolution.runstore import damage
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunPaths
from guided_evolution.termsafe import inert

_MISSING = re.compile(r"metric '(.+)' missing")


class SeedFailed(GeError):
    """The seed failed its evaluation before the run was created (exit 2, nothing written)."""


def evaluate_seed_first(
    paths: RunPaths, resolved: ResolvedConfig, seed_id: str, json_mode: bool
) -> None:
    """Evaluate the seed in the run being built at ``paths`` (its temporary directory) and record
    the result; ``SeedFailed`` when it fails. Everything the evaluation opened is closed first."""
    cfg = resolved.config
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    progress = make_progress(json_mode, objectives, cfg.evolution.generations)
    progress.info("evaluating the seed (the run directory is made once it evaluates ok)")
    store = GitStore.open(paths.repo)
    index = RunIndex.open(paths.index)
    try:
        row = index.get_variant(seed_id)
        watch = damage.RunWatch(paths.index, store, row.commit_sha if row else None)
        reader = RunReader(store, index, cfg, RecordGuard(watch))
        recorder = Recorder(store, index, cfg, progress, reader)
        parts = RunParts(paths, resolved, recorder, reader, None, seed_id, None)  # type: ignore[arg-type]
        result = asyncio.run(_evaluate(parts))
        recorder.flush_notes()
    finally:
        store.close()
        index.close()
    if result.status != "ok":
        raise seed_failure(result, _keep_log(paths, seed_id), resolved)


async def _evaluate(parts: RunParts) -> EvalResult:
    executor = build_executor(parts.resolved, parts.paths)
    scheduler = Scheduler(parts, executor, {})
    try:
        return await scheduler.evaluate(parts.seed_id)
    finally:
        with contextlib.suppress(Exception):
            await executor.aclose(cancel=True)
        await scheduler.removed()  # before the directory is renamed or removed


def _keep_log(paths: RunPaths, seed_id: str) -> Path | None:
    """The seed's log, copied out of the directory that is about to be removed."""
    log = paths.logs / f"{seed_id}.log"
    kept = Path(tempfile.gettempdir()) / f"ge-seed-{seed_id}.log"
    try:
        shutil.copyfile(log, kept)
    except OSError:
        return None
    return kept


def seed_failure(result: EvalResult, log: Path | None, resolved: ResolvedConfig) -> SeedFailed:
    """The one line for a seed that failed before its run existed: why, and what to change."""
    again = "then run the same `ge run` again (no run directory was made)"
    config = Path(resolved.config_path)
    reason = result.failure_reason or "failed"
    missing = _MISSING.fullmatch(reason)
    if missing is not None:
        return SeedFailed(
            f"the seed's evaluation wrote no metric {missing.group(1)!r} (an objective in "
            f"{config.name}); {written_metrics(missing.group(1), result.metrics)}",
            f"rename the objective in [[objectives]] of {config} or make the evaluator write it, "
            + again,
        )
    last = _last_output_line(result.output_tail)
    where = f"see {log}; " if log is not None else ""
    if reason.startswith("timed out"):
        fix = f"raise timeout_s in [evaluator] of {config} (or make the evaluation faster), "
    else:
        fix = f"fix the evaluator or its settings ([evaluator] in {config}) or the seed, "
    return SeedFailed(
        f"the seed failed its own evaluation: {reason}"
        + (f" (last output: {last})" if last else ""),
        where + fix + again,
    )


def written_metrics(name: str, metrics: dict[str, float | str]) -> str:
    """What the evaluator wrote instead of ``name``: its metric names and the closest one."""
    if not metrics:
        return "it wrote no metrics at all"
    names = sorted(inert(k) for k in metrics)
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    return f"it wrote: {shown}" + (f" (closest: {close[0]!r})" if close else "")
