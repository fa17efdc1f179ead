"""The typed views of `ge status`, `ge best`, `ge show`, `ge lineage`, `ge diff` and `ge log`
(`views_data` builds them, `terminal` renders them, `--json` prints their `to_json()`: the
fields' order is the JSON's key order).

``dict[str, Any]`` is left only where the data is the run's own and open-ended: a variant's
metrics, an isolation record and the events' data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from guided_evolution.inspection.json_view import INLINED, OMITTED_IF_NONE, JsonView, renamed
from guided_evolution.inspection.report_bandit import BanditView, TokenView
from guided_evolution.inspection.report_diversity import DiversityRow
from guided_evolution.inspection.report_islands import IslandMark, IslandStatus
from guided_evolution.inspection.run_data import FailureGroup, ReflectionRow

Metrics = dict[str, Any]  # a variant's metrics, as its evaluator wrote them


@dataclass(frozen=True)
class Objective(JsonView):
    """An objective of the config: selected, or reported only."""

    name: str
    direction: str
    select: bool


@dataclass(frozen=True)
class FrontRow(JsonView):
    """A variant on the Pareto front."""

    id: str
    branch: str | None
    generation: int | None
    operator: str | None
    metrics: Metrics


Row = TypeVar("Row", bound=FrontRow)


@dataclass(frozen=True)
class FrontGroup(Generic[Row]):
    """Front rows with equal values on every selection objective, shown as one: the oldest
    (earliest generation, then id) and the ids of the others, oldest first."""

    row: Row
    same: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return 1 + len(self.same)


@dataclass(frozen=True)
class BestView(JsonView):
    """`ge best`: the front (of one island's variants, with ``--island``)."""

    run_dir: str
    objectives: list[Objective]
    front: list[FrontRow]
    island: int | None = field(default=None, metadata=OMITTED_IF_NONE)


@dataclass(frozen=True)
class RunState(JsonView):
    """Live (a process holds the lock), finished or stopped; why, and what to do."""

    state: str
    pid: Any  # the lock holder's pid as `doctor.lock_holder` reads it
    stop_reason: str | None
    fix: str | None


@dataclass(frozen=True)
class IsolationInfo(JsonView):
    """The isolation the evaluations ran under: the latest record (with ``time`` and
    ``uncontained``), every record, the changes between starts, starts before records."""

    isolation: dict[str, Any] | None
    isolation_history: list[dict[str, Any]]
    isolation_changes: list[str]
    isolation_unrecorded_starts: int
    evaluator_reloads: list[dict[str, Any]] = field(default_factory=list)  # `--reload-evaluator`


@dataclass(frozen=True)
class ChildrenRow(JsonView):
    """Children of one generation: configured, planned (None: no record), new (None: running)."""

    generation: int
    configured: int
    planned: int | None
    new: int | None


@dataclass(frozen=True)
class StatusView(JsonView):
    """`ge status`: progress counters, state, diversity, isolation, spend and islands."""

    run_dir: str
    generation: int
    generations: int
    children: int
    evaluated: int
    failed: int
    pending: int
    llm_calls: int
    llm_errors: int
    llm_retries: int  # attempts beyond each call's first (faults retried, errors or not)
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    finished: bool
    run_state: RunState = field(metadata=INLINED)
    models: list[str]
    children_per_generation: list[ChildrenRow]
    diversity: list[DiversityRow]
    isolation_info: IsolationInfo = field(metadata=INLINED)
    tokens: TokenView
    bandit: BanditView
    islands: IslandStatus = field(metadata=INLINED)


@dataclass(frozen=True)
class CallRow(JsonView):
    """One LLM call that made a variant."""

    id: int
    purpose: str
    model: str
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float | None


@dataclass(frozen=True)
class VariantView(JsonView):
    """`ge show`: everything about one variant."""

    id: str
    branch: str | None
    commit: str | None
    generation: int
    parents: list[str]
    operator: str
    segment: str | None
    prompt_name: str | None
    persona: str | None
    model: str | None
    temperature: float | None
    status: str
    metrics: Metrics | None
    failure_reason: str | None
    output_tail: str | None
    feedback: str | None
    duration_s: float | None
    prompt: str | None
    reply: str | None
    tokens: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    calls: list[CallRow]
    parent_metrics: dict[str, Metrics | None]
    eot_reflection: str | None
    diff_base: str | None
    diff: str


@dataclass(frozen=True)
class LineageNode(JsonView):
    """An ancestor in `ge lineage` (with islands: its birth island and migrations)."""

    missing: ClassVar[bool] = False
    id: str
    generation: int
    operator: str
    persona: str | None
    model: str | None
    segment: str | None
    status: str
    parents: list[str]
    metrics: Metrics | None
    failure_reason: str | None
    improved: bool
    mark: IslandMark | None = field(default=None, metadata=INLINED)


@dataclass(frozen=True)
class MissingNode(JsonView):
    """A parent that is not in the index."""

    id: str
    missing: bool = True
    parents: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LineageView(JsonView):
    """`ge lineage`: the ancestry of a variant, one node per ancestor."""

    run_dir: str
    id: str
    seed: str | None
    objectives: list[Objective]
    nodes: list[LineageNode | MissingNode]


@dataclass(frozen=True)
class DiffView(JsonView):
    """`ge diff`: from one variant to another."""

    from_: str = field(metadata=renamed("from"))
    to: str
    files: list[str]
    added: int
    removed: int
    diff: str


@dataclass(frozen=True)
class FailureSummary(JsonView):
    """`ge log --failures`: every failure, grouped by cause."""

    total: int
    groups: list[FailureGroup]


@dataclass(frozen=True)
class LogView(JsonView):
    """`ge log`: the sections its flags asked for (the events when none)."""

    run_dir: str
    events: list[dict[str, Any]] | None = field(default=None, metadata=OMITTED_IF_NONE)
    reflections: list[ReflectionRow] | None = field(default=None, metadata=OMITTED_IF_NONE)
    failures: FailureSummary | None = field(default=None, metadata=OMITTED_IF_NONE)
    bandit: BanditView | None = field(default=None, metadata=OMITTED_IF_NONE)
