"""Refs are written as git writes them (``<ref>.lock`` then a rename), not through libgit2, whose
ref creation scans every packed ref (1.3 ms a branch at 100,000 variants; issue 29): what git and
ge read back, a packed ref overridden, a killed writer's stale lock, and a name that cannot be a
ref file."""

from __future__ import annotations

import pytest

from guided_evolution.errors import RunStateError
from guided_evolution.runstore.git_store import NOTES_REF, GitStore
from tests.runstore.test_store import seed_commit
from tests.support.gitcli import git


def test_branches_and_notes_written_are_what_git_reads(store: GitStore) -> None:
    seed = seed_commit(store)
    child = store.commit({"a": b"1"}, [seed], "m", "v/1/x")
    store.set_note(child, '{"status": "ok"}')
    assert git(store.path, "rev-parse", "refs/heads/v/1/x").strip() == child
    assert git(store.path, "notes", "--ref", NOTES_REF, "show", child).strip() == '{"status": "ok"}'
    assert git(store.path, "fsck", "--strict", "--no-dangling") == ""
    assert not list(store.path.rglob("*.lock"))


def test_a_packed_branch_is_moved_by_a_loose_write(store: GitStore) -> None:
    seed = seed_commit(store)
    first = store.commit({"a": b"1"}, [seed], "m", "v/1/x")
    store.pack_refs()
    assert not (store.path / "refs/heads/v/1/x").exists()  # packed only
    second = store.commit({"a": b"2"}, [seed], "m", "v/1/x", force=True)
    assert second != first
    assert store.branch_sha("v/1/x") == second == store.branches()["v/1/x"]
    assert git(store.path, "rev-parse", "v/1/x").strip() == second
    store.pack_refs()
    assert store.branch_sha("v/1/x") == second


def test_a_stale_lock_of_a_killed_writer_is_replaced(store: GitStore) -> None:
    seed = seed_commit(store)
    lock = store.path / "refs/heads/v/1/x.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("half written")
    child = store.commit({"a": b"1"}, [seed], "m", "v/1/x")
    assert store.branch_sha("v/1/x") == child and not lock.exists()


def test_a_ref_path_taken_by_a_file_is_refused_in_one_line(store: GitStore) -> None:
    seed = seed_commit(store)
    (store.path / "refs/heads/v").write_text("not a directory")
    with pytest.raises((RunStateError, OSError)) as err:
        store.commit({"a": b"1"}, [seed], "m", "v/1/x")
    assert "v/1/x" not in store.branches()
    assert not list(store.path.rglob("*.lock")), err.value


def test_fsync_mode_writes_the_same_refs(tmp_path) -> None:
    with GitStore.init(tmp_path / "repo.git", fsync=True) as synced:
        seed = seed_commit(synced)
        child = synced.commit({"a": b"1"}, [seed], "m", "v/1/x")
        assert git(synced.path, "rev-parse", "v/1/x").strip() == child
