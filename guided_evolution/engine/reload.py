"""`ge resume RUN --reload-evaluator`: the evaluator as it is now in the seed directory.

A run freezes its config (``config.json``) and commits every seed file, the evaluator's too, into
each variant's tree; so fixing ``evaluate.py`` or ``[evaluator] timeout_s`` in the seed directory
changes nothing for a plain `ge resume`. With ``--reload-evaluator`` (under the run lock):

* the **evaluator files** (the seed directory's files that are not evolvable, read as `ge run`
  reads the seed: ``[seed] exclude`` applies) are committed on a branch ``evaluator/N`` of the
  run's repository; every later evaluation's tree gets them in place of the files its commit has
  (``EvaluatorFiles.apply``, in ``Recorder.checkout``); the variants and their ids are unchanged
  (an id covers only the evolvable files); the newest such branch is the one in force, so an
  index rebuilt from git keeps it;
* the **``[evaluator]`` table** of ``ge.toml`` replaces the frozen one (as written in the file:
  a profile or a flag of the first `ge run` is not applied again; ``--no-sandbox`` may be given
  with the reload);
* both are validated first (the config parses, the programs exist; the sandbox is checked by the
  caller), and recorded as an ``evaluator_reloaded`` event (the files' hashes before and after,
  the files changed, each changed setting old → new) that `ge status` and `ge report` show.

``[objectives]`` are not reloaded: they define the run's scores, and earlier evaluations were
made against them (a missing metric is caught before the run exists, ``engine.first_eval``). When
they differ in ``ge.toml`` the reload says so, records it, and keeps the run's.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig, ResolvedConfig, load_config
from guided_evolution.errors import ConfigError
from guided_evolution.fsutil import atomic_write
from guided_evolution.runstore import rundir as rd
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.records import SEED_BRANCH
from guided_evolution.runstore.run_index import RunIndex

EVENT = "evaluator_reloaded"
PREFIX = "evaluator/"  # the branches of the reloaded evaluator files: evaluator/1, evaluator/2, ...


@dataclass(frozen=True)
class EvaluatorFiles:
    """The evaluator files in force (the seed's files that are not evolvable) and their commit."""

    commit: str
    files: dict[str, bytes]
    executable: frozenset[str]

    def apply(self, workdir: Path, evolvable: Sequence[str]) -> None:
        """Put these files in place of the non-evolvable files of a tree just exported (before
        anything of the variant ran in it); ge's own ``.ge/`` is left alone."""
        keep = set(evolvable)
        for folder, dirs, names in os.walk(workdir):
            rel_dir = Path(folder).relative_to(workdir).as_posix()
            if rel_dir == ".":
                dirs[:] = [d for d in dirs if d != ".ge"]
            for name in names:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if rel not in keep:
                    os.unlink(os.path.join(folder, name))
        for rel, data in self.files.items():
            target = workdir.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if rel in self.executable:
                target.chmod(0o755)


def files_hash(files: dict[str, bytes], executable: frozenset[str] | set[str]) -> str:
    """16 hex of sha256 over ``path\\0mode\\0content\\0``, sorted by path."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{'x' if path in executable else '-'}\0".encode())
        digest.update(files[path] + b"\0")
    return digest.hexdigest()[:16]


def current(store: GitStore) -> EvaluatorFiles | None:
    """The evaluator files of the run's last reload (its newest ``evaluator/N`` branch: git is
    the durable record, an index rebuilt from git keeps them), or None when it never reloaded."""
    reloads = {int(name.split("/", 1)[1]): sha for name, sha in store.branches(PREFIX).items()}
    if not reloads:
        return None
    commit = reloads[max(reloads)]
    return EvaluatorFiles(
        commit, store.read_files(commit), frozenset(store.executable_files(commit))
    )


def reload_evaluator(
    paths: rd.RunPaths,
    resolved: ResolvedConfig,
    store: GitStore,
    index: RunIndex,
    no_sandbox: bool,
    check_sandbox: Callable[[ResolvedConfig], None],
) -> tuple[ResolvedConfig, str]:
    """Reload the evaluator files and ``[evaluator]`` (see the module); the run's config from
    now on and one line saying what changed (or that nothing did). ``check_sandbox`` validates
    the reloaded config before anything is written. Call under the run lock."""
    frozen = resolved.config
    fresh = _fresh_config(resolved)
    evaluator = fresh.evaluator
    if no_sandbox:
        evaluator = evaluator.model_copy(update={"sandbox": "none"})
    seed_dir = Path(resolved.seed_dir)
    check_evaluator(fresh, seed_dir)
    reloaded = resolved.model_copy(
        update={"config": frozen.model_copy(update={"evaluator": evaluator})}
    )
    check_sandbox(reloaded)
    seed = rd.collect_seed(seed_dir, frozen)
    files = {p: data for p, data in seed.items() if p not in frozen.seed.files}
    executable = frozenset(p for p in files if os.access(seed_dir / p, os.X_OK))
    before = current(store)
    if before is None:
        old = store.read_files(SEED_BRANCH)
        old_files = {p: d for p, d in old.items() if p not in frozen.seed.files}
        old_exec = frozenset(store.executable_files(SEED_BRANCH)) & set(old_files)
    else:
        old_files, old_exec = before.files, before.executable
    settings = _changed(frozen.evaluator.model_dump(mode="json"), evaluator.model_dump(mode="json"))
    changed = sorted(p for p in {*files, *old_files} if files.get(p) != old_files.get(p))
    changed += sorted(p for p in files if p in old_files and (p in executable) != (p in old_exec))
    objectives = fresh.objectives != frozen.objectives
    kept = " ([objectives] differ in ge.toml: a run keeps its own)" if objectives else ""
    if not changed and not settings:
        return (
            reloaded,
            f"--reload-evaluator: the evaluator files and [evaluator] are unchanged{kept}",
        )
    n = 1 + max((int(b.split("/", 1)[1]) for b in store.branches(PREFIX)), default=0)
    commit = store.commit(
        files, [], f"ge: evaluator files, reload {n}", f"{PREFIX}{n}", executable, force=True
    )
    data: dict[str, Any] = {
        "seed_dir": str(seed_dir),
        "files_before": files_hash(old_files, old_exec),
        "files_after": files_hash(files, executable),
        "files_changed": changed,
        "settings": settings,
        "objectives_kept": objectives,
        "commit": commit,
    }
    data["summary"] = describe(data) + kept  # what `ge status` and `ge report` show
    index.add_event(EVENT, data)
    atomic_write(paths.config, reloaded.dump(), fsync=True)
    return reloaded, f"evaluator reloaded: {data['summary']}"


def describe(data: dict[str, Any]) -> str:
    """One reload event in words: the files' hashes and names, each setting old → new."""
    files = data.get("files_changed") or []
    parts = []
    if files:
        shown = ", ".join(files[:6]) + (", …" if len(files) > 6 else "")
        parts.append(f"files {data.get('files_before')} → {data.get('files_after')} ({shown})")
    for key, (old, new) in (data.get("settings") or {}).items():
        parts.append(f"{key} {old} → {new}")
    return "; ".join(parts) or "nothing changed"


def _fresh_config(resolved: ResolvedConfig) -> GeConfig:
    path = Path(resolved.config_path)
    if not path.is_file():
        raise ConfigError(
            f"--reload-evaluator: the run's config {path} is gone",
            f"put the seed directory back at {resolved.seed_dir}, or resume without the flag",
        )
    return load_config(path)


def _changed(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """Each setting that differs, by dotted key: [old, new]."""
    out: dict[str, list[Any]] = {}
    for key in sorted({*old, *new}):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_changed(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = [a, b]
    return out


def check_evaluator(cfg: GeConfig, seed_dir: Path) -> None:
    """The evaluator's programs must exist (on PATH or in the seed directory)."""
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
                raise ConfigError(
                    f"{key}: program {program!r} not found", "fix the path in ge.toml"
                )
        elif shutil.which(program) is None and program not in {"exec", "cd", "true", "false", ":"}:
            raise ConfigError(
                f"{key}: command {program!r} not found on PATH",
                "install it or fix the command in ge.toml",
            )
