"""The SQLite index of a run (``index.sqlite``): variants, evaluations, LLM calls, the reply cache,
reflections, events and the engine's per-generation checkpoints.

WAL mode, one writer (the engine) and any number of readers in other processes. Every write is a
transaction (``BEGIN IMMEDIATE``); :meth:`RunIndex.transaction` groups several writes into one.
``PRAGMA user_version`` holds the schema version; a newer version is refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError, RunStateError
from guided_evolution.llm.records import CachedReply, CallRecord
from guided_evolution.runstore.records import (
    EVALUATION_STATUSES,
    STAGES,
    EvaluationRecord,
    VariantRecord,
)

SCHEMA_VERSION = 1
OPERATORS = (
    "seed",
    "mutation",
    "crossover",
    "eot",
    "offline-mutation",
    "offline-crossover",
    "fix",
)
VARIANT_STATUSES = ("pending", "evaluating", "evaluated", "failed", "invalid")
CALL_OUTCOMES = ("ok", "error", "cached")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE variants (
    id TEXT PRIMARY KEY,
    commit_sha TEXT,
    branch TEXT,
    generation INTEGER NOT NULL,
    operator TEXT NOT NULL CHECK (operator IN {_in(OPERATORS)}),
    parents TEXT NOT NULL DEFAULT '[]',
    segment TEXT,
    prompt_name TEXT,
    persona TEXT,
    model TEXT,
    temperature REAL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_in(VARIANT_STATUSES)}),
    created_at REAL NOT NULL,
    eot_reflection TEXT,
    llm_call_id INTEGER
);
CREATE INDEX variants_generation ON variants (generation);
CREATE INDEX variants_status ON variants (status);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY,
    variant_id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1,
    stage TEXT NOT NULL DEFAULT 'evaluate' CHECK (stage IN {_in(STAGES)}),
    status TEXT NOT NULL CHECK (status IN {_in(EVALUATION_STATUSES)}),
    metrics TEXT,
    started_at REAL,
    duration_s REAL,
    failure_reason TEXT,
    output_tail TEXT
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
    outcome TEXT NOT NULL CHECK (outcome IN {_in(CALL_OUTCOMES)}),
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
    finished_at REAL NOT NULL
);
"""


# --------------------------------------------------------------------------- records


@dataclass
class ReflectionRecord:
    """An EoT reflection written for a variant against an elite."""

    variant_id: str
    text: str
    elite_id: str | None = None
    segment: str | None = None
    created_at: float = field(default_factory=time.time)
    id: int | None = None


@dataclass
class EventRecord:
    """A run event (start, stop, budget reached, ...)."""

    id: int
    time: float
    kind: str
    data: dict[str, Any]


@dataclass
class GenerationRecord:
    """The engine's checkpoint at the end of a generation."""

    generation: int
    population: list[str]
    elites: list[str] = field(default_factory=list)
    hall_of_fame: list[str] = field(default_factory=list)
    finished_at: float = field(default_factory=time.time)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _variant(row: sqlite3.Row) -> VariantRecord:
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
    )


def _evaluation(row: sqlite3.Row) -> EvaluationRecord:
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
    )


def _call(row: sqlite3.Row) -> CallRecord:
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


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"invalid {what} {value!r}; expected one of {', '.join(allowed)}")


# --------------------------------------------------------------------------- the index


class RunIndex:
    """The run's SQLite index. Open with :meth:`open`; close (or use as a context manager)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        """Use :meth:`open`."""
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._depth = 0

    @classmethod
    def open(cls, path: Path, readonly: bool = False, busy_timeout_s: float = 10.0) -> RunIndex:
        """Open (and, unless ``readonly``, create) the index at ``path``.

        ``readonly`` connections never write and hold no lock between statements, so inspection
        commands can read a live run without blocking its engine.
        """
        path = Path(path)
        hint = "run `ge doctor RUN_DIR --rebuild-index`"
        if readonly and not path.is_file():
            raise RunStateError(f"index not found: {path}", hint)
        try:
            if readonly:
                conn = sqlite3.connect(
                    path.resolve().as_uri() + "?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=busy_timeout_s,
                )
                conn.execute("PRAGMA query_only = ON")
            else:
                conn = sqlite3.connect(
                    path.resolve().as_uri(),
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=busy_timeout_s,
                )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise RunStateError(f"cannot open index {path}: {err}", hint) from err
        if version > SCHEMA_VERSION:
            conn.close()
            raise GeError(
                f"index {path} has schema version {version}, newer than this ge supports "
                f"({SCHEMA_VERSION})",
                "upgrade ge to read this run",
            )
        index = cls(conn, path, readonly)
        if readonly:
            if version == 0:
                conn.close()
                raise RunStateError(f"index {path} is empty (schema version 0)", hint)
            return index
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if version == 0:
                with index.transaction():
                    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                        index._set_meta("created_at", repr(time.time()))
        except sqlite3.DatabaseError as err:
            conn.close()
            raise RunStateError(f"cannot initialise index {path}: {err}", hint) from err
        return index

    def close(self, single_file: bool = False) -> None:
        """Close the connection; ``single_file`` first leaves WAL mode (no -wal file remains)."""
        if single_file and not self.readonly:
            self._conn.execute("PRAGMA journal_mode = DELETE")
        self._conn.close()

    def copy_tables_from(self, source: Path, tables: Sequence[str]) -> list[str]:
        """Replace ``tables`` by those of another index file (same schema); one message each."""
        messages = []
        conn = self._conn
        with self._lock:
            conn.execute(
                "ATTACH DATABASE ? AS source", (Path(source).resolve().as_uri() + "?mode=ro",)
            )
            try:
                for table in tables:
                    try:
                        with self.transaction():
                            conn.execute(f"DELETE FROM main.{table}")
                            conn.execute(f"INSERT INTO main.{table} SELECT * FROM source.{table}")
                        count = conn.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0]
                        messages.append(f"kept {count} rows of {table} from the old index")
                    except sqlite3.Error as err:
                        messages.append(f"could not keep {table} from the old index: {err}")
            finally:
                conn.execute("DETACH DATABASE source")
        return messages

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction; nested uses join the outer one."""
        if self.readonly:
            raise RunStateError(f"index {self.path} was opened read-only")
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _row(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    # ----------------------------------------------------------------- meta

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def set_meta(self, key: str, value: str) -> None:
        """Store a run-level value (run name, seed path, ...)."""
        with self.transaction():
            self._set_meta(key, value)

    def get_meta(self, key: str) -> str | None:
        """A run-level value, or None."""
        row = self._row("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]

    def meta(self) -> dict[str, str]:
        """All run-level values."""
        return {row["key"]: row["value"] for row in self._rows("SELECT key, value FROM meta")}

    # ----------------------------------------------------------------- variants

    def add_variant(self, rec: VariantRecord, replace: bool = False) -> None:
        """Insert a variant; an existing id is an error unless ``replace``."""
        _check(rec.operator, OPERATORS, "operator")
        _check(rec.status, VARIANT_STATUSES, "variant status")
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        with self.transaction() as conn:
            conn.execute(
                f"{verb} INTO variants (id, commit_sha, branch, generation, operator, parents,"
                " segment, prompt_name, persona, model, temperature, status, created_at,"
                " eot_reflection, llm_call_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id,
                    rec.commit_sha,
                    rec.branch,
                    rec.generation,
                    rec.operator,
                    _dumps(list(rec.parents)),
                    rec.segment,
                    rec.prompt_name,
                    rec.persona,
                    rec.model,
                    rec.temperature,
                    rec.status,
                    rec.created_at,
                    rec.eot_reflection,
                    rec.llm_call_id,
                ),
            )

    def has_variant(self, variant_id: str) -> bool:
        """True when a variant with this id is known (dedup of identical children)."""
        return self._row("SELECT 1 FROM variants WHERE id = ?", (variant_id,)) is not None

    def get_variant(self, variant_id: str) -> VariantRecord | None:
        """One variant, or None."""
        row = self._row("SELECT * FROM variants WHERE id = ?", (variant_id,))
        return None if row is None else _variant(row)

    def variants(
        self, status: str | None = None, generation: int | None = None
    ) -> list[VariantRecord]:
        """Variants in creation order, optionally filtered by status and/or generation."""
        sql, args = "SELECT * FROM variants WHERE 1", []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if generation is not None:
            sql += " AND generation = ?"
            args.append(generation)
        rows = self._rows(sql + " ORDER BY created_at, rowid", tuple(args))
        return [_variant(row) for row in rows]

    def set_variant_status(self, variant_id: str, status: str) -> None:
        """Change a variant's status (pending -> evaluating -> evaluated/failed, or invalid)."""
        _check(status, VARIANT_STATUSES, "variant status")
        with self.transaction() as conn:
            cur = conn.execute("UPDATE variants SET status = ? WHERE id = ?", (status, variant_id))
            if cur.rowcount == 0:
                raise KeyError(variant_id)

    def set_variant_commit(self, variant_id: str, commit_sha: str, branch: str) -> None:
        """Record where a variant landed in git."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE variants SET commit_sha = ?, branch = ? WHERE id = ?",
                (commit_sha, branch, variant_id),
            )

    def set_variant_call(self, variant_id: str, call_id: int) -> None:
        """Link a variant to the LLM call that produced it."""
        with self.transaction() as conn:
            conn.execute("UPDATE variants SET llm_call_id = ? WHERE id = ?", (call_id, variant_id))
            conn.execute("UPDATE llm_calls SET variant_id = ? WHERE id = ?", (variant_id, call_id))

    def link_calls(self, variant_id: str, call_ids: list[int]) -> None:
        """Mark the LLM calls that went into a variant (e.g. an EoT's reasoning and its code)."""
        if not call_ids:
            return
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE llm_calls SET variant_id = ? WHERE id = ?", [(variant_id, c) for c in call_ids]
            )

    def delete_variant(self, variant_id: str) -> None:
        """Forget a variant, its evaluations and reflections (its LLM calls stay, unlinked)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM evaluations WHERE variant_id = ?", (variant_id,))
            conn.execute("DELETE FROM reflections WHERE variant_id = ?", (variant_id,))
            conn.execute(
                "UPDATE llm_calls SET variant_id = NULL WHERE variant_id = ?", (variant_id,)
            )
            conn.execute("DELETE FROM variants WHERE id = ?", (variant_id,))

    # ----------------------------------------------------------------- evaluations

    def add_evaluation(self, rec: EvaluationRecord) -> int:
        """Insert one evaluation stage result; its row id."""
        _check(rec.status, EVALUATION_STATUSES, "evaluation status")
        _check(rec.stage, STAGES, "evaluation stage")
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO evaluations (variant_id, attempt, stage, status, metrics, started_at,"
                " duration_s, failure_reason, output_tail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.variant_id,
                    rec.attempt,
                    rec.stage,
                    rec.status,
                    None if rec.metrics is None else _dumps(rec.metrics),
                    rec.started_at,
                    rec.duration_s,
                    rec.failure_reason,
                    rec.output_tail,
                ),
            )
            rec.id = int(cur.lastrowid or 0)
            return rec.id

    def latest_evaluation(self, variant_id: str) -> EvaluationRecord | None:
        """The most recently recorded evaluation of a variant, or None."""
        row = self._row(
            "SELECT * FROM evaluations WHERE variant_id = ? ORDER BY id DESC LIMIT 1", (variant_id,)
        )
        return None if row is None else _evaluation(row)

    def evaluations(self, variant_id: str | None = None) -> list[EvaluationRecord]:
        """Evaluations in recording order (of one variant, or all)."""
        if variant_id is None:
            rows = self._rows("SELECT * FROM evaluations ORDER BY id")
        else:
            rows = self._rows(
                "SELECT * FROM evaluations WHERE variant_id = ? ORDER BY id", (variant_id,)
            )
        return [_evaluation(row) for row in rows]

    def latest_evaluations(self) -> dict[str, EvaluationRecord]:
        """Variant id -> its latest evaluation, for every evaluated variant."""
        rows = self._rows(
            "SELECT * FROM evaluations WHERE id IN (SELECT max(id) FROM evaluations GROUP BY variant_id)"
        )
        return {row["variant_id"]: _evaluation(row) for row in rows}

    # ----------------------------------------------------------------- LLM calls and cache

    def record_call(self, rec: CallRecord) -> int:
        """Insert one LLM call; its id."""
        _check(rec.outcome, CALL_OUTCOMES, "call outcome")
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO llm_calls (variant_id, purpose, model, messages, reply, prompt_tokens,"
                " completion_tokens, cost_usd, latency_s, outcome, error, attempts, cache_key,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.variant_id,
                    rec.purpose,
                    rec.model,
                    _dumps(rec.messages),
                    rec.reply,
                    rec.prompt_tokens,
                    rec.completion_tokens,
                    rec.cost_usd,
                    rec.latency_s,
                    rec.outcome,
                    rec.error,
                    rec.attempts,
                    rec.cache_key,
                    rec.created_at,
                ),
            )
            rec.id = int(cur.lastrowid or 0)
            return rec.id

    def get_call(self, call_id: int) -> CallRecord | None:
        """One LLM call, or None."""
        row = self._row("SELECT * FROM llm_calls WHERE id = ?", (call_id,))
        return None if row is None else _call(row)

    def calls(self, variant_id: str | None = None) -> list[CallRecord]:
        """LLM calls in order (of one variant, or all)."""
        if variant_id is None:
            rows = self._rows("SELECT * FROM llm_calls ORDER BY id")
        else:
            rows = self._rows(
                "SELECT * FROM llm_calls WHERE variant_id = ? ORDER BY id", (variant_id,)
            )
        return [_call(row) for row in rows]

    def cache_get(self, key: str) -> CachedReply | None:
        """The reply cached under this prompt key, or None (missing usage counts read as 0)."""
        row = self._row("SELECT * FROM llm_cache WHERE key = ?", (key,))
        if row is None:
            return None
        usage = json.loads(row["usage"]) or {}
        return CachedReply(
            text=row["reply"],
            model=row["model"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            cost_usd=float(usage.get("cost_usd", 0.0)),
        )

    def cache_put(self, key: str, reply: CachedReply) -> None:
        """Cache a reply under its prompt key (replacing an older one); the column ``usage``
        holds its token counts and cost as JSON."""
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "cost_usd": reply.cost_usd,
        }
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO llm_cache (key, reply, usage, model, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, reply.text, _dumps(usage), reply.model, time.time()),
            )

    # ----------------------------------------------------------------- reflections, events

    def add_reflection(self, rec: ReflectionRecord) -> int:
        """Insert an EoT reflection; its id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO reflections (variant_id, elite_id, segment, text, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (rec.variant_id, rec.elite_id, rec.segment, rec.text, rec.created_at),
            )
            rec.id = int(cur.lastrowid or 0)
            return rec.id

    def reflections(self, variant_id: str | None = None) -> list[ReflectionRecord]:
        """Reflections in order (of one variant, or all)."""
        sql = "SELECT * FROM reflections"
        args: tuple[Any, ...] = ()
        if variant_id is not None:
            sql += " WHERE variant_id = ?"
            args = (variant_id,)
        return [
            ReflectionRecord(
                r["variant_id"], r["text"], r["elite_id"], r["segment"], r["created_at"], r["id"]
            )
            for r in self._rows(sql + " ORDER BY id", args)
        ]

    def add_event(
        self, kind: str, data: dict[str, Any] | None = None, when: float | None = None
    ) -> int:
        """Append a run event; its id."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO events (time, kind, data) VALUES (?, ?, ?)",
                (time.time() if when is None else when, kind, _dumps(data or {})),
            )
            return int(cur.lastrowid or 0)

    def events(self, kind: str | None = None, after_id: int = 0) -> list[EventRecord]:
        """Events with id > ``after_id`` (optionally of one kind), oldest first."""
        sql, args = "SELECT * FROM events WHERE id > ?", [after_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        return [
            EventRecord(r["id"], r["time"], r["kind"], json.loads(r["data"]))
            for r in self._rows(sql + " ORDER BY id", tuple(args))
        ]

    # ----------------------------------------------------------------- generations

    def save_generation(self, rec: GenerationRecord) -> None:
        """Store (or replace) the checkpoint of a finished generation."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO generations (generation, population, elites, hall_of_fame,"
                " finished_at) VALUES (?, ?, ?, ?, ?)",
                (
                    rec.generation,
                    _dumps(list(rec.population)),
                    _dumps(list(rec.elites)),
                    _dumps(list(rec.hall_of_fame)),
                    rec.finished_at,
                ),
            )

    def _generation(self, row: sqlite3.Row | None) -> GenerationRecord | None:
        if row is None:
            return None
        return GenerationRecord(
            row["generation"],
            json.loads(row["population"]),
            json.loads(row["elites"]),
            json.loads(row["hall_of_fame"]),
            row["finished_at"],
        )

    def last_generation(self) -> GenerationRecord | None:
        """The checkpoint of the latest finished generation, or None."""
        return self._generation(
            self._row("SELECT * FROM generations ORDER BY generation DESC LIMIT 1")
        )

    def get_generation(self, generation: int) -> GenerationRecord | None:
        """The checkpoint of one generation, or None."""
        return self._generation(
            self._row("SELECT * FROM generations WHERE generation = ?", (generation,))
        )

    # ----------------------------------------------------------------- summary

    def counts(self) -> dict[str, Any]:
        """Totals for status lines: variants by status, LLM calls, tokens and cost."""
        v = self._row(
            "SELECT count(*) AS variants, coalesce(sum(operator != 'seed'), 0) AS children,"
            " coalesce(sum(status = 'pending'), 0) AS pending,"
            " coalesce(sum(status = 'evaluating'), 0) AS evaluating,"
            " coalesce(sum(status = 'evaluated'), 0) AS evaluated,"
            " coalesce(sum(status = 'failed'), 0) AS failed,"
            " coalesce(sum(status = 'invalid'), 0) AS invalid,"
            " coalesce(max(generation), 0) AS generation FROM variants"
        )
        c = self._row(
            "SELECT count(*) AS llm_calls, coalesce(sum(outcome = 'error'), 0) AS llm_errors,"
            " coalesce(sum(outcome = 'cached'), 0) AS llm_cached,"
            " coalesce(sum(prompt_tokens), 0) AS prompt_tokens,"
            " coalesce(sum(completion_tokens), 0) AS completion_tokens,"
            " coalesce(sum(cost_usd), 0.0) AS cost_usd FROM llm_calls"
        )
        assert v is not None and c is not None
        result: dict[str, Any] = {**dict(v), **dict(c)}
        result["cost_usd"] = float(result["cost_usd"])
        return result
