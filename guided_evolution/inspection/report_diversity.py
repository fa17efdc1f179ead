"""Diversity per generation, for `ge status` and `ge report`: the data and its HTML table.

Each finished generation's measures (`runstore.measures`: its checkpoint's population, valid
members and Pareto front, `evolution.diversity`'s distinct segments per position and mean pairwise
code distance) are read from the index, where the engine stored them when the generation closed.
A generation without a current row (a run of an earlier ge, an index rebuilt by ``ge doctor``) is
measured here once, from its members' commits (read-only, no lock), and its row is stored for
the next reader: the one write an inspection makes, best effort.

This module imports no other report module, so `views_data` can use it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.evolution import diversity
from guided_evolution.inspection.html_parts import esc
from guided_evolution.inspection.json_view import JsonView
from guided_evolution.runstore import measures


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


def _row(m: measures.GenerationMeasures) -> DiversityRow:
    return DiversityRow(
        generation=m.generation,
        population=m.population,
        valid=m.valid,
        front=len(m.front),
        distinct=m.distinct,
        mean_distance=m.mean_distance,
        distance_sampled=m.distance_sampled,
    )


def generation_measures(
    index: Any, cfg: GeConfig, repo: Path, last: int | None = None
) -> list[measures.GenerationMeasures]:
    """The measures of each finished generation (the ``last`` ones only, if given), oldest
    first: those stored in the index, and those of generations without a (current) row computed
    now and stored for the next reader (`runstore.measures`)."""
    newest = index.last_generation()
    if newest is None:
        return []
    first = 0 if last is None else max(newest.generation - last + 1, 0)
    populations = index.populations(first)
    have = index.generation_measures(first)
    missing = [g for g, pop in populations.items() if g not in have or have[g].members != pop]
    if missing:
        have.update({m.generation: m for m in _compute(index, cfg, repo, missing, populations)})
    return [have[g] for g in populations]


def _compute(
    index: Any, cfg: GeConfig, repo: Path, gens: list[int], populations: dict[int, list[str]]
) -> list[measures.GenerationMeasures]:
    """Measure generations ``gens`` (one distance cache over them all: elites repeat) and store
    them when the index can be written."""

    def commit(vid: str) -> str | None:
        v = index.get_variant(vid)
        return v.commit_sha if v is not None else None

    from guided_evolution.runstore.git_store import GitStore  # pygit2: only when measuring

    cache = diversity.DistanceCache()
    found = []
    with GitStore.open(repo) as store:
        codes = measures.MemberCodes(store, cfg, commit)
        for gen in gens:
            found.append(
                measures.measure(gen, populations[gen], codes, index.latest_evaluation, cfg, cache)
            )
            codes.next_population()
    measures.store_lazily(Path(index.path), found)
    return found


def diversity_per_generation(
    index: Any, cfg: GeConfig, repo: Path, last: int | None = None
) -> list[DiversityRow]:
    """One row per finished generation (the ``last`` ones only, if given), oldest first:
    ``generation``, ``population`` (members), ``valid``, ``front`` (the population's Pareto front
    on the selection objectives), ``distinct`` ({segment key: distinct segments}),
    ``mean_distance`` (None under two members) and ``distance_sampled``."""
    return [_row(m) for m in generation_measures(index, cfg, repo, last)]


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
