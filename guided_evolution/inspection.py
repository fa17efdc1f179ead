"""Read-only views of a run (live or finished) as plain JSON-able data.

Every function opens the index read-only and never takes the run lock, so it can be used while
`ge run` is writing. Rendering for terminals lives in `views.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig, ResolvedConfig
from guided_evolution.errors import GeError
from guided_evolution.rundir import open_run


@contextmanager
def _open(run_dir: Path) -> Iterator[tuple[Any, ResolvedConfig, Any]]:
    from guided_evolution.index import RunIndex

    paths, resolved = open_run(Path(run_dir))
    index = RunIndex.open(paths.index, readonly=True)
    try:
        yield index, resolved, paths
    finally:
        index.close()


def _scored(index: Any, cfg: GeConfig, ids: list[str] | None = None) -> list[Any]:
    from guided_evolution.selection import Scored

    selected = [o.name for o in cfg.selected_objectives]
    latest = index.latest_evaluations()
    out = []
    for vid, ev in latest.items():
        if ids is not None and vid not in ids:
            continue
        if ev.status != "ok" or not ev.metrics:
            continue
        values = {n: ev.metrics.get(n) for n in selected}
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values.values()):
            out.append(Scored(vid, values))
    return out


def front_rows(index: Any, cfg: GeConfig) -> list[dict[str, Any]]:
    """The Pareto front over every evaluated variant: id, branch, generation, operator, metrics."""
    from guided_evolution.selection import pareto_front

    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    scored = _scored(index, cfg)
    front = pareto_front(scored, objectives) if scored else []
    latest = index.latest_evaluations()
    rows = []
    for s in front:
        v = index.get_variant(s.id)
        rows.append(
            {
                "id": s.id,
                "branch": v.branch if v else None,
                "generation": v.generation if v else None,
                "operator": v.operator if v else None,
                "metrics": latest[s.id].metrics,
            }
        )
    first = objectives[0]
    rows.sort(key=lambda r: r["metrics"][first[0]], reverse=first[1] == "max")
    return rows


def status(run_dir: Path) -> dict[str, Any]:
    """Progress counters of a run."""
    with _open(run_dir) as (index, resolved, paths):
        counts = index.counts()
        last = index.last_generation()
        finished = index.get_meta("finished")
        return {
            "run_dir": str(paths.root),
            "generation": last.generation if last else 0,
            "generations": resolved.config.evolution.generations,
            "children": counts["children"],
            "evaluated": counts["evaluated"],
            "failed": counts["failed"],
            "pending": counts["pending"] + counts["evaluating"],
            "llm_calls": counts["llm_calls"],
            "llm_errors": counts["llm_errors"],
            "prompt_tokens": counts["prompt_tokens"],
            "completion_tokens": counts["completion_tokens"],
            "cost_usd": counts["cost_usd"],
            "finished": bool(finished),
            "stop_reason": finished or None,
            "models": [m.model for m in resolved.config.llm.models],
        }


def best(run_dir: Path) -> dict[str, Any]:
    """The Pareto front on the selection objectives."""
    with _open(run_dir) as (index, resolved, paths):
        cfg = resolved.config
        return {
            "run_dir": str(paths.root),
            "objectives": [{"name": o.name, "direction": o.direction, "select": o.select} for o in cfg.objectives],
            "front": front_rows(index, cfg),
        }


def resolve_id(index: Any, prefix: str) -> str:
    """A full variant id from a unique prefix (or a branch name)."""
    prefix = prefix.strip().split("/")[-1]
    matches = [v.id for v in index.variants() if v.id.startswith(prefix)]
    if not matches:
        raise GeError(f"no variant {prefix!r} in this run", "list variants with `ge best RUN_DIR` or `ge log RUN_DIR`")
    if len(matches) > 1:
        raise GeError(f"variant id {prefix!r} is ambiguous ({len(matches)} matches)", "give more characters of the id")
    return matches[0]


def show(run_dir: Path, variant: str) -> dict[str, Any]:
    """Everything about one variant, including its prompt, reply and diff against its parent."""
    from guided_evolution.store import GitStore

    with _open(run_dir) as (index, _resolved, paths):
        vid = resolve_id(index, variant)
        v = index.get_variant(vid)
        ev = index.latest_evaluation(vid)
        call = index.get_call(v.llm_call_id) if v.llm_call_id else None
        calls = index.calls(vid)
        diff = ""
        parent_id = v.parents[0] if v.parents else None
        if v.commit_sha:
            store = GitStore.open(paths.repo)
            try:
                parent = index.get_variant(parent_id) if parent_id else None
                if parent is not None and parent.commit_sha:
                    diff = store.diff(parent.commit_sha, v.commit_sha)
            finally:
                store.close()
        prompt = None
        if call is not None:
            prompt = "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in call.messages)
        return {
            "id": vid,
            "branch": v.branch,
            "commit": v.commit_sha,
            "generation": v.generation,
            "parents": v.parents,
            "operator": v.operator,
            "segment": v.segment,
            "prompt_name": v.prompt_name,
            "persona": v.persona,
            "model": v.model,
            "temperature": v.temperature,
            "status": v.status,
            "metrics": ev.metrics if ev else None,
            "failure_reason": ev.failure_reason if ev else None,
            "output_tail": ev.output_tail if ev else None,
            "duration_s": ev.duration_s if ev else None,
            "prompt": prompt,
            "reply": call.reply if call else None,
            "tokens": sum(c.prompt_tokens + c.completion_tokens for c in calls),
            "cost_usd": sum(c.cost_usd for c in calls),
            "eot_reflection": v.eot_reflection,
            "diff": diff,
        }
