"""A generation's notes written as one pack (``runstore.packwrite``), not one loose file per
object: git and a fresh store read every note, git's own checks pass, the notes commit is the one
libgit2 would have written, and ``pack_loose`` folds the notes packs into its pack."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest

from guided_evolution.runstore import packwrite
from guided_evolution.runstore.git_store import (
    AUTHOR_EMAIL,
    AUTHOR_NAME,
    NOTES_MESSAGE,
    NOTES_REF,
    PACK_AT,
    GitStore,
)
from tests.support.gitcli import git


def _commits(store: GitStore, n: int) -> list[str]:
    seed = store.commit({"f": b"seed"}, [], "seed", "seed")
    return [store.commit({"f": str(i).encode()}, [seed], f"m{i}", f"v/1/{i:04d}") for i in range(n)]


def _loose(repo: Path) -> set[str]:
    return {
        p.parent.name + p.name
        for p in (repo / "objects").glob("??/*")
        if len(p.name) == 38 and p.is_file()
    }


def _packs(repo: Path) -> set[str]:
    return {p.stem for p in (repo / "objects" / "pack").glob("*.idx")}


def _texts(n: int) -> list[str]:
    """Notes of many sizes: one- to four-byte size fields of the pack entries."""
    return [f'{{"i": {i}, "pad": "{"x" * (i * 977 % 70_000)}"}}' for i in range(n)]


def test_a_batch_of_notes_is_one_pack_that_git_and_a_fresh_store_read(store: GitStore) -> None:
    commits = _commits(store, 50)
    loose, packs = _loose(store.path), _packs(store.path)
    texts = dict(zip(commits, _texts(50), strict=True))
    store.set_notes(texts, timestamp=1_700_000_000)
    assert _loose(store.path) == loose  # no loose object for the notes
    assert len(_packs(store.path) - packs) == 1
    git(store.path, "fsck", "--full", "--strict")  # the pack and its index are git's format
    for sha in commits[:5]:
        assert git(store.path, "notes", "--ref", NOTES_REF, "show", sha) == texts[sha] + "\n"
    with GitStore.open(store.path) as fresh:
        assert fresh.notes() == texts
    assert store.get_note(commits[-1]) == texts[commits[-1]]


def test_the_notes_commit_is_the_one_libgit2_writes(store: GitStore) -> None:
    commits = _commits(store, PACK_AT)
    store.set_notes({sha: "n" for sha in commits}, timestamp=1_700_000_123)
    repo = pygit2.Repository(str(store.path))
    written = repo.references[NOTES_REF].target
    tree = repo[written].tree_id
    who = pygit2.Signature(AUTHOR_NAME, AUTHOR_EMAIL, 1_700_000_123, 0)
    again = repo.create_commit(None, who, who, NOTES_MESSAGE, tree, [])
    assert again == written


def test_a_few_notes_stay_loose(store: GitStore) -> None:
    commits = _commits(store, 2)
    packs = _packs(store.path)
    store.set_notes({sha: "n" for sha in commits})
    assert _packs(store.path) == packs


def test_pack_loose_folds_the_notes_packs_in(store: GitStore) -> None:
    commits = _commits(store, 80)
    store.set_notes({sha: "a" + t for sha, t in zip(commits[:40], _texts(40), strict=True)})
    store.set_notes({sha: "b" + t for sha, t in zip(commits[40:], _texts(40), strict=True)})
    notes_packs = _packs(store.path)
    assert len(notes_packs) == 2
    store.pack_loose()
    after = _packs(store.path)
    assert not after & notes_packs and len(after) == 1
    assert _loose(store.path) == set()
    git(store.path, "fsck", "--full", "--strict")
    with GitStore.open(store.path) as fresh:
        notes = fresh.notes()
    assert len(notes) == 80 and notes[commits[0]].startswith("a") and notes[commits[-1]][0] == "b"


@pytest.mark.parametrize("size", [0, 15, 16, 2047, 2048, 1 << 20])
def test_entry_sizes_read_back(tmp_path: Path, size: int) -> None:
    repo = GitStore.init(tmp_path / "repo.git")
    repo.close()
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    oid = packwrite.object_id("blob", data)
    filler = [(packwrite.object_id("blob", b"%d" % i), "blob", b"%d" % i) for i in range(3)]
    packwrite.write_pack(tmp_path / "repo.git" / "objects" / "pack", [(oid, "blob", data), *filler])
    assert pygit2.Repository(str(tmp_path / "repo.git"))[pygit2.Oid(raw=oid)].data == data
    git(tmp_path / "repo.git", "verify-pack", str(next((tmp_path / "repo.git").rglob("*.idx"))))
