"""GitStore.pack_loose: the incremental compaction of a long run packs the new loose objects
only, loses nothing (not even an unreachable commit) and leaves git's own view intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from guided_evolution.runstore.git_store import GitStore
from tests.support.gitcli import git as _git


def _loose(repo: Path) -> list[str]:
    return [
        p.parent.name + p.name
        for p in (repo / "objects").glob("??/*")
        if len(p.name) == 38
    ]


def test_pack_loose_packs_the_new_objects_and_keeps_everything(tmp_path: Path) -> None:
    repo = tmp_path / "repo.git"
    with GitStore.init(repo) as store:
        first = store.commit({"m.py": b"x = 0\n"}, [], "seed", "ge/seed")
        shas = [first]
        for i in range(1, 6):
            shas.append(store.commit({"m.py": f"x = {i}\n".encode()}, [shas[-1]], f"v{i}", f"v{i}"))
        store.set_notes({shas[-1]: "score 1"})
        store.delete_branch("v3")  # compact() would prune v3's commit; pack_loose keeps it
        before = set(_loose(repo))
        assert len(before) >= 15
        assert store.pack_loose() == len(before)
        assert _loose(repo) == []
        assert store.pack_loose() == 0  # nothing new: nothing done
        # Every object still reads, through ge and through git; more commits go on as before.
        assert store.read_files(shas[3]) == {"m.py": b"x = 3\n"}
        assert store.get_note(shas[-1]) == "score 1"
        more = store.commit({"m.py": b"x = 9\n"}, [shas[-1]], "v9", "v9")
        assert store.read_files(more) == {"m.py": b"x = 9\n"}
        new = len(_loose(repo))
        assert new > 0 and store.pack_loose() == new and _loose(repo) == []
    assert set(_git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").split()) >= before
    _git(repo, "fsck", "--strict", "--no-dangling")
    assert len(list((repo / "objects" / "pack").glob("*.pack"))) == 2  # one per call with work


def test_a_run_packs_its_new_objects_every_few_children_and_all_at_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guided_evolution.engine import recorder
    from guided_evolution.runstore import git_store
    from tests.support.harness import FakeExecutor, run_engine
    from tests.support.seeds import template_seed

    packed: list[int] = []
    original = git_store.GitStore.pack_loose

    def counting(self: GitStore) -> int:
        packed.append(original(self))
        return packed[-1]

    monkeypatch.setattr(recorder, "COMPACT_EVERY", 3)
    monkeypatch.setattr(git_store.GitStore, "pack_loose", counting)
    seed = template_seed(tmp_path / "seed", generations=3)
    run_engine(seed, tmp_path / "run", executor=FakeExecutor(lambda files: {"score": 1.0, "size": 1.0}).factory)
    repo = tmp_path / "run" / "repo.git"
    assert len(packed) >= 2 and all(n > 0 for n in packed)  # between generations, new objects
    assert _loose(repo) == []
    assert len(list((repo / "objects" / "pack").glob("*.pack"))) == 1  # the end: one pack
    _git(repo, "fsck", "--strict", "--no-dangling")
