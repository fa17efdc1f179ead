"""`ge report`, the data: everything the page shows, read once from the run into a `Report`
(isolation, front, every valid point, best-so-far series, operator and persona rates, failures,
lineage).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.inspection.report_bandit import bandit_html, bandit_view, token_view
from guided_evolution.inspection.report_diversity import diversity_per_generation
from guided_evolution.inspection.report_islands import report_view
from guided_evolution.inspection.report_islands_html import with_islands
from guided_evolution.inspection.run_data import (
    RunData,
    failure_groups,
    load_run_data,
    open_run_index,
    reflection_rows,
    variant_calls,
)
from guided_evolution.inspection.views_data import (
    children_per_generation,
    front_rows,
    isolation_info,
)
from guided_evolution.runstore.git_store import GitStore

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

    def as_dict(self) -> dict[str, Any]:
        decided = self.proposed - self.pending
        return {
            "name": self.name,
            "proposed": self.proposed,
            "decided": decided,
            "valid": self.valid,
            "improved": self.improved,
            "rejected": self.rejected,
            "pending": self.pending,
            "valid_rate": self.valid / decided if decided else None,
            "improved_rate": self.improved / decided if decided else None,
        }


@dataclass
class Report:
    """Everything the page shows, as plain data (also what `ge report --json` summarises)."""

    title: str
    run_dir: str
    state: str
    generated_at: float
    counts: dict[str, Any]
    objectives: list[dict[str, Any]]
    selected: list[tuple[str, str]]
    max_gen: int
    points: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    spend_axis: str | None = None
    operators: list[dict[str, Any]] = field(default_factory=list)
    personas: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    graph: list[dict[str, Any]] = field(default_factory=list)
    best_line: list[str] = field(default_factory=list)
    reflections: list[dict[str, Any]] = field(default_factory=list)
    seed_id: str | None = None
    time_span_s: float = 0.0
    isolation: dict[str, Any] = field(default_factory=dict)  # `views_data.isolation_info`
    children: list[dict[str, Any]] = field(default_factory=list)  # per generation: planned, new
    diversity: list[dict[str, Any]] = field(default_factory=list)  # report_diversity
    bandit: dict[str, Any] = field(default_factory=dict)  # report_bandit: arms per model/persona
    tokens: dict[str, Any] = field(default_factory=dict)  # report_bandit: per operator and mode
    islands: dict[str, Any] = field(default_factory=dict)  # report_islands ({}: no section)


# bandit_html, with_islands: for html_report
__all__ = ["Report", "bandit_html", "collect", "with_islands"]


def _operator_name(op: str | None, offline: bool) -> str:
    op = op or "?"
    if offline and op in ("mutation", "crossover"):
        return f"offline-{op}"
    return op


def _group_stats(
    data: RunData, events: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
    return [s.as_dict() for s in sorted(ops.values(), key=order)], [
        s.as_dict() for s in sorted(personas.values(), key=order)
    ]


def _progress(
    data: RunData, index: Any, calls: list[Any], start: float
) -> tuple[list[dict[str, Any]], str | None]:
    """One row per successful evaluation in time order: time, LLM spend so far, best so far."""
    times = [c.created_at for c in calls]
    cost = [0.0]
    tokens = [0]
    for c in calls:
        cost.append(cost[-1] + c.cost_usd)
        tokens.append(tokens[-1] + c.prompt_tokens + c.completion_tokens)
    spend_axis = "usd" if cost[-1] > 0 else ("tokens" if tokens[-1] > 0 else None)
    rows = []
    for ev in index.evaluations():
        scores = data.scores(ev.variant_id)
        if ev.status != "ok" or scores is None:
            continue
        when = (ev.started_at or start) + (ev.duration_s or 0.0)
        k = bisect.bisect_right(times, when)
        rows.append(
            {
                "variant": ev.variant_id,
                "t": max(when - start, 0.0),
                "usd": cost[k],
                "tokens": tokens[k],
                "scores": scores,
            }
        )
    rows.sort(key=lambda r: r["t"])
    best: dict[str, float] = {}
    for row in rows:
        for name, direction in data.objectives:
            value = row["scores"][name]
            old = best.get(name)
            if old is None or (value > old if direction == "max" else value < old):
                best[name] = value
        row["best"] = dict(best)
    return rows, spend_axis


def collect(run_dir: Path) -> Report:
    """Read everything the report shows from the run (read-only, no lock)."""
    with open_run_index(run_dir) as (index, resolved, paths):
        data = load_run_data(index, resolved, paths)
        cfg = resolved.config
        counts = index.counts()
        events = index.events()
        calls = index.calls()
        last = index.last_generation()
        start = min(
            [e.time for e in events] + [v.created_at for v in data.variants.values()]
            or [time.time()]
        )
        rows = front_rows(index, cfg) if data.objectives else []
        front_ids = {r["id"] for r in rows}
        progress, spend_axis = _progress(data, index, calls, start)
        rejected = [e for e in events if e.kind == "proposal_rejected"]
        operators, personas = _group_stats(data, rejected)
        best_line = data.ancestry([rows[0]["id"]]) if rows else []
        with GitStore.open(paths.repo) as store:
            _add_front_details(rows, data, index, calls, store)
        end = max([e.time for e in events] + [start])
        return Report(
            title=Path(data.run_dir).name,
            run_dir=data.run_dir,
            state=f"finished: {data.finished}"
            if data.finished
            else "running or stopped (not finished)",
            generated_at=time.time(),
            counts={
                **counts,
                "generation": last.generation if last else 0,
                "generations": cfg.evolution.generations,
                "models": ", ".join(m.model for m in cfg.llm.models),
            },
            objectives=[
                {"name": o.name, "direction": o.direction, "select": o.select}
                for o in cfg.objectives
            ],
            selected=data.objectives,
            max_gen=max((v.generation for v in data.variants.values()), default=0),
            points=_points(data, front_ids),
            front=rows,
            progress=progress,
            spend_axis=spend_axis,
            operators=operators,
            personas=personas,
            failures=failure_groups(data, rejected),
            graph=_graph(data, [r["id"] for r in rows], front_ids, set(best_line)),
            best_line=best_line,
            reflections=_best_line_reflections(index, data, best_line),
            seed_id=data.seed_id,
            time_span_s=max(end - start, progress[-1]["t"] if progress else 0.0),
            isolation=isolation_info(index),
            children=children_per_generation(index, cfg.evolution),
            diversity=diversity_per_generation(index, cfg, paths.repo),
            bandit=bandit_view(index, cfg),
            tokens=token_view(index),
            islands=report_view(index, cfg),
        )


def _points(data: RunData, front_ids: set[str]) -> list[dict[str, Any]]:
    """Every successfully evaluated variant with its selection scores, by generation and id
    (not creation order, which follows LLM reply arrival)."""
    points = []
    for v in data.variants.values():
        scores = data.scores(v.id)
        if scores is not None:
            points.append(
                {
                    "id": v.id,
                    "generation": v.generation,
                    "operator": v.operator,
                    "scores": scores,
                    "front": v.id in front_ids,
                }
            )
    return sorted(points, key=lambda p: (p["generation"], p["id"]))


def _graph(
    data: RunData, front: list[str], front_ids: set[str], on_line: set[str]
) -> list[dict[str, Any]]:
    """The front and every ancestor of it: one node per variant, breadth first."""
    graph = []
    for vid in data.ancestry(front):
        v = data.variants.get(vid)
        if v is None:
            continue
        ev = data.latest.get(vid)
        graph.append(
            {
                "id": vid,
                "generation": v.generation,
                "operator": v.operator,
                "persona": v.persona,
                "parents": [p for p in v.parents if p in data.variants],
                "front": vid in front_ids,
                "best_line": vid in on_line,
                "metrics": ev.metrics if ev else None,
            }
        )
    return graph


def _best_line_reflections(index: Any, data: RunData, best_line: list[str]) -> list[dict[str, Any]]:
    """The EoT reflections of the best line, by generation: the index's, then those kept only
    on a commit (an index rebuilt from git has no reflection rows)."""
    reflections = reflection_rows(index, data, only=set(best_line))
    seen = {r["variant"] for r in reflections}
    for vid in best_line:
        v = data.variants.get(vid)
        if v is not None and v.eot_reflection and vid not in seen:
            ev = data.latest.get(vid)
            reflections.append(
                {
                    "variant": vid,
                    "elite": None,
                    "segment": v.segment,
                    "time": v.created_at,
                    "generation": v.generation,
                    "metrics": ev.metrics if ev else None,
                    "improved": data.improved(vid),
                    "text": v.eot_reflection,
                }
            )
    reflections.sort(key=lambda r: (r["generation"] or 0, r["time"] or 0))
    return reflections


def _add_front_details(
    rows: list[dict[str, Any]], data: RunData, index: Any, calls: list[Any], store: GitStore
) -> None:
    """Add to each front row its persona, model, parents, reflection, LLM reply and (for the
    first `MAX_FRONT_DIFFS` rows) its diff against the seed."""
    seed_commit = data.variants[data.seed_id].commit_sha if data.seed_id in data.variants else None
    for n, row in enumerate(rows):
        v = data.variants[row["id"]]
        row["persona"] = v.persona
        row["model"] = v.model
        row["parents"] = v.parents
        row["reflection"] = v.eot_reflection
        own = [c for c in variant_calls(index, v, calls) if c.id == v.llm_call_id]
        row["reply"] = own[0].reply if own else None
        row["diff"] = None
        if seed_commit and v.commit_sha and n < MAX_FRONT_DIFFS and v.id != data.seed_id:
            row["diff"] = store.diff(seed_commit, v.commit_sha)
