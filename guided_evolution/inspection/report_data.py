"""`ge report`, the data: everything the page shows, read once from the run into a `Report`
(isolation, front, every valid point, best-so-far series, operator and persona rates, failures,
lineage).
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.evolution.operators import registry
from guided_evolution.inspection.json_view import JsonView
from guided_evolution.inspection.report_bandit import (
    BanditView,
    Latest,
    TokenView,
    bandit_html,
    bandit_view,
    token_view,
)
from guided_evolution.inspection.report_diversity import DiversityRow, diversity_per_generation
from guided_evolution.inspection.report_islands import IslandReport, report_view
from guided_evolution.inspection.report_islands_html import with_islands
from guided_evolution.inspection.run_data import (
    FailureGroup,
    ReflectionRow,
    RunData,
    failure_groups,
    open_run_index,
    reflection_rows,
)
from guided_evolution.inspection.view_models import (
    ChildrenRow,
    FrontRow,
    IsolationInfo,
    Metrics,
    Objective,
)
from guided_evolution.inspection.views_data import (
    children_per_generation,
    front_rows,
    isolation_info,
    objective_rows,
)
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.records import META_FINISHED, META_SEED

MAX_FRONT_DIFFS = 60


@dataclass
class GroupStats:
    """Children of one operator or persona: how many were proposed, valid, better than a parent."""

    name: str
    proposed: int = 0
    valid: int = 0
    improved: int = 0
    rejected: int = 0
    pending: int = 0  # not evaluated yet: left out of the rates

    def row(self) -> GroupRow:
        """The counts and the rates over the decided children (None before one is decided)."""
        decided = self.proposed - self.pending
        return GroupRow(
            name=self.name,
            proposed=self.proposed,
            decided=decided,
            valid=self.valid,
            improved=self.improved,
            rejected=self.rejected,
            pending=self.pending,
            valid_rate=self.valid / decided if decided else None,
            improved_rate=self.improved / decided if decided else None,
        )


@dataclass(frozen=True)
class GroupRow(JsonView):
    """The report's row of one operator or persona."""

    name: str
    proposed: int
    decided: int
    valid: int
    improved: int
    rejected: int
    pending: int
    valid_rate: float | None
    improved_rate: float | None


@dataclass(frozen=True, slots=True)
class ProgressRow(JsonView):
    """A successful evaluation: seconds since the start, LLM spend so far, its scores and the
    best score of each objective so far."""

    variant: str
    t: float
    usd: float
    tokens: int
    scores: dict[str, float]
    best: dict[str, float]
    calls: int = 0  # LLM calls made before it finished


@dataclass(frozen=True, slots=True)
class Point(JsonView):
    """A successfully evaluated variant on the front plot."""

    id: str
    generation: int
    operator: str
    scores: dict[str, float]
    front: bool


@dataclass(frozen=True)
class GraphNode(JsonView):
    """A variant in the lineage drawing (the front and its ancestors)."""

    id: str
    generation: int
    operator: str
    persona: str | None
    parents: list[str]
    front: bool
    best_line: bool
    metrics: Metrics | None


@dataclass(frozen=True)
class FrontDetails(FrontRow):
    """A front row with what the report's table adds: persona, model, parents, reflection,
    the LLM reply and (for the first `MAX_FRONT_DIFFS`) the diff against the seed."""

    persona: str | None = None
    model: str | None = None
    parents: list[str] = field(default_factory=list)
    reflection: str | None = None
    reply: str | None = None
    diff: str | None = None


@dataclass
class Report:
    """Everything the page shows, as plain data (also what `ge report --json` summarises)."""

    title: str
    run_dir: str
    state: str
    generated_at: float
    counts: dict[str, int | float | str]  # the index's counters, generation(s) and models
    objectives: list[Objective]
    selected: list[tuple[str, str]]
    max_gen: int
    isolation: IsolationInfo
    bandit: BanditView  # arms per model and operator/persona
    tokens: TokenView  # per operator and mode
    points: list[Point] = field(default_factory=list)
    front: list[FrontDetails] = field(default_factory=list)
    progress: list[ProgressRow] = field(default_factory=list)
    spend_axis: str | None = None
    operators: list[GroupRow] = field(default_factory=list)
    personas: list[GroupRow] = field(default_factory=list)
    failures: list[FailureGroup] = field(default_factory=list)
    graph: list[GraphNode] = field(default_factory=list)
    best_line: list[str] = field(default_factory=list)
    reflections: list[ReflectionRow] = field(default_factory=list)
    seed_id: str | None = None
    time_span_s: float = 0.0
    children: list[ChildrenRow] = field(default_factory=list)  # per generation: planned, new
    diversity: list[DiversityRow] = field(default_factory=list)
    islands: IslandReport | None = None  # None: no islands or genes, no section
    lineage_of: int = 0  # front variants whose lineage `graph` holds (one per distinct point)
    strategy: str = "evolution"  # [evolution] strategy: "evolution" or "best_of_n"


# bandit_html, with_islands: for html_report
__all__ = ["Report", "bandit_html", "collect", "with_islands"]


def run_label(rep: Report) -> str:
    """How a comparison names a run: its strategy, then its directory's name."""
    kind = "best_of_n control" if rep.strategy == "best_of_n" else rep.strategy
    return f"{kind} ({rep.title})"


@dataclass(frozen=True)
class CompareRow(JsonView):
    """One selection objective's best so far in each run after the same number of evaluations."""

    objective: str
    direction: str
    run: float | None
    control: float | None


@dataclass
class Comparison:
    """A control run set beside the report's run (`ge report RUN --compare CONTROL`)."""

    control: Report
    evaluations: int  # the shorter run's count of successful evaluations
    rows: list[CompareRow]


def _objectives_differ(rep: Report, control: Report) -> str | None:
    """What differs between the two runs' selection objectives (names, then directions)."""
    mine, theirs = dict(rep.selected), dict(control.selected)
    if set(mine) != set(theirs):
        only = lambda a, b: ", ".join(sorted(set(a) - set(b))) or "none"  # noqa: E731
        return (
            f"objectives differ: only {rep.title} has {only(mine, theirs)}; "
            f"only {control.title} has {only(theirs, mine)}"
        )
    for name, direction in rep.selected:
        if theirs[name] != direction:
            return f"objective {name} is {direction} in {rep.title} but {theirs[name]} in {control.title}"
    return None


def compare(rep: Report, control: Report) -> Comparison:
    """The two runs' best values at the shorter run's count of successful evaluations; refused
    (`GeError`) when their selection objectives differ in name or direction."""
    differ = _objectives_differ(rep, control)
    if differ is not None:
        raise GeError(
            f"cannot compare {rep.title} with {control.title}: {differ}",
            "compare runs of the same seed's objectives (a best_of_n control of the same config)",
        )
    n = min(len(rep.progress), len(control.progress))
    at = lambda r, name: r.progress[n - 1].best.get(name) if n else None  # noqa: E731
    rows = [CompareRow(name, d, at(rep, name), at(control, name)) for name, d in rep.selected]
    return Comparison(control, n, rows)


def _operator_name(op: str | None, offline: bool) -> str:
    op = op or "?"
    if not offline:
        return op
    try:
        return registry.counterpart(op).name  # an offline run's mutation: offline-mutation
    except ValueError:  # the seed, EoT, fix, an operator not registered here: its own name
        return op


def _group_stats(data: RunData, events: list[Any]) -> tuple[list[GroupRow], list[GroupRow]]:
    ops: dict[str, GroupStats] = {}
    personas: dict[str, GroupStats] = {}
    for v in data.variants.values():
        if v.is_seed:
            continue
        for key, table in ((v.operator, ops), (v.persona or "(none)", personas)):
            stats = table.setdefault(key, GroupStats(key))
            stats.proposed += 1
            if v.status in ("pending", "evaluating"):
                stats.pending += 1
            elif data.scores(v.id) is not None:
                stats.valid += 1
                stats.improved += data.improved(v.id)
    offline = data.config.llm.offline
    for event in events:
        name = _operator_name(event.data.get("operator"), offline)
        stats = ops.setdefault(name, GroupStats(name))
        stats.proposed += 1
        stats.rejected += 1
    order = lambda s: (-s.proposed, s.name)  # noqa: E731
    return [s.row() for s in sorted(ops.values(), key=order)], [
        s.row() for s in sorted(personas.values(), key=order)
    ]


def _progress(
    data: RunData, index: Any, calls: list[Any], start: float
) -> tuple[list[ProgressRow], str | None]:
    """One row per successful evaluation in time order: time, LLM spend so far, best so far."""
    times = [c.created_at for c in calls]
    cost = [0.0]
    tokens = [0]
    for c in calls:
        cost.append(cost[-1] + c.cost_usd)
        tokens.append(tokens[-1] + c.prompt_tokens + c.completion_tokens)
    spend_axis = "usd" if cost[-1] > 0 else ("tokens" if tokens[-1] > 0 else None)
    found = []
    for ev in index.evaluation_lines():  # the columns only: no metrics or output parsed
        scores = data.scores(ev["variant_id"])
        if ev["status"] != "ok" or scores is None:
            continue
        when = (ev["started_at"] or start) + (ev["duration_s"] or 0.0)
        k = bisect.bisect_right(times, when)
        found.append((max(when - start, 0.0), ev["variant_id"], cost[k], tokens[k], scores, k))
    found.sort(key=lambda r: r[0])
    rows = []
    best: dict[str, float] = {}  # copied when it changes: rows between improvements share it
    for t, vid, usd, spent, scores, calls in found:
        for name, direction in data.objectives:
            value = scores[name]
            old = best.get(name)
            if old is None or (value > old if direction == "max" else value < old):
                best = {**best, name: value}
        rows.append(ProgressRow(vid, t, usd, spent, scores, best, calls))
    return rows, spend_axis


def _counts(index: Any, cfg: Any) -> dict[str, int | float | str]:
    """The index's counters, the generation reached and configured, and the models."""
    last = index.last_generation()
    return {
        **index.counts(),
        "generation": last.generation if last else 0,
        "generations": cfg.evolution.generations,
        "models": ", ".join(m.model for m in cfg.llm.models),
    }


def collect(run_dir: Path) -> Report:
    """Read everything the report shows from the run (read-only, no lock)."""
    with open_run_index(run_dir) as (index, resolved, paths):
        data = _lean_run_data(index, resolved, paths)
        cfg = resolved.config
        events = index.events()
        calls = index.call_costs()  # no messages: a long run's prompts are never loaded
        start = min(
            [e.time for e in events] + [v.created_at for v in data.variants.values()]
            or [time.time()]
        )
        rows = front_rows(index, cfg, read=data.latest) if data.objectives else []
        front_ids = {r.id for r in rows}
        progress, spend_axis = _progress(data, index, calls, start)
        rejected = [e for e in events if e.kind == "proposal_rejected"]
        operators, personas = _group_stats(data, rejected)
        best_line = data.ancestry([rows[0].id]) if rows else []
        lineage_of = _distinct_front(data, rows)
        drawn = data.ancestry(lineage_of)
        detail = _detailed(data, index, [*(r.id for r in rows), *best_line, data.seed_id or ""], drawn)
        with GitStore.open(paths.repo) as store:
            front = _front_details(rows, detail, index, store)
        end = max([e.time for e in events] + [start])
        return Report(
            title=Path(data.run_dir).name,
            run_dir=data.run_dir,
            state=f"finished: {data.finished}" if data.finished else "running or stopped (not finished)",
            generated_at=time.time(),
            counts=_counts(index, cfg),
            objectives=objective_rows(cfg),
            selected=data.objectives,
            max_gen=max((v.generation for v in data.variants.values()), default=0),
            isolation=isolation_info(index),
            bandit=bandit_view(index, cfg),
            tokens=token_view(index),
            points=_points(data, front_ids),
            front=front,
            progress=progress,
            spend_axis=spend_axis,
            operators=operators,
            personas=personas,
            failures=failure_groups(replace(data, latest=index.latest_failed()), rejected),
            graph=_graph(detail, lineage_of, front_ids, set(best_line)),
            lineage_of=len(lineage_of),
            best_line=best_line,
            reflections=_best_line_reflections(index, detail, best_line),
            seed_id=data.seed_id,
            time_span_s=max(end - start, progress[-1].t if progress else 0.0),
            children=children_per_generation(index, cfg.evolution),
            diversity=diversity_per_generation(index, cfg, paths.repo),
            islands=report_view(index, cfg),
            strategy=cfg.evolution.strategy,
        )


def _lean_run_data(index: Any, resolved: Any, paths: Any) -> RunData:
    """The run's variants without their text columns and each latest evaluation's status and
    selection objectives only (``_detailed`` adds the whole records of the few the report
    shows): a large run is not loaded whole."""
    names = [o.name for o in resolved.config.selected_objectives]
    return RunData(
        run_dir=str(paths.root),
        config=resolved.config,
        seed_id=index.get_meta(META_SEED),
        variants={v.id: v for v in index.variant_briefs()},
        latest={vid: Latest(status, values) for vid, status, values in index.latest_values(names)},
        finished=index.get_meta(META_FINISHED),
    )


def _detailed(data: RunData, index: Any, shown: list[str], drawn: list[str]) -> RunData:
    """``data`` plus the records of ``shown`` and evaluations of ``shown`` + ``drawn``, in place."""
    wanted = [v for v in shown if v]
    data.latest.update(index.latest_of([*wanted, *drawn]))
    data.variants.update(index.variants_of(wanted))
    return data


def _points(data: RunData, front_ids: set[str]) -> list[Point]:
    """Every successfully evaluated variant with its selection scores, by generation and id
    (not creation order, which follows LLM reply arrival)."""
    points = []
    for v in data.variants.values():
        scores = data.scores(v.id)
        if scores is not None:
            points.append(Point(v.id, v.generation, v.operator, scores, v.id in front_ids))
    return sorted(points, key=lambda p: (p.generation, p.id))


def _distinct_front(data: RunData, rows: list[FrontRow]) -> list[str]:
    """One front variant per distinct point of the front (the first of those that tie in every
    selection objective): whose lineage the report draws. A large run's front can hold thousands
    of variants with the same scores; their lineages would fill megabytes."""
    seen: set[tuple[float, ...]] = set()
    out = []
    for r in rows:
        scores = data.scores(r.id) or {}
        key = tuple(scores.get(name, math.nan) for name, _ in data.objectives)
        if key not in seen or not scores:
            seen.add(key)
            out.append(r.id)
    return out


def _graph(
    data: RunData, front: list[str], front_ids: set[str], on_line: set[str]
) -> list[GraphNode]:
    """The front and every ancestor of it: one node per variant, breadth first."""
    graph = []
    for vid in data.ancestry(front):
        v = data.variants.get(vid)
        if v is None:
            continue
        ev = data.latest.get(vid)
        graph.append(
            GraphNode(
                id=vid,
                generation=v.generation,
                operator=v.operator,
                persona=v.persona,
                parents=[p for p in v.parents if p in data.variants],
                front=vid in front_ids,
                best_line=vid in on_line,
                metrics=ev.metrics if ev else None,
            )
        )
    return graph


def _best_line_reflections(index: Any, data: RunData, best_line: list[str]) -> list[ReflectionRow]:
    """The EoT reflections of the best line, by generation: the index's, then those kept only
    on a commit (an index rebuilt from git has no reflection rows)."""
    reflections = reflection_rows(index, data, only=set(best_line))
    seen = {r.variant for r in reflections}
    for vid in best_line:
        v = data.variants.get(vid)
        if v is not None and v.eot_reflection and vid not in seen:
            ev = data.latest.get(vid)
            reflections.append(
                ReflectionRow(
                    variant=vid,
                    elite=None,
                    segment=v.segment,
                    time=v.created_at,
                    generation=v.generation,
                    metrics=ev.metrics if ev else None,
                    improved=data.improved(vid),
                    text=v.eot_reflection,
                )
            )
    reflections.sort(key=lambda r: (r.generation or 0, r.time or 0))
    return reflections


def _front_details(
    rows: list[FrontRow], data: RunData, index: Any, store: GitStore
) -> list[FrontDetails]:
    """Each front row with its persona, model, parents, reflection, LLM reply and (for the
    first `MAX_FRONT_DIFFS` rows) its diff against the seed."""
    seed_commit = data.variants[data.seed_id].commit_sha if data.seed_id in data.variants else None
    details = []
    for n, row in enumerate(rows):
        v = data.variants[row.id]
        own = index.get_call(v.llm_call_id) if v.llm_call_id else None
        diff = None
        if seed_commit and v.commit_sha and n < MAX_FRONT_DIFFS and v.id != data.seed_id:
            diff = store.diff(seed_commit, v.commit_sha)
        details.append(
            FrontDetails(
                **vars(row),
                persona=v.persona,
                model=v.model,
                parents=v.parents,
                reflection=v.eot_reflection,
                reply=own.reply if own else None,
                diff=diff,
            )
        )
    return details
