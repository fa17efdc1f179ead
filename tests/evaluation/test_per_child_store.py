"""The store's per-child shortcuts answer as git does: a commit's files read back from memory,
and the repository check between writes that reads the config again only when it changed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guided_evolution.runstore.git_store import GitStore

FILES = {"model.py": b"x = 1\n", "pkg/util.py": b"def f():\n    return 2\n", "run.sh": b"echo\n"}


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, env=env)
    return done.stdout.decode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GitStore]:
    s = GitStore.init(tmp_path / "repo.git")
    yield s
    s.close()


def test_files_read_again_are_the_commits_files(store: GitStore, tmp_path: Path) -> None:
    seed = store.commit(FILES, [], "seed\n", "seed", executable={"run.sh"})
    child_files = {**FILES, "model.py": b"x = 2\n"}
    child = store.commit(child_files, [seed], "child\n", "v/1/a")
    for _ in range(2):  # the second read comes from memory
        assert store.read_files(seed) == FILES
        assert store.read_files("v/1/a") == child_files
        assert store.read_files(child) == child_files
    store.export(child, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "util.py").read_bytes() == FILES["pkg/util.py"]
    assert (tmp_path / "out" / "model.py").read_bytes() == b"x = 2\n"
    store.export(seed, tmp_path / "seed-out")
    assert os.access(tmp_path / "seed-out" / "run.sh", os.X_OK)
    # git reads the same files
    assert _git(store.path, "show", f"{child}:model.py") == "x = 2\n"


def test_the_files_kept_are_bounded_by_size(tmp_path: Path) -> None:
    with GitStore.init(tmp_path / "repo.git") as store:
        store._recent.max_bytes = 4096  # room for four 1,000-byte trees (a quarter at most each)
        shas = [
            store.commit({"f.py": bytes([65 + n]) * 1000}, [], f"c{n}\n", f"v/0/{n}")
            for n in range(10)
        ]
        for n, sha in enumerate(shas):
            assert store.read_files(sha) == {"f.py": bytes([65 + n]) * 1000}
        assert store._recent._bytes <= 4096
        assert store._recent.get(shas[0]) is None
        assert store._recent.get(shas[-1]) is not None
        store._recent.put("f" * 40, (("big", 0o100644, b"x" * 2000),))  # over a quarter: skipped
        assert store._recent.get("f" * 40) is None


def test_a_config_that_loses_ge_version_is_seen_at_the_next_check(store: GitStore) -> None:
    assert GitStore.layout_damage(store.path) is None
    config = store.path / "config"
    text = config.read_text()
    assert "[ge]" in text
    config.write_text(text.replace("[ge]", "[xx]"))  # same size, in place: read again
    assert "not a ge repository" in (GitStore.layout_damage(store.path) or "")
    config.write_text(text)
    assert GitStore.layout_damage(store.path) is None
    config.unlink()
    assert "not a ge repository" in (GitStore.layout_damage(store.path) or "")


def test_files_kept_at_commit_are_in_the_order_and_modes_git_reads(tmp_path: Path) -> None:
    files = {
        "lib/util.py": b"u\n",
        "lib-x.txt": b"dash\n",
        "lib.c": b"dot\n",
        "a/b/c.py": b"c\n",
        "a!": b"bang\n",
        "run.sh": b"#!/bin/sh\n",
        "\u00e9t\u00e9.py": b"e\n",
    }
    with GitStore.init(tmp_path / "one.git") as writer:
        sha = writer.commit(files, [], "m\n", "seed", executable={"run.sh"})
        kept = writer._recent.get(sha)
    with GitStore.open(tmp_path / "one.git") as reader:  # a fresh store reads git itself
        assert kept == reader._files(sha)
