"""`ge report`'s islands and mating-preference sections, drawn from `report_islands.report_view`:
the best value of each selection objective per island over the generations (inline SVG in the
report's style, then a table per island), each island's front now, the migrations, and the
gene's median and spread per generation. A run with neither gets no section, so its report is
unchanged. Every piece of run data is HTML-escaped.

Its plots are small line plots over generations (`_Plot`), simpler than `report_svg`'s frames;
escaping, numbers, colours and the ``<svg>`` wrapper are `html_parts`'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from guided_evolution.inspection.html_parts import better, esc, fmt_num, island_colour, svg_plot
from guided_evolution.inspection.report_islands import (
    GeneRow,
    IslandGeneration,
    IslandReport,
    IslandRow,
    IslandView,
)


@dataclass
class _Plot:
    """A small line plot over generations (x) in the report's SVG style (its CSS classes)."""

    xs: list[float]
    ys: list[float]
    width: int = 420
    height: int = 270
    left: int = 64
    right: int = 16
    top: int = 14
    bottom: int = 44

    def __post_init__(self) -> None:
        self.x0, self.x1 = min(self.xs), max(self.xs)
        if self.x0 == self.x1:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        lo, hi = min(self.ys), max(self.ys)
        pad = (hi - lo) * 0.06 or max(abs(hi) * 0.05, 0.05)
        self.y0, self.y1 = lo - pad, hi + pad

    def x(self, v: float) -> float:
        span = self.width - self.left - self.right
        return self.left + (v - self.x0) / (self.x1 - self.x0) * span

    def y(self, v: float) -> float:
        span = self.height - self.top - self.bottom
        return self.height - self.bottom - (v - self.y0) / (self.y1 - self.y0) * span

    def points(self, pts: list[tuple[float, float]]) -> str:
        return " ".join(f"{self.x(x):.1f},{self.y(y):.1f}" for x, y in pts)

    def axes(self, ylabel: str) -> str:
        """Frame, grid, generation ticks (at most ~8), five value ticks and the labels."""
        base, right = self.height - self.bottom, self.width - self.right
        parts = [
            f'<rect class="area" x="{self.left}" y="{self.top}" width="{right - self.left}" '
            f'height="{base - self.top}"/>'
        ]
        first, last = math.ceil(self.x0), math.floor(self.x1)
        for g in range(first, last + 1, max(1, math.ceil((last - first + 1) / 8))):
            px = self.x(g)
            parts.append(
                f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{self.top}" y2="{base}"/>'
                f'<text class="tick" x="{px:.1f}" y="{base + 16}" text-anchor="middle">{g}</text>'
            )
        for i in range(5):
            v = self.y0 + (self.y1 - self.y0) * i / 4
            py = self.y(v)
            parts.append(
                f'<line class="grid" x1="{self.left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}"/>'
                f'<text class="tick" x="{self.left - 6}" y="{py + 4:.1f}" text-anchor="end">'
                f"{v:.4g}</text>"
            )
        cy = (self.top + base) / 2
        parts.append(
            f'<text class="label" x="{(self.left + right) / 2:.0f}" y="{self.height - 8}" '
            'text-anchor="middle">generation</text>'
            f'<text class="label" x="14" y="{cy:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {cy:.0f})">{esc(ylabel)}</text>'
        )
        return "".join(parts)

    def svg(self, body: str, label: str) -> str:
        return svg_plot(self.width, self.height, body, label)


def _best_svg(per_gen: list[IslandGeneration], name: str, direction: str) -> str:
    """The best value of one objective per generation, one line per island."""
    series: dict[int, list[tuple[float, float]]] = {}
    for g in per_gen:
        for row in g.islands:
            if name in row.best:
                point = (float(g.generation), row.best[name].value)
                series.setdefault(row.island, []).append(point)
    if not series:
        return ""
    plot = _Plot(
        [x for pts in series.values() for x, _ in pts],
        [y for pts in series.values() for _, y in pts],
    )
    body = [plot.axes(f"best {name}  ({better(direction)})")]
    for k, pts in sorted(series.items()):
        dash = ' stroke-dasharray="6 4"' if k % 2 else ""  # islands with equal bests stay visible
        body.append(
            f'<polyline fill="none" stroke="{island_colour(k)}" stroke-width="2"{dash} '
            f'points="{plot.points(pts)}"><title>island {k}</title></polyline>'
        )
        body.extend(
            f'<circle cx="{plot.x(x):.1f}" cy="{plot.y(y):.1f}" r="3" fill="{island_colour(k)}">'
            f"<title>island {k}, generation {x:g}: {esc(fmt_num(y))}</title></circle>"
            for x, y in pts
        )
    return plot.svg("".join(body), f"best {name} per island over generations")


def _legend(count: int) -> str:
    return " ".join(f'<span style="color:{island_colour(k)}">■</span> island {k}' for k in range(count))


def _island_table(k: int, per_gen: list[IslandGeneration], objectives: list[tuple[str, str]]) -> str:
    """One island over the generations: population, valid, front, best per objective."""
    th = "".join(
        f"<th class=num>best {esc(n)} {'↑' if d == 'max' else '↓'}</th>" for n, d in objectives
    )
    body = []
    for g in per_gen:
        row = next((r for r in g.islands if r.island == k), None)
        if row is None:
            continue
        cells = "".join(
            f'<td class=num title="{esc(b.id)}">{esc(fmt_num(b.value))} <code>{esc(b.id[:8])}</code></td>'
            if (b := row.best.get(n))
            else "<td class=num>–</td>"
            for n, _ in objectives
        )
        body.append(
            f"<tr><td class=num>{g.generation}</td><td class=num>{row.population}</td>"
            f"<td class=num>{row.valid}</td><td class=num>{row.front}</td>{cells}</tr>"
        )
    return (
        f"<h3>island {k}</h3><div class=scroll><table><thead><tr><th class=num>generation</th>"
        f"<th class=num>population</th><th class=num>valid</th><th class=num>front</th>{th}</tr>"
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _front_table(latest: list[IslandRow], objectives: list[tuple[str, str]]) -> str:
    """Each island's front in the latest checkpoint, member by member."""
    th = "".join(f"<th class=num>{esc(n)}</th>" for n, _ in objectives)
    body = "".join(
        f"<tr><td class=num>{row.island}</td><td><code>{esc(m.id)}</code></td>"
        + "".join(f"<td class=num>{esc(fmt_num(m.scores.get(n)))}</td>" for n, _ in objectives)
        + "</tr>"
        for row in latest
        for m in row.front_members
    )
    return (
        "<h3>each island's front now</h3><div class=scroll><table><thead><tr>"
        f"<th class=num>island</th><th>variant</th>{th}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _migrations_table(migrations: list[dict[str, Any]]) -> str:
    body = "".join(
        f"<tr><td class=num>{esc(e.get('generation'))}</td><td class=num>{esc(m.get('from'))} → "
        f"{esc(m.get('to'))}</td><td>{esc(', '.join(m.get('variants') or [])) or '–'}</td></tr>"
        for e in migrations
        for m in e.get("moves") or []
    )
    if not body:
        return "<h3>migrations</h3><p class=note>No migration yet.</p>"
    return (
        "<h3>migrations</h3><div class=scroll><table><thead><tr><th class=num>generation</th>"
        f"<th class=num>from → to</th><th>variants (copies; each keeps its id)</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def islands_html(isl: IslandView, objectives: list[tuple[str, str]]) -> str:
    """The report's islands section: best per objective per island over the generations (plots,
    then a table per island), each island's front now, and the migrations."""
    per_gen = isl.per_generation
    note = (
        f"<p class=note>{isl.count} islands, each its own population and selection; every "
        "finished generation's checkpoint after migration: members, valid members, the Pareto "
        "front among them and the best value of each selection objective (with its variant). "
        f"{_legend(isl.count)}</p>"
    )
    if not per_gen:
        return (
            note
            + "<p class=note>No finished generation yet.</p>"
            + _migrations_table(isl.migrations)
        )
    plots = "".join(
        f"<figure>{svg}<figcaption>best {esc(n)} per island</figcaption></figure>"
        for n, d in objectives
        if (svg := _best_svg(per_gen, n, d))
    )
    tables = "".join(_island_table(k, per_gen, objectives) for k in range(isl.count))
    return (
        f"{note}<div class=plots>{plots}</div>{tables}"
        f"{_front_table(isl.latest, objectives)}{_migrations_table(isl.migrations)}"
    )


def _gene_svg(rows: list[GeneRow]) -> str:
    """The gene's median (line) and IQR (band) per generation."""
    xs = [float(r.generation) for r in rows]
    plot = _Plot(xs, [y for r in rows for y in (r.min, r.max)])
    upper = plot.points([(x, r.q3) for x, r in zip(xs, rows, strict=True)])
    lower = plot.points([(x, r.q1) for x, r in reversed(list(zip(xs, rows, strict=True)))])
    median = plot.points([(x, r.median) for x, r in zip(xs, rows, strict=True)])
    body = (
        plot.axes("mating preference")
        + f'<polygon points="{upper} {lower}" fill="#0969da" opacity=".18"/>'
        + f'<polyline class="best" points="{median}"/>'
    )
    return plot.svg(body, "mating preference per generation")


def gene_html(rows: list[GeneRow]) -> str:
    """The report's gene section: its median and spread per generation (plot and table)."""
    source = "population" if rows[0].source == "population" else "children born in it"
    body = "".join(
        f"<tr><td class=num>{r.generation}</td><td class=num>{r.n}</td>"
        f"<td class=num>{r.median:.4f}</td><td class=num>{r.q1:.4f} – {r.q3:.4f}</td>"
        f"<td class=num>{r.min:.4f} – {r.max:.4f}</td></tr>"
        for r in rows
    )
    return (
        "<p class=note>Each variant's mating-preference gene (inherited and mutated with the "
        f"child, used when it picks a partner), over each generation's {source}: the median "
        "(line) and interquartile range (band); the table adds the extremes.</p>"
        f"<div class=plots><figure>{_gene_svg(rows)}<figcaption>median and IQR</figcaption>"
        "</figure></div><div class=scroll><table><thead><tr><th class=num>generation</th>"
        "<th class=num>carriers</th><th class=num>median</th><th class=num>IQR</th>"
        f"<th class=num>min – max</th></tr></thead><tbody>{body}</tbody></table></div>"
    )


def with_islands(
    sections: list[tuple[str, str, str]], view: IslandReport | None
) -> list[tuple[str, str, str]]:
    """The report's sections with the islands and gene sections after "operators" (unchanged
    for a run with neither)."""
    extra = []
    found = view.status if view is not None else None
    if found is not None and found.islands:
        extra.append(("islands", "Islands", islands_html(found.islands, view.objectives)))
    if found is not None and found.mating_preference:
        extra.append(("gene", "Mating preference", gene_html(found.mating_preference)))
    at = next((i + 1 for i, s in enumerate(sections) if s[0] == "operators"), len(sections))
    return [*sections[:at], *extra, *sections[at:]]
