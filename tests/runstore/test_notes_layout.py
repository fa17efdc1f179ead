"""GitStore's notes as a fresh store reads them back: ge's own layout (read from the raw tree
bodies), any other layout git may have written (walked, then rewritten in ge's), a damaged one."""

from __future__ import annotations

from pathlib import Path

import pytest

from guided_evolution.errors import RunDamagedError
from guided_evolution.runstore.git_store import NOTES_REF, GitStore
from tests.support.gitcli import git


def _commits(store: GitStore, n: int) -> list[str]:
    seed = store.commit({"f": b"seed"}, [], "seed", "seed")
    return [store.commit({"f": str(i).encode()}, [seed], f"m{i}", f"v/1/{i:04d}") for i in range(n)]


def _buckets(repo: Path) -> dict[str, str]:
    """The notes root's entries: name -> tree id."""
    lines = git(repo, "ls-tree", NOTES_REF).splitlines()
    return {line.split("\t")[1]: line.split()[2] for line in lines}


def test_a_fresh_store_reads_ge_notes_and_rewrites_only_the_changed_bucket(store: GitStore) -> None:
    commits = _commits(store, 60)
    store.set_notes({sha: f'{{"i": {i}}}' for i, sha in enumerate(commits)})
    before = _buckets(store.path)
    with GitStore.open(store.path) as fresh:
        assert fresh.notes() == store.notes()
        assert fresh.note_blobs() == store.note_blobs()
        assert fresh.get_note(commits[7]) == '{"i": 7}'
        fresh.set_note(commits[7], "changed")
        after = _buckets(store.path)
        assert {n for n in after if after[n] != before.get(n)} == {commits[7][:2]}
        assert git(store.path, "notes", "--ref=ge", "show", commits[7]) == "changed\n"
        assert git(store.path, "notes", "--ref=ge", "show", commits[8]) == '{"i": 8}\n'
        assert len(git(store.path, "notes", "--ref=ge", "list").splitlines()) == 60
    assert store.fsck()[0]


def test_a_flat_notes_tree_written_by_git_is_read_and_rewritten_in_ge_layout(
    store: GitStore,
) -> None:
    commits = _commits(store, 5)
    for i, sha in enumerate(commits[:4]):
        git(store.path, "notes", "--ref=ge", "add", "-m", f"git {i}", sha)
    assert all(len(name) == 40 for name in _buckets(store.path))  # git's flat tree
    with GitStore.open(store.path) as fresh:
        assert fresh.notes() == {sha: f"git {i}" for i, sha in enumerate(commits[:4])}
        fresh.set_note(commits[4], "ge")
    assert all(len(name) == 2 for name in _buckets(store.path))
    for i, sha in enumerate(commits[:4]):
        assert git(store.path, "notes", "--ref=ge", "show", sha) == f"git {i}\n"
    assert git(store.path, "notes", "--ref=ge", "show", commits[4]) == "ge\n"


def test_a_missing_bucket_tree_is_damage_named_by_the_fresh_store(store: GitStore) -> None:
    commits = _commits(store, 3)
    store.set_notes({sha: "n" for sha in commits})
    bucket = _buckets(store.path)[commits[0][:2]]
    (store.path / "objects" / bucket[:2] / bucket[2:]).unlink()
    with GitStore.open(store.path) as fresh, pytest.raises(RunDamagedError, match="missing"):
        fresh.notes()
