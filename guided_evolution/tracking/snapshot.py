"""What the tracker logs, read from a run's index read-only (never the run lock): each settled
variant's parameters, metrics and tags, the Pareto front, and the run's totals, with keys and
values made safe for MLflow.

A variant chooses its metric names and values, and neither may break a log call or land on one
of ge's own keys. MLflow refuses a metric or parameter name outside ``[/\\w.\\- :]`` or one that
is not a plain relative path (``..``, ``a//b``, a leading ``/``: the file store writes one file
per name), and any value that is not a finite number. Keys here keep ASCII letters, digits,
``_ - . /`` and spaces; a name that had to change, or that meets a key already taken (ge's own
``ge.*`` keys first), gets a short hash of the original, so two names never merge.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.evolution.scoring import scored
from guided_evolution.evolution.selection import pareto_front
from guided_evolution.runstore.index_schema import CallCost
from guided_evolution.runstore.records import META_FINISHED, META_SEED, VariantRecord
from guided_evolution.runstore.run_index import RunIndex

MAX_KEY = 250  # MLflow's longest key
MAX_PARAM = 6000  # ... longest parameter value
MAX_TAG = 8000  # ... longest tag value
VARIANT = "variant."  # before a variant's metric named like ge's own (``ge.*``)
_BAD = re.compile(r"[^A-Za-z0-9_.\- ]+")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def clean_key(name: str) -> str:
    """``name`` as a valid MLflow key (possibly empty when nothing of it was usable)."""
    parts = []
    for part in str(name).split("/"):
        part = _BAD.sub("_", part).strip().lstrip(".")
        if part:
            parts.append(part)
    return "/".join(parts)[:MAX_KEY].rstrip("/ ")


def unique_key(name: str, taken: set[str], prefix: str = "") -> str:
    """``prefix + clean_key(name)``, with a hash of ``name`` where cleaning changed it or the
    result is taken; added to ``taken``."""
    cleaned = clean_key(name)
    key = prefix + cleaned
    if not cleaned or cleaned != name or key in taken or len(key) > MAX_KEY:
        suffix = "_" + _digest(name)
        key = (prefix + (cleaned or "metric"))[: MAX_KEY - len(suffix)] + suffix
    taken.add(key)
    return key


def finite(value: Any) -> float | None:
    """A finite float, or None for anything else (a string, a bool, NaN, an int too large)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def safe_metrics(
    reported: Mapping[str, Any] | None, first: Iterable[str], taken: set[str], limit: int
) -> dict[str, float]:
    """A variant's numeric metrics under safe keys: the names in ``first`` (the objectives)
    first, then the others in name order, ``limit`` in all; values that are not finite numbers
    are left out, and a name in ge's own ``ge.`` namespace gets ``VARIANT`` before it."""
    if not isinstance(reported, Mapping):
        return {}
    names = [n for n in first if n in reported]
    chosen = set(names)
    names += sorted((n for n in reported if n not in chosen), key=str)
    out: dict[str, float] = {}
    for name in names:
        value = finite(reported[name])
        if value is None:
            continue
        if len(out) >= limit:
            break
        ours = clean_key(str(name)).lower().startswith(("ge.", "ge/"))  # ge's namespace
        out[unique_key(str(name), taken, prefix=VARIANT if ours else "")] = value
    return out


def clip_text(value: Any, limit: int) -> str:
    """``value`` as text of at most ``limit`` characters (NUL bytes dropped)."""
    out = str(value).replace("\x00", "")
    return out if len(out) <= limit else out[: limit - 1] + "…"


SETTLED = ("evaluated", "failed", "invalid")  # a variant logged once it is one of these
MAX_METRICS = 100  # of a variant's own metrics, objectives first
# ge's own metric keys of a variant run: a variant's metric of the same name gets a hash suffix.
COST, TOKENS, CALLS, DURATION = "ge.llm_cost_usd", "ge.llm_tokens", "ge.llm_calls", "ge.eval_s"
RESERVED = frozenset({COST, TOKENS, CALLS, DURATION})


@dataclass(frozen=True)
class VariantEntry:
    """One variant as an MLflow run: name, parameters, metrics, tags, and the commits whose diff
    is its artifact."""

    id: str
    name: str
    generation: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    evaluation: str  # the id of the evaluation logged ("" for none): a new one is logged again
    commit: str | None
    parent_commit: str | None
    time_ms: int
    failed: bool


@dataclass(frozen=True)
class Snapshot:
    """The run as the tracker sees it at one moment."""

    run_key: str  # the run's tracking key (``spawn.TrackingState``), tag ``ge.run``
    name: str
    entries: list[VariantEntry]
    front: frozenset[str]
    totals: dict[str, float]
    finished: bool


def _spend(index: RunIndex, variants: list[VariantRecord]) -> dict[str, tuple[float, int, int]]:
    """Variant id -> (cost in USD, tokens, calls) of the LLM calls that made it."""
    calls: list[CallCost] = index.call_costs()
    by_id = {c.id: c for c in calls}
    mine: dict[str, dict[int, CallCost]] = defaultdict(dict)
    for c in calls:
        if c.variant_id:
            mine[c.variant_id][c.id] = c
    for v in variants:
        if v.llm_call_id is not None and v.llm_call_id in by_id:
            mine[v.id][v.llm_call_id] = by_id[v.llm_call_id]
    return {
        vid: (
            sum(c.cost_usd for c in found.values()),
            sum((c.prompt_tokens or 0) + (c.completion_tokens or 0) for c in found.values()),
            len(found),
        )
        for vid, found in mine.items()
    }


def _params(v: VariantRecord) -> dict[str, str]:
    fields: dict[str, Any] = {
        "generation": v.generation,
        "operator": v.operator,
        "persona": v.persona,
        "model": v.model,
        "parents": ",".join(v.parents),
        "segment": v.segment,
        "prompt": v.prompt_name,
        "temperature": v.temperature,
        "island": v.island,
    }
    return {k: clip_text(x, MAX_PARAM) for k, x in fields.items() if x not in (None, "")}


def _entry(
    v: VariantRecord, ev: Any, spend: tuple[float, int, int], parent: VariantRecord | None,
    run_key: str, objectives: list[str],
) -> VariantEntry:
    cost, tokens, calls = spend
    metrics = {COST: cost, TOKENS: float(tokens), CALLS: float(calls)}
    if ev is not None and finite(ev.duration_s) is not None:
        metrics[DURATION] = float(ev.duration_s)
    taken = set(RESERVED)
    if ev is not None and ev.status == "ok":
        metrics.update(safe_metrics(ev.metrics, objectives, taken, MAX_METRICS))
    tags = {"ge.run": run_key, "ge.variant": v.id, "ge.status": v.status}
    if v.branch:
        tags["ge.branch"] = clip_text(v.branch, MAX_TAG)
    if ev is not None and ev.status != "ok":
        tags["ge.failure"] = clip_text(ev.failure_reason or ev.status, 1000)
    when = ev.started_at if ev is not None and ev.started_at else v.created_at
    return VariantEntry(
        id=v.id,
        name=f"{v.generation}-{v.id[:8]}-{v.operator}",
        generation=v.generation,
        params=_params(v),
        metrics=metrics,
        tags=tags,
        evaluation=str(ev.id) if ev is not None and ev.id is not None else "",
        commit=v.commit_sha,
        parent_commit=parent.commit_sha if parent is not None else None,
        time_ms=int(when * 1000),
        failed=ev is None or ev.status != "ok",
    )


def _totals(index: RunIndex, cfg: GeConfig, front: list[Any]) -> dict[str, float]:
    counts = index.counts()
    out = {
        "ge.children": float(counts["children"]),
        "ge.evaluated": float(counts["evaluated"]),
        "ge.failed": float(counts["failed"] + counts["invalid"]),
        "ge.generation": float(counts["generation"]),
        "ge.llm_calls": float(counts["llm_calls"]),
        "ge.llm_tokens": float(counts["prompt_tokens"] + counts["completion_tokens"]),
        "ge.llm_cost_usd": float(counts["cost_usd"]),
        "ge.front_size": float(len(front)),
    }
    taken = set(out)
    for o in cfg.selected_objectives:
        values = [s.metrics[o.name] for s in front]
        if values:
            best = max(values) if o.direction == "max" else min(values)
            out[unique_key(o.name, taken, prefix="best/")] = float(best)
    return out


def read_snapshot(index: RunIndex, cfg: GeConfig, run_dir: Path, key: str) -> Snapshot | None:
    """The run now, from its open (read-only) index; None before its seed is recorded."""
    seed = index.get_variant(index.get_meta(META_SEED) or "")
    if seed is None or not seed.commit_sha:
        return None
    variants = index.variants()
    by_id = {v.id: v for v in variants}
    latest = index.latest_evaluations()
    selecting = [(o.name, o.direction) for o in cfg.selected_objectives]
    valid = [s for vid, ev in latest.items() if (s := scored(vid, ev, selecting)) is not None]
    front = pareto_front(valid, selecting) if valid else []
    spend = _spend(index, variants)
    objectives = [o.name for o in cfg.objectives]
    entries = [
        _entry(
            v, latest.get(v.id), spend.get(v.id, (0.0, 0, 0)),
            by_id.get(v.parents[0]) if v.parents else None, key, objectives,
        )
        for v in variants
        if v.status in SETTLED
    ]
    return Snapshot(
        run_key=key,
        name=run_dir.name,
        entries=entries,
        front=frozenset(s.id for s in front),
        totals=_totals(index, cfg, front),
        finished=bool(index.get_meta(META_FINISHED)),
    )
