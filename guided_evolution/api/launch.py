"""Starting, resuming and opening runs: ``run``, ``resume``, ``open_run``, and the helpers the
CLI shares (``init``, ``doctor``, ``latest_run_dir``, ``looks_like_run``).

A foreground ``run``/``resume`` is `ge run`/`ge resume` itself (``engine.session``, in the
caller's thread); ``background=True`` starts the same path in a child process
(``api.background`` says why a process).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guided_evolution.api.handle import Run
from guided_evolution.errors import GeError
from guided_evolution.fsutil import atomic_write
from guided_evolution.inspection.json_view import JsonView


def _overrides(
    overrides: Mapping[str, Any] | None, flags: dict[str, Any], models: Sequence[str] | str | None, no_sandbox: bool
) -> dict[str, Any]:
    """The dotted config overrides: ``overrides`` first, then the named flags over them."""
    out = dict(overrides or {})
    out.update({k: v for k, v in flags.items() if v is not None})
    if models:
        out["llm.models"] = [models] if isinstance(models, str) else list(models)
    if no_sandbox:
        out["evaluator.sandbox"] = "none"
    return out


def run(
    seed_dir: str | Path | None = None,
    *,
    config: str | Path | None = None,
    profile: str | None = None,
    run_dir: str | Path | None = None,
    models: Sequence[str] | str | None = None,
    api_base: str | None = None,
    generations: int | None = None,
    population: int | None = None,
    initial_population: int | None = None,
    slots: int | None = None,
    seed: int | None = None,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    executor: str | None = None,
    no_sandbox: bool = False,
    overrides: Mapping[str, Any] | None = None,
    background: bool = False,
    detach: bool = False,
    quiet: bool = False,
) -> Run:
    """Start an evolution from ``seed_dir`` (its ``ge.toml``), as `ge run` with the same flags.

    ``overrides`` sets any other config key by its dotted name (``{"evolution.elites": 3}``); the
    named flags win over it. In the foreground (default) this returns when the run ends
    (``Run.summary`` is what `ge run --json` prints; Ctrl-C raises the resumable interruption).
    With ``background=True`` it returns at once: follow it with ``Run.follow()``, ``Run.wait()``,
    stop it with ``Run.stop()``. ``quiet`` hides the live progress (the foreground only).
    """
    flags = {
        "llm.api_base": api_base,
        "llm.budget_usd": budget_usd,
        "llm.budget_tokens": budget_tokens,
        "evolution.generations": generations,
        "evolution.population": population,
        "evolution.initial_population": initial_population,
        "evolution.seed": seed,
        "executor.slots": slots,
        "executor.kind": executor,
    }
    merged = _overrides(overrides, flags, models, no_sandbox)
    seed_path = None if seed_dir is None else Path(seed_dir)
    config_path = None if config is None else Path(config)
    target = None if run_dir is None else Path(run_dir)
    if background:
        target = _planned_run_dir(seed_path, config_path, target, merged, profile)
        options = {"seed_dir": seed_path, "config": config_path, "profile": profile, "run_dir": target}
        return Run._in_background(target, "run", {**options, "overrides": merged, "detach": detach})
    from guided_evolution.engine.session import start_run

    summary = start_run(seed_path, config_path, target, merged, json_mode=quiet, detach=detach, profile=profile)
    return Run._finished(Path(summary.run_dir), summary)


def _planned_run_dir(
    seed: Path | None, config: Path | None, run_dir: Path | None, overrides: dict[str, Any], profile: str | None
) -> Path:
    """The run directory a background run will create (its config checked here, so that a bad
    one is raised by ``run`` itself, not later by ``wait``)."""
    from guided_evolution.config import find_config, load_config
    from guided_evolution.runstore.rundir import resolve

    if seed is not None and seed.is_file():
        raise GeError(f"{seed} is a file: a run takes the seed's directory", f"pass its folder: {seed.parent}")
    path = find_config(seed, config)
    return Path(resolve(load_config(path, overrides, profile), path, run_dir).run_dir)


def resume(
    run_dir: str | Path,
    *,
    generations: int | None = None,
    no_sandbox: bool = False,
    reload_evaluator: bool = False,
    background: bool = False,
    detach: bool = False,
    quiet: bool = False,
) -> Run:
    """Continue a run where it stopped, as `ge resume` (``generations``: the new total, which
    also extends a finished run; ``reload_evaluator``: the seed directory's evaluator as it is
    now). ``background`` and ``quiet`` as for ``run``."""
    path = Path(run_dir)
    if background:
        _require_run(path)
        options = {"run_dir": path.resolve(), "generations": generations, "no_sandbox": no_sandbox}
        return Run._in_background(
            path.resolve(), "resume", {**options, "reload_evaluator": reload_evaluator, "detach": detach}
        )
    from guided_evolution.engine.session import resume_run

    summary = resume_run(
        path, json_mode=quiet, detach=detach, no_sandbox=no_sandbox, generations=generations, reload=reload_evaluator
    )
    return Run._finished(Path(summary.run_dir), summary)


def _require_run(path: Path) -> None:
    from guided_evolution.runstore.rundir import open_run as open_dir

    open_dir(path, check_damage=False)


def open_run(path: str | Path) -> Run:
    """A run directory (live or finished) opened read-only: it never takes the run lock, so it
    can be read while another process writes it. A path that is no run is a one-line error."""
    target = Path(path)
    if not str(path).strip():
        raise GeError("the run directory is empty", "give a path, e.g. runs/NAME")
    _require_run(target)
    return Run(target)


def latest_run_dir(where: str | Path = ".") -> Path:
    """The latest run of the directory ``where`` (``runs/latest``, else the newest run under
    ``[run] dir`` of its ge.toml, else ``runs/``): what `ge status` with no RUN_DIR reads."""
    from guided_evolution.runstore.rundir import latest_run, runs_dir_of

    runs = runs_dir_of(Path(where))
    found = latest_run(runs)
    if found is None:
        raise GeError(f"no run found in {runs}/", "pass a run directory, or start one with `ge run SEED_DIR`")
    return found


def looks_like_run(path: str | Path) -> bool:
    """Whether ``path`` holds (parts of) a run directory, damaged or not."""
    from guided_evolution.runstore.rundir import looks_like_run as looks

    return looks(Path(path))


def init(directory: str | Path, *, force: bool = False) -> list[Path]:
    """Write `ge init`'s template seed (a marked predictor, its evaluator, a commented
    ``ge.toml``) into ``directory``; the files written."""
    from guided_evolution.seedinit import write_template

    return write_template(Path(directory), force=force)


def doctor(run_dir: str | Path, *, repair: bool = False, rebuild_index: bool = False) -> DoctorResult:
    """`ge doctor`: check a run's index against its git repository; ``repair``/``rebuild_index``
    repair under the run lock (refused while a run writes it)."""
    from guided_evolution.runstore import doctor as doctor_mod
    from guided_evolution.runstore.rundir import RunLock

    path = Path(run_dir)
    doctor_mod.require_run_dir(path)  # before the lock: never create a lock file elsewhere
    writer = None
    if rebuild_index or repair:
        with RunLock(path):
            rebuilt = doctor_mod.rebuild_index(path).messages if rebuild_index else []
            report = doctor_mod.check(path, repair=repair, clear_record=True)
            report.repaired[:0] = rebuilt
    else:
        writer = doctor_mod.lock_holder(path)
        report = doctor_mod.check(path)
    return DoctorResult(report.ok, report.repairable, tuple(report.problems), tuple(report.repaired), writer)


@dataclass(frozen=True)
class DoctorResult(JsonView):
    """`ge doctor`: ``ok`` when nothing is (left) wrong; the problems, what was repaired, and
    the pid of a ge process writing the run while it was checked (its writes in flight can look
    like problems)."""

    ok: bool
    repairable: bool
    problems: tuple[str, ...]
    repaired: tuple[str, ...]
    writer_pid: str | None


# --------------------------------------------------------------------------- a background run's child


def _execute(spec: dict[str, Any]) -> dict[str, Any]:
    options = dict(spec["options"])
    if spec["action"] == "run":
        seed = options.pop("seed_dir")
        handle = run(None if seed is None else Path(seed), quiet=True, **options)
    else:
        handle = resume(Path(options.pop("run_dir")), quiet=True, **options)
    assert handle.summary is not None
    return {"summary": handle.summary.as_dict()}


def child(argv: list[str]) -> int:
    """A background run's child process (``handle.Background``): run the spec (a foreground
    ``run`` or ``resume``, in this process's main thread, exactly as `ge run`), write the outcome
    to the file RESULT; 0, or the exit code `ge` would have (2 a user error, 130/143 interrupted)."""
    spec, result = json.loads(argv[0]), Path(argv[1])
    code = 0
    try:
        outcome = _execute(spec)
    except GeError as err:
        outcome = {"error": err.message, "hint": err.hint, "exit_code": err.exit_code}
        code = err.exit_code
        sys.stderr.write(f"error: {err.one_line()}\n")
    except KeyboardInterrupt:
        outcome = {"error": "interrupted", "hint": "continue with `ge resume RUN_DIR`", "exit_code": 130}
        code = 130
    atomic_write(result, json.dumps(outcome, default=str))
    return code

