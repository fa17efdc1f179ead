"""The SQLite index of a run (``index.sqlite``): variants, evaluations, LLM calls, the reply cache,
reflections, events and the engine's per-generation checkpoints.

WAL mode, one writer (the engine) and any number of readers in other processes. Every write is a
transaction (``BEGIN IMMEDIATE``); :meth:`RunIndex.transaction` groups several writes into one.
``PRAGMA user_version`` holds the schema version; a newer version is refused.

The module is long because it is the one place that reads and writes every table of the index.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from guided_evolution.errors import RunStateError
from guided_evolution.llm.records import CachedReply, CallRecord
from guided_evolution.runstore import measures
from guided_evolution.runstore.index_schema import (
    CALL_COUNTS_SQL,
    CALL_OUTCOMES,
    REBUILD_HINT,
    SCHEMA_VERSION,
    VARIANT_COUNTS_SQL,
    VARIANT_STATUSES,
    CallCost,
    call_from_row,
    check_value,
    connect,
    copy_statement,
    dumps,
    evaluation_from_row,
    operators,
    prepare,
    variant_from_row,
)
from guided_evolution.runstore.records import (
    EVALUATION_STATUSES,
    STAGES,
    EvaluationRecord,
    EventRecord,
    GenerationRecord,
    ReflectionRecord,
    VariantRecord,
    note_blob_id,
)

T = TypeVar("T")
CODE_KEYS_TABLES = (  # variant -> its program's identity up to comments (engine.recorder.code_key)
    "CREATE TABLE IF NOT EXISTS code_keys (variant_id TEXT PRIMARY KEY, key TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS code_keys_key ON code_keys (key)",
    # evaluation -> the blob id of its git note (``records.note_blob_id``): `ge doctor` compares
    # 100,000 notes with the index without reading or hashing an evaluation
    "CREATE TABLE IF NOT EXISTS note_blobs (evaluation_id INTEGER PRIMARY KEY, blob TEXT NOT NULL)",
)


class VariantRef(NamedTuple):
    """A variant's id, branch, commit and status (``RunIndex.variant_refs``)."""

    id: str
    branch: str | None
    commit_sha: str | None
    status: str


@dataclass(frozen=True, slots=True)
class VariantBrief:
    """A variant's columns that tallies over every variant read (``RunIndex.variant_briefs``)."""

    id: str
    generation: int
    parents: tuple[str, ...]
    model: str | None
    persona: str | None
    eot_reflection: bool  # it has one (the text is not read)
    status: str
    operator: str = ""
    created_at: float = 0.0

    @property
    def is_seed(self) -> bool:
        return self.operator == "seed"


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
        if readonly and not path.is_file():
            raise RunStateError(f"index not found: {path}", REBUILD_HINT)
        conn, version = connect(path, readonly, busy_timeout_s)
        index = cls(conn, path, readonly)
        if readonly:
            if version == 0:
                conn.close()
                raise RunStateError(f"index {path} is empty (schema version 0)", REBUILD_HINT)
            return index
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            for statement in CODE_KEYS_TABLES:  # kept by the writer from its first open on
                conn.execute(statement)
            if version < SCHEMA_VERSION:  # new, or made by an earlier ge: add what it lacks
                with index.transaction():
                    if prepare(conn):
                        index._set_meta("created_at", repr(time.time()))
        except sqlite3.DatabaseError as err:
            conn.close()
            raise RunStateError(f"cannot initialise index {path}: {err}", REBUILD_HINT) from err
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
                            conn.execute(copy_statement(conn, table))
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

    def _each(self, sql: str, args: tuple[Any, ...] = ()) -> Iterator[sqlite3.Row]:
        """The rows one at a time (a large result is never held whole; the lock is held until
        the caller has read them all)."""
        with self._lock:
            yield from self._conn.execute(sql, args)

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
        check_value(rec.operator, operators(), "operator")
        check_value(rec.status, VARIANT_STATUSES, "variant status")
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        with self.transaction() as conn:
            conn.execute(
                f"{verb} INTO variants (id, commit_sha, branch, generation, operator, parents,"
                " segment, prompt_name, persona, model, temperature, status, created_at,"
                " eot_reflection, llm_call_id, island, mating_preference)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.id,
                    rec.commit_sha,
                    rec.branch,
                    rec.generation,
                    rec.operator,
                    dumps(list(rec.parents)),
                    rec.segment,
                    rec.prompt_name,
                    rec.persona,
                    rec.model,
                    rec.temperature,
                    rec.status,
                    rec.created_at,
                    rec.eot_reflection,
                    rec.llm_call_id,
                    rec.island,
                    rec.mating_preference,
                ),
            )

    def variant_briefs(self, first_generation: int | None = None) -> list[VariantBrief]:
        """Every variant's (from generation ``first_generation`` on) id, generation, parents,
        model, persona and whether it has an EoT reflection, in creation order: what tallies over
        all variants read (no text column)."""
        rows = self._each(
            "SELECT id, generation, parents, model, persona, eot_reflection IS NOT NULL"
            " AND eot_reflection != '', status, operator, created_at FROM variants"
            " WHERE generation >= ?"
            " ORDER BY created_at, rowid",
            (-(2**62) if first_generation is None else first_generation,),
        )
        return [
            VariantBrief(
                r[0], r[1], tuple(json.loads(r[2] or "[]")), r[3], r[4], bool(r[5]), r[6], r[7], r[8]
            )
            for r in rows
        ]

    def query(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read(connection)`` under the index's lock: a reading module's own queries."""
        with self._lock:
            return read(self._conn)

    def code_key_owner(self, key: str) -> str | None:
        """The first variant (by creation) whose program has this ``code_key``, or None."""
        row = self._row(
            "SELECT c.variant_id FROM code_keys c JOIN variants v ON v.id = c.variant_id"
            " WHERE c.key = ? ORDER BY v.created_at, v.id LIMIT 1",
            (key,),
        )
        return None if row is None else str(row[0])

    def add_code_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        """Store (variant id, code_key) pairs (one transaction)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO code_keys (variant_id, key) VALUES (?, ?)", keys)

    def without_code_key(self) -> list[tuple[str, str]]:
        """(id, commit) of the committed variants without a stored code_key (a run of an earlier
        ge, an index rebuilt from git, a variant doctor added back), in creation order."""
        rows = self._rows(
            "SELECT id, commit_sha FROM variants WHERE commit_sha IS NOT NULL AND id NOT IN"
            " (SELECT variant_id FROM code_keys) ORDER BY created_at, rowid"
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def has_variant(self, variant_id: str) -> bool:
        """True when a variant with this id is known (dedup of identical children)."""
        return self._row("SELECT 1 FROM variants WHERE id = ?", (variant_id,)) is not None

    def get_variant(self, variant_id: str) -> VariantRecord | None:
        """One variant, or None."""
        row = self._row("SELECT * FROM variants WHERE id = ?", (variant_id,))
        return None if row is None else variant_from_row(row)

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
        return [variant_from_row(row) for row in rows]

    def count_children(self, status: str) -> int:
        """How many variants with parents (not the seed) have ``status``."""
        sql = "SELECT count(*) FROM variants WHERE status = ? AND parents != '[]'"
        row = self._row(sql, (status,))
        return int(row[0]) if row else 0

    def set_variant_status(self, variant_id: str, status: str) -> None:
        """Change a variant's status (pending -> evaluating -> evaluated/failed, or invalid)."""
        check_value(status, VARIANT_STATUSES, "variant status")
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
                "UPDATE llm_calls SET variant_id = ? WHERE id = ?",
                [(variant_id, c) for c in call_ids],
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
        check_value(rec.status, EVALUATION_STATUSES, "evaluation status")
        check_value(rec.stage, STAGES, "evaluation stage")
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO evaluations (variant_id, attempt, stage, status, metrics, started_at,"
                " duration_s, failure_reason, output_tail, feedback)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.variant_id,
                    rec.attempt,
                    rec.stage,
                    rec.status,
                    None if rec.metrics is None else dumps(rec.metrics),
                    rec.started_at,
                    rec.duration_s,
                    rec.failure_reason,
                    rec.output_tail,
                    rec.feedback,
                ),
            )
            rec.id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT OR REPLACE INTO note_blobs (evaluation_id, blob) VALUES (?, ?)",
                (rec.id, note_blob_id(rec.to_note())),
            )
            return rec.id

    def last_evaluation_id(self) -> int:
        """The row id of the newest evaluation (0: none yet)."""
        row = self._row("SELECT max(id) FROM evaluations")
        return int(row[0] or 0) if row is not None else 0

    def latest_evaluation(self, variant_id: str) -> EvaluationRecord | None:
        """The most recently recorded evaluation of a variant, or None."""
        row = self._row(
            "SELECT * FROM evaluations WHERE variant_id = ? ORDER BY id DESC LIMIT 1", (variant_id,)
        )
        return None if row is None else evaluation_from_row(row)

    def evaluations(self, variant_id: str | None = None, after_id: int = 0) -> list[EvaluationRecord]:
        """Evaluations in recording order (of one variant, or all of row id > ``after_id``)."""
        if variant_id is None:
            rows = self._rows("SELECT * FROM evaluations WHERE id > ? ORDER BY id", (after_id,))
        else:
            rows = self._rows(
                "SELECT * FROM evaluations WHERE variant_id = ? ORDER BY id", (variant_id,)
            )
        return [evaluation_from_row(row) for row in rows]

    def latest_evaluations(self) -> dict[str, EvaluationRecord]:
        """Variant id -> its latest evaluation, for every evaluated variant."""
        rows = self._rows(
            "SELECT * FROM evaluations WHERE id IN (SELECT max(id) FROM evaluations GROUP BY variant_id)"
        )
        return {row["variant_id"]: evaluation_from_row(row) for row in rows}

    def latest_values(
        self, names: Sequence[str], ids: Sequence[str] | None = None
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """(variant, status, {name: value}) of every variant's latest evaluation, with only the
        metrics ``names`` (read by SQLite out of the stored JSON: nothing else of a large run's
        evaluations is loaded). A name the metrics lack is left out; a metrics text that SQLite
        does not read as JSON (``NaN`` written by Python) is parsed here. ``ids``: of these
        variants only."""
        plain = not any('"' in n or "\\" in n for n in names)  # else SQLite's paths cannot name it
        picks = "".join(
            ", CASE WHEN json_valid(metrics) THEN json_extract(metrics, ?) END,"
            " CASE WHEN json_valid(metrics) THEN json_type(metrics, ?) END"
            for _ in (names if plain else ())
        )
        paths = [p for n in (names if plain else ()) for p in (_json_path(n),) * 2]
        head = f"SELECT variant_id, status, json_valid(metrics), metrics{picks} FROM evaluations"
        if ids is None:
            chunks: list[tuple[str, tuple[Any, ...]]] = [(
                f"{head} WHERE id IN (SELECT max(id) FROM evaluations GROUP BY variant_id)"
                " ORDER BY id", tuple(paths),
            )]  # fmt: skip
        else:
            chunks = [(
                f"{head} WHERE id IN (SELECT max(id) FROM evaluations WHERE variant_id IN"
                f" ({','.join('?' * len(c))}) GROUP BY variant_id) ORDER BY id", (*paths, *c),
            ) for c in _chunks(ids)]  # fmt: skip
        rows = (row for sql, args in chunks for row in self._each(sql, args))
        out = []
        for row in rows:
            if plain and (row[2] or row[3] is None):
                found = {
                    n: _json_value(row[4 + 2 * i], row[5 + 2 * i])
                    for i, n in enumerate(names)
                    if row[5 + 2 * i] is not None
                }
            else:
                loaded = json.loads(row[3]) if row[3] is not None else {}
                found = {n: loaded[n] for n in names if isinstance(loaded, dict) and n in loaded}
            out.append((row[0], row[1], found))
        return out

    def latest_without_output(self) -> dict[str, EvaluationRecord]:
        """As :meth:`latest_evaluations`, without the output tails (what a note holds)."""
        rows = self._rows(
            "SELECT id, variant_id, attempt, stage, status, metrics, started_at, duration_s,"
            " failure_reason, NULL AS output_tail, feedback FROM evaluations WHERE id IN"
            " (SELECT max(id) FROM evaluations GROUP BY variant_id)"
        )
        return {row["variant_id"]: evaluation_from_row(row) for row in rows}

    def add_note_blobs(self, blobs: Sequence[tuple[int, str]]) -> None:
        """Record (evaluation id, note blob id) pairs that `ge doctor` verified (one transaction)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO note_blobs (evaluation_id, blob) VALUES (?, ?)", blobs
            )

    def latest_note_blobs(self) -> dict[str, tuple[str, str | None]]:
        """Variant id -> (status, note blob id) of its latest evaluation; the blob id is None
        for an evaluation recorded by an earlier ge (no ``note_blobs`` row, or no such table)."""
        try:
            rows = self._rows(
                "SELECT e.variant_id, e.status, n.blob FROM evaluations e LEFT JOIN note_blobs n"
                " ON n.evaluation_id = e.id WHERE e.id IN"
                " (SELECT max(id) FROM evaluations GROUP BY variant_id)"
            )
        except sqlite3.OperationalError:  # an earlier ge's index, opened read-only
            rows = self._rows(
                "SELECT variant_id, status, NULL FROM evaluations WHERE id IN"
                " (SELECT max(id) FROM evaluations GROUP BY variant_id)"
            )
        return {r[0]: (r[1], r[2]) for r in rows}

    def variant_refs(self) -> list[VariantRef]:
        """(id, branch, commit, status) of every variant, in creation order: what the checks
        compare with git (a fifth of a whole record's memory at 100,000 variants)."""
        rows = self._rows("SELECT id, branch, commit_sha, status FROM variants ORDER BY created_at, rowid")
        return [VariantRef(r[0], r[1], r[2], r[3]) for r in rows]

    def latest_failed(self) -> dict[str, EvaluationRecord]:
        """Variant id -> its latest evaluation, for the variants whose latest one failed."""
        rows = self._rows(
            "SELECT * FROM evaluations WHERE id IN (SELECT max(id) FROM evaluations GROUP BY"
            " variant_id) AND status != 'ok' ORDER BY id"
        )
        return {row["variant_id"]: evaluation_from_row(row) for row in rows}

    def evaluation_lines(self) -> Iterator[sqlite3.Row]:
        """Every evaluation in recording order, for an event log: variant_id, stage, attempt,
        status, metrics (JSON text), failure_reason, started_at, duration_s and its variant's
        created_at (no output is read), one row at a time."""
        return self._each(
            "SELECT e.variant_id, e.stage, e.attempt, e.status, e.metrics, e.failure_reason,"
            " e.started_at, e.duration_s, v.created_at FROM evaluations e"
            " LEFT JOIN variants v ON v.id = e.variant_id ORDER BY e.id"
        )

    def latest_of(self, ids: Sequence[str]) -> dict[str, EvaluationRecord]:
        """The latest evaluation of each of ``ids`` that has one (indexed look-ups)."""
        out: dict[str, EvaluationRecord] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = self._rows(
                "SELECT * FROM evaluations WHERE id IN (SELECT max(id) FROM evaluations"
                f" WHERE variant_id IN ({marks}) GROUP BY variant_id)",
                tuple(chunk),
            )
            out.update((row["variant_id"], evaluation_from_row(row)) for row in rows)
        return out

    def variants_of(self, ids: Sequence[str]) -> dict[str, VariantRecord]:
        """The variants among ``ids`` that exist (indexed look-ups)."""
        out: dict[str, VariantRecord] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = self._rows(f"SELECT * FROM variants WHERE id IN ({marks})", tuple(chunk))
            out.update((row["id"], variant_from_row(row)) for row in rows)
        return out

    # ----------------------------------------------------------------- LLM calls and cache

    def record_call(self, rec: CallRecord) -> int:
        """Insert one LLM call; its id."""
        check_value(rec.outcome, CALL_OUTCOMES, "call outcome")
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO llm_calls (variant_id, purpose, model, messages, reply, prompt_tokens,"
                " completion_tokens, cost_usd, latency_s, outcome, error, attempts, cache_key,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.variant_id,
                    rec.purpose,
                    rec.model,
                    dumps(rec.messages),
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
        return None if row is None else call_from_row(row)

    def calls(self, variant_id: str | None = None) -> list[CallRecord]:
        """LLM calls in order (of one variant, or all)."""
        if variant_id is None:
            rows = self._rows("SELECT * FROM llm_calls ORDER BY id")
        else:
            rows = self._rows(
                "SELECT * FROM llm_calls WHERE variant_id = ? ORDER BY id", (variant_id,)
            )
        return [call_from_row(row) for row in rows]

    def calls_replying(self, text: str, purpose_prefix: str, before_id: float) -> list[CallRecord]:
        """Calls before ``before_id`` whose purpose starts with ``purpose_prefix`` and whose reply
        contains ``text`` (a superset of those whose stripped reply is ``text``), oldest first."""
        rows = self._rows(
            "SELECT * FROM llm_calls WHERE substr(purpose, 1, ?) = ? AND id < ?"
            " AND instr(reply, ?) > 0 ORDER BY id",
            (len(purpose_prefix), purpose_prefix, min(before_id, 2**62), text),
        )
        return [call_from_row(row) for row in rows]

    def ids_with_prefix(self, prefix: str) -> list[str]:
        """Variant ids starting with ``prefix``, sorted."""
        rows = self._rows(
            "SELECT id FROM variants WHERE substr(id, 1, ?) = ? ORDER BY id", (len(prefix), prefix)
        )
        return [r[0] for r in rows]

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
                (key, reply.text, dumps(usage), reply.model, time.time()),
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
                (time.time() if when is None else when, kind, dumps(data or {})),
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
                " finished_at, islands) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    rec.generation,
                    dumps(list(rec.population)),
                    dumps(list(rec.elites)),
                    dumps(list(rec.hall_of_fame)),
                    rec.finished_at,
                    dumps([list(members) for members in rec.islands]),
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
            # A run created before schema version 3, opened read-only, has no such column.
            json.loads(row["islands"]) if "islands" in row.keys() else [],  # noqa: SIM118
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

    def populations(self, first: int = 0) -> dict[int, list[str]]:
        """Each checkpoint's population from generation ``first`` on, oldest first."""
        sql = "SELECT generation, population FROM generations WHERE generation >= ? ORDER BY 1"
        return {r[0]: json.loads(r[1]) for r in self._rows(sql, (first,))}

    def island_extent(self) -> tuple[int, int] | None:
        """(the highest island a variant was born on + 1, the most islands a checkpoint
        stores), by two aggregates; None for an index without those columns (schema < 3)."""
        try:
            born = self._row("SELECT max(island) FROM variants")
            stored = self._row("SELECT max(json_array_length(islands)) FROM generations")
        except sqlite3.OperationalError:
            return None
        high = born[0] if born is not None and born[0] is not None else -1
        return int(high) + 1, int(stored[0] or 0) if stored is not None else 0

    def carries_gene(self) -> bool:
        """Whether any variant carries the mating-preference gene (True for an index of schema
        < 3, which cannot say)."""
        try:
            sql = "SELECT 1 FROM variants WHERE mating_preference IS NOT NULL LIMIT 1"
            return self._row(sql) is not None
        except sqlite3.OperationalError:
            return True

    def save_measures(self, found: measures.GenerationMeasures) -> None:
        """Store (or replace) a closed generation's measures."""
        with self.transaction() as conn:
            conn.execute(measures.INSERT_SQL, measures.to_row(found))

    def generation_measures(self, first: int = 0) -> dict[int, measures.GenerationMeasures]:
        """The stored measures from generation ``first`` on ({}: none, or no such table)."""
        with self._lock:
            return measures.stored(self._conn, first)

    # ----------------------------------------------------------------- summary

    def call_costs(self) -> list[CallCost]:
        """Every LLM call's id, variant, model and cost, oldest first (no message is read)."""
        sql = (
            "SELECT id, variant_id, model, cost_usd, created_at, prompt_tokens,"
            " completion_tokens FROM llm_calls ORDER BY id"
        )
        return [
            CallCost(r[0], r[1], r[2], float(r[3] or 0.0), r[4], r[5], r[6])
            for r in self._rows(sql)
        ]

    def call_totals(self) -> list[sqlite3.Row]:
        """Per LLM call purpose and outcome: calls, tokens and cost (no message is read)."""
        return self._rows(
            "SELECT purpose, outcome, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens,"
            " sum(completion_tokens) AS completion_tokens, sum(cost_usd) AS cost_usd"
            " FROM llm_calls GROUP BY purpose, outcome ORDER BY purpose, outcome"
        )

    def counts(self) -> dict[str, Any]:
        """Totals for status lines: variants by status, LLM calls, tokens and cost."""
        v = self._row(VARIANT_COUNTS_SQL)
        c = self._row(CALL_COUNTS_SQL)
        assert v is not None and c is not None
        result: dict[str, Any] = {**dict(v), **dict(c)}
        result["cost_usd"] = float(result["cost_usd"])
        return result


def _chunks(ids: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    """``ids`` without repeats in chunks under SQLite's limit of bound values."""
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def _json_path(name: str) -> str:
    """The JSON path of a top-level key (quoted: dots and brackets are part of the name)."""
    return '$."' + name + '"'


def _json_value(value: Any, kind: str | None) -> Any:
    """A value ``json_extract`` returned as Python reads the JSON (true/false are bools, an
    object or array its parsed text)."""
    if kind in ("true", "false"):
        return kind == "true"
    if kind in ("object", "array"):
        return json.loads(value)
    return value
