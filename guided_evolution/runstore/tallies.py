"""The bandits' arm tallies of each generation's children, computed once and kept in the index
(``generation_tallies``) for ``ge status``, ``ge log --bandit`` and the report.

A generation's tally is what ``evolution.bandit_history.read_history`` credits to each arm for
that generation's children (pulls, rewards, improvements, cost; ``Agg``), so the run's tally is
the sum of the generations' (plus the zero pulls of rejected and duplicate proposals, read from
their events each time). Recomputing it reads every variant and every latest evaluation; a
reader computes the generations without a current row and stores them (one short write; best
effort, as ``measures.store_lazily``). A row is current while its generation has as many
variants as when it was computed, no variant of the generations its children and their parents
span (``low`` .. ``high``) was evaluated after it (``mark``: the highest evaluation id then), and
it was computed for the same objectives and mode. Only generations up to the last checkpoint are
stored; later ones (a live run's) are computed each time.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guided_evolution.evolution.bandit import Pull

Agg = dict[str, list[float]]  # arm -> [pulls, rewards (clipped to [0, 1]), improvements, cost]

TALLIES_TABLE = """CREATE TABLE IF NOT EXISTS generation_tallies (
    generation INTEGER PRIMARY KEY,
    variants INTEGER NOT NULL,
    mark INTEGER NOT NULL,
    low INTEGER NOT NULL,
    high INTEGER NOT NULL,
    key TEXT NOT NULL,
    models TEXT NOT NULL,
    personas TEXT NOT NULL
)"""
_INSERT = "INSERT OR REPLACE INTO generation_tallies VALUES (?,?,?,?,?,?,?,?)"


@dataclass(frozen=True)
class GenerationTally:
    """One generation's tally (see the module)."""

    generation: int
    variants: int
    mark: int
    low: int
    high: int
    key: str  # the objectives and mode it was computed for
    models: Agg = field(default_factory=dict)
    personas: Agg = field(default_factory=dict)

    def row(self) -> tuple[Any, ...]:
        return (
            self.generation, self.variants, self.mark, self.low, self.high, self.key,
            json.dumps(self.models), json.dumps(self.personas),
        )  # fmt: skip


def aggregate(pulls: Iterable[Pull], into: Agg | None = None) -> Agg:
    """``pulls`` summed per arm as ``evolution.bandit.tally`` sums them."""
    out: Agg = {} if into is None else into
    for p in pulls:
        row = out.setdefault(p.arm, [0, 0.0, 0, 0.0])
        row[0] += 1
        row[1] += min(1.0, max(0.0, p.reward))
        row[2] += p.reward > 0
        row[3] += p.cost
    return out


def merge(aggs: Iterable[Agg]) -> Agg:
    """The sum of several tallies."""
    out: Agg = {}
    for agg in aggs:
        for arm, values in agg.items():
            row = out.setdefault(arm, [0, 0.0, 0, 0.0])
            for i, v in enumerate(values):
                row[i] += v
    return out


def stored(conn: sqlite3.Connection) -> dict[int, GenerationTally]:
    """The stored rows ({} without the table: an index no reader has written yet)."""
    try:
        rows = conn.execute("SELECT * FROM generation_tallies").fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return {}
        raise
    return {int(r[0]): _from_row(r) for r in rows}


def _from_row(r: Sequence[Any]) -> GenerationTally:
    ints = [int(x) for x in r[:5]]
    return GenerationTally(*ints, str(r[5]), json.loads(r[6]), json.loads(r[7]))


def current(
    conn: sqlite3.Connection, have: Mapping[int, GenerationTally], counts: Mapping[int, int], key: str
) -> dict[int, GenerationTally]:
    """The rows of ``have`` that are still current (see the module); ``counts``: variants per
    generation now."""
    candidates = {
        g: t for g, t in have.items() if t.key == key and counts.get(g) == t.variants
    }
    if not candidates:
        return {}
    since = min(t.mark for t in candidates.values())
    newer = conn.execute(
        "SELECT v.generation, max(e.id) FROM evaluations e JOIN variants v ON v.id = e.variant_id"
        " WHERE e.id > ? GROUP BY v.generation",
        (since,),
    ).fetchall()
    return {
        g: t
        for g, t in candidates.items()
        if not any(t.low <= h <= t.high and newest > t.mark for h, newest in newer)
    }


def counts_per_generation(conn: sqlite3.Connection) -> dict[int, int]:
    """Variants per generation."""
    rows = conn.execute("SELECT generation, count(*) FROM variants GROUP BY generation")
    return {int(g): int(n) for g, n in rows}


def mark(conn: sqlite3.Connection) -> int:
    """The highest evaluation id (0 without one)."""
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM evaluations").fetchone()[0])


def write_lazily(index_path: Any, ddl: str, sql: str, rows: Sequence[tuple[Any, ...]]) -> bool:
    """Store rows a reader computed (``ddl`` creates their table where it is missing): one short
    write transaction on a file readers opened read-only. Best effort: False when the index
    cannot be written (read-only file system, permissions, a writer holding it too long)."""
    if not rows:
        return True
    try:
        conn = sqlite3.connect(index_path.resolve().as_uri() + "?mode=rw", uri=True, timeout=2.0)
    except sqlite3.Error:
        return False
    try:
        with conn:
            conn.execute(ddl)
            conn.executemany(sql, rows)
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def store_lazily(index_path: Any, found: Sequence[GenerationTally]) -> bool:
    """Store computed generation tallies (``write_lazily``)."""
    return write_lazily(index_path, TALLIES_TABLE, _INSERT, [t.row() for t in found])
