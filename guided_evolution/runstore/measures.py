"""Each closed generation's measures, computed once and kept in the index (``generation_measures``).

A generation's measures are those of its checkpoint's population: its size, its valid members
(``evolution.scoring.scored``), their Pareto front on the selection objectives (the ids), the
distinct segments per position and the mean pairwise code distance (``evolution.diversity``:
token edit distances, over a fixed sample of pairs in a large population). Computing them reads
every member's files from git and costs thousands of edit distances per generation, so they are
computed once: by the engine when it checkpoints a generation (:class:`Measurer`), or, for a
generation without a row (a run of an earlier ge, an index rebuilt by ``ge doctor``), by the first
inspection that needs them, which stores them (:func:`store_lazily`). A row is the measure of the
population it lists (``members``): one whose checkpoint changed since is recomputed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guided_evolution.config import GeConfig
from guided_evolution.errors import GeError
from guided_evolution.evolution import diversity
from guided_evolution.evolution.scoring import scored
from guided_evolution.runstore.index_schema import MEASURES_TABLE, dumps
from guided_evolution.runstore.tallies import write_lazily

if TYPE_CHECKING:
    from guided_evolution.runstore.git_store import GitStore  # pygit2: the callers open it

Codes = dict[str, str]


@dataclass(frozen=True)
class GenerationMeasures:
    """One closed generation's population measures (see the module)."""

    generation: int
    members: list[str]  # the checkpoint's population these measures are of
    valid: int
    front: list[str]  # ids of the valid members' Pareto front, in population order
    distinct: dict[str, int]  # segment key -> distinct segments there
    mean_distance: float | None  # None under two members with code
    distance_sampled: bool

    @property
    def population(self) -> int:
        return len(self.members)


_COLUMNS = (
    "generation, members, population, valid, front, distinct_segments, mean_distance,"
    " distance_sampled, computed_at"
)
INSERT_SQL = f"INSERT OR REPLACE INTO generation_measures ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
SELECT_SQL = f"SELECT {_COLUMNS} FROM generation_measures WHERE generation >= ? ORDER BY generation"


def to_row(m: GenerationMeasures) -> tuple[Any, ...]:
    """The ``generation_measures`` row of a measure (``INSERT_SQL``'s values)."""
    return (
        m.generation, dumps(m.members), m.population, m.valid, dumps(m.front),
        dumps(m.distinct), m.mean_distance, int(m.distance_sampled), time.time(),
    )  # fmt: skip


def from_row(row: Sequence[Any]) -> GenerationMeasures:
    """A measure from a ``SELECT_SQL`` row."""
    return GenerationMeasures(
        generation=int(row[0]),
        members=json.loads(row[1]),
        valid=int(row[3]),
        front=json.loads(row[4]),
        distinct={str(k): int(v) for k, v in json.loads(row[5]).items()},
        mean_distance=None if row[6] is None else float(row[6]),
        distance_sampled=bool(row[7]),
    )


class MemberCodes:
    """``{segment key: code}`` of stored variants read from git, remembered for one population
    and the next (a generation carries its elites over)."""

    def __init__(self, store: GitStore, cfg: GeConfig, commit_of: Callable[[str], str | None]):
        self._store, self._cfg, self._commit_of = store, cfg, commit_of
        self._now: dict[str, Codes | None] = {}
        self._before: dict[str, Codes | None] = {}

    def __call__(self, vid: str) -> Codes | None:
        if vid not in self._now:
            self._now[vid] = self._before[vid] if vid in self._before else self._read(vid)
        return self._now[vid]

    def next_population(self) -> None:
        """Forget the codes of members older than the population just measured."""
        self._before, self._now = self._now, {}

    def _read(self, vid: str) -> Codes | None:
        sha = self._commit_of(vid)
        if not sha:
            return None
        try:
            raw = self._store.read_files(sha)
        except (GeError, KeyError, ValueError):
            return None
        seed = self._cfg.seed
        files = {p: raw[p].decode("utf-8", "surrogateescape") for p in seed.files if p in raw}
        return diversity.split_segments(files, seed.files, seed.marker) or None


def measure(
    generation: int,
    population: Sequence[str],
    codes: Callable[[str], Codes | None],
    latest: Callable[[str], Any],
    cfg: GeConfig,
    cache: diversity.DistanceCache,
) -> GenerationMeasures:
    """The measures of one generation's ``population`` (``latest``: a member's latest
    evaluation, or None)."""
    from guided_evolution.evolution.selection import pareto_front  # deap: only when needed

    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    members = [c for vid in population if (c := codes(vid)) is not None]
    found = diversity.measure(members, cache)
    valid = [s for vid in population if (s := scored(vid, latest(vid), objectives))]
    front = pareto_front(valid, objectives) if valid and objectives else []
    return GenerationMeasures(
        generation=generation,
        members=list(population),
        valid=len(valid),
        front=[s.id for s in front],
        distinct=found.distinct,
        mean_distance=found.mean_distance,
        distance_sampled=found.sampled,
    )


def stored(conn: sqlite3.Connection, first: int = 0) -> dict[int, GenerationMeasures]:
    """The stored measures from generation ``first`` on ({} when the index has no such table:
    an index of an earlier ge, opened read-only)."""
    try:
        rows = conn.execute(SELECT_SQL, (first,)).fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return {}
        raise
    return {int(row[0]): from_row(row) for row in rows}


def store_lazily(index_path: Path, found: Iterable[GenerationMeasures]) -> bool:
    """Store measures an inspection computed (``tallies.write_lazily``: one short write
    transaction on a reader's read-only index, creating the table in an index of an earlier ge).
    Best effort: False when the index cannot be written; the caller has the measures anyway."""
    return write_lazily(index_path, MEASURES_TABLE, INSERT_SQL, [to_row(m) for m in found])


CACHED_SEGMENTS = 4096  # token sequences the Measurer keeps between generations at most


class Measurer:
    """The engine's side: measure each generation it checkpoints and store the row (one
    transaction of its own, after the checkpoint's)."""

    def __init__(self, store: GitStore, index: Any, cfg: GeConfig) -> None:
        self._index, self._cfg = index, cfg
        self._codes = MemberCodes(store, cfg, self._commit)
        self._cache = diversity.DistanceCache()  # the elites' tokens carry over; bounded below

    def _commit(self, vid: str) -> str | None:
        v = self._index.get_variant(vid)
        return v.commit_sha if v is not None else None

    def record(self, generation: int, population: Sequence[str]) -> None:
        """Measure ``population`` (the checkpoint of ``generation``) and store it."""
        if len(self._cache.sequences) > CACHED_SEGMENTS:
            self._cache = diversity.DistanceCache()
        found = measure(
            generation, population, self._codes, self._index.latest_evaluation, self._cfg,
            self._cache,
        )  # fmt: skip
        self._codes.next_population()
        self._index.save_measures(found)
