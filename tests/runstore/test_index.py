"""RunIndex: schema, typed records, atomic writes, read-only access beside a live writer."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from guided_evolution.errors import GeError, RunStateError
from guided_evolution.llm.client import LLMClient
from guided_evolution.llm.records import CachedReply, CallRecord, cache_key
from guided_evolution.llm.settings import LLMSettings, ModelSpec
from guided_evolution.runstore.index_schema import SCHEMA_VERSION
from guided_evolution.runstore.records import (
    EvaluationRecord,
    GenerationRecord,
    ReflectionRecord,
    VariantRecord,
)
from guided_evolution.runstore.run_index import RunIndex


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RunIndex]:
    idx = RunIndex.open(tmp_path / "index.sqlite")
    yield idx
    idx.close()


def variant(vid: str = "a" * 16, **kw: object) -> VariantRecord:
    fields: dict[str, object] = {"generation": 1, "operator": "mutation", "created_at": 10.0}
    fields.update(kw)
    return VariantRecord(id=vid, **fields)  # type: ignore[arg-type]


def test_schema_wal_and_version(index: RunIndex) -> None:
    conn = sqlite3.connect(index.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert "created_at" in index.meta()
    index.set_meta("run_name", "demo")
    assert index.get_meta("run_name") == "demo"
    assert index.get_meta("missing") is None


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    RunIndex.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 41}")
    conn.close()
    for readonly in (False, True):
        with pytest.raises(GeError, match=f"schema version {SCHEMA_VERSION + 41}"):
            RunIndex.open(path, readonly=readonly)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RunStateError, match="cannot open index"):
        RunIndex.open(path)
    with pytest.raises(RunStateError, match="not found"):
        RunIndex.open(tmp_path / "nope.sqlite", readonly=True)


def test_variant_round_trip_and_dedup(index: RunIndex) -> None:
    rec = variant(
        commit_sha="c" * 40,
        branch="v/1/" + "a" * 16,
        parents=["b" * 16, "d" * 16],
        segment="SE0",
        prompt_name="mutate",
        persona="expert",
        model="gpt-4o",
        temperature=0.3,
        eot_reflection="think\nharder",
        llm_call_id=7,
    )
    assert not index.has_variant(rec.id)
    index.add_variant(rec)
    assert index.has_variant(rec.id)
    assert index.get_variant(rec.id) == rec
    assert index.get_variant("f" * 16) is None
    with pytest.raises(sqlite3.IntegrityError):
        index.add_variant(rec)
    with pytest.raises(ValueError, match="operator"):
        index.add_variant(variant("e" * 16, operator="telepathy"))


def test_variant_filters_and_status(index: RunIndex) -> None:
    index.add_variant(variant("0" * 16, generation=0, operator="seed", created_at=1.0))
    index.add_variant(variant("1" * 16, generation=1, created_at=2.0))
    index.add_variant(variant("2" * 16, generation=1, operator="crossover", created_at=3.0))
    index.set_variant_status("1" * 16, "evaluated")
    assert [v.id for v in index.variants(generation=1)] == ["1" * 16, "2" * 16]
    assert [v.id for v in index.variants(status="evaluated")] == ["1" * 16]
    with pytest.raises(ValueError):
        index.set_variant_status("1" * 16, "great")
    with pytest.raises(KeyError):
        index.set_variant_status("9" * 16, "failed")
    counts = index.counts()
    assert counts["variants"] == 3 and counts["children"] == 2
    assert counts["evaluated"] == 1 and counts["pending"] == 2


def test_evaluations_latest_wins(index: RunIndex) -> None:
    index.add_variant(variant())
    vid = "a" * 16
    assert index.latest_evaluation(vid) is None
    index.add_evaluation(EvaluationRecord(vid, "failed", stage="check", failure_reason="timeout"))
    second = EvaluationRecord(
        vid, "ok", attempt=2, metrics={"loss": 0.5}, duration_s=1.5, output_tail="done"
    )
    index.add_evaluation(second)
    assert index.latest_evaluation(vid) == second
    assert [e.status for e in index.evaluations(vid)] == ["failed", "ok"]
    assert index.latest_evaluations() == {vid: second}


def test_evaluation_note_round_trip() -> None:
    rec = EvaluationRecord(
        "a" * 16, "ok", attempt=2, metrics={"acc": 0.9}, started_at=5.0, duration_s=1.0
    )
    back = EvaluationRecord.from_note(rec.variant_id, rec.to_note())
    assert back == EvaluationRecord(
        "a" * 16, "ok", attempt=2, metrics={"acc": 0.9}, started_at=5.0, duration_s=1.0
    )
    with pytest.raises(ValueError):
        EvaluationRecord.from_note("a" * 16, '{"status": "maybe"}')


def test_llm_calls_cache_and_cost(index: RunIndex) -> None:
    call = CallRecord(
        purpose="mutation",
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        reply="hello",
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.25,
        cache_key="k1",
    )
    call_id = index.record_call(call)
    index.record_call(
        CallRecord("mutation", "gpt-4o", [], outcome="error", error="429", attempts=3, cost_usd=0.0)
    )
    index.record_call(CallRecord("mutation", "gpt-4o", [], reply="hello", outcome="cached"))
    assert index.get_call(call_id) == call
    index.add_variant(variant())
    index.set_variant_call("a" * 16, call_id)
    assert index.get_variant("a" * 16).llm_call_id == call_id  # type: ignore[union-attr]
    assert [c.id for c in index.calls("a" * 16)] == [call_id]
    counts = index.counts()
    assert counts["llm_calls"] == 3 and counts["llm_errors"] == 1 and counts["llm_cached"] == 1
    assert counts["cost_usd"] == pytest.approx(0.25) and counts["prompt_tokens"] == 10
    assert index.cache_get("k1") is None
    reply = CachedReply("hello", "gpt-4o", 10, 5, 0.25)
    index.cache_put("k1", reply)
    assert index.cache_get("k1") == reply


def test_cache_rows_of_older_runs_read_with_missing_usage_as_zero(index: RunIndex) -> None:
    with index.transaction() as conn:
        conn.execute(
            "INSERT INTO llm_cache (key, reply, usage, model, created_at) VALUES (?, ?, ?, ?, ?)",
            ("old", "hello", '{"prompt_tokens": 10}', None, 1.0),
        )
    assert index.cache_get("old") == CachedReply("hello", "", 10, 0, 0.0)


def test_index_is_the_llm_clients_recorder(index: RunIndex) -> None:
    model = ModelSpec("openai/m", api_base="http://127.0.0.1:9")  # never reached: cached
    messages = [{"role": "user", "content": "hi"}]
    index.cache_put(
        cache_key(model.model, messages, 0.5, 0), CachedReply("hi!", "openai/m", 3, 4, 1.0)
    )
    client = LLMClient(LLMSettings(models=(model,)), recorder=index)
    out = asyncio.run(client.complete(messages, temperature=0.5, model=model, purpose="mutation"))
    assert out.cached and out.text == "hi!" and out.cost_usd == 0.0 and client.spent_usd == 0.0
    (call,) = index.calls()
    assert (call.id, call.outcome, call.reply, call.attempts) == (out.call_id, "cached", "hi!", 0)
    assert (call.prompt_tokens, call.completion_tokens, call.purpose) == (3, 4, "mutation")


def test_reflections_events_generations(index: RunIndex) -> None:
    index.add_reflection(ReflectionRecord("a" * 16, "be bolder", elite_id="b" * 16, segment="SE1"))
    assert [r.text for r in index.reflections("a" * 16)] == ["be bolder"]
    first = index.add_event("start", {"pid": 1})
    index.add_event("budget", {"usd": 2.0})
    assert [e.kind for e in index.events()] == ["start", "budget"]
    assert [e.data for e in index.events(after_id=first)] == [{"usd": 2.0}]
    assert index.last_generation() is None
    index.save_generation(GenerationRecord(1, ["a", "b"], ["a"], ["a"], finished_at=1.0))
    index.save_generation(GenerationRecord(2, ["c"], ["c"], ["a", "c"], finished_at=2.0))
    assert index.last_generation() == GenerationRecord(2, ["c"], ["c"], ["a", "c"], 2.0)
    assert index.get_generation(1).population == ["a", "b"]  # type: ignore[union-attr]


def test_a_failed_transaction_writes_nothing(index: RunIndex) -> None:
    with pytest.raises(RuntimeError), index.transaction():
        index.add_variant(variant("1" * 16))
        index.add_evaluation(EvaluationRecord("1" * 16, "ok"))
        raise RuntimeError("crash in the middle")
    assert not index.has_variant("1" * 16)
    assert index.evaluations() == []
    index.add_variant(variant("1" * 16))  # the connection is usable afterwards
    assert index.has_variant("1" * 16)


def test_readonly_reader_beside_a_live_writer(index: RunIndex) -> None:
    index.add_variant(variant("1" * 16))
    reader = RunIndex.open(index.path, readonly=True)
    try:
        assert [v.id for v in reader.variants()] == ["1" * 16]
        with pytest.raises(RunStateError, match="read-only"):
            reader.add_variant(variant("2" * 16))
        # The open reader does not block the writer, and sees its new rows.
        index.add_variant(variant("2" * 16))
        assert reader.has_variant("2" * 16)
        # A reader never sees half of a transaction.
        with index.transaction():
            index.add_variant(variant("3" * 16))
            assert not reader.has_variant("3" * 16)
        assert reader.has_variant("3" * 16)
    finally:
        reader.close()
