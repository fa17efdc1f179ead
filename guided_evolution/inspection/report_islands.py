"""Islands and the mating-preference gene, for `ge status`, `ge best --island`, `ge lineage` and
`ge report`: the data (from the index only) and `ge status`'s lines.

A run has islands when its config asks for more than one or its records carry them (a variant's
``island``, a checkpoint's ``islands``); islands are numbered from 0. A variant *lived on* island
K when it was born there or appears in one of K's checkpointed populations (the seed is in every
island's first population; a migrant joins its destination's). A *migrant* appears in an island
other than its birth island: its moves come from the ``migration`` events, else (events lost)
from the first checkpoint that shows it there. The gene's statistics are over each finished
generation's population (its checkpoint), or, for a run without checkpoints, over the children
born in each generation.

Runs without islands or genes get None / [] / {}: their report has no such section. The
report's sections are drawn by `report_islands_html`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.errors import GeError
from guided_evolution.evolution.scoring import Scored, scored
from guided_evolution.inspection.json_view import INLINED, JsonView, renamed
from guided_evolution.runstore.records import EvaluationRecord

STATUS_GENE_GENERATIONS = 5  # `ge status` text: the gene of the last few generations


# --------------------------------------------------------------------------- the views


@dataclass(frozen=True)
class IslandBest(JsonView):
    """An objective's best value on an island, and its variant."""

    value: float
    id: str


@dataclass(frozen=True)
class FrontMember(JsonView):
    """A member of an island's front and its selection scores."""

    id: str
    scores: dict[str, float]


@dataclass(frozen=True)
class IslandRow(JsonView):
    """One island's population in one checkpoint: its size, valid members, front and bests
    ({objective: `IslandBest`})."""

    island: int
    population: int
    valid: int
    front: int
    front_members: list[FrontMember]
    best: dict[str, IslandBest]


@dataclass(frozen=True)
class IslandGeneration(JsonView):
    """A checkpoint with islands: one row per island."""

    generation: int
    islands: list[IslandRow]


@dataclass(frozen=True)
class IslandView(JsonView):
    """The run's islands: each checkpoint's rows, the latest, and the ``migration`` events' data."""

    count: int
    generation: int | None
    latest: list[IslandRow]
    per_generation: list[IslandGeneration]
    migrations: list[dict[str, Any]]
    last_migration: dict[str, Any] | None


@dataclass(frozen=True)
class GeneRow(JsonView):
    """The mating-preference gene in one generation: over its ``population`` or the children
    ``born`` in it (``source``)."""

    generation: int
    source: str
    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float


@dataclass(frozen=True)
class IslandStatus(JsonView):
    """`ge status`'s keys: the islands (None without) and the gene per generation ([] without)."""

    islands: IslandView | None
    mating_preference: list[GeneRow]


@dataclass(frozen=True)
class IslandReport(JsonView):
    """What the report's islands and gene sections draw."""

    status: IslandStatus = field(metadata=INLINED)
    objectives: list[tuple[str, str]]


@dataclass(frozen=True)
class Move(JsonView):
    """A variant's move from one island to another at a generation."""

    from_: int | None = field(metadata=renamed("from"))
    to: int | None
    generation: int | None


@dataclass(frozen=True)
class IslandMark(JsonView):
    """A lineage node's birth island and its moves."""

    island: int | None
    migrations: list[Move]


# --------------------------------------------------------------------------- data


def _checkpoints(index: Any) -> list[Any]:
    """Every finished generation's checkpoint, oldest first."""
    last = index.last_generation()
    if last is None:
        return []
    found = (index.get_generation(g) for g in range(last.generation + 1))
    return [rec for rec in found if rec is not None]


def island_count(index: Any, cfg: GeConfig, variants: list[Any] | None = None) -> int:
    """How many islands the run has (0 when it has none): from its config and its records."""
    extent = index.island_extent() if variants is None else None
    if extent is not None:  # two aggregates in the index, not every variant and checkpoint
        born, stored = extent
    else:
        variants = index.variants() if variants is None else variants
        born = max((v.island for v in variants if v.island is not None), default=-1) + 1
        stored = max((len(rec.islands) for rec in _checkpoints(index)), default=0)
    count = max(cfg.evolution.islands.count, born, stored)
    return count if count > 1 or born > 0 else 0


def _no_island(k: int, count: int) -> GeError:
    if not count:
        return GeError(
            "this run has no islands",
            "leave out --island (islands run with `[evolution.islands] count = K` > 1 in ge.toml)",
        )
    return GeError(
        f"island {k} does not exist in this run (islands 0–{count - 1})",
        f"pass --island 0 to {count - 1}",
    )


def island_members(index: Any, cfg: GeConfig, k: int) -> set[str]:
    """The ids of the variants that lived on island ``k``; a GeError naming the valid islands
    when ``k`` does not exist (or the run has none)."""
    variants = index.variants()
    count = island_count(index, cfg, variants)
    if not 0 <= k < count:
        raise _no_island(k, count)
    members = {v.id for v in variants if v.island == k}
    for rec in _checkpoints(index):
        if k < len(rec.islands):
            members.update(rec.islands[k])
    return members


def _best(valid: list[Scored], objectives: list[tuple[str, str]]) -> dict[str, IslandBest]:
    """Per objective the best value and its variant (ties: the smallest id)."""
    out = {}
    for name, direction in objectives:
        sign = -1.0 if direction == "max" else 1.0
        top = min(valid, key=lambda s: (sign * s.metrics[name], s.id), default=None)
        if top is not None:
            out[name] = IslandBest(top.metrics[name], top.id)
    return out


def _island_row(
    k: int,
    members: list[str],
    latest: dict[str, EvaluationRecord],
    objectives: list[tuple[str, str]],
) -> IslandRow:
    """One island's population in one checkpoint: its size, valid members, front and bests."""
    from guided_evolution.evolution.selection import pareto_front  # deap: only when needed

    valid = [s for vid in members if (s := scored(vid, latest.get(vid), objectives))]
    front = pareto_front(valid, objectives) if valid and objectives else []
    return IslandRow(
        island=k,
        population=len(members),
        valid=len(valid),
        front=len(front),
        front_members=sorted(
            (FrontMember(s.id, dict(s.metrics)) for s in front), key=lambda r: r.id
        ),
        best=_best(valid, objectives),
    )


def island_view(index: Any, cfg: GeConfig) -> IslandView | None:
    """The run's islands (None without): ``count``; ``per_generation`` (each checkpoint with
    islands: one row per island); ``latest`` (the last of them) and its ``generation``;
    ``migrations`` (every migration event's data) and ``last_migration``."""
    count = island_count(index, cfg)
    if not count:
        return None
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    latest = index.latest_evaluations()
    per_generation = [
        IslandGeneration(
            rec.generation,
            [_island_row(k, m, latest, objectives) for k, m in enumerate(rec.islands)],
        )
        for rec in _checkpoints(index)
        if rec.islands
    ]
    migrations = [e.data for e in index.events("migration")]
    return IslandView(
        count=count,
        generation=per_generation[-1].generation if per_generation else None,
        latest=per_generation[-1].islands if per_generation else [],
        per_generation=per_generation,
        migrations=migrations,
        last_migration=migrations[-1] if migrations else None,
    )


def _spread(generation: int, source: str, values: list[float]) -> GeneRow:
    q1, _, q3 = (
        statistics.quantiles(values, n=4, method="inclusive")
        if len(values) > 1
        else [values[0]] * 3
    )
    median = statistics.median(values)
    return GeneRow(generation, source, len(values), median, q1, q3, min(values), max(values))


def gene_per_generation(index: Any, variants: list[Any] | None = None) -> list[GeneRow]:
    """The mating-preference gene per generation ([] when no variant carries it): ``n``,
    ``median``, ``q1``, ``q3``, ``min``, ``max`` over the generation's population (``source``
    "population"), or over its children for a run without checkpoints (``source`` "born")."""
    if variants is None and not index.carries_gene():
        return []
    variants = index.variants() if variants is None else variants
    gene = {v.id: v.mating_preference for v in variants if v.mating_preference is not None}
    if not gene:
        return []
    rows = []
    for rec in _checkpoints(index):
        values = [gene[vid] for vid in rec.population if vid in gene]
        if values:
            rows.append(_spread(rec.generation, "population", values))
    if rows:
        return rows
    born: dict[int, list[float]] = {}
    for v in variants:
        if v.id in gene:
            born.setdefault(v.generation, []).append(gene[v.id])
    return [_spread(g, "born", born[g]) for g in sorted(born)]


def status_view(index: Any, cfg: GeConfig) -> IslandStatus:
    """`ge status`'s keys: ``islands`` (`island_view`, None without) and ``mating_preference``
    (`gene_per_generation`, [] without)."""
    return IslandStatus(island_view(index, cfg), gene_per_generation(index))


def _moves_of(events: list[dict[str, Any]], vid: str) -> list[Move]:
    return [
        Move(m.get("from"), m.get("to"), e.get("generation"))
        for e in events
        for m in e.get("moves") or []
        if vid in (m.get("variants") or [])
    ]


def lineage_marks(index: Any, cfg: GeConfig, ids: list[str]) -> dict[str, IslandMark]:
    """Each stored variant's birth island and its migrations (from the events, else from the
    checkpoints); {} for a run without islands."""
    if not island_count(index, cfg):
        return {}
    events = [e.data for e in index.events("migration")]
    checkpoints = [rec for rec in _checkpoints(index) if rec.generation > 0 and rec.islands]
    marks = {}
    for vid in ids:
        v = index.get_variant(vid)
        island = v.island if v is not None else None
        moves = _moves_of(events, vid)
        reached = {m.to for m in moves}
        for rec in checkpoints:  # a migrant the events do not tell of (e.g. an index rebuilt)
            for k, members in enumerate(rec.islands):
                if vid in members and k != island and k not in reached:
                    if island is not None:
                        moves.append(Move(island, k, rec.generation))
                    reached.add(k)
        marks[vid] = IslandMark(island, moves)
    return marks


def migration_words(moves: list[Move]) -> str:
    """``migrated 0→1 at gen 4, 1→2 at gen 8`` ('' for none)."""
    parts = [f"{m.from_}→{m.to} at gen {m.generation}" for m in moves]
    return "migrated " + ", ".join(parts) if parts else ""


# --------------------------------------------------------------------------- text (ge status)


def _v(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _move_text(moves: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{m.get('from')}→{m.get('to')} {', '.join(m.get('variants') or []) or '-'}" for m in moves
    )


def island_lines(data: IslandStatus) -> list[str]:
    """`ge status`'s lines: each island's latest population, front and bests, the last
    migration, and the gene of the last few generations ([] for a run with neither)."""
    lines = []
    view = data.islands
    if view:
        gen = view.generation
        lines.append(f"islands {view.count}" + (f" (generation {gen})" if gen is not None else ""))
        for row in view.latest:
            best = "  ".join(f"{name} {_v(b.value)} ({b.id})" for name, b in row.best.items())
            lines.append(
                f"  island {row.island}  population {row.population}  front {row.front}"
                + (f"  best {best}" if best else "")
            )
        last = view.last_migration
        lines.append(
            f"  last migration: generation {last.get('generation')}  {_move_text(last.get('moves') or [])}"
            if last
            else "  no migration yet"
        )
    gene = data.mating_preference
    if gene:
        cells = "  ".join(
            f"{r.generation}: {r.median:.3f} [{r.q1:.3f}–{r.q3:.3f}]"
            for r in gene[-STATUS_GENE_GENERATIONS:]
        )
        lines.append(f"mating preference per generation (median [IQR])  {cells}")
    return lines


def report_view(index: Any, cfg: GeConfig) -> IslandReport | None:
    """What the report's sections need (None for a run with neither islands nor genes)."""
    view = status_view(index, cfg)
    if view.islands is None and not view.mating_preference:
        return None
    return IslandReport(view, [(o.name, o.direction) for o in cfg.selected_objectives])
