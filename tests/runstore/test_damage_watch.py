"""``damage.RunWatch`` between the engine's writes: its quick answer ("nothing changed") must never
hide damage that the full look finds, including a config rewritten with its size and times kept."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from guided_evolution.runstore import damage
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex


@pytest.fixture
def watched(tmp_path: Path):
    store = GitStore.init(tmp_path / "repo.git")
    seed = store.commit({"a.py": b"x = 1\n"}, [], "seed", "seed")
    index = RunIndex.open(tmp_path / "index.sqlite")
    index.close()
    watch = damage.RunWatch(tmp_path / "index.sqlite", store, seed)
    yield watch, store, tmp_path
    store.close()


def test_an_intact_run_has_no_damage_twice(watched) -> None:
    watch, _store, _ = watched
    assert watch.damage() == []
    assert watch.damage() == []  # the remembered config answers the second time


def test_a_config_rewritten_with_its_size_and_times_is_found(watched, monkeypatch) -> None:
    watch, store, _ = watched
    config = store.path / "config"
    monkeypatch.setattr(time, "time_ns", lambda: os.stat(config).st_ctime_ns + 10**10)
    assert watch.damage() == []  # remembered: settled, and says ge.version
    text = config.read_bytes()
    st = os.stat(config)
    forged = text.replace(b"ge", b"xx")
    assert len(forged) == len(text) and forged != text
    config.write_bytes(forged)
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moves anyway
    monkeypatch.setattr(time, "time_ns", lambda: os.stat(config).st_ctime_ns + 10**10)
    found = watch.damage()
    assert [d.what for d in found] == [
        "repo.git/config is gone or damaged: it is not a ge repository any more"
    ]


def test_each_kind_of_damage_is_still_found(watched) -> None:
    watch, store, _ = watched
    assert watch.damage() == []
    head = (store.path / "HEAD").read_bytes()
    (store.path / "HEAD").unlink()
    assert [d.what for d in watch.damage()] == ["repo.git lost its HEAD"]
    (store.path / "HEAD").write_bytes(head)
    assert watch.damage() == []

    other = store.commit({"a.py": b"x = 2\n"}, [], "other", "other")
    store.set_branch("seed", other)
    assert [d.what for d in watch.damage()] == [
        "repo.git lost its branches (refs deleted or moved)"
    ]


def test_an_overwritten_or_replaced_index_is_found(watched) -> None:
    watch, _store, root = watched
    index = root / "index.sqlite"
    data = index.read_bytes()
    with open(index, "r+b") as fh:
        fh.write(b"garbage garbage!")
    assert "header was overwritten" in watch.damage()[0].what
    (root / "new.sqlite").write_bytes(data)  # the same content in a new file, renamed over
    os.replace(root / "new.sqlite", index)
    assert [d.what for d in watch.damage()] == ["index.sqlite was replaced while the run wrote it"]


def test_a_replaced_repository_is_found(watched) -> None:
    watch, store, root = watched
    shutil.copytree(store.path, root / "copy.git")
    shutil.rmtree(store.path)
    (root / "copy.git").rename(store.path)
    assert [d.what for d in watch.damage()] == ["repo.git was replaced while the run wrote it"]
