"""`ge doctor` reads the note blob ids the index recorded (``note_blobs``) instead of hashing every
evaluation, and still finds every note that differs from the index (issue 29: a 100,000-variant
run is checked at each `ge resume`)."""

from __future__ import annotations

import random
import sqlite3

from guided_evolution.runstore.doctor import check
from guided_evolution.runstore.records import EvaluationRecord, note_blob_id
from tests.runstore.test_doctor import run  # noqa: F401  (the small consistent run)


def test_the_blob_id_is_the_one_git_stores(run) -> None:  # noqa: F811
    _, store, _, records = run
    rng = random.Random(7)
    for n in range(30):
        text = "".join(rng.choice('ab\n{}"é\t') for _ in range(n * 7))
        store.set_note(records["seed"].commit_sha or "", text)
        stored = store.note_blobs()[records["seed"].commit_sha or ""]
        assert note_blob_id(text) == stored == store.note_blob_id(text)


def test_a_note_changed_behind_the_index_is_found_with_recorded_blobs(run) -> None:  # noqa: F811
    run_dir, store, index, records = run
    recorded = index.latest_note_blobs()
    assert len(recorded) == 4 and all(blob for _, blob in recorded.values())
    assert check(run_dir).ok
    a = records["a"]  # its note rewritten with another value: the recorded blob no longer matches
    store.set_note(a.commit_sha or "", "not an evaluation")
    report = check(run_dir)
    assert not report.ok and any(a.id in p and "not an evaluation" in p for p in report.problems)
    newer = EvaluationRecord(a.id, "ok", attempt=2, metrics={"loss": 0.1, "size": 1.0})
    store.set_note(a.commit_sha or "", newer.to_note())
    assert any(a.id in p and "the index lacks" in p for p in check(run_dir).problems)
    assert check(run_dir, repair=True).ok and check(run_dir).ok
    assert index.latest_evaluation(a.id).metrics == {"loss": 0.1, "size": 1.0}  # type: ignore[union-attr]


def test_a_run_of_an_earlier_ge_is_checked_in_full_and_learns_its_blobs(run) -> None:  # noqa: F811
    run_dir, store, index, records = run
    index.close()
    with sqlite3.connect(run_dir / "index.sqlite") as conn:  # as an earlier ge wrote it
        conn.execute("DROP TABLE note_blobs")
    assert check(run_dir).ok  # read-only: no such table, every note compared by hashing
    d = records["d"]
    store.set_note(d.commit_sha or "", "not json")
    assert any(d.id in p and "not an evaluation" in p for p in check(run_dir).problems)
    again = EvaluationRecord(
        d.id, "ok", metrics={"loss": 0.5, "size": 3.0}, duration_s=2.5, started_at=1_700_000_500.0
    )
    store.set_note(d.commit_sha or "", again.to_note())
    assert check(run_dir, repair=True).ok  # the writer adds the table and records what matched
    with sqlite3.connect(run_dir / "index.sqlite") as conn:
        learned = conn.execute("SELECT count(*) FROM note_blobs").fetchone()[0]
    assert learned == 4  # seed, a, b and d (its note written again as the evaluation has it)
