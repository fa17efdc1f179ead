"""Consistency of a run: the SQLite index against the git repository, and rebuilding the index.

git is the durable record: branches + ``Ge-*`` trailers give the variants, notes give their latest
evaluation. The index adds what git does not hold (LLM calls, the reply cache, reflections,
events, generation checkpoints, evaluation output tails).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from guided_evolution.errors import GeError, RunStateError
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.recording import record_variant
from guided_evolution.runstore.records import (
    META_SEED,
    SEED_BRANCH,
    EvaluationRecord,
    VariantRecord,
    is_variant_branch,
)
from guided_evolution.runstore.run_index import SCHEMA_VERSION, RunIndex
from guided_evolution.runstore.rundir import CONFIG_FILE, INDEX_FILE, LOCK_FILE, REPO_DIR

_NOTE_STATUS = {"ok": "evaluated", "failed": "failed"}
# Tables that only the index holds, copied over from the old index by a rebuild.
_INDEX_ONLY_TABLES = ("meta", "llm_calls", "llm_cache", "reflections", "events", "generations")


@dataclass
class DoctorReport:
    """Outcome of :func:`check`: ``ok`` when nothing is (left) wrong."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


@dataclass
class RebuildReport:
    """Outcome of :func:`rebuild_index`."""

    variants: int
    evaluations: int
    messages: list[str] = field(default_factory=list)


def require_run_dir(run_dir: Path) -> None:
    """Raise a one-line error unless ``run_dir`` is a directory holding a run's git repository."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if run_dir.exists():
            raise RunStateError(f"{run_dir} is a file, not a run directory", "pass a directory created by `ge run`")
        raise RunStateError(f"run directory not found: {run_dir}", "pass a directory created by `ge run`")
    if not (run_dir / REPO_DIR).is_dir():
        if (run_dir / CONFIG_FILE).is_file():
            raise RunStateError(
                f"{run_dir} has no {REPO_DIR} (the git record of its variants)",
                "restore it from a backup, or start a new run",
            )
        raise RunStateError(f"{run_dir} is not a ge run directory (no {REPO_DIR})", "pass a directory created by `ge run`")


def lock_holder(run_dir: Path) -> str | None:
    """The pid (as recorded) of the process that holds the run lock, or None when it is free.

    Takes nothing and creates nothing: the lock file is only opened when it exists.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _seed_variant(store: GitStore) -> str | None:
    """The variant id on the seed branch, from its Ge-Variant trailer."""
    sha = store.branches().get(SEED_BRANCH)
    rec = _variant_from_commit(store, SEED_BRANCH, sha) if sha else None
    return rec.id if rec is not None else None


def _schema_version(path: Path) -> int | None:
    """``PRAGMA user_version`` of an SQLite file, or None when it cannot be read."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def _variant_from_commit(store: GitStore, branch: str, sha: str) -> VariantRecord | None:
    """The variant row that a branch's commit describes, or None without a Ge-Variant trailer."""
    info = store.commit_info(sha)
    return VariantRecord.from_commit(branch, sha, info.message, info.timestamp)


def _same_evaluation(a: EvaluationRecord, b: EvaluationRecord) -> bool:
    """Same outcome (NaN-safe: metrics compare as JSON text)."""

    def key(e: EvaluationRecord) -> str:
        return json.dumps([e.status, e.stage, e.metrics, e.failure_reason], sort_keys=True)

    return key(a) == key(b)


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _newer_schema(index_path: Path) -> int | None:
    """The index's schema version when it is newer than this ge supports (else None)."""
    version = _schema_version(index_path) if index_path.is_file() else None
    return version if version is not None and version > SCHEMA_VERSION else None


def _open_old_index(index_path: Path, messages: list[str]) -> RunIndex | None:
    """The old index, read-only, when it can be read in full (what a rebuild keeps from it)."""
    if not index_path.exists():
        messages.append("no old index; LLM calls, cache and checkpoints start empty")
        return None
    old: RunIndex | None = None
    try:
        old = RunIndex.open(index_path, readonly=True)
        old.counts()  # read what the rebuild reads: a damaged index fails here, not half-way
        old.variants()
        old.latest_evaluations()
    except (GeError, sqlite3.Error) as err:
        messages.append(f"old index unreadable ({err}); LLM calls, cache and checkpoints are lost")
        if old is not None:
            old.close()
        return None
    return old


def _variants_from_git(
    store: GitStore, old: RunIndex | None, new: RunIndex, messages: list[str]
) -> tuple[set[str], int]:
    """Add every variant branch (and its note's evaluation) to ``new``; (ids, evaluations)."""
    notes = store.notes()
    seen: set[str] = set()
    n_evaluations = 0
    for branch, sha in sorted(store.branches().items()):
        if not is_variant_branch(branch):
            continue
        rec = _variant_from_commit(store, branch, sha)
        if rec is None:
            messages.append(f"branch {branch} has no Ge-Variant trailer; skipped")
            continue
        if rec.id in seen:
            messages.append(f"variant {rec.id} is on two branches; kept {rec.branch} once")
            continue
        seen.add(rec.id)
        evaluation = _evaluation_from_note(rec.id, notes.get(sha), messages)
        if evaluation is not None:
            rec.status = _NOTE_STATUS[evaluation.status]
        prior = old.get_variant(rec.id) if old is not None else None
        if prior is not None:
            rec.llm_call_id = prior.llm_call_id
            if evaluation is None and prior.status == "invalid":
                rec.status = "invalid"
        new.add_variant(rec)
        if evaluation is not None:
            latest = old.latest_evaluation(rec.id) if old is not None else None
            if latest is not None and _same_evaluation(latest, evaluation):
                evaluation.output_tail = latest.output_tail
            new.add_evaluation(evaluation)
            n_evaluations += 1
    return seen, n_evaluations


def _keep_invalid(old: RunIndex, new: RunIndex, seen: set[str], messages: list[str]) -> None:
    """Never-committed invalid children live only in the index: carry them over."""
    kept = 0
    for prior in old.variants(status="invalid"):
        if prior.commit_sha is None and prior.id not in seen:
            new.add_variant(prior)
            kept += 1
    if kept:
        messages.append(f"kept {kept} never-committed invalid variants from the old index")


def rebuild_index(run_dir: Path) -> RebuildReport:
    """Rebuild ``index.sqlite`` from ``repo.git`` (into a temp file, then renamed over the old one).

    Variants come from the branches and their ``Ge-*`` trailers (created_at = commit time), their
    latest evaluation from the notes. LLM calls, the cache, reflections, events, generation
    checkpoints and never-committed invalid variants are not in git: they are kept from the old
    index when it is readable.
    """
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    index_path = run_dir / INDEX_FILE
    version = _newer_schema(index_path)
    if version is not None:
        raise GeError(
            f"{index_path} has schema version {version}, newer than this ge supports ({SCHEMA_VERSION})",
            "upgrade ge; a rebuild by this version would drop what it cannot read",
        )
    tmp_path = run_dir / f"{INDEX_FILE}.rebuild-{os.getpid()}"
    _remove_sqlite_files(tmp_path)
    messages: list[str] = []
    old = _open_old_index(index_path, messages)
    with GitStore.open(run_dir / REPO_DIR) as store:
        new = RunIndex.open(tmp_path)
        try:
            with new.transaction():
                seen, n_evaluations = _variants_from_git(store, old, new, messages)
                if old is not None:
                    _keep_invalid(old, new, seen, messages)
            if old is not None:
                old.close()
                old = None
                messages.extend(new.copy_tables_from(index_path, _INDEX_ONLY_TABLES))
            seed_id = _seed_variant(store)
            if seed_id and new.get_meta(META_SEED) is None:
                new.set_meta(META_SEED, seed_id)
            new.set_meta("rebuilt_at", repr(time.time()))
        except BaseException:
            new.close()
            _remove_sqlite_files(tmp_path)
            raise
        finally:
            if old is not None:
                old.close()
        new.close(single_file=True)
    # The old index's WAL must not be applied to the new file: drop it before the rename.
    for suffix in ("-wal", "-shm"):
        Path(f"{index_path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp_path, index_path)
    messages.insert(0, f"rebuilt {index_path.name}: {len(seen)} variants, {n_evaluations} evaluations")
    return RebuildReport(len(seen), n_evaluations, messages)


def _evaluation_from_note(
    variant_id: str, text: str | None, messages: list[str]
) -> EvaluationRecord | None:
    if text is None:
        return None
    try:
        return EvaluationRecord.from_note(variant_id, text)
    except ValueError:
        messages.append(f"note of variant {variant_id} is not an evaluation; ignored")
        return None


def check(run_dir: Path, repair: bool = False, temp_min_age_s: float = 60.0) -> DoctorReport:
    """Compare the index with git (branches, notes) and run ``git fsck``.

    With ``repair``: variants in git but not in the index are added; index rows whose commit never
    landed are removed (or their branch restored when the commit object exists); a note missing
    for an index evaluation is written, an index row missing for a note is added; stale temp files
    of a killed writer are deleted. Run it only while no engine writes the run.
    """
    run_dir = Path(run_dir)
    report = DoctorReport(ok=True)
    unresolved = 0

    def problem(text: str, fixed: str | None = None) -> None:
        nonlocal unresolved
        report.problems.append(text)
        if fixed is not None and repair:
            report.repaired.append(fixed)
        else:
            unresolved += 1

    require_run_dir(run_dir)
    _check_config(run_dir, problem)
    index_path = run_dir / INDEX_FILE
    version = _newer_schema(index_path)
    if version is not None:
        problem(
            f"index has schema version {version}, newer than this ge supports ({SCHEMA_VERSION}): "
            "upgrade ge (a repair by this version would drop what it cannot read)"
        )
        report.ok = False
        return report
    with GitStore.open(run_dir / REPO_DIR) as store:
        clean, output = store.fsck()
        if not clean:
            problem(f"git fsck reports errors: {output.splitlines()[0] if output else 'no output'}")
        for attempt in (1, 2):
            try:
                if not index_path.is_file():
                    raise RunStateError(f"index not found: {index_path.name}")
                index = RunIndex.open(index_path, readonly=not repair)
            except GeError as err:
                if not repair or attempt == 2:
                    problem(f"index unusable: {err.message}")
                    report.ok = False
                    return report
                rebuilt = rebuild_index(run_dir)
                problem(f"index unusable: {err.message}", "; ".join(rebuilt.messages))
                index = RunIndex.open(index_path)
            try:
                with index:
                    _check_variants(store, index, repair, problem)
                    _check_notes(store, index, repair, problem)
                    _check_seed(store, index, repair, problem)
                break
            except sqlite3.DatabaseError as err:  # a damaged index that still opens (a table missing, ...)
                if not repair or attempt == 2:
                    problem(f"index unusable: {err}")
                    report.ok = False
                    return report
                rebuilt = rebuild_index(run_dir)
                problem(f"index unusable: {err}", "; ".join(rebuilt.messages))
        for path in store.stale_temp_files(temp_min_age_s):
            if repair:
                path.unlink(missing_ok=True)
                report.repaired.append(f"removed stale temp file {path.relative_to(run_dir)}")
    report.ok = unresolved == 0
    return report


def _check_config(run_dir: Path, report_problem: _Problem) -> None:
    """The run's frozen config, when there, must load: every other command needs it."""
    from guided_evolution.config import ResolvedConfig

    if not (run_dir / CONFIG_FILE).exists():
        return
    try:
        ResolvedConfig.load(run_dir / CONFIG_FILE)
    except GeError as err:
        report_problem(f"{CONFIG_FILE} unusable: {err.message} (restore it from a backup; doctor cannot rebuild it)")


def _check_seed(store: GitStore, index: RunIndex, repair: bool, report_problem: _Problem) -> None:
    """The index must name the seed variant (`ge resume` and `ge diff` start from it)."""
    seed_id = _seed_variant(store)
    if seed_id is None or index.get_meta(META_SEED) == seed_id:
        return
    if repair:
        index.set_meta(META_SEED, seed_id)
    report_problem(
        f"the index does not record the seed variant ({seed_id} on branch {SEED_BRANCH})",
        f"recorded the seed variant {seed_id}",
    )


_Problem = Callable[..., None]


def _check_variants(
    store: GitStore, index: RunIndex, repair: bool, report_problem: _Problem
) -> None:
    branches = {b: sha for b, sha in store.branches().items() if is_variant_branch(b)}
    rows = {rec.id: rec for rec in index.variants()}
    git_ids: set[str] = set()
    for branch, sha in sorted(branches.items()):
        rec = _variant_from_commit(store, branch, sha)
        if rec is None:
            report_problem(f"branch {branch} has no Ge-Variant trailer")
            continue
        git_ids.add(rec.id)
        row = rows.get(rec.id)
        if row is None:
            note = store.get_note(sha)
            evaluation = _evaluation_from_note(rec.id, note, [])
            if evaluation is not None:
                rec.status = _NOTE_STATUS[evaluation.status]
            if repair:
                with index.transaction():
                    record_variant(store, index, rec)
                    if evaluation is not None:
                        index.add_evaluation(evaluation)
            report_problem(
                f"variant {rec.id} ({branch}) is in git but not in the index",
                f"added variant {rec.id} to the index",
            )
        elif row.commit_sha != sha or row.branch != branch:
            if repair:
                index.set_variant_commit(rec.id, sha, branch)
            report_problem(
                f"variant {rec.id}: index says {row.branch}@{(row.commit_sha or '-')[:12]}, git has {branch}@{sha[:12]}",
                f"variant {rec.id} now points at {branch}@{sha[:12]}",
            )
    for vid, row in rows.items():
        if vid in git_ids:
            continue
        if row.commit_sha is None and row.status == "invalid":
            continue  # an invalid child is never committed
        if row.commit_sha and row.branch and store.has_commit(row.commit_sha):
            if repair:
                store.set_branch(row.branch, row.commit_sha)
            report_problem(
                f"variant {vid}: commit {row.commit_sha[:12]} exists but branch {row.branch} is missing",
                f"restored branch {row.branch}",
            )
        else:
            if repair:
                index.delete_variant(vid)
            report_problem(
                f"variant {vid} is in the index but its commit never landed in git",
                f"removed variant {vid} from the index (it can be created again)",
            )


def _check_notes(store: GitStore, index: RunIndex, repair: bool, report_problem: _Problem) -> None:
    notes = store.notes()
    latest = index.latest_evaluations()
    for rec in index.variants():
        if rec.commit_sha is None or not store.has_commit(rec.commit_sha):
            continue
        text = notes.get(rec.commit_sha)
        mine = latest.get(rec.id)
        theirs = _evaluation_from_note(rec.id, text, []) if text is not None else None
        if text is not None and theirs is None:
            report_problem(f"variant {rec.id}: its note is not an evaluation")
            continue
        final = mine
        if mine is not None and theirs is None:
            if repair:
                store.set_note(rec.commit_sha, mine.to_note())
            report_problem(
                f"variant {rec.id}: evaluated in the index but has no git note",
                f"wrote the note of variant {rec.id}",
            )
        elif theirs is not None and (
            mine is None or (theirs.attempt >= mine.attempt and not _same_evaluation(mine, theirs))
        ):
            final = theirs
            if repair:
                index.add_evaluation(theirs)
            report_problem(
                f"variant {rec.id}: its git note has an evaluation the index lacks",
                f"added the evaluation of variant {rec.id} from its note",
            )
        elif mine is not None and theirs is not None and not _same_evaluation(mine, theirs):
            if repair:
                store.set_note(rec.commit_sha, mine.to_note())
            report_problem(
                f"variant {rec.id}: its git note is older than the index's evaluation",
                f"rewrote the note of variant {rec.id}",
            )
        if final is not None and rec.status not in (_NOTE_STATUS[final.status], "invalid"):
            expected = _NOTE_STATUS[final.status]
            if repair:
                index.set_variant_status(rec.id, expected)
            report_problem(
                f"variant {rec.id}: status {rec.status}, but its latest evaluation is {final.status}",
                f"set the status of variant {rec.id} to {expected}",
            )
