"""GitStore: objects written from Python must be what git itself would write and read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from guided_evolution.errors import GeError, RunStateError
from guided_evolution.runstore.git_store import NOTES_REF, GitStore
from guided_evolution.runstore.records import format_message, format_trailers, parse_trailers
from tests.support.gitcli import git

SEED = {
    "main.py": b"x = 1\n",
    "lib/util.py": b"def f():\n    return 1\n",
    "lib/deep/more.py": b"y = 2\n",
    "lib-x.txt": b"dash sorts before slash\n",
    "lib.c": b"dot sorts before slash\n",
    "run.sh": b"#!/bin/sh\necho hi\n",
}


def seed_commit(store: GitStore) -> str:
    message = format_message("seed", {"variant": "0" * 16, "generation": 0, "operator": "seed"})
    return store.commit(SEED, [], message, "seed", executable={"run.sh"}, timestamp=1_700_000_000)


def test_seed_is_root_commit_with_nested_tree(store: GitStore) -> None:
    sha = seed_commit(store)
    assert store.branches() == {"seed": sha}
    assert git(store.path, "rev-list", "--parents", "seed").split() == [sha]
    listing = git(store.path, "ls-tree", "-r", "seed")
    assert "100755 blob" in next(line for line in listing.splitlines() if line.endswith("run.sh"))
    assert {line.split("\t")[1] for line in listing.splitlines()} == set(SEED)
    raw = git(store.path, "cat-file", "-p", sha)
    assert "author ge <ge@localhost> 1700000000 +0000" in raw
    assert store.read_files(sha) == SEED
    assert store.executable_files("seed") == {"run.sh"}
    assert git(store.path, "config", "gc.auto").strip() == "0"
    assert store.fsck() == (True, "")


def test_tree_is_identical_to_the_one_git_writes(store: GitStore, tmp_path: Path) -> None:
    work = tmp_path / "work"
    for path, content in SEED.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    (work / "run.sh").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", "init", "-q", str(work)], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True, env=env)
    expected = subprocess.run(
        ["git", "-C", str(work), "write-tree"], capture_output=True, check=True, env=env
    ).stdout.decode()
    assert store.write_tree(SEED, {"run.sh"}) == expected.strip()


def test_mutation_child(store: GitStore) -> None:
    seed = seed_commit(store)
    files = {**SEED, "main.py": b"x = 2\n"}
    message = format_message("mutation of SE0", {"variant": "a" * 16, "parents": ["0" * 16]})
    child = store.commit(files, [seed], message, "v/1/" + "a" * 16)
    assert store.parents(child) == [seed]
    assert git(store.path, "rev-list", "--parents", "-n1", child).split() == [child, seed]
    assert store.read_files(child)["main.py"] == b"x = 2\n"
    assert store.commit_message(child) == message
    assert store.branches("v/") == {"v/1/" + "a" * 16: child}
    assert store.branches("v/1/") == {"v/1/" + "a" * 16: child}
    assert store.branches("v/2/") == {}
    assert store.branch_sha("v/1/" + "a" * 16) == child


def test_crossover_is_a_merge_commit(store: GitStore) -> None:
    seed = seed_commit(store)
    a = store.commit({**SEED, "main.py": b"a\n"}, [seed], "a", "v/1/aaaa")
    b = store.commit({**SEED, "main.py": b"b\n"}, [seed], "b", "v/1/bbbb")
    child = store.commit({**SEED, "main.py": b"ab\n"}, [a, b], "crossover", "v/2/cccc")
    assert git(store.path, "rev-list", "--parents", "-n1", "v/2/cccc").split() == [child, a, b]
    graph = git(store.path, "log", "--graph", "--all", "--format=%s")
    assert "crossover" in graph and "seed" in graph
    assert store.fsck()[0]


def test_existing_branch_and_missing_parent_are_errors(store: GitStore) -> None:
    seed = seed_commit(store)
    first = store.commit({"a": b"1"}, [seed], "m", "v/1/x")
    with pytest.raises(RunStateError, match="already exists"):
        store.commit({"a": b"2"}, [seed], "m", "v/1/x")
    assert store.branch_sha("v/1/x") == first
    second = store.commit({"a": b"2"}, [seed], "m", "v/1/x", force=True)
    assert store.branch_sha("v/1/x") == second
    with pytest.raises(RunStateError, match="parent commit"):
        store.commit({"a": b"3"}, ["f" * 40], "m", "v/1/y")
    assert "v/1/y" not in store.branches()


@pytest.mark.parametrize(
    "bad", [{"../x": b""}, {"a/./b": b""}, {".git/config": b""}, {"a": b"", "a/b": b""}]
)
def test_bad_paths_are_refused(store: GitStore, bad: dict[str, bytes]) -> None:
    with pytest.raises(GeError):
        store.commit(bad, [], "m", "seed")


def test_init_refuses_a_foreign_directory_and_reopens_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "file").write_text("x")
    with pytest.raises(GeError, match="not a ge repository"):
        GitStore.init(foreign)
    with pytest.raises(GeError, match="not a ge git repository"):
        GitStore.open(foreign)
    first = GitStore.init(tmp_path / "repo.git")
    sha = seed_commit(first)
    first.close()
    with GitStore.init(tmp_path / "repo.git") as again:
        assert again.branches() == {"seed": sha}


def test_notes_are_readable_by_git(store: GitStore) -> None:
    seed = seed_commit(store)
    commits = [
        store.commit({"f": str(i).encode()}, [seed], f"m{i}", f"v/1/{i:04d}") for i in range(40)
    ]
    for i, sha in enumerate(commits):
        store.set_note(sha, f'{{"i": {i}}}')
    store.set_note(commits[3], '{"i": "again"}')
    for i, sha in enumerate(commits):
        expected = '{"i": "again"}' if i == 3 else f'{{"i": {i}}}'
        assert git(store.path, "notes", "--ref=ge", "show", sha) == expected + "\n"
        assert store.get_note(sha) == expected
    assert len(git(store.path, "notes", "--ref=ge", "list").splitlines()) == 40
    assert store.get_note(seed) is None
    assert len(store.notes()) == 40
    # The tree has a two-hex-character fanout.
    root = git(store.path, "ls-tree", NOTES_REF)
    assert all(len(line.split("\t")[1]) == 2 for line in root.splitlines())
    # git log --all shows one notes commit, not one per note.
    subjects = git(store.path, "log", "--all", "--format=%s").splitlines()
    assert subjects.count("Notes added by ge") == 1
    assert store.fsck()[0]


def test_notes_written_by_git_itself_are_kept(store: GitStore) -> None:
    seed = seed_commit(store)
    other = store.commit({"f": b"1"}, [seed], "m", "v/1/a")
    git(store.path, "notes", "--ref=ge", "add", "-m", "from git", seed)
    assert store.get_note(seed) == "from git"
    store.set_note(other, "from ge")
    assert store.notes() == {seed: "from git", other: "from ge"}
    assert git(store.path, "notes", "--ref=ge", "show", seed) == "from git\n"


def test_export_writes_files_and_modes(store: GitStore, tmp_path: Path) -> None:
    seed_commit(store)
    dest = tmp_path / "out"
    store.export("seed", dest)
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == set(SEED)
    assert (dest / "lib/deep/more.py").read_bytes() == SEED["lib/deep/more.py"]
    assert os.access(dest / "run.sh", os.X_OK) and not os.access(dest / "main.py", os.X_OK)
    assert not (dest / ".git").exists()
    with pytest.raises(RunStateError, match="not empty"):
        store.export("seed", dest)


def test_diff(store: GitStore) -> None:
    seed = seed_commit(store)
    child = store.commit(
        {**SEED, "main.py": b"x = 2\n", "lib/util.py": b"z\n"}, [seed], "m", "v/1/a"
    )
    text = store.diff(seed, child)
    assert "-x = 1" in text and "+x = 2" in text and "lib/util.py" in text
    only = store.diff(seed, child, paths=["main.py"])
    assert "+x = 2" in only and "lib/util.py" not in only
    assert store.diff(seed, seed) == ""


def test_reads_work_after_packing(store: GitStore) -> None:
    seed = seed_commit(store)
    child = store.commit({**SEED, "main.py": b"x = 2\n"}, [seed], "m", "v/1/a")
    store.set_note(child, "note")
    before = store.branches()
    store.pack_refs()
    assert not (store.path / "refs/heads/seed").exists()
    assert store.branches() == before
    store.compact()
    assert not any((store.path / "objects").glob("??/*"))
    assert store.read_files(child)["main.py"] == b"x = 2\n"
    assert store.get_note(child) == "note"
    assert "+x = 2" in store.diff(seed, child)
    # Writing keeps working on top of packed refs and objects.
    later = store.commit({**SEED, "main.py": b"x = 3\n"}, [child], "m", "v/2/b")
    store.set_note(later, "later")
    assert store.notes() == {child: "note", later: "later"}
    assert store.parents("v/2/b") == [child]
    assert store.fsck() == (True, "")


def test_trailers_round_trip() -> None:
    fields = {
        "variant": "0123456789abcdef",
        "generation": 3,
        "operator": "eot",
        "prompt": "eot_mutate",
        "persona": "expert",
        "model": "gpt-4o",
        "temperature": 0.21,
        "segment": "SE2",
        "parents": ["aaaa", "bbbb"],
        "reflection": 'line one\nline "two": {braces}',
    }
    message = format_message("eot of SE2\nby expert", fields)
    subject, blank, *rest = message.split("\n")
    assert subject == "eot of SE2 by expert" and blank == ""
    assert "Ge-Variant: 0123456789abcdef" in rest and "Ge-Parents: aaaa bbbb" in rest
    assert parse_trailers(message) == fields
    assert parse_trailers("no trailers") == {}
    with pytest.raises(ValueError):
        format_trailers({"model": "two\nlines"})


def test_killed_writer_leaves_a_consistent_repository(
    store: GitStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = seed_commit(store)

    def die(refname: str, sha: str) -> None:
        raise KeyboardInterrupt  # the process dies after the objects, before the ref

    monkeypatch.setattr(store, "_write_ref", die)
    with pytest.raises(KeyboardInterrupt):
        store.commit({"f": b"lost"}, [seed], "m", "v/1/lost")
    monkeypatch.undo()
    # Half-written temporary files of a killed writer.
    obj_dir = store.path / "objects" / "ab"
    obj_dir.mkdir(exist_ok=True)
    (obj_dir / "tmp_obj_123_deadbeef").write_bytes(b"x\x9c\x01")
    ref_dir = store.path / "refs" / "heads" / "v" / "1"
    ref_dir.mkdir(parents=True, exist_ok=True)
    (ref_dir / ".ge-tmp-123_cafe").write_text("0123")
    assert store.branches() == {"seed": seed}
    assert git(store.path, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/seed"]
    assert store.fsck() == (True, "")
    assert len(store.stale_temp_files(min_age_s=0)) == 2
    # The next writer carries on.
    child = store.commit({"f": b"ok"}, [seed], "m", "v/1/ok")
    assert store.branches() == {"seed": seed, "v/1/ok": child}
