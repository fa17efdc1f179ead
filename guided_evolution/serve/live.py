"""A run watched live: the view data of `ge report` (scores by `scoring.scored`, the Pareto front
by `selection.pareto_front` grouped as `views_data.front_groups` groups it, `failure_groups`
over `RunData`'s latest evaluations, `isolation_info`, `run_state`), kept up to date by reading
only what the run recorded since the last look.

A `LiveRun` is shared by every browser that watches the run. It looks at the run's files
(`stat`, no SQLite) at most every `CHECK_S`, and at the kernel's lock table when the lock file
changed or every `LOCK_CHECK_S`; only when something changed does it open the index read-only
(``mode=ro``, ``query_only``; no lock is taken, so the engine is never blocked) and read the
variants, evaluations and events after the last ones it read. A client says how many points it
already holds (its ``cursor``) and gets only the later ones: a 10,000-variant run's points travel
once, not at every poll.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.evolution.scoring import Scored, scored
from guided_evolution.evolution.selection import pareto_front
from guided_evolution.inspection.run_data import RunData, failure_groups, open_run_index
from guided_evolution.inspection.views_data import (
    isolation_info,
    isolation_notes,
    objective_rows,
    run_state,
)
from guided_evolution.runstore.index_schema import connect
from guided_evolution.runstore.records import META_FINISHED, META_SEED, EvaluationRecord
from guided_evolution.runstore.rundir import CONFIG_FILE, INDEX_FILE, LOCK_FILE, STOP_REQUEST
from guided_evolution.serve.runs import holder

# Only what the page shows: an ok evaluation's output tail is not read.
_VARIANTS = "SELECT rowid, id, generation, operator, branch FROM variants WHERE rowid > ? ORDER BY rowid"
_EVALUATIONS = (
    "SELECT id, variant_id, attempt, stage, status, metrics, started_at, duration_s, failure_reason,"
    " CASE WHEN status = 'ok' THEN NULL ELSE output_tail END AS output_tail"
    " FROM evaluations WHERE id > ? ORDER BY id"
)
CHECK_S = 0.5  # the files are looked at no more often than this, whatever the number of clients
LOCK_CHECK_S = 2.0  # the lock table (/proc/locks) at least this often


def _alive(pid: str) -> bool:
    if not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def lock_key(root: Path) -> tuple[Any, ...] | None:
    """What changes when the run's lock changes hands: the lock file's identity, time and the
    pid written in it, and whether that process lives."""
    lock = root / LOCK_FILE
    try:
        st = os.stat(lock)
        pid = lock.read_text(errors="replace").strip()[:64]
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, pid, _alive(pid))


def files(root: Path) -> tuple[Any, ...]:
    """The index's, its WAL's and the config's identity, size and time, and a pending `ge stop`."""
    out: list[Any] = []
    for name in (INDEX_FILE, INDEX_FILE + "-wal", CONFIG_FILE):
        try:
            st = os.stat(root / name)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    out.append((root / STOP_REQUEST).exists())
    return tuple(out)


@dataclass
class Progress:
    """The best value of each selection objective after ``n`` successful evaluations (a row is
    kept where a best improved): ``k`` is the point entry it came with."""

    k: int
    n: int
    variant: str
    best: dict[str, float]


@dataclass(frozen=True)
class Born:
    """What the page shows of a variant beside its scores (from the ``variants`` table)."""

    generation: int
    operator: str
    branch: str | None


@dataclass
class Model:
    """What has been read of the run so far."""

    data: RunData  # its ``latest`` evaluations (the report's failure groups read them)
    objectives: list[tuple[str, str]]
    index_id: Any  # the index's inode and config's stat: a rebuilt index is read again from the start
    born: dict[str, Born] = field(default_factory=dict)
    variant_cursor: int = 0  # the last ``variants`` rowid read
    eval_cursor: int = 0
    event_cursor: int = 0
    events: list[Any] = field(default_factory=list)
    entries: list[list[Any]] = field(default_factory=list)  # [id, gen, op, scores] or [id, None…]
    progress: list[Progress] = field(default_factory=list)
    ok: int = 0
    best: dict[str, float] = field(default_factory=dict)
    points: dict[str, tuple[float, ...]] = field(default_factory=dict)  # id -> its scores
    ties: dict[tuple[float, ...], set[str]] = field(default_factory=dict)  # scores -> ids
    front: tuple[list[dict[str, Any]], int] | None = None  # `front_of`, until a point changes
    failures: list[dict[str, Any]] | None = None  # until an evaluation or an event arrives

    def _drop(self, vid: str) -> bool:
        key = self.points.pop(vid, None)
        if key is None:
            return False
        self.ties[key].discard(vid)
        if not self.ties[key]:
            del self.ties[key]
        return True

    def add_evaluation(self, ev: Any) -> None:
        """One more evaluation: the variant's point is added, moved or removed."""
        vid = ev.variant_id
        self.data.latest[vid] = ev
        found = scored(vid, ev, self.objectives)
        born = self.born.get(vid)
        self.front = None
        if found is None or born is None:
            if self._drop(vid):
                self.entries.append([vid, None, None, None])
            return
        self._drop(vid)
        scores = dict(found.metrics)
        key = tuple(scores[n] for n, _ in self.objectives)
        self.points[vid] = key
        self.ties.setdefault(key, set()).add(vid)
        self.entries.append([vid, born.generation, born.operator, list(key)])
        self.ok += 1
        improved = False
        for name, direction in self.objectives:
            old, value = self.best.get(name), scores[name]
            if old is None or (value > old if direction == "max" else value < old):
                self.best[name] = value
                improved = True
        if improved:
            self.progress.append(Progress(len(self.entries) - 1, self.ok, vid, dict(self.best)))


def front_of(model: Model) -> tuple[list[dict[str, Any]], int]:
    """The Pareto front of the current points as `views_data.front_groups` shows it (variants
    with equal scores are one group, its oldest member standing for it), ordered as
    `views_data.front_rows` orders the front; and the number of variants on it.

    Each distinct point is one candidate of `selection.pareto_front` (a large run has thousands
    of ties), and the result is kept until a point changes."""
    if model.front is not None:
        return model.front
    objectives = model.objectives
    names = [n for n, _ in objectives]
    distinct = [Scored(str(n), dict(zip(names, key, strict=True))) for n, key in enumerate(model.ties)]
    keys = list(model.ties)
    groups, size = [], 0
    for s in pareto_front(distinct, objectives) if objectives else []:
        key = keys[int(s.id)]
        members = sorted(model.ties[key], key=lambda vid: (model.born[vid].generation, vid))
        first = model.born[members[0]]
        size += len(members)
        group = {"id": members[0], "same": len(members) - 1, "operator": first.operator, "generation": first.generation}
        groups.append((key[0], group))
    sign = -1.0 if objectives and objectives[0][1] == "max" else 1.0
    groups.sort(key=lambda kg: (sign * kg[0], kg[1]["generation"], kg[1]["id"]))
    model.front = ([g for _, g in groups], size)
    return model.front


class LiveRun:
    """One run as its watchers see it; thread-safe (one lock, held while reading the index)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._model: Model | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._lock_key: tuple[Any, ...] | None = None
        self._holder: str | None = None  # who held the run's lock when last looked at
        self._lock_checked = 0.0
        self._checked = 0.0
        self._head: dict[str, Any] = {}
        self.version = 0
        self._epochs = 0
        self._instance = secrets.token_hex(4)  # a restarted server's counts are not continued

    @property
    def epoch(self) -> str:
        """What the client's ``cursor`` counts in: this server's reading of this index."""
        return f"{self._instance}.{self._epochs}"

    def view(self, cursor: int, epoch: str | None = None) -> dict[str, Any]:
        """The run's state now and the points after the client's first ``cursor`` of ``epoch``
        (all of them, with ``reset``, when the client's count cannot be continued: another epoch,
        as after the index was rebuilt, or a count beyond what there is)."""
        with self._lock:
            self._refresh()
            assert self._model is not None
            model, head = self._model, dict(self._head)
            entries = model.entries
            reset = epoch != self.epoch or not 0 <= cursor <= len(entries)
            start = 0 if reset else cursor
            head.update(
                version=self.version,
                epoch=self.epoch,
                reset=reset,
                cursor=len(entries),
                points=entries[start:],
                progress=[
                    {"n": p.n, "variant": p.variant, "best": p.best}
                    for p in model.progress
                    if p.k >= start
                ],
            )
        return head

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._model is not None and now - self._checked < CHECK_S:
            return
        self._checked = now
        key = lock_key(self.root)
        # The kernel's lock table is read when the lock may have changed hands, and every
        # LOCK_CHECK_S (a process may release the lock and live on).
        if key != self._lock_key or now - self._lock_checked >= LOCK_CHECK_S:
            self._lock_key, self._holder = key, holder(self.root) if key else None
            self._lock_checked = now
        current = (*files(self.root), self._holder)
        if current == self._stamp and self._model is not None:
            return
        with open_run_index(self.root) as (index, resolved, paths):
            model = self._model
            identity = (current[0][0] if current[0] else None, current[2])  # index inode, config
            if model is None or model.index_id != identity:
                model = self._fresh(index, resolved, paths, current)
                self._epochs += 1
            self._read(model, index)
            self._head = self._summary(model, index, paths)
            self._model = model
        self._stamp = current
        self.version += 1

    @staticmethod
    def _fresh(index: Any, resolved: Any, paths: Any, current: tuple[Any, ...]) -> Model:
        data = RunData(
            run_dir=str(paths.root),
            config=resolved.config,
            seed_id=index.get_meta(META_SEED),
            variants={},
            latest={},
            finished=None,
        )
        return Model(data, data.objectives, (current[0][0] if current[0] else None, current[2]))

    @staticmethod
    def _read(model: Model, index: Any) -> None:
        """The variants and evaluations recorded since the last read, in one read transaction
        (a snapshot: an evaluation is never read before its variant), then the new events."""
        conn, _version = connect(index.path, True, 10.0)
        try:
            conn.row_factory = None  # plain tuples: the columns are the queries' own
            conn.execute("BEGIN")
            for rowid, vid, generation, operator, branch in conn.execute(_VARIANTS, (model.variant_cursor,)):
                model.born[vid] = Born(generation, operator, branch)
                model.variant_cursor = rowid
            evaluations = conn.execute(_EVALUATIONS, (model.eval_cursor,)).fetchall()
            conn.execute("COMMIT")
        finally:
            conn.close()
        for eid, vid, attempt, stage, status, metrics, started, duration, reason, tail in evaluations:
            metrics = json.loads(metrics) if metrics is not None else None
            model.add_evaluation(
                EvaluationRecord(vid, status, stage, attempt, metrics, started, duration, reason, tail, eid)
            )
            model.eval_cursor = eid
        for event in index.events(after_id=model.event_cursor):
            model.events.append(event)
            model.event_cursor = event.id
            model.failures = None
        if evaluations:
            model.failures = None
        model.data.finished = index.get_meta(META_FINISHED)
        model.data.seed_id = model.data.seed_id or index.get_meta(META_SEED)

    def _summary(self, model: Model, index: Any, paths: Any) -> dict[str, Any]:
        data, cfg = model.data, model.data.config
        last = index.last_generation()
        groups, size = front_of(model)
        info = isolation_info(index)
        if model.failures is None:
            rejected = [e for e in model.events if e.kind == "proposal_rejected"]
            model.failures = [g.to_json() for g in failure_groups(data, rejected)]
        return {
            "run": paths.root.name,
            "run_dir": str(paths.root),
            "state": run_state(index, paths.root, data.finished, lambda _root: self._holder).to_json(),
            "counts": {
                **index.counts(),
                "generation": last.generation if last else 0,
                "generations": cfg.evolution.generations,
            },
            "models": [m.model for m in cfg.llm.models],
            "objectives": [o.to_json() for o in objective_rows(cfg)],
            "selected": [name for name, _ in data.objectives],
            "seed": data.seed_id,
            "front": groups,
            "front_size": size,
            "failures": model.failures,
            "isolation": info.isolation,
            "isolation_notes": isolation_notes(info),
        }
