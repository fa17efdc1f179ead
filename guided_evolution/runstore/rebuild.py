"""Rebuilding a run's index (``index.sqlite``) from its git repository.

git is the durable record: branches + ``Ge-*`` trailers give the variants, notes give their latest
evaluation. The index adds what git does not hold (LLM calls, the reply cache, reflections,
events, generation checkpoints, evaluation output tails): a rebuild keeps those from the old
index when it can still be read. Branches that were deleted are first put back from the commits
left in the repository (``salvage.recover_refs``), so a rebuild never forgets variants whose
commits are still there.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from guided_evolution.errors import GeError, RunDamagedError
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.records import (
    META_SEED,
    SEED_BRANCH,
    EvaluationRecord,
    VariantRecord,
    is_variant_branch,
)
from guided_evolution.runstore.run_index import SCHEMA_VERSION, RunIndex
from guided_evolution.runstore.rundir import INDEX_FILE, REPO_DIR, require_run_dir
from guided_evolution.runstore.salvage import recover_refs

NOTE_STATUS = {"ok": "evaluated", "failed": "failed"}
# Tables that only the index holds, copied over from the old index by a rebuild.
_INDEX_ONLY_TABLES = ("meta", "llm_calls", "llm_cache", "reflections", "events", "generations")


@dataclass
class RebuildReport:
    """Outcome of :func:`rebuild_index`."""

    variants: int
    evaluations: int
    messages: list[str] = field(default_factory=list)


def seed_variant(store: GitStore) -> str | None:
    """The variant id on the seed branch, from its Ge-Variant trailer."""
    sha = store.branch_sha(SEED_BRANCH)  # one ref, not every branch listed
    rec = variant_from_commit(store, SEED_BRANCH, sha) if sha else None
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


def variant_from_commit(store: GitStore, branch: str, sha: str) -> VariantRecord | None:
    """The variant row that a branch's commit describes, or None without a Ge-Variant trailer."""
    info = store.commit_info(sha)
    return VariantRecord.from_commit(branch, sha, info.message, info.timestamp)


def same_evaluation(a: EvaluationRecord, b: EvaluationRecord) -> bool:
    """Same outcome (NaN-safe: metrics compare as JSON text)."""

    def key(e: EvaluationRecord) -> str:
        return json.dumps([e.status, e.stage, e.metrics, e.failure_reason], sort_keys=True)

    return key(a) == key(b)


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def newer_schema(index_path: Path) -> int | None:
    """The index's schema version when it is newer than this ge supports (else None)."""
    version = _schema_version(index_path) if index_path.is_file() else None
    return version if version is not None and version > SCHEMA_VERSION else None


def evaluation_from_note(
    variant_id: str, text: str | None, messages: list[str]
) -> EvaluationRecord | None:
    if text is None:
        return None
    try:
        return EvaluationRecord.from_note(variant_id, text)
    except ValueError:
        messages.append(f"note of variant {variant_id} is not an evaluation; ignored")
        return None


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
    """Add every variant branch (and its note's evaluation) to ``new``; (ids, evaluations).

    An evaluation that only the old index has (its note is written per generation) is kept, and
    its note written, so that git and the new index agree."""
    notes = store.notes()
    seen: set[str] = set()
    n_evaluations = 0
    unnoted: dict[str, str] = {}  # commit -> note of an evaluation only the old index had
    for branch, sha in sorted(store.branches().items()):
        if not is_variant_branch(branch):
            continue
        rec = variant_from_commit(store, branch, sha)
        if rec is None:
            messages.append(f"branch {branch} has no Ge-Variant trailer; skipped")
            continue
        if rec.id in seen:
            messages.append(f"variant {rec.id} is on two branches; kept {rec.branch} once")
            continue
        seen.add(rec.id)
        evaluation = evaluation_from_note(rec.id, notes.get(sha), messages)
        latest = old.latest_evaluation(rec.id) if old is not None else None
        if evaluation is None and latest is not None:
            evaluation = latest  # the index is the primary record: its note was not written yet
            unnoted[sha] = latest.to_note()
        if evaluation is not None:
            rec.status = NOTE_STATUS[evaluation.status]
        prior = old.get_variant(rec.id) if old is not None else None
        if prior is not None:
            rec.llm_call_id = prior.llm_call_id
            if evaluation is None and prior.status == "invalid":
                rec.status = "invalid"
        new.add_variant(rec)
        if evaluation is not None:
            if latest is not None and same_evaluation(latest, evaluation):
                evaluation.output_tail = latest.output_tail
            new.add_evaluation(evaluation)
            n_evaluations += 1
    if unnoted:
        store.set_notes(unnoted)
        messages.append(
            f"kept {len(unnoted)} evaluations from the old index and wrote their git notes"
        )
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


def _require_repo(run_dir: Path) -> None:
    """A rebuild needs the repository: put back its refs/ and HEAD if only they are gone."""
    repo = run_dir / REPO_DIR
    GitStore.restore_layout(repo)
    layout = GitStore.layout_damage(repo)
    if layout is not None:
        raise RunDamagedError(run_dir, f"cannot rebuild {INDEX_FILE}: {layout}", None)


def rebuild_index(run_dir: Path) -> RebuildReport:
    """Rebuild ``index.sqlite`` from ``repo.git`` (into a temp file, then renamed over the old one).

    Variants come from the branches and their ``Ge-*`` trailers (created_at = commit time), their
    latest evaluation from the notes. LLM calls, the cache, reflections, events, generation
    checkpoints and never-committed invalid variants are not in git: they are kept from the old
    index when it is readable. Lost branches are put back first (``salvage.recover_refs``).
    """
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    _require_repo(run_dir)
    index_path = run_dir / INDEX_FILE
    version = newer_schema(index_path)
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
        _require_seed(run_dir, store, old, messages)
        seen, n_evaluations = _fill(store, old, RunIndex.open(tmp_path), index_path, messages)
    # The old index's WAL must not be applied to the new file: drop it before the rename.
    for suffix in ("-wal", "-shm"):
        Path(f"{index_path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp_path, index_path)
    messages.insert(
        0, f"rebuilt {index_path.name}: {len(seen)} variants, {n_evaluations} evaluations"
    )
    return RebuildReport(len(seen), n_evaluations, messages)


def _require_seed(
    run_dir: Path, store: GitStore, old: RunIndex | None, messages: list[str]
) -> None:
    """Put lost branches back from the old index; refuse when the seed's commit is gone."""
    if store.branch_sha(SEED_BRANCH) is None:
        known = {v.branch: v.commit_sha for v in old.variants()} if old is not None else {}
        messages.extend(recover_refs(store, {b: c for b, c in known.items() if b and c}))
    if store.branch_sha(SEED_BRANCH) is None:
        if old is not None:
            old.close()
        raise RunDamagedError(
            run_dir, f"cannot rebuild {INDEX_FILE}: the seed's commit is gone from {REPO_DIR}", None
        )


def _fill(
    store: GitStore, old: RunIndex | None, new: RunIndex, index_path: Path, messages: list[str]
) -> tuple[set[str], int]:
    """Write the new index (at ``new``) from git and what only the old index holds; close both.
    The new file is removed when anything fails."""
    try:
        with new.transaction():
            seen, n_evaluations = _variants_from_git(store, old, new, messages)
            if old is not None:
                _keep_invalid(old, new, seen, messages)
        if old is not None:
            old.close()
            old = None
            messages.extend(new.copy_tables_from(index_path, _INDEX_ONLY_TABLES))
        seed_id = seed_variant(store)
        if seed_id and new.get_meta(META_SEED) is None:
            new.set_meta(META_SEED, seed_id)
        new.set_meta("rebuilt_at", repr(time.time()))
    except BaseException:
        new.close()
        _remove_sqlite_files(new.path)
        raise
    finally:
        if old is not None:
            old.close()
    new.close(single_file=True)
    return seen, n_evaluations
