"""`ge run` / `ge resume`: validate, create the run directory, wire the parts, drive the loop.

Everything a user can get wrong (config, seed markers, evaluator program, API keys) is checked
before the run directory exists; the directory is created atomically (temp dir + rename) with the
seed committed and indexed. Then, under the run lock and after `doctor` has repaired whatever a
kill left out of step, the engine is built from its parts (recorder, proposer, executor) and run.
A run whose record was damaged under it (``runstore.damage``: the recorder's watch between
writes, and ``verify_run`` once it ends) stops with one line naming the damage and `ge doctor`,
records it for later commands, and is never summarised as a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig, ResolvedConfig, find_config, load_config
from guided_evolution.engine.driver import Engine
from guided_evolution.engine.first_eval import evaluate_seed_first
from guided_evolution.engine.guard import RecordGuard
from guided_evolution.engine.progress import Progress, make_progress
from guided_evolution.engine.proposer import LLMProposer, OfflineProposer, Proposer
from guided_evolution.engine.reader import RunReader
from guided_evolution.engine.recorder import Recorder
from guided_evolution.engine.reload import check_evaluator, current, reload_evaluator
from guided_evolution.errors import ConfigError, GeError, RunDamagedError
from guided_evolution.evaluation.factory import check_sandbox
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import parse_genome, variant_id
from guided_evolution.llm.client import LLMClient, import_in_background
from guided_evolution.llm.config_settings import check_budget_prices, llm_settings
from guided_evolution.runstore import damage, doctor
from guided_evolution.runstore import rundir as rd
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.recording import record_variant
from guided_evolution.runstore.records import META_FINISHED, META_SEED, SEED_BRANCH, VariantRecord
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.tracking.spawn import follow


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (see ``_term_as_interrupt``)."""


class RunInterrupted(GeError):
    """Ctrl-C (exit code 130) or SIGTERM (143, ``terminated``) stopped the run: where it is and
    how to continue it."""

    exit_code = 130

    def __init__(self, message: str, hint: str | None = None, *, terminated: bool = False) -> None:
        super().__init__(message, hint)
        if terminated:
            self.exit_code = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


@dataclass
class RunSummary:
    """What `ge run` / `ge resume` print at the end (the CLI adds the Pareto front)."""

    run_dir: str
    generation: int
    children: int
    evaluated: int
    failed: int
    llm_calls: int
    cost_usd: float
    finished: bool
    stop_reason: str
    llm_retries: int = 0  # attempts beyond each call's first (retried faults, errors or not)
    objectives: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    if seed_dir is not None and seed_dir.is_file():
        folder = seed_dir.parent
        holds = " (it holds ge.toml)" if (folder / "ge.toml").is_file() else ""
        raise ConfigError(
            f"{seed_dir} is a file: `ge run` takes the seed's directory",
            f"pass its folder: `ge run {folder}`{holds}",
        )
    cfg_path = find_config(seed_dir, config_path)
    cfg = load_config(cfg_path, overrides, profile)
    resolved = rd.resolve(cfg, cfg_path, run_dir)
    seed_path = Path(resolved.seed_dir)
    seed_files = rd.collect_seed(seed_path, cfg)
    text_files = _decode_evolvable(seed_files, cfg)
    parse_genome(text_files, cfg.seed.files, cfg.seed.marker)  # raises on a seed without markers
    check_evaluator(cfg, seed_path)
    _preflight(cfg)  # keys and servers, before the run directory exists
    check_sandbox(resolved)  # fail closed before anything is written
    seed = VariantRecord(
        id=variant_id(text_files, cfg.seed.files), generation=0, operator="seed", branch=SEED_BRANCH
    )

    def build(paths: rd.RunPaths) -> None:
        with GitStore.init(paths.repo) as store, RunIndex.open(paths.index) as index:
            record_variant(store, index, seed, seed_files)
            index.set_meta(META_SEED, seed.id)
            index.add_event(
                "run_created", {"run_dir": resolved.run_dir, "seed_dir": resolved.seed_dir}
            )
        evaluate_seed_first(paths, resolved, seed.id, json_mode)  # before the rename

    try:
        with _term_as_interrupt():
            paths = rd.create_run_dir(resolved, build)
    except KeyboardInterrupt as err:
        raise RunInterrupted(
            "interrupted while the seed was evaluated, before the run was created "
            "(nothing was written)",
            "run the same `ge run` again",
            terminated=isinstance(err, Terminated),
        ) from None
    return _drive(paths, resolved, json_mode, detach)


def resume_run(
    run_dir: Path,
    *,
    json_mode: bool = False,
    detach: bool = False,
    no_sandbox: bool = False,
    generations: int | None = None,
    reload: bool = False,
) -> RunSummary:
    """Continue a run where it stopped (``no_sandbox``: evaluate without isolation from now on;
    ``generations``: the new total, which also extends a finished run; ``reload``: the evaluator
    files and ``[evaluator]`` as they are now in the seed directory, ``engine.reload``)."""
    paths, resolved = rd.open_run(Path(run_dir), check_damage=False)  # _drive repairs first
    if generations is not None and generations < 1:
        raise ConfigError(f"--generations {generations} is not a number of generations", "pass N >= 1")
    if no_sandbox:
        cfg = resolved.config
        evaluator = cfg.evaluator.model_copy(update={"sandbox": "none"})
        config = cfg.model_copy(update={"evaluator": evaluator})
        resolved = resolved.model_copy(update={"config": config})
    if not reload:
        check_sandbox(resolved)  # a reload checks the sandbox of the reloaded settings
    return _drive(
        paths, resolved, json_mode, detach, generations, check_llm=True, reload=(reload, no_sandbox)
    )


def _preflight(cfg: GeConfig, reach: bool = True) -> None:
    """The models' keys and servers (llm.preflight): a missing key fails here, in well under a
    second, instead of after the run started and its first LLM calls kept failing. Then the
    client libraries start loading in the background (``client.import_in_background``), and so
    does the selection's library (``_import_selection``)."""
    _import_selection()
    if not cfg.llm.offline:
        settings = llm_settings(cfg)
        if reach:  # a new run: a USD budget it could not count is refused before it exists
            check_budget_prices(settings)
        from guided_evolution.llm.preflight import preflight  # urllib: only for LLM models

        preflight(settings.models, reach=reach)
        import_in_background(settings)


def _import_selection() -> None:
    """Import deap (numpy under it: ~0.3 s, a second on a loaded machine) in a daemon thread
    now, while the seed is evaluated, instead of when generation 0 ends and every next
    proposal waits for its parents. A failure here is met again, with its error, by selection."""

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module("deap.tools.emo")

    threading.Thread(target=load, name="ge-selection-import", daemon=True).start()


def _finished(paths: rd.RunPaths, cfg: GeConfig, index: RunIndex) -> RunSummary | None:
    """The summary of a finished run (saying so, and how to extend it), or None."""
    reason = index.get_meta(META_FINISHED)
    if not reason:
        return None
    last = index.last_generation()
    done = last.generation if last else 0
    counts = index.counts()
    note = (
        f"this run is finished ({reason}); to extend it: "
        f"`ge resume {paths.root} --generations {max(done, cfg.evolution.generations) + 1}`"
    )
    Progress().notice(note)
    return RunSummary(
        run_dir=str(paths.root),
        generation=done,
        children=counts["children"],
        evaluated=counts["evaluated"],
        failed=counts["failed"],
        llm_calls=counts["llm_calls"],
        cost_usd=counts["cost_usd"],
        finished=True,
        stop_reason=reason,
        objectives=_objectives(cfg),
        warnings=[note],
    )


def _extend(
    paths: rd.RunPaths, resolved: ResolvedConfig, index: RunIndex, generations: int
) -> ResolvedConfig:
    """Raise the run's total to ``generations`` (under the lock): saved, unfinished, recorded."""
    last = index.last_generation()
    if last is not None and generations <= last.generation:
        raise ConfigError(
            f"the run already completed generation {last.generation}",
            f"pass --generations greater than {last.generation}",
        )
    extended = rd.extend_generations(paths, resolved, generations)
    index.set_meta(META_FINISHED, "")
    index.add_event("run_extended", {"generations": generations})
    return extended


def _drive(
    paths: rd.RunPaths,
    resolved: ResolvedConfig,
    json_mode: bool,
    detach: bool,
    generations: int | None = None,
    check_llm: bool = False,
    reload: tuple[bool, bool] = (False, False),
) -> RunSummary:
    with _term_as_interrupt(), rd.RunLock(paths.root):
        _repair(paths)
        rd.spread_work(paths.work)
        if reload[0]:
            resolved = _reload(paths, resolved, reload[1])
        with RunIndex.open(paths.index) as index:
            if generations is not None:
                resolved = _extend(paths, resolved, index, generations)
            elif (finished := _finished(paths, resolved.config, index)) is not None:
                return finished
        cfg = resolved.config
        if check_llm:
            _preflight(cfg, reach=False)
        store = GitStore.open(paths.repo)
        index = RunIndex.open(paths.index)
        seed_id = index.get_meta(META_SEED) or ""
        seed_row = index.get_variant(seed_id)
        watch = damage.RunWatch(paths.index, store, seed_row.commit_sha if seed_row else None)
        objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
        progress = make_progress(json_mode, objectives, cfg.evolution.generations)
        reader = RunReader(store, index, cfg, RecordGuard(watch))
        recorder = Recorder(store, index, cfg, progress, reader)
        recorder.evaluator_files = current(store)
        progress.load(reader.all_scored())
        engine: Engine | None = None
        try:
            progress.notice(f"run: {paths.root}  (Ctrl-C stops it; `ge resume {paths.root}` goes on)")
            proposer = _proposer(resolved, recorder, seed_id)
            engine = Engine(paths, resolved, recorder, proposer, seed_id, detach=detach)
            with progress, follow(paths.root, resolved, progress.warn):
                asyncio.run(engine.run())
            summary = _summary(engine, index, cfg)
        except KeyboardInterrupt as err:
            generation = engine.generation if engine else 0
            raise _interrupted(paths, cfg, generation, index, isinstance(err, Terminated)) from None
        except Exception as err:
            if isinstance(err, GeError) and not isinstance(err, RunDamagedError):
                _note(index, "run_error", {"reason": err.message, "fix": err.hint})
            raise _damage_error(paths, watch, err) or err from None
        finally:
            store.close()
            index.close()
        found = damage.verify_run(paths.index, watch)  # fresh handles, after the index's checkpoint
        if found:
            damage.record(paths.damage, found, "ge run")
            raise damage.error(paths.root, found)
    return summary


def _reload(paths: rd.RunPaths, resolved: ResolvedConfig, no_sandbox: bool) -> ResolvedConfig:
    """`--reload-evaluator` (``engine.reload``), said on stderr; the sandbox of the result is
    checked before anything is written."""
    with GitStore.open(paths.repo) as store, RunIndex.open(paths.index) as index:
        reloaded, line = reload_evaluator(paths, resolved, store, index, no_sandbox, check_sandbox)
    Progress().notice(line)
    return reloaded


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill PID``, a scheduler or container stopping ge) ends the run as Ctrl-C does:
    evaluations stopped, ``run_interrupted`` recorded, one line saying how to resume. Before, it
    killed ge on the spot (resumable, but with no word of it). It raises ``Terminated`` (a
    KeyboardInterrupt) so that ge exits 143, as a process that SIGTERM ended does, not Ctrl-C's
    130. A SIGTERM disposition set by the caller (e.g. ignored) is kept."""
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(
    paths: rd.RunPaths, cfg: GeConfig, generation: int, index: RunIndex, terminated: bool
) -> RunInterrupted:
    """Where a run stopped by Ctrl-C or SIGTERM is (recorded as a ``run_interrupted`` event)."""
    try:
        counts = index.counts()
    except sqlite3.Error:
        counts = {"children": "?", "evaluated": "?"}
    _note(index, "run_interrupted", {"generation": generation})
    return RunInterrupted(
        f"interrupted in generation {generation}/{cfg.evolution.generations}: "
        f"{counts['children']} children so far, {counts['evaluated']} evaluated",
        f"continue with `ge resume {paths.root}`",
        terminated=terminated,
    )


def _note(index: RunIndex, kind: str, data: dict[str, Any]) -> None:
    """Record why the run stopped, for `ge status`; never hides the error being raised."""
    with contextlib.suppress(Exception):
        index.add_event(kind, data)


def _repair(paths: rd.RunPaths) -> None:
    """A kill between a git write and an index write leaves them out of step: repair first. A run
    that stopped on damage goes on only once doctor's repair leaves nothing of it (with ``git
    fsck`` then: a kill leaves no broken object, so a run that did not stop on damage skips it)."""
    doctor.check(paths.root, repair=True, fsck=bool(damage.recorded(paths.damage)))
    recorded = damage.recorded(paths.damage)
    if recorded:
        raise damage.error(paths.root, recorded)


def _damage_error(
    paths: rd.RunPaths, watch: damage.RunWatch, err: Exception
) -> RunDamagedError | None:
    """The run stopped on ``err``: when the run's record is damaged, the error that says so
    (recorded for later commands); None when it is not."""
    found = watch.damage()
    if not found and isinstance(err, RunDamagedError):
        found = [damage.Damage(err.what, err.flag)]
    elif not found and isinstance(err, sqlite3.DatabaseError) and damage.index_error(err):
        found = [damage.Damage(f"{paths.index.name} is damaged ({err})", damage.REBUILD)]
    if not found:
        return None
    damage.record(paths.damage, found, "ge run")
    return damage.error(paths.root, found)


def _proposer(resolved: ResolvedConfig, recorder: Recorder, seed_id: str) -> Proposer:
    """The LLM operators, or the offline baseline when every model is ``offline``."""
    cfg = resolved.config
    # Loaded for every run, so that a broken prompt override in the seed stops `ge run` at once.
    prompts = PromptLibrary.load([Path(resolved.seed_dir) / "prompts"])
    if cfg.llm.offline:
        return OfflineProposer(cfg, recorder)
    counts = recorder.index.counts()
    llm = LLMClient(
        llm_settings(cfg),
        recorder=recorder.index,
        spent_usd=counts["cost_usd"],
        spent_tokens=counts["prompt_tokens"] + counts["completion_tokens"],
    )
    return LLMProposer(cfg, recorder, prompts, llm, recorder.progress, seed_id)


def _summary(engine: Engine, index: RunIndex, cfg: GeConfig) -> RunSummary:
    counts = index.counts()
    return RunSummary(
        run_dir=str(engine.paths.root),
        generation=engine.generation,
        children=counts["children"],
        evaluated=counts["evaluated"],
        failed=counts["failed"],
        llm_calls=counts["llm_calls"],
        cost_usd=counts["cost_usd"],
        finished=bool(index.get_meta(META_FINISHED)),
        stop_reason=engine.stop_reason,
        llm_retries=sum(max(call.attempts - 1, 0) for call in index.calls()),
        objectives=_objectives(cfg),
        warnings=engine.warnings,
    )


def _objectives(cfg: GeConfig) -> list[dict[str, Any]]:
    return [{"name": o.name, "direction": o.direction, "select": o.select} for o in cfg.objectives]


def _decode_evolvable(files: dict[str, bytes], cfg: GeConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in cfg.seed.files:
        try:
            out[name] = files[name].decode("utf-8").replace("\r\n", "\n")
        except UnicodeDecodeError:
            raise ConfigError(
                f"evolvable file {name} is not UTF-8 text", "list only source files in [seed] files"
            ) from None
    return out
