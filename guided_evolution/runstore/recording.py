"""Writing a variant into a run: git first, then the index. The one way it is done.

Order is what makes a kill at any instant repairable: a commit's objects, then its branch ref
(atomic), then the index row. A kill between the ref and the row leaves a branch without a row,
which ``doctor.check(repair=True)`` adds back by calling :func:`record_variant` again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.records import VariantRecord
from guided_evolution.runstore.run_index import RunIndex


def record_variant(
    store: GitStore,
    index: RunIndex,
    record: VariantRecord,
    tree: Mapping[str, bytes] | None = None,
    parent_commits: Sequence[str] = (),
    *,
    description: str = "",
    steps: Sequence[str] = (),
    timestamp: float | None = None,
) -> VariantRecord:
    """Commit ``record`` on its branch (unless the branch already holds it), then add its index row.

    ``tree`` is the variant's complete file tree and ``parent_commits`` its parents' commits (two
    for a crossover: a merge commit); both are needed only when the branch does not exist yet. A
    branch that exists (a resumed or repaired write) is reused as it is. Returns the record with
    ``commit_sha`` filled in.
    """
    if record.branch is None:
        raise ValueError(f"variant {record.id} has no branch")
    sha = store.branch_sha(record.branch)
    if sha is None:
        if tree is None:
            raise ValueError(
                f"variant {record.id}: branch {record.branch} is missing and no tree given"
            )
        message = record.to_commit_message(description, steps)
        sha = store.commit(
            dict(tree), list(parent_commits), message, record.branch, timestamp=timestamp
        )
    stored = dataclasses.replace(record, commit_sha=sha)
    index.add_variant(stored)
    return stored
