"""Consistency of a run: the SQLite index against the git repository, checked and repaired.

git is the durable record: branches + ``Ge-*`` trailers give the variants, notes give their latest
evaluation. The index adds what git does not hold (LLM calls, the reply cache, reflections,
events, generation checkpoints, evaluation output tails); ``rebuild`` makes it again from git.
A damaged run (code evaluated without a sandbox can write the run directory) is explained in
one line per kind of damage, repaired where the objects are still there (``salvage``), and its
damage record is cleared once nothing is left to repair.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.config import ResolvedConfig
from guided_evolution.errors import GeError, RunStateError
from guided_evolution.runstore import damage
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.rebuild import (
    NOTE_STATUS,
    RebuildReport,
    evaluation_from_note,
    newer_schema,
    rebuild_index,
    same_evaluation,
    seed_variant,
    variant_from_commit,
)
from guided_evolution.runstore.recording import record_variant
from guided_evolution.runstore.records import META_SEED, SEED_BRANCH, is_variant_branch
from guided_evolution.runstore.run_index import SCHEMA_VERSION, RunIndex, VariantRef
from guided_evolution.runstore.rundir import CONFIG_FILE, LOCK_FILE, RunPaths, require_run_dir
from guided_evolution.runstore.salvage import recover_refs, what_is_left

__all__ = [
    "DoctorReport",
    "RebuildReport",
    "check",
    "lock_holder",
    "rebuild_index",
    "require_run_dir",
]

_RECORD = "record"  # the group of the damage record's line
_GROUP_AT = 4  # this many problems of one kind or more are told in one line
_KINDS = {  # kind -> (problem line, repaired line) for a group; {n} is how many, {first} one of them
    "branch": ("{n} variant branches are missing, but their commits are still in git (e.g. {first})",
               "restored {n} branches from the index's commit ids"),
    "gone": ("{n} variants of the index have no commit in git (never landed, or deleted; e.g. {first})",
             "removed {n} variants from the index (they can be created again)"),
    "added": ("{n} variants are in git but not in the index (e.g. {first})", "added {n} variants to the index"),
    "moved": ("{n} variants point elsewhere in git than in the index (e.g. {first})",
              "pointed {n} variants of the index at their git branches"),
    "note": ("{n} evaluated variants have no git note (e.g. {first})", "wrote the notes of {n} variants"),
    "note-new": ("{n} git notes have an evaluation the index lacks (e.g. {first})",
                 "added the evaluations of {n} variants from their notes"),
    "note-old": ("{n} git notes are older than the index's evaluation (e.g. {first})",
                 "rewrote the notes of {n} variants"),
    "status": ("{n} variants' status disagrees with their latest evaluation (e.g. {first})",
               "set the status of {n} variants"),
}  # fmt: skip


@dataclass
class DoctorReport:
    """Outcome of :func:`check`: ``ok`` when nothing is (left) wrong."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    repairable: bool = True  # every problem left has a repair (`ge doctor --repair`)


@dataclass
class _Findings:
    """What a check found, grouped by kind: many problems of one kind become one line."""

    repair: bool
    groups: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)
    unresolved: int = 0
    unrepairable: int = 0

    def __call__(self, text: str, fixed: str | None = None, kind: str | None = None) -> None:
        """A problem; ``fixed`` says how ``repair`` fixed it (None: it cannot be repaired)."""
        done = fixed if self.repair else None
        self.groups.setdefault(kind or f"one:{len(self.groups)}", []).append((text, done))
        if done is None:
            self.unresolved += 1
        if fixed is None:
            self.unrepairable += 1

    def told(self) -> int:
        """How many problems (fixed or not) were told so far."""
        return sum(len(items) for items in self.groups.values())

    def resolved(self, problem: str, fixed: str, kind: str | None = None) -> None:
        """A problem already fixed (``problem`` may be empty: a stale temp file needs no line)."""
        self.groups.setdefault(kind or f"one:{len(self.groups)}", []).append((problem, fixed))

    def report(self) -> DoctorReport:
        report = DoctorReport(ok=self.unresolved == 0, repairable=self.unrepairable == 0)
        for kind, items in self.groups.items():
            done = [fixed for _, fixed in items if fixed]
            if kind in _KINDS and len(items) >= _GROUP_AT:
                problem, repaired = _KINDS[kind]
                report.problems.append(problem.format(n=len(items), first=items[0][0]))
                if done:
                    report.repaired.append(repaired.format(n=len(done)))
                continue
            report.problems.extend(text for text, _ in items if text)
            report.repaired.extend(done)
        return report


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


def check(
    run_dir: Path, repair: bool = False, temp_min_age_s: float = 60.0, clear_record: bool = False,
    fsck: bool = True,
) -> DoctorReport:  # fmt: skip
    """Compare the index with git (branches, notes) and run ``git fsck``.

    With ``repair``: lost branches are put back from the commits left in git; variants in git
    but not in the index are added; index rows whose commit never landed are removed (or their
    branch restored when the commit object exists); a note missing for an index evaluation is
    written, an index row missing for a note is added; stale temp files of a killed writer are
    deleted. Run it only while no engine writes the run. The damage record a run left is
    cleared (with ``repair`` or ``clear_record``) once nothing is left to repair. ``fsck``:
    False leaves ``git fsck`` out (what ``ge resume`` checks first: a killed writer leaves no
    broken object, and reading one stops the run on damage).
    """
    paths = RunPaths(Path(run_dir))
    require_run_dir(paths.root)
    found = _Findings(repair)
    found.groups[_RECORD] = []  # the damage record's line comes first, though checked last
    _check_config(paths.root, found)
    version = newer_schema(paths.index)
    if version is not None:
        found(
            f"index has schema version {version}, newer than this ge supports ({SCHEMA_VERSION}): "
            "upgrade ge (a repair by this version would drop what it cannot read)"
        )
        return found.report()
    if _check_layout(paths, repair, found):
        with GitStore.open(paths.repo) as store:
            refs_whole = _check_refs(store, paths, repair, found)
            clean, output = store.fsck() if fsck else (True, "")
            if not clean:
                found(
                    f"git fsck reports errors: {output.splitlines()[0] if output else 'no output'}"
                )
            if refs_whole:  # else every variant would look missing from git: one line says it
                _check_index(store, paths, repair, found)
            for path in store.stale_temp_files(temp_min_age_s):
                if repair:
                    path.unlink(missing_ok=True)
                    found.resolved("", f"removed stale temp file {path.relative_to(paths.root)}")
    _check_record(paths, repair or clear_record, found)
    return found.report()


def _check_layout(paths: RunPaths, repair: bool, found: _Findings) -> bool:
    """Whether the repository can be opened (after putting back its refs/ and HEAD, if asked)."""
    layout = GitStore.layout_damage(paths.repo)
    if layout is None:
        return True
    if not GitStore.layout_restorable(paths.repo):
        found(f"{layout}; {what_is_left(paths.root, paths.index, paths.logs)}")
        return False
    if not repair:
        found(f"{layout}; --repair puts them back from the commits still in its objects", "")
        return False
    found.resolved("", "; ".join(GitStore.restore_layout(paths.repo)))  # _check_refs says the rest
    return True


def _check_refs(store: GitStore, paths: RunPaths, repair: bool, found: _Findings) -> bool:
    """A repository without its seed branch lost its refs: put them back from its objects.
    Whether its refs are whole (again)."""
    if store.branch_sha(SEED_BRANCH) is not None:
        return True
    text = f"{paths.repo.name} lost its branches (refs deleted)"
    if not repair:
        found(f"{text}; --repair puts them back from the commits still in its objects", "")
        return False
    known: dict[str, str] = {}
    try:
        with RunIndex.open(paths.index, readonly=True) as index:
            known = {v.branch: v.commit_sha for v in index.variants() if v.branch and v.commit_sha}
    except (GeError, sqlite3.Error):
        pass  # the index is damaged too: the newest commit of each branch is taken
    restored = recover_refs(store, known)
    if store.branch_sha(SEED_BRANCH) is None:
        found(f"{text}; the seed's commit is gone too, so nothing can be restored")
        return False
    found(text, "; ".join(restored))
    return True


def _check_index(store: GitStore, paths: RunPaths, repair: bool, found: _Findings) -> None:
    """The index opens and agrees with git; an unusable one is rebuilt when repairing."""
    for attempt in (1, 2):
        try:
            if not paths.index.is_file():
                raise RunStateError(f"index not found: {paths.index.name}")
            index = RunIndex.open(paths.index, readonly=not repair)
        except GeError as err:
            if not repair or attempt == 2:
                found(f"index unusable: {err.message}", None if repair else "")
                return
            found(f"index unusable: {err.message}", "; ".join(rebuild_index(paths.root).messages))
            index = RunIndex.open(paths.index)
        try:
            with index:
                refs = index.variant_refs()
                told = found.told()
                _check_variants(store, index, refs, repair, found)
                if repair and found.told() != told:  # it repaired rows: read them again
                    refs = index.variant_refs()
                _check_notes(store, index, refs, repair, found)
                _check_seed(store, index, repair, found)
            return
        except (
            sqlite3.DatabaseError
        ) as err:  # a damaged index that still opens (a table missing, ...)
            if not repair or attempt == 2:
                found(f"index unusable: {err}", None if repair else "")
                return
            found(f"index unusable: {err}", "; ".join(rebuild_index(paths.root).messages))


def _check_record(paths: RunPaths, clear: bool, found: _Findings) -> None:
    """The damage a run recorded when it stopped: cleared once nothing is left to repair."""
    recorded = damage.recorded(paths.damage)
    if not recorded:
        return
    text = "the run stopped on damage: " + "; ".join(d.what for d in recorded)
    if clear and found.unresolved == 0:
        damage.clear(paths.damage)
        found.resolved(
            text, f"cleared {paths.damage.name}: nothing of that damage is left", _RECORD
        )
        return
    said = [line for kind, items in found.groups.items() if kind != _RECORD for line, _ in items]
    if found.unrepairable or (
        found.unresolved and all(any(d.what in line for line in said) for d in recorded)
    ):
        return  # the lines above say it already, or what is left cannot be repaired
    found(text, "", kind=_RECORD)


def _check_config(run_dir: Path, report_problem: _Problem) -> None:
    """The run's frozen config, when there, must load: every other command needs it."""
    if not (run_dir / CONFIG_FILE).exists():
        report_problem(
            f"{CONFIG_FILE} is gone (the run's frozen config: restore it from a backup; doctor cannot rebuild it)"
        )
        return
    try:
        ResolvedConfig.load(run_dir / CONFIG_FILE)
    except GeError as err:
        report_problem(
            f"{CONFIG_FILE} unusable: {err.message} (restore it from a backup; doctor cannot rebuild it)"
        )


def _check_seed(store: GitStore, index: RunIndex, repair: bool, report_problem: _Problem) -> None:
    """The index must name the seed variant (`ge resume` and `ge diff` start from it)."""
    seed_id = seed_variant(store)
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
    store: GitStore, index: RunIndex, refs: list[VariantRef], repair: bool, report_problem: _Problem
) -> None:
    branches = {b: sha for b, sha in store.branches().items() if is_variant_branch(b)}
    rows = {r.id: r for r in refs}
    recorded = {(r.branch, r.commit_sha): r.id for r in rows.values() if r.branch}
    git_ids = {recorded[key] for key in branches.items() if key in recorded}
    for branch, sha in sorted(branches.items()):
        if (branch, sha) in recorded:  # the commit ge recorded for that row: its trailers name it
            continue
        rec = variant_from_commit(store, branch, sha)
        if rec is None:
            report_problem(f"branch {branch} has no Ge-Variant trailer")
            continue
        git_ids.add(rec.id)
        row = rows.get(rec.id)
        if row is None:
            note = store.get_note(sha)
            evaluation = evaluation_from_note(rec.id, note, [])
            if evaluation is not None:
                rec.status = NOTE_STATUS[evaluation.status]
            if repair:
                with index.transaction():
                    record_variant(store, index, rec)
                    if evaluation is not None:
                        index.add_evaluation(evaluation)
            report_problem(
                f"variant {rec.id} ({branch}) is in git but not in the index",
                f"added variant {rec.id} to the index",
                kind="added",
            )
        elif row.commit_sha != sha or row.branch != branch:
            if repair:
                index.set_variant_commit(rec.id, sha, branch)
            report_problem(
                f"variant {rec.id}: index says {row.branch}@{(row.commit_sha or '-')[:12]}, git has {branch}@{sha[:12]}",
                f"variant {rec.id} now points at {branch}@{sha[:12]}",
                kind="moved",
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
                kind="branch",
            )
        else:
            if repair:
                index.delete_variant(vid)
            report_problem(
                f"variant {vid} is in the index but its commit never landed in git",
                f"removed variant {vid} from the index (it can be created again)",
                kind="gone",
            )


def _check_notes(
    store: GitStore, index: RunIndex, refs: list[VariantRef], repair: bool, report_problem: _Problem
) -> None:
    """Each committed variant's note against its latest evaluation in the index. A note whose
    blob is the one the index recorded for that evaluation (``note_blobs``), or the one its
    evaluation would write, is that evaluation (nothing is read); the others are read and
    compared."""
    blobs = store.note_blobs()
    known = index.latest_note_blobs()
    gone = set(store.missing_objects([r.commit_sha for r in refs if r.commit_sha]))
    unsure = [
        r.id for r in refs
        if r.commit_sha and r.id in known and known[r.id][1] != blobs.get(r.commit_sha)
    ]  # fmt: skip
    latest = _latest(index, unsure)
    to_write: dict[str, str] = {}  # one notes commit for all the notes written
    learned: list[tuple[int, str]] = []  # note blobs an earlier ge did not record
    for rec in refs:
        if rec.commit_sha is None or rec.commit_sha in gone:
            continue
        blob = blobs.get(rec.commit_sha)
        if blob is not None and rec.id in known and known[rec.id][1] == blob:
            _check_status(index, rec, known[rec.id][0], repair, report_problem)
            continue
        mine = latest.get(rec.id)
        if mine is not None and blob == store.note_blob_id(mine.to_note()):
            learned.append((mine.id or 0, blob))
            _check_status(index, rec, mine.status, repair, report_problem)
            continue
        final = _reconcile(store, index, rec, blob, mine, repair, report_problem, to_write)
        if final is not None:
            _check_status(index, rec, final.status, repair, report_problem)
    store.set_notes(to_write)
    if repair and learned:  # the next check reads them instead of hashing every evaluation
        index.add_note_blobs(learned)


def _reconcile(
    store: GitStore, index: RunIndex, rec: VariantRef, blob: str | None, mine: Any, repair: bool,
    report_problem: _Problem, to_write: dict[str, str],
) -> Any:  # fmt: skip
    """A note that is not the index's latest evaluation of ``rec``: the problem it is (and, with
    ``repair``, the note to write or the evaluation to add); the evaluation that stands."""
    text = store.note_text(blob) if blob is not None else None
    theirs = evaluation_from_note(rec.id, text, []) if text is not None else None
    if text is not None and theirs is None:
        report_problem(f"variant {rec.id}: its note is not an evaluation")
        return None
    if theirs is not None and (
        mine is None or (theirs.attempt >= mine.attempt and not same_evaluation(mine, theirs))
    ):
        if repair:
            index.add_evaluation(theirs)
        report_problem(
            f"variant {rec.id}: its git note has an evaluation the index lacks",
            f"added the evaluation of variant {rec.id} from its note",
            kind="note-new",
        )
        return theirs
    if mine is not None and (theirs is None or not same_evaluation(mine, theirs)):
        if repair:
            to_write[rec.commit_sha or ""] = mine.to_note()
        kind, problem, fixed = (
            ("note", "evaluated in the index but has no git note", "wrote")
            if theirs is None
            else ("note-old", "its git note is older than the index's evaluation", "rewrote")
        )
        report_problem(
            f"variant {rec.id}: {problem}", f"{fixed} the note of variant {rec.id}", kind=kind
        )
    return mine


def _latest(index: RunIndex, ids: list[str]) -> dict[str, Any]:
    """The latest evaluations (without output) of ``ids``: one query over all variants when
    they are many (an earlier ge's run records no note blobs), else one per variant."""
    if len(ids) > 200:
        return index.latest_without_output()
    return {vid: e for vid in ids if (e := index.latest_evaluation(vid)) is not None}


def _check_status(
    index: RunIndex, rec: VariantRef, status: str, repair: bool, report_problem: _Problem
) -> None:
    """The variant's status follows its latest evaluation (whose status is ``status``)."""
    if rec.status in (NOTE_STATUS[status], "invalid"):
        return
    expected = NOTE_STATUS[status]
    if repair:
        index.set_variant_status(rec.id, expected)
    report_problem(
        f"variant {rec.id}: status {rec.status}, but its latest evaluation is {status}",
        f"set the status of variant {rec.id} to {expected}",
        kind="status",
    )
