"""Diversity per generation, for `ge status` and `ge report`: the data and its HTML table.

Each finished generation's population comes from its checkpoint in the index; each member's
segments from its commit (read-only, no lock). The measures are `evolution.diversity`'s: distinct
segments per position, mean pairwise code distance (normalised token edit distance, over a
deterministic sample of pairs above `diversity.EXACT_PAIRS_UP_TO` members), plus the population's
size, valid members and Pareto front size. Nothing is cached on disk: member codes and distances
are remembered in memory for one call (elites are carried over, so most pairs repeat).

This module imports no other report module, so `views_data` can use it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.errors import GeError
from guided_evolution.evolution import diversity
from guided_evolution.evolution.scoring import scored
from guided_evolution.inspection.html_parts import esc
from guided_evolution.inspection.json_view import JsonView
from guided_evolution.runstore.git_store import GitStore


@dataclass(frozen=True)
class DiversityRow(JsonView):
    """One finished generation's population: its size, valid members, Pareto front, distinct
    segments per position ({segment key: count}) and mean pairwise code distance."""

    generation: int
    population: int
    valid: int
    front: int
    distinct: dict[str, int]
    mean_distance: float | None  # None under two members
    distance_sampled: bool


def _member_codes(index: Any, store: GitStore, cfg: GeConfig, vid: str) -> dict[str, str] | None:
    """``{segment key: code}`` of a stored variant; None without a commit or readable segments."""
    v = index.get_variant(vid)
    if v is None or not v.commit_sha:
        return None
    try:
        raw = store.read_files(v.commit_sha)
    except (GeError, KeyError, ValueError):
        return None
    files = {p: raw[p].decode("utf-8", "surrogateescape") for p in cfg.seed.files if p in raw}
    return diversity.split_segments(files, cfg.seed.files, cfg.seed.marker) or None


def diversity_per_generation(
    index: Any, cfg: GeConfig, repo: Path, last: int | None = None
) -> list[DiversityRow]:
    """One row per finished generation (the ``last`` ones only, if given), oldest first:
    ``generation``, ``population`` (members), ``valid``, ``front`` (the population's Pareto front
    on the selection objectives), ``distinct`` ({segment key: distinct segments}),
    ``mean_distance`` (None under two members) and ``distance_sampled``."""
    from guided_evolution.evolution.selection import pareto_front  # deap: only when needed

    newest = index.last_generation()
    if newest is None:
        return []
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    latest = index.latest_evaluations()
    cache = diversity.DistanceCache()
    codes: dict[str, dict[str, str] | None] = {}
    first = 0 if last is None else max(newest.generation - last + 1, 0)
    rows = []
    with GitStore.open(repo) as store:
        for gen in range(first, newest.generation + 1):
            rec = index.get_generation(gen)
            if rec is None:
                continue
            for vid in rec.population:
                if vid not in codes:
                    codes[vid] = _member_codes(index, store, cfg, vid)
            members = [c for vid in rec.population if (c := codes[vid]) is not None]
            found = diversity.measure(members, cache)
            valid = [s for v in rec.population if (s := scored(v, latest.get(v), objectives))]
            rows.append(
                DiversityRow(
                    generation=gen,
                    population=len(rec.population),
                    valid=len(valid),
                    front=len(pareto_front(valid, objectives)) if valid and objectives else 0,
                    distinct=found.distinct,
                    mean_distance=found.mean_distance,
                    distance_sampled=found.sampled,
                )
            )
    return rows


def diversity_lines(rows: list[DiversityRow], series: int = 10) -> list[str]:
    """`ge status`'s compact lines: the last generation's measures, then the mean pairwise
    distance of the last ``series`` generations ([] without a finished generation)."""
    if not rows:
        return []
    r = rows[-1]
    distinct = "/".join(str(n) for n in r.distinct.values()) or "-"
    approx = "~" if r.distance_sampled else ""
    trend = "  ".join(f"{x.generation}: {_dist(x.mean_distance)}" for x in rows[-series:])
    return [
        f"diversity (generation {r.generation})  population {r.population}  front "
        f"{r.front}  distinct segments {distinct}  mean distance {_dist(r.mean_distance)}"
        f"{approx}",
        f"mean distance per generation  {trend}",
    ]


def _dist(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short(key: str, keys: list[str]) -> str:
    """``#i`` when every position is in one file, else the whole key."""
    return key[key.rindex("#") :] if len({k.rpartition("#")[0] for k in keys}) == 1 else key


def diversity_html(rows: list[DiversityRow]) -> str:
    """The report's table of `diversity_per_generation`: a bar for the mean pairwise distance,
    then the distinct segments of each position."""
    head = "<h3 id=diversity>diversity per generation</h3>"
    if not rows:
        return head + "<p class=note>No finished generation yet.</p>"
    keys = sorted({k for r in rows for k in r.distinct}, key=diversity.position_order)
    th = "".join(f'<th class=num title="{esc(k)}">{esc(_short(k, keys))}</th>' for k in keys)
    body = []
    for r in rows:
        mean = r.mean_distance
        width = 0.0 if mean is None else 100 * mean
        bar = (
            f'<div class=rate><div class=track><div class=fill style="width:{width:.1f}%"></div>'
            f"</div><span>{_dist(mean)}{'~' if r.distance_sampled else ''}</span></div>"
        )
        cells = "".join(f"<td class=num>{r.distinct.get(k, '–')}</td>" for k in keys)
        body.append(
            f"<tr><td class=num>{r.generation}</td><td class=num>{r.population}</td>"
            f"<td class=num>{r.valid}</td><td class=num>{r.front}</td><td>{bar}</td>{cells}</tr>"
        )
    note = (
        "<p class=note>Each generation's population (its checkpoint): members, valid members, the "
        "Pareto front among them, the mean pairwise code distance (token edit distance over the "
        "longer segment, averaged over positions: 0 = identical, 1 = nothing in common; ~ = "
        "estimated from a fixed sample of pairs) and the distinct segments at each position "
        f"({esc(', '.join(keys))}; comments and layout ignored).</p>"
    )
    return (
        f"{head}{note}<div class=scroll><table><thead><tr><th class=num>generation</th>"
        f"<th class=num>population</th><th class=num>valid</th><th class=num>front</th>"
        f"<th>mean distance</th>{th}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )
