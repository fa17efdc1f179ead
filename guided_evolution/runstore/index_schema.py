"""The SQLite index's schema (tables, allowed values, version) and its row <-> record mapping."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError, RunStateError
from guided_evolution.evolution.operators import registry
from guided_evolution.llm.records import CallRecord
from guided_evolution.runstore.records import (
    EVALUATION_STATUSES,
    STAGES,
    EvaluationRecord,
    VariantRecord,
)

SCHEMA_VERSION = 4
# Derived per-generation measures (runstore/measures.py). IF NOT EXISTS: an inspection of a run of
# an earlier ge may have created it already (its lazy first read) without changing the version.
MEASURES_TABLE = """CREATE TABLE IF NOT EXISTS generation_measures (
    generation INTEGER PRIMARY KEY,
    members TEXT NOT NULL,
    population INTEGER NOT NULL,
    valid INTEGER NOT NULL,
    front TEXT NOT NULL,
    distinct_segments TEXT NOT NULL,
    mean_distance REAL,
    distance_sampled INTEGER NOT NULL,
    computed_at REAL NOT NULL
)"""
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE evaluations ADD COLUMN feedback TEXT",),  # the evaluator's feedback text
    3: (  # islands and the mating-preference gene
        "ALTER TABLE variants ADD COLUMN island INTEGER",
        "ALTER TABLE variants ADD COLUMN mating_preference REAL",
        "ALTER TABLE generations ADD COLUMN islands TEXT NOT NULL DEFAULT '[]'",
    ),
    4: (MEASURES_TABLE,),  # each closed generation's measures, computed once
}
"""Schema version -> the statements that bring an index of the version before up to it."""
REBUILD_HINT = "run `ge doctor RUN_DIR --rebuild-index`"
VARIANT_STATUSES = ("pending", "evaluating", "evaluated", "failed", "invalid")
CALL_OUTCOMES = ("ok", "error", "cached")


def sql_in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def operators() -> tuple[str, ...]:
    """The values ``variants.operator`` may take: ``seed`` and the registered operators' stored
    names, in registry order (an index lists those of its creation in its CHECK)."""
    return registry.stored_names()


_OPERATORS_HERE = "(__operators__)"  # where schema() puts the operators of its time
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE variants (
    id TEXT PRIMARY KEY,
    commit_sha TEXT,
    branch TEXT,
    generation INTEGER NOT NULL,
    operator TEXT NOT NULL CHECK (operator IN {_OPERATORS_HERE}),
    parents TEXT NOT NULL DEFAULT '[]',
    segment TEXT,
    prompt_name TEXT,
    persona TEXT,
    model TEXT,
    temperature REAL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {sql_in(VARIANT_STATUSES)}),
    created_at REAL NOT NULL,
    eot_reflection TEXT,
    llm_call_id INTEGER,
    island INTEGER,
    mating_preference REAL
);
CREATE INDEX variants_generation ON variants (generation);
CREATE INDEX variants_status ON variants (status);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY,
    variant_id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    stage TEXT NOT NULL DEFAULT 'evaluate' CHECK (stage IN {sql_in(STAGES)}),
    status TEXT NOT NULL CHECK (status IN {sql_in(EVALUATION_STATUSES)}),
    metrics TEXT,
    started_at REAL,
    duration_s REAL,
    failure_reason TEXT,
    output_tail TEXT,
    feedback TEXT
);
CREATE INDEX evaluations_variant ON evaluations (variant_id, id);
CREATE TABLE llm_calls (
    id INTEGER PRIMARY KEY,
    variant_id TEXT,
    purpose TEXT NOT NULL,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    reply TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL CHECK (outcome IN {sql_in(CALL_OUTCOMES)}),
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    cache_key TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX llm_calls_variant ON llm_calls (variant_id);
CREATE TABLE llm_cache (
    key TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
    usage TEXT NOT NULL DEFAULT '{{}}',
    model TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE reflections (
    id INTEGER PRIMARY KEY,
    variant_id TEXT NOT NULL,
    elite_id TEXT,
    segment TEXT,
    text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX reflections_variant ON reflections (variant_id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE generations (
    generation INTEGER PRIMARY KEY,
    population TEXT NOT NULL,
    elites TEXT NOT NULL DEFAULT '[]',
    hall_of_fame TEXT NOT NULL DEFAULT '[]',
    finished_at REAL NOT NULL,
    islands TEXT NOT NULL DEFAULT '[]'
);
"""


def schema() -> str:
    """The statements that create an index (``variants.operator`` checked against
    ``operators()``)."""
    return _SCHEMA.replace(_OPERATORS_HERE, sql_in(operators())) + MEASURES_TABLE + ";"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def variant_from_row(row: sqlite3.Row) -> VariantRecord:
    return VariantRecord(
        id=row["id"],
        generation=row["generation"],
        operator=row["operator"],
        commit_sha=row["commit_sha"],
        branch=row["branch"],
        parents=json.loads(row["parents"]),
        segment=row["segment"],
        prompt_name=row["prompt_name"],
        persona=row["persona"],
        model=row["model"],
        temperature=row["temperature"],
        status=row["status"],
        created_at=row["created_at"],
        eot_reflection=row["eot_reflection"],
        llm_call_id=row["llm_call_id"],
        # A run created before schema version 3, opened read-only, has no such columns.
        island=row["island"] if "island" in row.keys() else None,  # noqa: SIM118
        mating_preference=(
            row["mating_preference"] if "mating_preference" in row.keys() else None  # noqa: SIM118
        ),
    )


def evaluation_from_row(row: sqlite3.Row) -> EvaluationRecord:
    return EvaluationRecord(
        variant_id=row["variant_id"],
        status=row["status"],
        stage=row["stage"],
        attempt=row["attempt"],
        metrics=json.loads(row["metrics"]) if row["metrics"] is not None else None,
        started_at=row["started_at"],
        duration_s=row["duration_s"],
        failure_reason=row["failure_reason"],
        output_tail=row["output_tail"],
        id=row["id"],
        # A run created before schema version 2, opened read-only, has no such column.
        feedback=row["feedback"] if "feedback" in row.keys() else None,  # noqa: SIM118
    )


def call_from_row(row: sqlite3.Row) -> CallRecord:
    return CallRecord(
        purpose=row["purpose"],
        model=row["model"],
        messages=json.loads(row["messages"]),
        reply=row["reply"],
        outcome=row["outcome"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost_usd=row["cost_usd"],
        latency_s=row["latency_s"],
        error=row["error"],
        attempts=row["attempts"],
        cache_key=row["cache_key"],
        variant_id=row["variant_id"],
        created_at=row["created_at"],
        id=row["id"],
    )


@dataclass(frozen=True)
class CallCost:
    """What the spend tallies and curves read of an LLM call (its messages and reply unread)."""

    id: int
    variant_id: str | None
    model: str
    cost_usd: float
    created_at: float
    prompt_tokens: int
    completion_tokens: int


def check_value(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"invalid {what} {value!r}; expected one of {', '.join(allowed)}")


def connect(path: Path, readonly: bool, busy_timeout_s: float) -> tuple[sqlite3.Connection, int]:
    """A connection to the index file (read-only: ``mode=ro`` and ``query_only``) and its schema
    version; a newer version than this ge supports is refused."""
    try:
        conn = sqlite3.connect(
            path.resolve().as_uri() + ("?mode=ro" if readonly else ""),
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_s,
        )
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as err:
        raise RunStateError(f"cannot open index {path}: {err}", REBUILD_HINT) from err
    if version > SCHEMA_VERSION:
        conn.close()
        raise GeError(
            f"index {path} has schema version {version}, newer than this ge supports "
            f"({SCHEMA_VERSION})",
            "upgrade ge to read this run",
        )
    return conn, version


def prepare(conn: sqlite3.Connection) -> bool:
    """Create the schema in an empty index, or bring one of an earlier schema version up to
    SCHEMA_VERSION (each later version's MIGRATIONS), inside the caller's transaction; True
    when the index was new."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        for statement in schema().split(";"):
            if statement.strip():
                conn.execute(statement)
    for number in range(version + 1, SCHEMA_VERSION + 1) if version else ():
        for statement in MIGRATIONS.get(number, ()):
            conn.execute(statement)
    if version < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return version == 0


def copy_statement(conn: sqlite3.Connection, table: str) -> str:
    """The statement that copies ``table`` from the attached ``source`` index into the main one,
    column by column: an index of an earlier schema version may lack some (left NULL)."""
    main = [row[1] for row in conn.execute(f"PRAGMA main.table_info({table})")]
    source = {row[1] for row in conn.execute(f"PRAGMA source.table_info({table})")}
    cols = ", ".join(f'"{name}"' for name in main if name in source)
    return f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM source.{table}"


# Totals for status lines (RunIndex.counts): variants by status, LLM calls, tokens and cost.
VARIANT_COUNTS_SQL = (
    "SELECT count(*) AS variants, coalesce(sum(operator != 'seed'), 0) AS children,"
    " coalesce(sum(status = 'pending'), 0) AS pending,"
    " coalesce(sum(status = 'evaluating'), 0) AS evaluating,"
    " coalesce(sum(status = 'evaluated'), 0) AS evaluated,"
    " coalesce(sum(status = 'failed'), 0) AS failed,"
    " coalesce(sum(status = 'invalid'), 0) AS invalid,"
    " coalesce(max(generation), 0) AS generation FROM variants"
)
CALL_COUNTS_SQL = (
    "SELECT count(*) AS llm_calls, coalesce(sum(outcome = 'error'), 0) AS llm_errors,"
    " coalesce(sum(outcome = 'cached'), 0) AS llm_cached,"
    " coalesce(sum(max(attempts - 1, 0)), 0) AS llm_retries,"
    " coalesce(sum(prompt_tokens), 0) AS prompt_tokens,"
    " coalesce(sum(completion_tokens), 0) AS completion_tokens,"
    " coalesce(sum(cost_usd), 0.0) AS cost_usd FROM llm_calls"
)
