"""Read-only views of a run (live or finished) as plain JSON-able data.

Every function opens the index read-only and never takes the run lock, so it can be used while
`ge run` is writing. Rendering for terminals lives in `views.py`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig, ResolvedConfig
from guided_evolution.errors import GeError
from guided_evolution.runstore.rundir import open_run


@contextmanager
def _open(run_dir: Path) -> Iterator[tuple[Any, ResolvedConfig, Any]]:
    from guided_evolution.runstore.run_index import RunIndex

    paths, resolved = open_run(Path(run_dir))
    index = RunIndex.open(paths.index, readonly=True)
    try:
        yield index, resolved, paths
    except sqlite3.DatabaseError as err:  # e.g. a table missing from a damaged index
        raise GeError(
            f"the index of {run_dir} is damaged ({err})", f"run `ge doctor {run_dir} --rebuild-index`"
        ) from None
    finally:
        index.close()


def _scored(index: Any, cfg: GeConfig, ids: list[str] | None = None) -> list[Any]:
    from guided_evolution.evolution.selection import Scored

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
    from guided_evolution.evolution.selection import pareto_front

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


_BRANCH = re.compile(r"v/\d+/([^/]+)")
_HEX = re.compile(r"[0-9a-fA-F]+")


def _clip(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters for an error message (an argument can be huge)."""
    return text if len(text) <= limit else text[:limit] + "…"


def resolve_id(index: Any, prefix: str, run_dir: Path | str = "RUN_DIR") -> str:
    """A full variant id from a unique prefix, a branch name (``v/<gen>/<id>``) or ``seed``."""
    given = prefix.strip()
    branch = _BRANCH.fullmatch(given)
    prefix = branch.group(1) if branch else given
    if prefix == "seed":
        seed = index.get_meta("seed_variant") or next((v.id for v in index.variants() if v.branch == "seed"), None)
        if seed:
            return str(seed)
    listing = f"list variants with `ge best {run_dir}` or `ge log {run_dir}`"
    if not prefix:
        raise GeError("empty variant id", f"pass a variant id or a unique prefix of one; {listing}")
    if _HEX.fullmatch(prefix):
        prefix = prefix.lower()
    matches = [v.id for v in index.variants() if v.id.startswith(prefix)]
    if not matches:
        raise GeError(f"no variant {_clip(given)!r} in this run", listing)
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:4]) + (", …" if len(matches) > 4 else "")
        raise GeError(
            f"variant id {_clip(given)!r} is ambiguous ({len(matches)} matches: {shown})",
            "give more characters of the id",
        )
    return matches[0]


def show(run_dir: Path, variant: str) -> dict[str, Any]:
    """Everything about one variant, including its prompt, reply and diff against its parent."""
    from guided_evolution.runstore.git_store import GitStore

    with _open(run_dir) as (index, _resolved, paths):
        vid = resolve_id(index, variant, run_dir)
        v = index.get_variant(vid)
        ev = index.latest_evaluation(vid)
        call = index.get_call(v.llm_call_id) if v.llm_call_id else None
        calls = variant_calls(index, v)
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
            "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "cost_usd": sum(c.cost_usd for c in calls),
            "calls": [_call_row(c) for c in calls],
            "parent_metrics": {p: _metrics_of(index, p) for p in v.parents},
            "eot_reflection": v.eot_reflection,
            "diff_base": parent_id if diff else None,
            "diff": diff,
        }


# --------------------------------------------------------------------------- shared helpers


def _call_row(call: Any) -> dict[str, Any]:
    return {
        "id": call.id,
        "purpose": call.purpose,
        "model": call.model,
        "outcome": call.outcome,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cost_usd": call.cost_usd,
        "latency_s": call.latency_s,
    }


def _metrics_of(index: Any, variant_id: str) -> dict[str, Any] | None:
    ev = index.latest_evaluation(variant_id)
    return ev.metrics if ev is not None else None


def variant_calls(index: Any, variant: Any, all_calls: list[Any] | None = None) -> list[Any]:
    """The LLM calls that made ``variant``, oldest first.

    That is its own call (``llm_call_id``), calls linked to it by ``variant_id``, and for an EoT
    child the reasoning call whose reply became its reflection (that call is not linked).
    """
    found = {c.id: c for c in index.calls(variant.id)}
    if variant.llm_call_id and variant.llm_call_id not in found:
        call = index.get_call(variant.llm_call_id)
        if call is not None:
            found[call.id] = call
    if variant.eot_reflection:
        text = variant.eot_reflection.strip()
        limit = variant.llm_call_id or math.inf
        pool = index.calls() if all_calls is None else all_calls
        matches = [
            c
            for c in pool
            if c.id not in found
            and c.id < limit
            and c.purpose.startswith("eot")
            and (c.reply or "").strip() == text
        ]
        if matches:
            found[matches[-1].id] = matches[-1]
    return [found[k] for k in sorted(found)]


def dominates(a: dict[str, float], b: dict[str, float], objectives: list[tuple[str, str]]) -> bool:
    """True when scores ``a`` are no worse than ``b`` on every objective and better on one."""
    better = False
    for name, direction in objectives:
        x, y = (a[name], b[name]) if direction == "max" else (b[name], a[name])
        if x < y:
            return False
        better = better or x > y
    return better


_HEX_ID = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{8,64}\b")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def normalise_reason(reason: str | None) -> str:
    """A failure reason with ids and numbers blanked, so that variants of one cause group together.

    ``timed out after 3.0 s`` and ``timed out after 12 s`` both become ``timed out after <n> s``.
    """
    text = " ".join((reason or "unknown").split())
    text = _HEX_ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    return text[:240] or "unknown"


@dataclass
class RunData:
    """What the run-wide views read, loaded once from the read-only index."""

    run_dir: str
    config: GeConfig
    seed_id: str | None
    variants: dict[str, Any]  # id -> VariantRecord, in creation order
    latest: dict[str, Any]  # id -> latest EvaluationRecord
    finished: str | None

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(name, direction) of the selection objectives."""
        return [(o.name, o.direction) for o in self.config.selected_objectives]

    def scores(self, variant_id: str) -> dict[str, float] | None:
        """The selection objectives of a successfully evaluated variant, or None."""
        ev = self.latest.get(variant_id)
        if ev is None or ev.status != "ok" or not ev.metrics:
            return None
        values = {name: ev.metrics.get(name) for name, _ in self.objectives}
        for value in values.values():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return None
        return {k: float(v) for k, v in values.items() if v is not None}

    def improved(self, variant_id: str) -> bool:
        """Valid, dominates at least one of its parents and is dominated by none of them."""
        mine = self.scores(variant_id)
        v = self.variants.get(variant_id)
        if mine is None or v is None:
            return False
        parents = [s for s in (self.scores(p) for p in v.parents) if s is not None]
        if not parents:
            return False
        objectives = self.objectives
        return any(dominates(mine, p, objectives) for p in parents) and not any(
            dominates(p, mine, objectives) for p in parents
        )

    def ancestry(self, start: list[str]) -> list[str]:
        """``start`` and every ancestor, each once, breadth first."""
        order: list[str] = []
        seen: set[str] = set()
        queue = list(start)
        while queue:
            vid = queue.pop(0)
            if vid in seen:
                continue
            seen.add(vid)
            order.append(vid)
            v = self.variants.get(vid)
            if v is not None:
                queue.extend(p for p in v.parents if p not in seen)
        return order


def load_run_data(index: Any, resolved: ResolvedConfig, paths: Any) -> RunData:
    """Variants and their latest evaluations from an open (read-only) index."""
    return RunData(
        run_dir=str(paths.root),
        config=resolved.config,
        seed_id=index.get_meta("seed_variant"),
        variants={v.id: v for v in index.variants()},
        latest=index.latest_evaluations(),
        finished=index.get_meta("finished"),
    )


def _objectives(cfg: GeConfig) -> list[dict[str, Any]]:
    return [{"name": o.name, "direction": o.direction, "select": o.select} for o in cfg.objectives]


def _node(data: RunData, vid: str) -> dict[str, Any]:
    v = data.variants.get(vid)
    ev = data.latest.get(vid)
    if v is None:
        return {"id": vid, "missing": True, "parents": []}
    return {
        "id": vid,
        "generation": v.generation,
        "operator": v.operator,
        "persona": v.persona,
        "model": v.model,
        "segment": v.segment,
        "status": v.status,
        "parents": list(v.parents),
        "metrics": ev.metrics if ev else None,
        "failure_reason": ev.failure_reason if ev and ev.status != "ok" else None,
        "improved": data.improved(vid),
    }


# --------------------------------------------------------------------------- lineage, diff, log, export


def lineage(run_dir: Path, variant: str) -> dict[str, Any]:
    """The ancestry of a variant back to the seed: one node per ancestor (deduplicated)."""
    with _open(run_dir) as (index, resolved, paths):
        vid = resolve_id(index, variant, run_dir)
        data = load_run_data(index, resolved, paths)
        return {
            "run_dir": data.run_dir,
            "id": vid,
            "seed": data.seed_id,
            "objectives": _objectives(resolved.config),
            "nodes": [_node(data, a) for a in data.ancestry([vid])],
        }


def _commit_of(index: Any, vid: str) -> str:
    v = index.get_variant(vid)
    if v is None or not v.commit_sha:
        raise GeError(f"variant {vid} has no commit (it was never stored)", "pick a committed variant from `ge best`")
    return str(v.commit_sha)


def _diff_stats(text: str) -> tuple[list[str], int, int]:
    files: list[str] = []
    added = removed = 0
    for line in text.splitlines():
        if line.startswith("diff --git "):
            files.append(line.rsplit(" b/", 1)[-1])
        elif line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return files, added, removed


def diff(run_dir: Path, a: str, b: str | None = None) -> dict[str, Any]:
    """What changed from variant ``b`` (default: the seed) to variant ``a``, as a unified diff."""
    from guided_evolution.runstore.git_store import GitStore

    with _open(run_dir) as (index, _resolved, paths):
        to_id = resolve_id(index, a, run_dir)
        from_id = resolve_id(index, b if b is not None else "seed", run_dir)
        to_commit, from_commit = _commit_of(index, to_id), _commit_of(index, from_id)
        with GitStore.open(paths.repo) as store:
            text = store.diff(from_commit, to_commit)
        files, added, removed = _diff_stats(text)
        return {"from": from_id, "to": to_id, "files": files, "added": added, "removed": removed, "diff": text}


def failure_groups(data: RunData, events: list[Any]) -> list[dict[str, Any]]:
    """Evaluation failures and rejected proposals, grouped by normalised reason, most common first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add(stage: str, reason: str | None, who: str | None) -> None:
        key = (stage, normalise_reason(reason))
        group = groups.setdefault(key, {"stage": stage, "reason": key[1], "count": 0, "examples": [], "variants": []})
        group["count"] += 1
        raw = " ".join((reason or "unknown").split())[:500]
        if raw not in group["examples"] and len(group["examples"]) < 3:
            group["examples"].append(raw)
        if who and who not in group["variants"] and len(group["variants"]) < 8:
            group["variants"].append(who)

    for vid, ev in data.latest.items():
        if ev.status != "ok":
            add(f"evaluation ({ev.stage})" if ev.stage != "evaluate" else "evaluation", ev.failure_reason, vid)
    for event in events:
        if event.kind == "proposal_rejected":
            add(f"proposal ({event.data.get('operator', '?')})", event.data.get("reason"), None)
    return sorted(groups.values(), key=lambda g: (-g["count"], g["stage"], g["reason"]))


def _event_rows(index: Any, data: RunData) -> list[dict[str, Any]]:
    rows = [{"time": e.time, "kind": e.kind, **e.data} for e in index.events()]
    for ev in index.evaluations():
        when = (ev.started_at or 0.0) + (ev.duration_s or 0.0)
        if not when:
            v = data.variants.get(ev.variant_id)
            when = v.created_at if v else 0.0
        row: dict[str, Any] = {
            "time": when,
            "kind": "evaluated" if ev.status == "ok" else "evaluation_failed",
            "variant": ev.variant_id,
            "stage": ev.stage,
            "attempt": ev.attempt,
            "duration_s": ev.duration_s,
        }
        if ev.status == "ok":
            row["metrics"] = ev.metrics
        else:
            row["reason"] = ev.failure_reason
        rows.append(row)
    rows.sort(key=lambda r: r["time"])
    return rows


def reflection_rows(index: Any, data: RunData, only: set[str] | None = None) -> list[dict[str, Any]]:
    """EoT reflections (optionally of some variants only), oldest first."""
    rows = []
    for r in index.reflections():
        if only is not None and r.variant_id not in only:
            continue
        v = data.variants.get(r.variant_id)
        ev = data.latest.get(r.variant_id)
        rows.append(
            {
                "variant": r.variant_id,
                "elite": r.elite_id,
                "segment": r.segment,
                "time": r.created_at,
                "generation": v.generation if v else None,
                "metrics": ev.metrics if ev else None,
                "improved": data.improved(r.variant_id),
                "text": r.text,
            }
        )
    return rows


def log(run_dir: Path, eot: bool = False, failures: bool = False) -> dict[str, Any]:
    """The event log (with evaluations), or with ``eot`` the reflections, with ``failures`` the
    failure reasons grouped and counted. Both flags together give both sections."""
    with _open(run_dir) as (index, resolved, paths):
        data = load_run_data(index, resolved, paths)
        out: dict[str, Any] = {"run_dir": data.run_dir}
        if not eot and not failures:
            out["events"] = _event_rows(index, data)
        if eot:
            out["reflections"] = reflection_rows(index, data)
        if failures:
            groups = failure_groups(data, index.events("proposal_rejected"))
            out["failures"] = {"total": sum(g["count"] for g in groups), "groups": groups}
        return out


def write_atomic(path: Path, text: str, hint: str = "choose a writable destination") -> None:
    """Write a text file via a temp sibling and a rename: readers never see half a file."""
    tmp = path.with_name(f".ge-tmp-{os.getpid()}-{time.monotonic_ns()}")  # short: any name fits
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise GeError(f"cannot write {path}: {err.strerror or err}", hint) from None


def export(run_dir: Path, variant: str, dest: Path, patch: bool = False, force: bool = False) -> dict[str, Any]:
    """Write a variant's files into ``dest``, or with ``patch`` a `git apply`-able patch against
    the seed (``dest`` is then a file, a directory to put ``<id>.patch`` in, or ``-`` for the
    returned data only). A non-empty destination is refused unless ``force``; an error leaves
    nothing behind that was not there before."""
    from guided_evolution.runstore.git_store import GitStore

    if not str(dest).strip():
        raise GeError("DEST is empty", "give a directory to export into (with --patch: a file, or - for stdout)")
    dest = Path(dest)
    if str(dest) == "-" and not patch:
        raise GeError("DEST '-' (standard output) needs --patch", "give a directory to export the files into")
    with _open(run_dir) as (index, _resolved, paths):
        vid = resolve_id(index, variant, run_dir)
        commit = _commit_of(index, vid)
        seed_commit = _commit_of(index, resolve_id(index, "seed", run_dir)) if patch else ""
        with GitStore.open(paths.repo) as store:
            try:
                if patch:
                    return _export_patch(store, vid, seed_commit, commit, dest, force)
                if _inside(dest, paths.root):
                    raise GeError(f"{dest} is inside the run directory {paths.root}", "export outside the run directory")
                return {"id": vid, "kind": "files", "path": str(dest), **_export_files(store, commit, dest, force)}
            except OSError as err:  # probing DEST itself failed: name too long, permission denied, ...
                raise GeError(
                    f"cannot export into {_clip(str(dest), 120)}: {err.strerror or err}", "choose another destination"
                ) from None


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def _patch_text(store: Any, base: str, commit: str) -> str:
    return str(store.patch(base, commit))


def _export_patch(store: Any, vid: str, base: str, commit: str, dest: Path, force: bool) -> dict[str, Any]:
    text = _patch_text(store, base, commit)
    files, added, removed = _diff_stats(text)
    result = {"id": vid, "kind": "patch", "files": files, "added": added, "removed": removed}
    if str(dest) == "-":
        return {**result, "path": None, "patch": text}
    target = dest / f"{vid}.patch" if dest.is_dir() else dest
    if target.is_dir():
        raise GeError(f"{target} is a directory", "give a file name for the patch")
    if target.exists() and target.stat().st_size > 0 and not force:
        raise GeError(f"{target} already exists", "pass --force to overwrite it, or choose another file")
    if not target.parent.is_dir():
        raise GeError(f"directory {target.parent} does not exist", "create it first")
    write_atomic(target, text)
    return {**result, "path": str(target), "bytes": len(text.encode())}


def _export_files(store: Any, commit: str, dest: Path, force: bool) -> dict[str, Any]:
    if dest.exists() and not dest.is_dir():
        raise GeError(f"{dest} exists and is not a directory", "choose a directory to export into")
    files = sorted(store.read_files(commit))
    if not dest.exists():
        _export_new(store, commit, dest)
        return {"files": files, "overwritten": []}
    if any(dest.iterdir()) and not force:
        raise GeError(
            f"{dest} is not empty",
            "pass --force to write the variant's files over it (other files are kept), or choose an empty directory",
        )
    tmp = dest / f".ge-export-{os.getpid()}"
    overwritten = [f for f in files if (dest / f).exists()]
    for name in files:
        if (dest / name).is_dir():
            raise GeError(f"{dest / name} is a directory, the variant has a file there", "remove it or export elsewhere")
    try:
        store.export(commit, tmp)
        for name in files:
            target = dest.joinpath(*name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp.joinpath(*name.split("/")), target)
    except OSError as err:
        raise GeError(f"cannot export into {dest}: {err.strerror or err}", "check that it is writable") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"files": files, "overwritten": overwritten}


def _export_new(store: Any, commit: str, dest: Path) -> None:
    """Export into a temp sibling of ``dest`` and rename it into place; on failure remove the temp
    dir and every parent directory this created, so that a failed export leaves nothing."""
    dest = dest.absolute()
    top = dest
    while not top.parent.exists():
        top = top.parent
    tmp = dest.parent / f".ge-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.export(commit, tmp)
        os.rename(tmp, dest)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        for created in (dest.parent, *dest.parent.parents):
            if not created.is_relative_to(top):
                break
            with contextlib.suppress(OSError):
                created.rmdir()
        if isinstance(err, OSError):
            raise GeError(f"cannot export into {dest}: {err.strerror or err}", "choose a writable directory") from None
        raise
