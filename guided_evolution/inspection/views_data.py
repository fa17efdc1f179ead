"""Read-only views of a run (live or finished) as typed views (`view_models`): what `ge status`,
`ge best`, `ge show`, `ge lineage`, `ge diff` and `ge log` print (`terminal.py` renders them for a
terminal, ``--json`` their `to_json()`).

`isolation_info` reads the isolation the run's evaluations ran under (its "isolation" events)
for `ge status` and `ge report`.

Every function opens the index read-only and never takes the run lock, so it can be used while
`ge run` is writing.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.evolution.scoring import scored
from guided_evolution.inspection import report_islands
from guided_evolution.inspection.report_bandit import Latest, bandit_view, token_view
from guided_evolution.inspection.report_diversity import diversity_per_generation
from guided_evolution.inspection.run_data import (
    RunData,
    commit_of,
    diff_stats,
    failure_groups,
    load_ancestry,
    open_run_index,
    reflection_rows,
    resolve_id,
    variant_calls,
)
from guided_evolution.inspection.view_models import (
    BestView,
    CallRow,
    ChildrenRow,
    DiffView,
    FailureSummary,
    FrontGroup,
    FrontRow,
    IsolationInfo,
    LineageNode,
    LineageView,
    LogView,
    MissingNode,
    Objective,
    Row,
    RunState,
    StatusView,
    VariantView,
)
from guided_evolution.runstore.records import META_FINISHED
from guided_evolution.runstore.rundir import STOP_REQUEST

ISOLATION_ASPECTS = ("filesystem", "network", "secrets", "processes", "resources")
ISOLATION_NOT_RECORDED = "not recorded (run started before ge recorded its isolation)"
# What makes an aspect's free text "not contained" when the record has no ``contained`` flags.
# The sandbox's words: "writable wherever ge's user can write", network "open"; "not ..." is fine.
_UNCONTAINED = {
    "filesystem": re.compile(r"(?<!not )\bwritable\b(?!\s+only)|\bwherever\b|\banywhere\b", re.I),
    "network": re.compile(r"(?<!not )\bopen\b", re.I),
    "secrets": re.compile(
        r"(?<!not )\b(visible|readable|unscrubbed)\b|\bnot (scrubbed|hidden)\b", re.I
    ),
    "processes": re.compile(r"(?<!not )\bshare[sd]?\b|\bge's (uid|user)\b", re.I),
}


def front_rows(
    index: Any, cfg: GeConfig, only: set[str] | None = None, read: Mapping[str, Latest] | None = None
) -> list[FrontRow]:
    """The Pareto front over every evaluated variant (or those in ``only``; ``read``: their
    latest status and objectives, already read): id, branch, generation, operator, metrics."""
    from guided_evolution.evolution.selection import pareto_front  # deap: only the front needs it

    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    if read is None:  # only the objectives of the variants are read
        values = index.latest_values([name for name, _ in objectives])
        read = {vid: Latest(status, metrics) for vid, status, metrics in values}
    checked = (scored(vid, found, objectives) for vid, found in read.items())
    valid = [s for s in checked if s is not None and (only is None or s.id in only)]
    front = pareto_front(valid, objectives) if valid else []
    ids = [s.id for s in front]
    variants, latest = index.variants_of(ids), index.latest_of(ids)
    rows = [
        FrontRow(s.id, v and v.branch, v and v.generation, v and v.operator, latest[s.id].metrics)
        for s in front
        for v in [variants.get(s.id)]
    ]
    name, direction = objectives[0]
    sign = -1.0 if direction == "max" else 1.0
    # Ties (equal first objective) are ordered by generation and id, not by creation order,
    # which follows LLM reply arrival: identical runs list their front identically.
    rows.sort(key=lambda r: (sign * r.metrics[name], r.generation or 0, r.id))
    return rows


def front_groups(rows: Sequence[Row], objectives: Sequence[Objective]) -> list[FrontGroup[Row]]:
    """The front as a reader sees it: rows with equal values on every selection objective are
    one group, where its oldest member (earliest generation, then id) stands, with the count.
    A run's front often holds many such ties (variants whose change did not move the metrics)."""
    names = [o.name for o in objectives if o.select]
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        metrics = row.metrics or {}
        groups.setdefault(tuple(repr(metrics.get(n)) for n in names), []).append(row)
    out = []
    for members in groups.values():
        members.sort(key=lambda r: (r.generation if r.generation is not None else -1, r.id))
        out.append(FrontGroup(members[0], [m.id for m in members[1:]]))
    return out


def column_numbers(values: Sequence[Any], min_digits: int = 6) -> list[str | None]:
    """The floats of one table column written alike: the fewest significant digits (at least
    ``min_digits``) that keep every distinct value distinct (two front members must never look
    equal for rounding alone), as the same number of decimals for all (``-0.3190562630`` beside
    ``-0.3190562634``, not ``-0.319056263``), or all in exponent form where one value needs it.
    None for what is not a finite float (the caller writes ints and the rest its own way)."""
    floats = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    digits = next(
        (d for d in range(min_digits, 17) if len({f"{v:.{d}g}" for v in floats}) == len(set(floats))),
        17,
    )
    short = [f"{v:.{digits}g}" for v in floats]
    decimals = max((len(s.partition(".")[2]) for s in short), default=0)
    exponent = any("e" in s for s in short)
    out: list[str | None] = []
    for v in values:
        if not (isinstance(v, float) and math.isfinite(v)):
            out.append(None)
        else:
            out.append(f"{v:.{digits - 1}e}" if exponent else f"{v:.{decimals}f}")
    return out


def objective_rows(cfg: GeConfig) -> list[Objective]:
    """Every objective of the config, selected or reported only."""
    return [Objective(o.name, o.direction, o.select) for o in cfg.objectives]


def _uncontained(data: dict[str, Any]) -> list[str]:
    """The keys of one isolation record that leave evaluated code uncontained ("backend" for none):
    the record's own ``contained`` flags, or for a record without them, its words."""
    out = ["backend"] if str(data.get("backend", "")).strip().lower() == "none" else []
    contained = data.get("contained")
    if isinstance(contained, dict):
        return out + [k for k in ISOLATION_ASPECTS if contained.get(k) is False]
    return out + [
        k for k, rx in _UNCONTAINED.items() if isinstance(data.get(k), str) and rx.search(data[k])
    ]


def isolation_warnings(iso: dict[str, Any]) -> list[str]:
    """The record's warnings, less those that only repeat an uncontained aspect's text."""
    bad = [k for k in iso.get("uncontained") or [] if k in ISOLATION_ASPECTS and iso.get(k)]
    repeated = [
        f"{k}: {iso[k]}" for k in bad
    ]  # the sandbox writes "sandbox (BACKEND): ASPECT: TEXT"
    return [str(w) for w in iso.get("warnings") or [] if not any(r in str(w) for r in repeated)]


def _signature(data: dict[str, Any]) -> tuple[str, ...]:
    keys = ("backend", "layers", *ISOLATION_ASPECTS)
    return tuple(str(data.get(k)) for k in keys)


def _change(a: dict[str, Any], b: dict[str, Any]) -> str:
    """One change of isolation between two starts, in words."""
    if a.get("backend") != b.get("backend"):
        return f"{a.get('backend') or 'unknown'} → {b.get('backend') or 'unknown'}"
    parts = [
        f"{k} {a.get(k) or '-'} → {b.get(k) or '-'}"
        for k in ISOLATION_ASPECTS
        if a.get(k) != b.get(k)
    ]
    return "; ".join(parts) or f"layers {_layers(a)} → {_layers(b)}"


def _layers(data: dict[str, Any]) -> str:
    layers = data.get("layers")
    return ", ".join(map(str, layers)) if isinstance(layers, list) else str(layers or "-")


def isolation_info(index: Any) -> IsolationInfo:
    """The isolation the run's evaluations ran under, from its "isolation" events (one per start).

    ``isolation``: the latest event's data plus its ``time`` and ``uncontained`` (the keys that
    leave code uncontained), or None for a run that predates these events; ``isolation_history``:
    every event, oldest first; ``isolation_changes``: each change between consecutive starts;
    ``isolation_unrecorded_starts``: starts (``executor`` events) before ge recorded isolation.
    """
    history = [{**e.data, "time": e.time} for e in index.events("isolation")]
    for entry in history:
        entry["uncontained"] = _uncontained(entry)
        if isinstance(entry.get("warnings"), str):
            entry["warnings"] = [entry["warnings"]]
    changes = [_change(a, b) for a, b in pairwise(history) if _signature(a) != _signature(b)]
    starts = len(index.events("executor"))
    return IsolationInfo(
        isolation=history[-1] if history else None,
        isolation_history=history,
        isolation_changes=changes,
        isolation_unrecorded_starts=max(starts - len(history), 0) if history else 0,
        evaluator_reloads=[{**e.data, "time": e.time} for e in index.events("evaluator_reloaded")],
    )


def isolation_notes(info: IsolationInfo) -> list[str]:
    """What a reader must also know about the isolation of `isolation_info`: changes, gaps."""
    notes = []
    if info.isolation_changes:
        notes.append("isolation changed during the run: " + "; ".join(info.isolation_changes))
    if info.isolation_unrecorded_starts:
        n = info.isolation_unrecorded_starts
        notes.append(
            f"isolation not recorded for the first {n} start(s) of the run (ge did not record it then)"
        )
    for reload in info.evaluator_reloads:  # the evaluator changed: the variants after it differ
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(reload["time"])))
        summary = reload.get("summary")
        notes.append(f"evaluator reloaded {when} (ge resume --reload-evaluator): {summary}")
    return notes


def children_per_generation(index: Any, evo: Any) -> list[ChildrenRow]:
    """Per generation: children the config asks for, children planned (a planned child needs at
    least one operator; the rest are dropped, as GE's unchanged offspring were clones), and new
    children made (None while the generation runs). A resumed generation counts its last start."""
    rows: dict[int, ChildrenRow] = {}
    for event in index.events("generation_started"):
        gen = int(event.data["generation"])
        configured = evo.initial_population if gen == 0 else evo.population
        rows[gen] = ChildrenRow(gen, configured, event.data.get("plans"), None)
    for event in index.events("generation_finished"):
        gen = int(event.data["generation"])
        if gen in rows:
            rows[gen] = replace(rows[gen], new=event.data.get("children"))
    return [rows[g] for g in sorted(rows)]


_RUN_EVENTS = ("run_started", "run_resumed", "run_stopped", "run_error", "run_interrupted")
_LLM_FIX = "check the model name, api_base, key and that the server is up"


def run_state(
    index: Any, root: Path, finished: str | None, holder: Callable[[Path], str | None] | None = None
) -> RunState:
    """Whether a run is live (a process holds its lock), finished, or stopped, and why: the
    ``state``, the writer's ``pid``, the ``stop_reason`` and its ``fix`` (from its last start or
    stop event; a run that stopped on repeated LLM errors says it once, with the fix).
    ``holder`` (default `doctor.lock_holder`) says who holds the lock."""
    from guided_evolution.runstore.doctor import lock_holder

    pid = (holder or lock_holder)(root)
    if pid is not None:
        try:  # `ge stop` asked it to finish
            asked = (root / STOP_REQUEST).read_text(errors="replace").strip() == pid
        except OSError:
            asked = False
        return RunState("live", pid, "finishing after the generation under way (`ge stop`)" if asked else None, None)
    if finished:
        return RunState("finished", None, finished, None)
    resume = f"`ge resume {root}`"
    events = [e for e in index.events() if e.kind in _RUN_EVENTS]
    last = events[-1] if events else None
    if last is None or last.kind in ("run_started", "run_resumed"):
        reason, fix = "the ge process ended before the run finished (killed or crashed)", resume
    elif last.kind == "run_interrupted":
        reason = f"interrupted (Ctrl-C) in generation {last.data.get('generation', '?')}"
        fix = f"continue with {resume}"
    elif last.kind == "run_error":
        reason, fix = str(last.data.get("reason")), str(last.data.get("fix") or resume)
    else:
        reason = f"the LLM calls kept failing: {last.data.get('reason')}"
        fix = f"{_LLM_FIX}, then {resume}"
    return RunState("stopped", None, reason, fix)


def status(run_dir: Path, diversity_last: int | None = None) -> StatusView:
    """Progress counters of a run, whether it is live, stopped (why) or finished, the diversity
    of its generations (the ``diversity_last`` ones only, if given) and the isolation its
    evaluations ran under."""
    with open_run_index(run_dir) as (index, resolved, paths):
        counts = index.counts()
        last = index.last_generation()
        finished = index.get_meta(META_FINISHED)
        return StatusView(
            run_dir=str(paths.root),
            generation=last.generation if last else 0,
            generations=resolved.config.evolution.generations,
            children=counts["children"],
            evaluated=counts["evaluated"],
            failed=counts["failed"],
            pending=counts["pending"] + counts["evaluating"],
            llm_calls=counts["llm_calls"],
            llm_errors=counts["llm_errors"],
            llm_retries=counts["llm_retries"],
            prompt_tokens=counts["prompt_tokens"],
            completion_tokens=counts["completion_tokens"],
            cost_usd=counts["cost_usd"],
            finished=bool(finished),
            run_state=run_state(index, paths.root, finished),
            models=[m.model for m in resolved.config.llm.models],
            children_per_generation=children_per_generation(index, resolved.config.evolution),
            diversity=diversity_per_generation(
                index, resolved.config, paths.repo, last=diversity_last
            ),
            isolation_info=isolation_info(index),
            tokens=token_view(index),
            bandit=bandit_view(index, resolved.config),
            islands=report_islands.status_view(index, resolved.config),
        )


def best(run_dir: Path, island: int | None = None) -> BestView:
    """The Pareto front on the selection objectives (of the variants that lived on ``island``)."""
    with open_run_index(run_dir) as (index, resolved, paths):
        cfg = resolved.config
        only = None if island is None else report_islands.island_members(index, cfg, island)
        return BestView(str(paths.root), objective_rows(cfg), front_rows(index, cfg, only), island)


def show(run_dir: Path, variant: str) -> VariantView:
    """Everything about one variant, including its prompt, reply and diff against its parent."""
    with open_run_index(run_dir) as (index, _resolved, paths):
        vid = resolve_id(index, variant, run_dir)
        v = index.get_variant(vid)
        ev = index.latest_evaluation(vid)
        call = index.get_call(v.llm_call_id) if v.llm_call_id else None
        calls = variant_calls(index, v)
        parent_id = v.parents[0] if v.parents else None
        diff = _parent_diff(index, paths.repo, v, parent_id)
        prompt = None
        if call is not None:
            prompt = "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in call.messages)
        return VariantView(
            id=vid,
            branch=v.branch,
            commit=v.commit_sha,
            generation=v.generation,
            parents=v.parents,
            operator=v.operator,
            segment=v.segment,
            prompt_name=v.prompt_name,
            persona=v.persona,
            model=v.model,
            temperature=v.temperature,
            status=v.status,
            metrics=ev.metrics if ev else None,
            failure_reason=ev.failure_reason if ev else None,
            output_tail=ev.output_tail if ev else None,
            feedback=ev.feedback if ev else None,
            duration_s=ev.duration_s if ev else None,
            prompt=prompt,
            reply=call.reply if call else None,
            tokens=sum(c.prompt_tokens + c.completion_tokens for c in calls),
            prompt_tokens=sum(c.prompt_tokens for c in calls),
            completion_tokens=sum(c.completion_tokens for c in calls),
            cost_usd=sum(c.cost_usd for c in calls),
            calls=[_call_row(c) for c in calls],
            parent_metrics={p: _metrics_of(index, p) for p in v.parents},
            eot_reflection=v.eot_reflection,
            diff_base=parent_id if diff else None,
            diff=diff,
        )


# --------------------------------------------------------------------------- helpers of show and lineage


def _parent_diff(index: Any, repo: Path, v: Any, parent_id: str | None) -> str:
    """The diff of a stored variant against its (first) stored parent ('' without either)."""
    if not v.commit_sha:
        return ""
    parent = index.get_variant(parent_id) if parent_id else None
    if parent is None or not parent.commit_sha:
        return ""
    from guided_evolution.runstore.git_store import GitStore  # pygit2: only for a diff

    with GitStore.open(repo) as store:
        return store.diff(parent.commit_sha, v.commit_sha)


def _call_row(call: Any) -> CallRow:
    return CallRow(
        id=call.id,
        purpose=call.purpose,
        model=call.model,
        outcome=call.outcome,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        cost_usd=call.cost_usd,
        latency_s=call.latency_s,
    )


def _metrics_of(index: Any, variant_id: str) -> dict[str, Any] | None:
    ev = index.latest_evaluation(variant_id)
    return ev.metrics if ev is not None else None


def _node(data: RunData, vid: str) -> LineageNode | MissingNode:
    v = data.variants.get(vid)
    ev = data.latest.get(vid)
    if v is None:
        return MissingNode(vid)
    return LineageNode(
        id=vid,
        generation=v.generation,
        operator=v.operator,
        persona=v.persona,
        model=v.model,
        segment=v.segment,
        status=v.status,
        parents=list(v.parents),
        metrics=ev.metrics if ev else None,
        failure_reason=ev.failure_reason if ev and ev.status != "ok" else None,
        improved=data.improved(vid),
    )


# --------------------------------------------------------------------------- lineage, diff, log


def lineage(run_dir: Path, variant: str) -> LineageView:
    """The ancestry of a variant back to the seed: one node per ancestor (deduplicated)."""
    with open_run_index(run_dir) as (index, resolved, paths):
        vid = resolve_id(index, variant, run_dir)
        data = load_ancestry(index, resolved, paths, [vid])
        nodes = [_node(data, a) for a in data.ancestry([vid])]
        known = [n.id for n in nodes if isinstance(n, LineageNode)]
        marks = report_islands.lineage_marks(index, resolved.config, known)  # islands only
        nodes = [
            replace(n, mark=marks[n.id]) if isinstance(n, LineageNode) and n.id in marks else n
            for n in nodes
        ]
        return LineageView(data.run_dir, vid, data.seed_id, objective_rows(resolved.config), nodes)


def diff(run_dir: Path, a: str, b: str | None = None) -> DiffView:
    """What changed from variant ``b`` (default: the seed) to variant ``a``, as a unified diff."""
    with open_run_index(run_dir) as (index, _resolved, paths):
        to_id = resolve_id(index, a, run_dir)
        from_id = resolve_id(index, b if b is not None else "seed", run_dir)
        to_commit, from_commit = commit_of(index, to_id), commit_of(index, from_id)
        from guided_evolution.runstore.git_store import GitStore  # pygit2: only for a diff

        with GitStore.open(paths.repo) as store:
            text = store.diff(from_commit, to_commit)
        files, added, removed = diff_stats(text)
        return DiffView(from_id, to_id, files, added, removed, text)


def _event_rows(index: Any) -> list[dict[str, Any]]:
    """Every event (its data as stored) and every evaluation, in time order."""
    rows = [{"time": e.time, "kind": e.kind, **e.data} for e in index.events()]
    for line in index.evaluation_lines():
        ok = line["status"] == "ok"
        row: dict[str, Any] = {
            "time": ((line["started_at"] or 0.0) + (line["duration_s"] or 0.0))
            or (line["created_at"] or 0.0),
            "kind": "evaluated" if ok else "evaluation_failed",
            "variant": line["variant_id"],
            "stage": line["stage"],
            "attempt": line["attempt"],
            "duration_s": line["duration_s"],
        }
        if ok:
            row["metrics"] = json.loads(line["metrics"]) if line["metrics"] is not None else None
        else:
            row["reason"] = line["failure_reason"]
        rows.append(row)
    rows.sort(key=lambda r: r["time"])
    return rows


def log(run_dir: Path, eot: bool = False, failures: bool = False, bandit: bool = False) -> LogView:
    """The event log (with evaluations), or with ``eot`` the reflections, with ``failures`` the
    failure reasons grouped and counted, with ``bandit`` the bandits' arms and per-generation
    states. Several flags together give several sections."""
    with open_run_index(run_dir) as (index, resolved, paths):
        reflected = [r.variant_id for r in index.reflections()] if eot else []
        authors = load_ancestry(index, resolved, paths, reflected, up=1)  # and their parents
        failed = replace(authors, latest=index.latest_failed() if failures else {})  # latest failed
        groups = failure_groups(failed, index.events("proposal_rejected")) if failures else []
        return LogView(
            run_dir=str(paths.root),
            events=_event_rows(index) if not (eot or failures or bandit) else None,
            reflections=reflection_rows(index, authors) if eot else None,
            failures=FailureSummary(sum(g.count for g in groups), groups) if failures else None,
            bandit=bandit_view(index, resolved.config, history=True) if bandit else None,
        )
