"""doctor: the index agrees with git, is rebuilt from it, and is repaired after a crash."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import guided_evolution
from guided_evolution.config import ConfigError, load_config
from guided_evolution.errors import RunDamagedError
from guided_evolution.evolution.segments import variant_id
from guided_evolution.llm.records import CachedReply, CallRecord
from guided_evolution.runstore import damage
from guided_evolution.runstore.doctor import check, rebuild_index
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.recording import record_variant
from guided_evolution.runstore.records import (
    SEED_BRANCH,
    EvaluationRecord,
    VariantRecord,
    format_message,
    variant_branch,
)
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import open_run, resolve
from guided_evolution.seedinit import write_template

SEED = {"main.py": b"x = 1\n", "pkg/helper.py": b"def h():\n    return 0\n"}


def vid_of(files: dict[str, bytes]) -> str:
    return variant_id({k: v.decode() for k, v in files.items()}, list(files))


def add(
    store: GitStore,
    index: RunIndex,
    files: dict[str, bytes],
    parents: list[VariantRecord],
    generation: int,
    operator: str,
    *,
    in_index: bool = True,
    **extra: object,
) -> VariantRecord:
    """What the engine does per child: commit (ref last), then the index row."""
    vid = vid_of(files)
    rec = VariantRecord(
        id=vid,
        generation=generation,
        operator=operator,
        branch=SEED_BRANCH if operator == "seed" else variant_branch(generation, vid),
        parents=[p.id for p in parents],
        created_at=float(1_700_000_000 + generation * 100 + len(index.variants())),
        **extra,  # type: ignore[arg-type]
    )
    if not in_index:  # git only: what a kill between the branch ref and the index row leaves
        sha = store.commit(
            files,
            [p.commit_sha or "" for p in parents],
            rec.to_commit_message(),
            rec.branch or "",
            timestamp=rec.created_at,
        )
        return dataclasses.replace(rec, commit_sha=sha)
    return record_variant(
        store, index, rec, files, [p.commit_sha or "" for p in parents], timestamp=rec.created_at
    )


def evaluate(
    store: GitStore, index: RunIndex, rec: VariantRecord, ok: bool, attempt: int = 1
) -> None:
    ev = EvaluationRecord(
        rec.id,
        "ok" if ok else "failed",
        attempt=attempt,
        metrics={"loss": 0.5, "size": 3.0} if ok else None,
        failure_reason=None if ok else "exit code 1",
        duration_s=2.5,
        started_at=1_700_000_500.0,
        output_tail="tail of the log",
    )
    index.add_evaluation(ev)
    store.set_note(rec.commit_sha or "", ev.to_note())
    index.set_variant_status(rec.id, "evaluated" if ok else "failed")
    rec.status = "evaluated" if ok else "failed"


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[Path, GitStore, RunIndex, dict[str, VariantRecord]]]:
    """A small consistent run: seed, mutations, a crossover merge, an EoT child, an invalid child."""
    write_template(tmp_path / "seed")
    config = tmp_path / "seed" / "ge.toml"
    (tmp_path / "config.json").write_text(resolve(load_config(config), config, tmp_path).dump())
    store = GitStore.init(tmp_path / "repo.git")
    index = RunIndex.open(tmp_path / "index.sqlite")
    seed = add(store, index, SEED, [], 0, "seed")
    index.set_meta("seed_variant", seed.id)  # as the engine records it
    evaluate(store, index, seed, ok=True)
    call_id = index.record_call(
        CallRecord("mutation", "gpt-4o", [{"role": "user", "content": "x"}], reply="y")
    )
    a = add(
        store,
        index,
        {**SEED, "main.py": b"x = 2\n"},
        [seed],
        1,
        "mutation",
        segment="SE0",
        prompt_name="mutate",
        persona="expert",
        model="gpt-4o",
        temperature=0.21,
        llm_call_id=call_id,
    )
    evaluate(store, index, a, ok=True)
    b = add(
        store,
        index,
        {**SEED, "pkg/helper.py": b"oops\n"},
        [seed],
        1,
        "offline-mutation",
        segment="SE1",
    )
    evaluate(store, index, b, ok=False)
    c = add(
        store,
        index,
        {"main.py": b"x = 2\n", "pkg/helper.py": b"oops\n"},
        [a, b],
        2,
        "crossover",
        segment="SE0",
    )
    d = add(
        store,
        index,
        {**SEED, "main.py": b"x = 3\n"},
        [a],
        2,
        "eot",
        segment="SE0",
        eot_reflection='was "too timid",\nbe bolder',
    )
    evaluate(store, index, d, ok=True)
    invalid = VariantRecord("9" * 16, 2, "mutation", status="invalid", created_at=1.0)
    index.add_variant(invalid)
    records = {"seed": seed, "a": a, "b": b, "c": c, "d": d, "invalid": invalid}
    yield tmp_path, store, index, records
    store.close()
    index.close()


def snapshot(path: Path) -> tuple[dict[str, VariantRecord], dict[str, EvaluationRecord]]:
    with RunIndex.open(path, readonly=True) as idx:
        variants = {v.id: v for v in idx.variants()}
        latest = {k: dataclasses.replace(e, id=None) for k, e in idx.latest_evaluations().items()}
    return variants, latest


def test_a_consistent_run_is_ok(run) -> None:
    run_dir, *_ = run
    report = check(run_dir)
    assert report.ok, report.problems
    assert report.problems == [] and report.repaired == []


def test_rebuild_from_git_alone_equals_the_original(run) -> None:
    run_dir, _store, index, _records = run
    variants, latest = snapshot(index.path)
    index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index.path}{suffix}").unlink(missing_ok=True)
    report = rebuild_index(run_dir)
    assert report.variants == 5 and report.evaluations == 4
    assert any("no old index" in m for m in report.messages)
    rebuilt, rebuilt_latest = snapshot(run_dir / "index.sqlite")
    # Not in git: the never-committed invalid child and the link to the LLM call.
    expected = {
        k: dataclasses.replace(v, llm_call_id=None) for k, v in variants.items() if k != "9" * 16
    }
    assert rebuilt == expected
    assert rebuilt_latest == {
        k: dataclasses.replace(e, output_tail=None) for k, e in latest.items()
    }
    assert check(run_dir).ok


def test_rebuild_keeps_what_only_the_old_index_has(run) -> None:
    run_dir, _store, index, _records = run
    variants, latest = snapshot(index.path)
    index.cache_put("key", CachedReply("reply", "", 0, 0, 1.0))
    index.close()
    report = rebuild_index(run_dir)
    assert any("kept 1 rows of llm_calls" in m for m in report.messages)
    assert snapshot(run_dir / "index.sqlite") == (variants, latest)
    with RunIndex.open(run_dir / "index.sqlite") as idx:
        assert idx.cache_get("key") is not None and len(idx.calls()) == 1
    assert not list(run_dir.glob("index.sqlite.rebuild-*"))


def test_variant_in_git_but_not_in_index_is_added(run) -> None:
    run_dir, store, index, records = run
    # Crash after the branch landed, before the index row.
    lost = add(
        store, index, {**SEED, "main.py": b"x = 4\n"}, [records["a"]], 3, "mutation", in_index=False
    )
    store.set_note(
        lost.commit_sha or "", EvaluationRecord(lost.id, "ok", metrics={"loss": 0.1}).to_note()
    )
    report = check(run_dir)
    assert not report.ok and any(lost.id in p for p in report.problems)
    report = check(run_dir, repair=True)
    assert report.ok and report.repaired
    row = index.get_variant(lost.id)
    assert row is not None and row.commit_sha == lost.commit_sha and row.status == "evaluated"
    assert index.latest_evaluation(lost.id).metrics == {"loss": 0.1}  # type: ignore[union-attr]
    assert check(run_dir).problems == []


def test_index_row_whose_commit_never_landed_is_removed(run) -> None:
    run_dir, _store, index, _records = run
    ghost = VariantRecord("e" * 16, 3, "mutation", commit_sha="1" * 40, branch="v/3/" + "e" * 16)
    index.add_variant(ghost)
    report = check(run_dir)
    assert not report.ok and any("never landed" in p for p in report.problems)
    assert check(run_dir, repair=True).ok
    assert not index.has_variant(ghost.id)  # so the engine can create it again
    assert check(run_dir).ok


def test_branch_is_restored_when_the_commit_landed_without_its_ref(run, monkeypatch) -> None:
    run_dir, store, index, records = run
    files = {**SEED, "main.py": b"x = 5\n"}
    vid = vid_of(files)
    monkeypatch.setattr(store, "_write_ref", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store.commit(
            files,
            [records["a"].commit_sha or ""],
            format_message("m", {"variant": vid}),
            f"v/3/{vid}",
        )
    monkeypatch.undo()
    orphan = next(
        sha for sha in _loose_commits(store) if store.commit_info(sha).message.endswith(f"{vid}\n")
    )
    index.add_variant(VariantRecord(vid, 3, "mutation", commit_sha=orphan, branch=f"v/3/{vid}"))
    report = check(run_dir, repair=True)
    assert report.ok and any("restored branch" in r for r in report.repaired)
    assert store.branch_sha(f"v/3/{vid}") == orphan


def _loose_commits(store: GitStore) -> list[str]:
    shas = [
        p.parent.name + p.name
        for p in (store.path / "objects").glob("??/*")
        if not p.name.startswith("tmp")
    ]
    return [sha for sha in shas if store.has_commit(sha)]


def test_notes_and_evaluation_rows_are_reconciled(run) -> None:
    run_dir, store, index, records = run
    c = records["c"]
    # An evaluation recorded in the index whose note never landed ...
    index.add_evaluation(EvaluationRecord(c.id, "ok", metrics={"loss": 0.2}))
    # ... and a note whose index row never landed.
    b = records["b"]
    store.set_note(
        b.commit_sha or "", EvaluationRecord(b.id, "ok", attempt=2, metrics={"loss": 0.3}).to_note()
    )
    report = check(run_dir)
    assert not report.ok
    assert any(c.id in p and "no git note" in p for p in report.problems)
    assert any(b.id in p and "the index lacks" in p for p in report.problems)
    assert check(run_dir, repair=True).ok
    assert "0.2" in (store.get_note(c.commit_sha or "") or "")
    assert index.latest_evaluation(b.id).metrics == {"loss": 0.3}  # type: ignore[union-attr]
    assert index.get_variant(b.id).status == "evaluated"  # type: ignore[union-attr]
    assert check(run_dir).problems == []


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_unusable_index_is_rebuilt_by_repair(run, damage: str) -> None:
    run_dir, _store, index, _records = run
    index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index.path}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        index.path.write_bytes(b"garbage" * 1000)
    report = check(run_dir)
    assert not report.ok and "index" in report.problems[0]
    report = check(run_dir, repair=True)
    assert report.ok and any("rebuilt" in r for r in report.repaired)
    with RunIndex.open(index.path, readonly=True) as idx:
        assert len(idx.variants()) == 5


def test_stale_temp_files_are_removed_by_repair(run) -> None:
    run_dir, store, _index, _records = run
    tmp_obj = store.path / "objects" / "ab" / "tmp_obj_1_dead"
    tmp_obj.parent.mkdir(exist_ok=True)
    tmp_obj.write_bytes(b"\x78")  # truncated
    tmp_ref = store.path / "refs" / "heads" / "v" / "1" / ".ge-tmp-1_beef"
    tmp_ref.write_text("12")
    for path in (tmp_obj, tmp_ref):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert check(run_dir).ok  # harmless
    report = check(run_dir, repair=True)
    assert report.ok and len(report.repaired) == 2
    assert not tmp_obj.exists() and not tmp_ref.exists()


# --------------------------------------------------------------------------- damage


def _delete_refs(store: GitStore) -> None:
    """What a hostile variant can do: every ref (loose and packed) gone, the objects left."""
    shutil.rmtree(store.path / "refs")
    (store.path / "packed-refs").unlink(missing_ok=True)


def _branches(records: dict[str, VariantRecord]) -> dict[str, str]:
    return {r.branch or "": r.commit_sha or "" for r in records.values() if r.commit_sha}


def test_rebuild_keeps_evaluations_whose_note_was_not_written(run) -> None:
    """Notes are written once per generation: a rebuild from git alone dropped the evaluations
    of the generation in flight although the old index still had them."""
    run_dir, store, index, records = run
    c = records["c"]
    index.add_evaluation(
        EvaluationRecord(c.id, "ok", metrics={"loss": 0.2}, output_tail="c's tail")
    )
    index.close()
    report = rebuild_index(run_dir)
    assert any("kept 1 evaluations" in m for m in report.messages), report.messages
    with RunIndex.open(run_dir / "index.sqlite", readonly=True) as idx:
        kept = idx.latest_evaluation(c.id)
        assert kept is not None and kept.metrics == {"loss": 0.2} and kept.output_tail == "c's tail"
    assert "0.2" in (store.get_note(c.commit_sha or "") or "")
    assert check(run_dir).ok


def test_rebuild_index_works_over_an_index_whose_header_is_garbage(run) -> None:
    run_dir, _store, index, _records = run
    index.close()
    with open(index.path, "r+b") as fh:
        fh.write(b"hostile!" * 16)
    report = rebuild_index(run_dir)
    assert report.variants == 5 and report.evaluations == 4
    assert any(m.startswith("old index unreadable") for m in report.messages), report.messages
    assert check(run_dir).ok


def test_lost_refs_are_put_back_from_the_index_commit_ids(run) -> None:
    run_dir, store, index, records = run
    index.close()
    _delete_refs(store)
    report = check(run_dir)
    assert not report.ok and report.repairable, report
    assert len(report.problems) == 1 and "lost its branches" in report.problems[0], report.problems
    report = check(run_dir, repair=True)
    assert report.ok, report.problems
    assert any("restored 5 branches" in line for line in report.repaired), report.repaired
    reopened = GitStore.open(store.path)
    assert {b: reopened.branch_sha(b) for b in _branches(records)} == _branches(records)
    assert check(run_dir).problems == []


def test_lost_refs_and_a_garbage_index_are_recovered_from_the_objects(run) -> None:
    """Neither the refs nor the index's commit ids are left: the variant commits' trailers name
    their branches, and the notes commits still hold the evaluations."""
    run_dir, store, index, records = run
    variants, latest = snapshot(index.path)
    index.close()
    _delete_refs(store)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index.path}{suffix}").unlink(missing_ok=True)
    index.path.write_bytes(os.urandom(4096))
    report = check(run_dir, repair=True)
    assert report.ok, report.problems
    reopened = GitStore.open(store.path)
    assert {b: reopened.branch_sha(b) for b in _branches(records)} == _branches(records)
    rebuilt, rebuilt_latest = snapshot(index.path)
    assert set(rebuilt) == {k for k, v in variants.items() if v.commit_sha}
    assert {k: e.metrics for k, e in rebuilt_latest.items()} == {
        k: e.metrics for k, e in latest.items()
    }


@pytest.mark.parametrize("gone", ["repo.git", "repo.git/objects"])
def test_a_missing_repository_is_explained_in_one_line(run, gone: str) -> None:
    """Also when the run recorded the repository gone and a last ref write made repo.git again."""
    run_dir, _store, index, _records = run
    index.close()
    shutil.rmtree(run_dir / gone)
    what = damage.Damage("repo.git is gone (the git record of every variant)")
    damage.record(run_dir / "damage.json", [what], "test")
    for repair in (False, True):
        report = check(run_dir, repair=repair)
        assert not report.ok and not report.repairable, report
        assert len(report.problems) == 1, report.problems
        assert f"{gone} is gone" in report.problems[0] and "6 variants" in report.problems[0]
    with pytest.raises(
        RunDamagedError, match=re.escape(f"cannot rebuild index.sqlite: {gone} is gone")
    ):
        rebuild_index(run_dir)
    assert (run_dir / "index.sqlite").is_file() and (run_dir / "damage.json").is_file()


def test_a_deleted_repository_is_a_one_line_error_at_the_next_write(run) -> None:
    """libgit2 reported it as an OSError (a traceback in `ge run`)."""
    run_dir, store, _index, _records = run
    shutil.rmtree(store.path)
    with pytest.raises(RunDamagedError, match=re.escape("repo.git is gone")) as err:
        store.commit({"a.py": b"1"}, [], "m", "v/9/x")
    assert f"ge doctor {run_dir}" in err.value.one_line()


@pytest.mark.parametrize("kind", ["header", "replaced", "refs", "repository"])
def test_the_watch_finds_what_changed_under_the_engine(run, kind: str) -> None:
    _run_dir, store, index, records = run
    watch = damage.RunWatch(index.path, store, records["seed"].commit_sha)
    assert watch.damage() == []
    if kind == "header":
        with open(index.path, "r+b") as fh:
            fh.write(b"hostile!" * 4)
    elif kind == "replaced":
        copy = index.path.with_name("copy.sqlite")
        shutil.copy(index.path, copy)
        os.replace(copy, index.path)
    elif kind == "refs":
        _delete_refs(store)
    else:
        shutil.rmtree(store.path)
    expected = {
        "header": "header",
        "replaced": "replaced",
        "refs": "lost its branches",
        "repository": "is gone",
    }
    found = watch.damage()
    assert len(found) == 1 and expected[kind] in found[0].what, found
    assert found[0].flag == {"header": "--rebuild-index", "replaced": "--rebuild-index"}.get(
        kind, None if kind == "repository" else "--repair"
    )


def test_the_end_of_run_check_finds_deleted_branches_and_objects(run) -> None:
    _run_dir, store, index, records = run
    watch = damage.RunWatch(index.path, store, records["seed"].commit_sha)
    assert damage.verify_run(index.path, watch) == []
    store.delete_branch(records["a"].branch or "")
    d_sha = records["d"].commit_sha or ""
    (store.path / "objects" / d_sha[:2] / d_sha[2:]).unlink()  # loose: the run was not compacted
    found = damage.verify_run(index.path, watch)
    assert [(d.what.split(" (")[0], d.flag) for d in found] == [
        ("the commits of 1 of 5 variants are gone from repo.git", None),
        ("1 of 5 variant branches are gone from repo.git", "--repair"),
    ], found


def test_the_end_of_run_check_finds_the_notes_ref_gone(run) -> None:
    run_dir, store, index, records = run
    watch = damage.RunWatch(index.path, store, records["seed"].commit_sha)
    subprocess.run(
        ["git", "--git-dir", str(store.path), "update-ref", "-d", "refs/notes/ge"], check=True
    )
    assert damage.verify_run(index.path, watch) == [
        damage.Damage("repo.git lost refs/notes/ge (the evaluations' notes)", "--repair")
    ]
    index.close()
    assert check(run_dir, repair=True).ok
    assert damage.verify_run(index.path, watch) == []


def test_a_directory_with_parts_of_a_run_is_a_damaged_run(tmp_path: Path) -> None:
    """`ge status` called a run whose config.json a variant deleted "not a ge run directory"."""
    for name in ("logs", "work"):
        (tmp_path / name).mkdir()
    (tmp_path / "lock").write_text("")
    with pytest.raises(RunDamagedError, match=re.escape("config.json is gone")) as err:
        open_run(tmp_path)
    assert f"ge doctor {tmp_path}" in err.value.one_line()
    (tmp_path / "lock").unlink()
    (tmp_path / "work").rmdir()
    with pytest.raises(ConfigError, match="not a ge run directory"):  # only logs/: any directory
        open_run(tmp_path)


def test_a_recorded_damage_is_reported_until_doctor_clears_it(run) -> None:
    run_dir, _store, index, _records = run
    index.close()
    damage.record(
        run_dir / "damage.json",
        [damage.Damage("index.sqlite was replaced", "--rebuild-index")],
        "test",
    )
    with pytest.raises(RunDamagedError, match=re.escape("index.sqlite was replaced")) as err:
        open_run(run_dir)
    assert "--rebuild-index" in err.value.one_line()
    report = check(run_dir)
    assert not report.ok and report.problems == [
        "the run stopped on damage: index.sqlite was replaced"
    ]
    report = check(run_dir, clear_record=True)
    assert report.ok and report.repaired == ["cleared damage.json: nothing of that damage is left"]
    open_run(run_dir)


def test_many_problems_of_one_kind_are_one_line(run) -> None:
    run_dir, store, _index, records = run
    for key in ("a", "b", "c", "d"):
        store.delete_branch(records[key].branch or "")
    report = check(run_dir)
    assert report.problems == [
        f"4 variant branches are missing, but their commits are still in git (e.g. variant {records['a'].id}: "
        f"commit {(records['a'].commit_sha or '')[:12]} exists but branch {records['a'].branch} is missing)"
    ]
    report = check(run_dir, repair=True)
    assert report.ok and report.repaired == ["restored 4 branches from the index's commit ids"]


WRITER = """
import hashlib, os, signal, sys
from pathlib import Path
from guided_evolution.runstore.records import EvaluationRecord, VariantRecord
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.recording import record_variant

run, parent_id = Path(sys.argv[1]), sys.argv[2]
steps = 0
armed = False
crash_at = 0

def step(half_write=None):
    # Count write steps of the armed variant; die (SIGKILL, no cleanup) at step `crash_at`.
    global steps
    if armed:
        steps += 1
        if steps == crash_at:
            if half_write is not None:
                objects, data = half_write  # what libgit2 leaves when killed inside a write
                (objects / "tmp_object_git2_killed").write_bytes(data[: max(1, len(data) // 2)])
            os.kill(os.getpid(), signal.SIGKILL)

def killable(name):
    # The store's git writes (libgit2's, not Python's): a step before and after each.
    real = getattr(GitStore, name)
    def hooked(self, *args):
        step((self.path / "objects", args[0]) if name == "_write_blob" else None)
        result = real(self, *args)
        step()
        return result
    setattr(GitStore, name, hooked)
for name in ("_write_blob", "_write_tree_entries", "_write_commit", "_write_ref"):
    killable(name)

class Conn:
    def __init__(self, conn):
        self.conn = conn
    def execute(self, *args):
        step()
        result = self.conn.execute(*args)
        step()
        return result
    def __getattr__(self, name):
        return getattr(self.conn, name)

def write(start):
    # Two variants: the first unarmed, the second counted (and killed at step `crash_at`).
    global armed
    store = GitStore.open(run / "repo.git")
    index = RunIndex.open(run / "index.sqlite")
    index._conn = Conn(index._conn)
    parent = index.get_variant(parent_id)
    for n in (start, start + 1):
        armed = n != start
        files = {"main.py": b"x = %d\\n" % n, "pkg/helper.py": b"h\\n"}
        vid = hashlib.sha256(files["main.py"]).hexdigest()[:16]
        rec = VariantRecord(vid, 9, "mutation", branch=f"v/9/{vid}", parents=[parent.id])
        sha = record_variant(store, index, rec, files, [parent.commit_sha]).commit_sha
        index.set_variant_status(vid, "evaluating")
        ev = EvaluationRecord(vid, "ok", metrics={"loss": 1.0 / n})
        index.add_evaluation(ev)
        store.set_note(sha, ev.to_note())
        index.set_variant_status(vid, "evaluated")

# A fork server: imported once, one forked writer per line `CRASH_AT` read; each answers its
# wait status (a writer killed at its step dies of SIGKILL like a fresh process would).
for line in sys.stdin:
    crash_at = int(line)
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        write(crash_at * 10)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
"""


def test_a_writer_killed_at_any_write_leaves_a_repairable_run(run) -> None:
    """Kill the writer (SIGKILL) at every single write step of one variant in turn (each writer
    is a fork of one process that imported the store once: the kill is the same, the imports are
    not paid per step)."""
    run_dir, store, index, records = run
    index.close()
    env = {**os.environ, "PYTHONPATH": str(Path(guided_evolution.__file__).parent.parent)}
    repairs: set[str] = set()
    crash_at = 1
    server = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run_dir), records["seed"].id],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        while True:
            assert server.stdin is not None and server.stdout is not None
            server.stdin.write(f"{crash_at}\n")
            server.stdin.flush()
            status = server.stdout.readline().strip()
            assert status, f"the writer server died: {server.communicate(timeout=10)[1]}"
            if int(status) == 0:
                break  # crash_at is past the last write step: every step has been tried
            assert int(status) == -signal.SIGKILL, (crash_at, status)
            assert store.fsck() == (True, "")
            report = check(run_dir, repair=True, temp_min_age_s=0)
            assert report.ok, (crash_at, report.problems)
            repairs.update(line.split(" ")[0] for line in report.repaired)
            assert check(run_dir).problems == []
            crash_at += 1
    finally:
        server.kill()
        server.wait()
    assert crash_at > 20  # objects, refs, note and every index statement were hit
    assert {"added", "wrote", "set", "removed"} <= repairs
