"""Reading a run read-only: opening its index, resolving variant ids, and `RunData`, the
run-wide snapshot (variants, latest evaluations, scores, ancestry) that the views share.

Nothing here takes the run lock, so it can be used while `ge run` is writing.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig, ResolvedConfig
from guided_evolution.errors import GeError
from guided_evolution.evolution.scoring import Scored, dominates, scorer
from guided_evolution.inspection.json_view import JsonView
from guided_evolution.runstore.records import (
    META_FINISHED,
    META_SEED,
    SEED_BRANCH,
    EvaluationRecord,
    VariantRecord,
)
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunPaths, open_run


@contextmanager
def open_run_index(run_dir: Path) -> Iterator[tuple[RunIndex, ResolvedConfig, RunPaths]]:
    """The run's index (read-only), its resolved config and its paths; a damaged index is a GeError."""
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


# --------------------------------------------------------------------------- finding variants


_BRANCH = re.compile(r"v/\d+/([^/]+)")
_HEX = re.compile(r"[0-9a-fA-F]+")


def clip(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters for an error message (an argument can be huge)."""
    return text if len(text) <= limit else text[:limit] + "…"


def resolve_id(index: Any, prefix: str, run_dir: Path | str = "RUN_DIR") -> str:
    """A full variant id from a unique prefix, a branch name (``v/<gen>/<id>``) or ``seed``."""
    given = prefix.strip()
    branch = _BRANCH.fullmatch(given)
    prefix = branch.group(1) if branch else given
    if prefix == "seed":
        seed = index.get_meta(META_SEED) or next((v.id for v in index.variants() if v.branch == SEED_BRANCH), None)
        if seed:
            return str(seed)
    listing = f"list variants with `ge best {run_dir}` or `ge log {run_dir}`"
    if not prefix:
        raise GeError("empty variant id", f"pass a variant id or a unique prefix of one; {listing}")
    if _HEX.fullmatch(prefix):
        prefix = prefix.lower()
    matches = index.ids_with_prefix(prefix)
    if not matches:
        raise GeError(f"no variant {clip(given)!r} in this run", listing)
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:4]) + (", …" if len(matches) > 4 else "")
        raise GeError(
            f"variant id {clip(given)!r} is ambiguous ({len(matches)} matches: {shown})",
            "give more characters of the id",
        )
    return matches[0]


def commit_of(index: Any, vid: str) -> str:
    """The commit of a stored variant; a GeError for one that was never committed."""
    v = index.get_variant(vid)
    if v is None or not v.commit_sha:
        raise GeError(f"variant {vid} has no commit (it was never stored)", "pick a committed variant from `ge best`")
    return str(v.commit_sha)


def diff_stats(text: str) -> tuple[list[str], int, int]:
    """The files a unified diff touches, and its added and removed line counts."""
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
        # Only the calls whose reply holds the reflection are read (not every call's messages).
        pool = index.calls_replying(text, "eot", limit) if all_calls is None else all_calls
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


# --------------------------------------------------------------------------- the run as a whole


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
    variants: dict[str, VariantRecord]  # in creation order
    latest: dict[str, EvaluationRecord]  # each variant's latest evaluation
    finished: str | None
    _scored: dict[str, Scored | None] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def objectives(self) -> list[tuple[str, str]]:
        """(name, direction) of the selection objectives (read once: a report asks per variant)."""
        return [(o.name, o.direction) for o in self.config.selected_objectives]

    @cached_property
    def _score(self) -> Callable[[str, Any], Scored | None]:
        """``scoring.scored`` for the run's objectives, checked once."""
        return scorer(self.objectives)

    def scored(self, variant_id: str) -> Scored | None:
        """The variant's selection objectives if it can be selected (see `selection.scored`);
        remembered (a variant is scored again as the parent of each of its children)."""
        if variant_id not in self._scored:
            latest = self.latest.get(variant_id)
            found = self._score(variant_id, latest)
            if found is not None and latest is not None and found.metrics == latest.metrics:
                found = Scored(variant_id, latest.metrics)  # one dict, not two, per variant
            self._scored[variant_id] = found
        return self._scored[variant_id]

    def scores(self, variant_id: str) -> dict[str, float] | None:
        """The selection objectives of a successfully evaluated variant, or None (one dict per
        variant, shared by every caller: not to be changed)."""
        found = self.scored(variant_id)
        return found.metrics if found is not None else None  # type: ignore[return-value]

    def improved(self, variant_id: str) -> bool:
        """Valid, dominates at least one of its parents and is dominated by none of them."""
        mine = self.scored(variant_id)
        v = self.variants.get(variant_id)
        if mine is None or v is None:
            return False
        parents = [s for s in (self.scored(p) for p in v.parents) if s is not None]
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
        seed_id=index.get_meta(META_SEED),
        variants={v.id: v for v in index.variants()},
        latest=index.latest_evaluations(),
        finished=index.get_meta(META_FINISHED),
    )


def load_ancestry(
    index: Any, resolved: ResolvedConfig, paths: Any, start: list[str], up: int | None = None
) -> RunData:
    """Like :func:`load_run_data`, with only ``start``, its ancestors (``up``: that many levels
    of them; 1: the parents) and their latest evaluations (indexed look-ups, one query per level):
    what a lineage reads, whatever the run's size."""
    variants: dict[str, VariantRecord] = {}
    wanted, level = list(start), 0
    while wanted and (up is None or level <= up):
        level += 1
        found = index.variants_of(wanted)
        variants.update(found)
        wanted = [p for v in found.values() for p in v.parents if p not in variants]
    return RunData(
        run_dir=str(paths.root),
        config=resolved.config,
        seed_id=index.get_meta(META_SEED),
        variants=variants,
        latest=index.latest_of(list(variants)),
        finished=index.get_meta(META_FINISHED),
    )


_ERROR_LINE = re.compile(
    r"(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Fault|Failure)\b(?::.*)?"
)


def error_line(output_tail: str | None) -> str | None:
    """The evaluator's own last error line (``RuntimeError: ...``) in its output, or None."""
    for line in reversed((output_tail or "").splitlines()):
        text = line.strip()
        if _ERROR_LINE.fullmatch(text) and not text.startswith("[ge] "):
            return text
    return None


def failure_cause(reason: str | None, output_tail: str | None) -> tuple[str | None, str | None]:
    """(cause, detail) of an evaluation failure: for a crash (``exit code 1``), the evaluator's
    last error line is the cause and the exit code the detail; otherwise the reason alone."""
    line = error_line(output_tail) if (reason or "").startswith("exit code") else None
    return (line, reason) if line else (reason, None)


@dataclass
class FailureGroup(JsonView):
    """Failures of one normalised cause at one stage: how many, a few raw reasons, the variants
    and (for a crash) the exit codes."""

    stage: str
    reason: str
    count: int = 0
    examples: list[str] = field(default_factory=list)  # at most 3
    variants: list[str] = field(default_factory=list)  # at most 8
    details: list[str] = field(default_factory=list)  # at most 4

    def add(self, reason: str | None, who: str | None, detail: str | None) -> None:
        """Count one more failure."""
        self.count += 1
        raw = " ".join((reason or "unknown").split())[:500]
        if raw not in self.examples and len(self.examples) < 3:
            self.examples.append(raw)
        for seen, item, most in ((self.variants, who, 8), (self.details, detail, 4)):
            if item and item not in seen and len(seen) < most:
                seen.append(item)


def failure_groups(data: RunData, events: list[Any]) -> list[FailureGroup]:
    """Evaluation failures and rejected proposals, grouped by normalised cause (an evaluator's
    crash by its own last error line, its exit code a detail), most common first."""
    groups: dict[tuple[str, str], FailureGroup] = {}

    def add(stage: str, reason: str | None, who: str | None, detail: str | None = None) -> None:
        key = (stage, normalise_reason(reason))
        groups.setdefault(key, FailureGroup(stage, key[1])).add(reason, who, detail)

    for vid, ev in data.latest.items():
        if ev.status != "ok":
            stage = f"evaluation ({ev.stage})" if ev.stage != "evaluate" else "evaluation"
            cause, detail = failure_cause(ev.failure_reason, ev.output_tail)
            add(stage, cause, vid, detail)
    for event in events:
        if event.kind == "proposal_rejected":
            add(f"proposal ({event.data.get('operator', '?')})", event.data.get("reason"), None)
    return sorted(groups.values(), key=lambda g: (-g.count, g.stage, g.reason))


@dataclass(frozen=True)
class ReflectionRow(JsonView):
    """An EoT reflection: its variant, the elite it learned from, and the variant's outcome."""

    variant: str
    elite: str | None
    segment: str | None
    time: float | None
    generation: int | None
    metrics: dict[str, Any] | None  # the variant's latest evaluation's metrics
    improved: bool
    text: str


def reflection_rows(index: Any, data: RunData, only: set[str] | None = None) -> list[ReflectionRow]:
    """EoT reflections (optionally of some variants only), oldest first."""
    rows = []
    for r in index.reflections():
        if only is not None and r.variant_id not in only:
            continue
        v = data.variants.get(r.variant_id)
        ev = data.latest.get(r.variant_id)
        rows.append(
            ReflectionRow(
                variant=r.variant_id,
                elite=r.elite_id,
                segment=r.segment,
                time=r.created_at,
                generation=v.generation if v else None,
                metrics=ev.metrics if ev else None,
                improved=data.improved(r.variant_id),
                text=r.text,
            )
        )
    return rows
