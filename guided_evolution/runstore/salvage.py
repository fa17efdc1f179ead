"""What `ge doctor` can still do for a damaged run: recover lost refs from the objects that are
left, and say in one line what is left when the repository itself is gone.

Deleting a repository's refs does not delete its objects: every variant commit carries its
``Ge-*`` trailers (its id, generation and operator name its branch), and every notes commit is a
full copy of the notes at the time it was written. So lost branches and the notes ref can be
put back from the commits still in ``objects/``, preferring the commit ids the index recorded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

from guided_evolution.errors import GeError
from guided_evolution.runstore.git_store import NOTES_MESSAGE, NOTES_REF, CommitInfo, GitStore
from guided_evolution.runstore.records import SEED_BRANCH, parse_trailers, variant_branch
from guided_evolution.runstore.run_index import RunIndex


def _branch_of(info: CommitInfo) -> str | None:
    """The branch a variant commit belongs on (from its trailers), or None for other commits."""
    meta = parse_trailers(info.message)
    vid, generation = meta.get("variant"), meta.get("generation")
    if not isinstance(vid, str) or not vid:
        return None
    if meta.get("operator") == "seed":
        return SEED_BRANCH
    return variant_branch(generation, vid) if isinstance(generation, int) else None


def recover_refs(store: GitStore, known: Mapping[str, str]) -> list[str]:
    """Put back the variant branches and the notes ref that are missing, from the commits still
    in the repository's objects; one line per kind of thing restored.

    ``known`` (branch -> commit, from the index) decides when one branch has several commits
    (a resumed write); otherwise the newest commit wins. The notes are the union of every notes
    commit left, the newer note of a commit winning.
    """
    branches = store.branches()
    chosen: dict[str, CommitInfo] = {}
    notes_commits: list[CommitInfo] = []
    for info in store.commits():
        if info.message == NOTES_MESSAGE and not info.parents:
            notes_commits.append(info)
            continue
        branch = _branch_of(info)
        if branch is None or branch in branches:
            continue
        best = chosen.get(branch)
        rank = (info.sha == known.get(branch), info.timestamp)
        if best is None or rank > (best.sha == known.get(branch), best.timestamp):
            chosen[branch] = info
    for branch, info in sorted(chosen.items()):
        store.set_branch(branch, info.sha)
    lines = []
    if chosen:
        lines.append(f"restored {len(chosen)} branches from the commits left in {store.path.name}")
    if store.branch_sha(SEED_BRANCH) is not None and notes_commits and not store.has_notes():
        merged: dict[str, str] = {}
        for info in sorted(notes_commits, key=lambda c: c.timestamp):
            merged.update(store.notes_at(info.sha))
        keep = {sha: text for sha, text in merged.items() if store.has_commit(sha)}
        store.set_notes(keep)
        lines.append(
            f"restored {NOTES_REF} ({len(keep)} notes) from {len(notes_commits)} notes commits"
        )
    return lines


def what_is_left(run_dir: Path, index_path: Path, logs: Path) -> str:
    """One line: what a run whose repository is gone still has (index, logs)."""
    parts = []
    try:
        with RunIndex.open(index_path, readonly=True) as index:
            counts = index.counts()
        parts.append(
            f"{index_path.name} ({counts['variants']} variants, {counts['evaluated']} evaluated, "
            f"{counts['llm_calls']} LLM calls: their metrics, prompts and replies)"
        )
    except (GeError, sqlite3.Error):
        parts.append(f"no readable {index_path.name}")
    try:
        n_logs = sum(1 for p in logs.iterdir() if p.suffix == ".log")
        parts.append(f"{logs.name}/ ({n_logs} evaluation logs)")
    except OSError:
        pass
    return (
        "left: " + ", ".join(parts) + f"; the variants' code is only in a backup of {run_dir.name}"
    )
