"""`ge report`, the drawing: inline SVG plots (Pareto front, best so far, lineage) and the
metric tooltips (escaping, numbers and colours are `html_parts`').

Every piece of run data that reaches the markup goes through `esc`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from guided_evolution.inspection.html_parts import (
    OPERATOR_PALETTE,
    better,
    esc,
    fmt_num,
    gen_colour,
    svg_plot,
)
from guided_evolution.inspection.report_data import GraphNode, Point, ProgressRow, Report

CLOUD_LIMIT = 1500
"""Most points a cloud (the variants off the front, the evaluations under a best-so-far line)
draws; a larger one is an even sample of it, said under the plot. Fronts and lines are exact."""


def sample(items: Sequence[Any], limit: int | None = None) -> list[Any]:
    """``items``, or ``limit`` (default `CLOUD_LIMIT`) of them evenly spread over their order
    (first and last kept)."""
    limit = CLOUD_LIMIT if limit is None else max(limit, 2)
    n = len(items)
    if n <= limit:
        return list(items)
    step = (n - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def sample_note(shown: int, total: int, what: str) -> str:
    """The line under a plot whose cloud is a sample ('' when it is whole)."""
    if shown >= total:
        return ""
    return (
        f'<div class="offnote">{what}: an even sample of {shown} of {total} is drawn '
        "(the run is large); the Pareto front and the best-so-far line are exact.</div>"
    )


# --------------------------------------------------------------------------- frames and axes


def _ticks(lo: float, hi: float, n: int = 5) -> tuple[float, float, list[float]]:
    """A padded domain and 'nice' tick values inside it."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi == lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    pad = (hi - lo) * 0.06
    lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = mag
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if (hi - lo) / step <= n:
            break
    first = math.ceil(lo / step) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9 and k < 50:
        ticks.append(first + k * step)
        k += 1
    return lo, hi, ticks


def _robust_range(values: Sequence[float], keep: Sequence[float] = ()) -> tuple[float, float]:
    """(low, high) of ``values`` without extreme outliers: points farther than three
    10-90 percentile spans from that band are left out; ``keep`` values always count."""
    vals = sorted(v for v in values if math.isfinite(v))
    kept = [v for v in keep if math.isfinite(v)]
    if not vals and not kept:
        return 0.0, 1.0
    if len(vals) >= 5:
        q1, q9 = vals[int(0.1 * (len(vals) - 1))], vals[math.ceil(0.9 * (len(vals) - 1))]
        span = (q9 - q1) or max(abs(q1), abs(q9), 1e-12)
        vals = [v for v in vals if q1 - 3 * span <= v <= q9 + 3 * span]
    both = vals + kept
    return min(both), max(both)


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    big = max(abs(t) for t in ticks) if ticks else abs(value)
    if big >= 1e6 or (big and big < 1e-3):
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5 else 0))
    text = f"{value:,.{min(decimals, 6)}f}"
    return "0" if text.strip("-0.,") == "" else text


@dataclass
class _Frame:
    """A plot area: data domain -> pixels, with axes drawn by :meth:`axes`."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 560
    height: int = 360
    left: int = 70
    right: int = 34
    top: int = 16
    bottom: int = 52
    xticks: list[float] = field(default_factory=list)
    yticks: list[float] = field(default_factory=list)

    @classmethod
    def fit(
        cls, xs: Sequence[float], ys: Sequence[float], keep_x: Sequence[float] = (), keep_y: Sequence[float] = (), **kw: Any
    ) -> _Frame:
        """A frame around the data, ignoring extreme outliers (but never the ``keep`` values)."""
        x0, x1, xt = _ticks(*_robust_range(xs, keep_x))
        y0, y1, yt = _ticks(*_robust_range(ys, keep_y))
        widest = max((len(_tick_label(t, yt)) for t in yt), default=4)
        kw["left"] = max(kw.get("left", 56), int(30 + 6.6 * widest))
        return cls(x0, x1, y0, y1, xticks=xt, yticks=yt, **kw)

    def outside(self, vx: float, vy: float) -> bool:
        """True when a point lies off the plotted domain (it is drawn clamped to the edge)."""
        return not (self.x0 <= vx <= self.x1 and self.y0 <= vy <= self.y1)

    def x(self, v: float) -> float:
        v = min(max(v, self.x0), self.x1)
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        v = min(max(v, self.y0), self.y1)
        return self.height - self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.height - self.top - self.bottom)

    def axes(self, xlabel: str, ylabel: str) -> str:
        parts = [f'<rect class="area" x="{self.left}" y="{self.top}" width="{self.width - self.left - self.right}" '
                 f'height="{self.height - self.top - self.bottom}"/>']
        base = self.height - self.bottom
        for t in self.xticks:
            px = self.x(t)
            parts.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{self.top}" y2="{base}"/>')
            parts.append(f'<text class="tick" x="{px:.1f}" y="{base + 16}" text-anchor="middle">{esc(_tick_label(t, self.xticks))}</text>')
        for t in self.yticks:
            py = self.y(t)
            parts.append(f'<line class="grid" x1="{self.left}" x2="{self.width - self.right}" y1="{py:.1f}" y2="{py:.1f}"/>')
            parts.append(f'<text class="tick" x="{self.left - 6}" y="{py + 4:.1f}" text-anchor="end">{esc(_tick_label(t, self.yticks))}</text>')
        parts.append(f'<text class="label" x="{(self.left + self.width - self.right) / 2:.0f}" y="{self.height - 10}" text-anchor="middle">{esc(xlabel)}</text>')
        cy = (self.top + base) / 2
        parts.append(f'<text class="label" x="14" y="{cy:.0f}" text-anchor="middle" transform="rotate(-90 14 {cy:.0f})">{esc(ylabel)}</text>')
        return "".join(parts)


# --------------------------------------------------------------------------- plots


def metric_tip(metrics: dict[str, Any] | None) -> str:
    """``name=value`` pairs for a tooltip."""
    return "  ".join(f"{k}={fmt_num(v)}" for k, v in (metrics or {}).items())


def gen_legend(max_gen: int) -> str:
    """The colour scale of generations, as a small SVG."""
    stops = "".join(
        f'<stop offset="{i / 10:.1f}" stop-color="{gen_colour(round(i / 10 * max_gen), max_gen) if max_gen else gen_colour(0, 1)}"/>'
        for i in range(11)
    )
    return (
        '<svg class="legend" viewBox="0 0 260 34" width="260" height="34" xmlns="http://www.w3.org/2000/svg">'
        f'<defs><linearGradient id="gen-grad">{stops}</linearGradient></defs>'
        '<rect x="70" y="4" width="150" height="10" rx="2" fill="url(#gen-grad)"/>'
        '<text class="tick" x="64" y="13" text-anchor="end">generation</text>'
        f'<text class="tick" x="70" y="28">0</text><text class="tick" x="220" y="28" text-anchor="end">{max_gen}</text></svg>'
    )


def front_svgs(rep: Report) -> list[str]:
    """The Pareto front: every valid variant coloured by generation, the front outlined."""
    if not rep.points:
        return []
    pairs: list[tuple[tuple[str, str] | None, tuple[str, str]]]
    sel = rep.selected
    if len(sel) == 1:
        pairs = [(None, sel[0])]
    else:
        pairs = [(sel[0], sel[1])] + ([(sel[0], sel[2]), (sel[1], sel[2])] if len(sel) >= 3 else [])
    out = []
    for xo, yo in pairs:
        def xval(p: Point, xo: tuple[str, str] | None = xo) -> float:
            return float(p.generation) if xo is None else p.scores[xo[0]]

        xs = [xval(p) for p in rep.points]
        ys = [p.scores[yo[0]] for p in rep.points]
        front_pts = [p for p in rep.points if p.front]
        fr = _Frame.fit(xs, ys, [xval(p) for p in front_pts], [p.scores[yo[0]] for p in front_pts], width=560, height=380)
        off = 0
        body = [fr.axes("generation" if xo is None else f"{xo[0]}  ({better(xo[1])})", f"{yo[0]}  ({better(yo[1])})")]
        front = sorted((p for p in rep.points if p.front), key=lambda p: (xval(p), p.id))
        if len(front) > 1 and xo is not None and len(sel) == 2:
            pts = [(fr.x(xval(p)), fr.y(p.scores[yo[0]])) for p in front]
            d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}" + "".join(f"H{x:.1f}V{y:.1f}" for x, y in pts[1:])
            body.append(f'<path class="frontline" d="{d}"/>')
        rest = [p for p in rep.points if not p.front and p.id != rep.seed_id]
        cloud = sample(rest)
        ties: dict[tuple[float, float], list[Point]] = {}  # front members at one point
        for p in rep.points:
            if p.front:
                ties.setdefault((xval(p), p.scores[yo[0]]), []).append(p)
        kept = {p.id for p in cloud} | {group[0].id for group in ties.values()}
        kept |= {p.id for p in rep.points if p.id == rep.seed_id}
        drawn = [p for p in rep.points if p.id in kept]
        for p in sorted(drawn, key=lambda p: (p.front, p.generation, p.id)):
            color = gen_colour(p.generation, rep.max_gen)
            tip = f"{p.id}  gen {p.generation}  {p.operator}\n{metric_tip(p.scores)}"
            same = len(ties.get((xval(p), p.scores[yo[0]]), [])) if p.front else 0
            if same > 1:
                tip += f"\n(and {same - 1} more front variants at this point)"
            cls = "pt front" if p.front else "pt"
            r = 6 if p.front else 4
            px, py = fr.x(xval(p)), fr.y(p.scores[yo[0]])
            if fr.outside(xval(p), p.scores[yo[0]]):
                off += 1
                body.append(f'<path class="off" d="M{px:.1f},{py - 5:.1f}l4.5,8h-9z"><title>{esc(tip)} (off scale)</title></path>')
                continue
            shape = f'<circle class="{cls}" data-v="{esc(p.id)}" cx="{px:.1f}" cy="{py:.1f}" r="{r}" fill="{color}"><title>{esc(tip)}</title></circle>'
            body.append(f'<a href="#v-{esc(p.id)}">{shape}</a>' if p.front else shape)
        seed = next((p for p in rep.points if p.id == rep.seed_id), None)
        if seed is not None:
            sx, sy = fr.x(xval(seed)), fr.y(seed.scores[yo[0]])
            body.append(f'<text class="seedlabel" x="{sx + 8:.1f}" y="{sy - 8:.1f}">seed</text>')
        note = f'<div class="offnote">{off} off-scale variant(s) drawn as triangles at the edge</div>' if off else ""
        note += sample_note(len(cloud), len(rest), "variants off the front")
        out.append(svg_plot(fr.width, fr.height, "".join(body), f"Pareto front {yo[0]}") + note)
    return out


def _time_unit(span: float) -> tuple[float, str]:
    if span < 180:
        return 1.0, "seconds"
    if span < 3 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def progress_svgs(rep: Report, axis: str) -> list[str]:
    """Best-so-far of each selection objective against wall-clock time or LLM spend."""
    if not rep.progress:
        return []
    if axis == "time":
        scale, unit = _time_unit(rep.time_span_s)
        xlabel = f"time since the run started ({unit})"
        get: Callable[[ProgressRow], float] = lambda r: r.t / scale  # noqa: E731
        xmax = rep.time_span_s / scale
    elif rep.spend_axis == "usd":
        xlabel, get = "LLM spend (USD)", lambda r: r.usd
        xmax = max(rep.progress[-1].usd, rep.counts.get("cost_usd", 0.0))
    else:
        xlabel, get = "LLM tokens (no prices known)", lambda r: float(r.tokens)
        xmax = float(max(rep.progress[-1].tokens, rep.counts.get("prompt_tokens", 0) + rep.counts.get("completion_tokens", 0)))
    out = []
    for name, direction in rep.selected:
        xs = [get(r) for r in rep.progress] + [xmax]
        ys = [r.scores[name] for r in rep.progress]
        fr = _Frame.fit([0.0, *xs], ys, keep_y=[r.best[name] for r in rep.progress], width=420, height=300)
        body = [fr.axes(xlabel, f"{name}  ({better(direction)})")]
        dots = sample(rep.progress)
        for r in dots:
            cls = "dot off" if fr.outside(get(r), r.scores[name]) else "dot"
            body.append(f'<circle class="{cls}" cx="{fr.x(get(r)):.1f}" cy="{fr.y(r.scores[name]):.1f}" r="2.5"/>')
        first = rep.progress[0]
        d = f"M{fr.x(get(first)):.1f},{fr.y(first.best[name]):.1f}"
        marks = []
        prev = first.best[name]
        for r in rep.progress[1:]:
            value = r.best[name]
            if value != prev:
                d += f"H{fr.x(get(r)):.1f}V{fr.y(value):.1f}"
                marks.append(f'<circle class="step" cx="{fr.x(get(r)):.1f}" cy="{fr.y(value):.1f}" r="3.5"><title>{esc(r.variant)}: {esc(fmt_num(value))}</title></circle>')
                prev = value
        d += f"H{fr.x(xmax):.1f}"
        body.append(f'<path class="best" d="{d}"/>')
        body.extend(marks)
        note = sample_note(len(dots), len(rep.progress), "evaluations (dots)")
        out.append(svg_plot(fr.width, fr.height, "".join(body), f"best {name} over {axis}") + note)
    return out


def _best_path(fr: _Frame, steps: list[tuple[float, float]], xmax: float, cls: str, label: str) -> str:
    """A best-so-far step line through ``steps`` (x, best), extended to ``xmax``."""
    d = f"M{fr.x(steps[0][0]):.1f},{fr.y(steps[0][1]):.1f}"
    prev = steps[0][1]
    for x, value in steps[1:]:
        if value != prev:
            d += f"H{fr.x(x):.1f}V{fr.y(value):.1f}"
            prev = value
    d += f"H{fr.x(xmax):.1f}"
    return f'<path class="{cls}" data-run="{esc(label)}" d="{d}"><title>{esc(label)}</title></path>'


def compare_svgs(rep: Report, control: Report, labels: tuple[str, str], axis: str) -> list[str]:
    """Best so far of each selection objective in the run and in a control run, on the same axes:
    against successful evaluations (``axis="evaluations"``) or LLM calls (``"calls"``)."""
    xlabel = "successful evaluations" if axis == "evaluations" else "LLM calls"
    series = [(rep, "best", labels[0]), (control, "best ctl", labels[1])]
    out = []
    for name, direction in rep.selected:
        lines = []
        for run, cls, label in series:
            pts = [
                (float(i + 1 if axis == "evaluations" else r.calls), r.best[name])
                for i, r in enumerate(run.progress)
                if name in r.best
            ]
            if pts:
                end = len(run.progress) if axis == "evaluations" else int(run.counts.get("llm_calls", 0))
                lines.append((pts, max(float(end), pts[-1][0]), cls, label))
        if not lines:
            continue
        xs = [0.0, 1.0] + [end for _, end, _, _ in lines]
        ys = [v for pts, _, _, _ in lines for _, v in pts]
        fr = _Frame.fit(xs, ys, keep_x=xs, keep_y=ys, width=460, height=330, top=50)
        body = [fr.axes(xlabel, f"{name}  ({better(direction)})")]
        for k, (pts, end, cls, label) in enumerate(lines):
            body.append(_best_path(fr, pts, end, cls, label))
            y = 14 + 17 * k
            body.append(
                f'<line class="{cls}" x1="{fr.left}" x2="{fr.left + 24}" y1="{y - 4}" y2="{y - 4}"/>'
                f'<text class="label" x="{fr.left + 30}" y="{y}">{esc(label)}</text>'
            )
        out.append(svg_plot(fr.width, fr.height, "".join(body), f"best {name} over {xlabel}, compared"))
    return out


def lineage_svg(rep: Report) -> str:
    """The ancestry of the Pareto variants, one column per generation; the best line in bold."""
    nodes = {n.id: n for n in rep.graph}
    if not nodes:
        return ""
    pos, gen_x, width, height = _lineage_layout(nodes)
    ops = sorted({n.operator for n in nodes.values()})
    color = {op: OPERATOR_PALETTE[i % len(OPERATOR_PALETTE)] for i, op in enumerate(ops)}
    body = [f'<text class="tick" x="{x:.0f}" y="18" text-anchor="middle">gen {g}</text>' for g, x in gen_x.items()]
    body += _lineage_edges(nodes, pos)
    body += _lineage_nodes(nodes, pos, color, rep.seed_id)
    legend = "".join(
        f'<span class="chip"><span class="swatch" style="background:{color[op]}"></span>{esc(op)}</span>' for op in ops
    )
    svg = svg_plot(max(width, 300), max(height, 80), "".join(body), "lineage of the Pareto front")
    tie = (
        f"<p class=note>The lineage of {rep.lineage_of} front variants, one per distinct point "
        f"of the front ({len(rep.front)} front variants in all: the others tie with one of "
        "them in every selection objective).</p>"
        if 0 < rep.lineage_of < len(rep.front)
        else ""
    )
    return tie + f'<div class="legendrow">{legend}<span class="chip"><span class="swatch ring"></span>on the Pareto front</span><span class="chip"><span class="bar best"></span>best line</span><span class="chip"><span class="bar second"></span>second parent (crossover)</span></div><div class="scroll">{svg}</div>'


def _sub_columns(nodes: dict[str, GraphNode]) -> dict[str, int]:
    """Each node's sub-column inside its generation: same-generation chains (fix children) step right."""
    sub: dict[str, int] = {}

    def depth(vid: str) -> int:
        if vid not in sub:
            sub[vid] = 0
            n = nodes[vid]
            same = [depth(p) + 1 for p in n.parents if p in nodes and nodes[p].generation == n.generation]
            sub[vid] = max(same, default=0)
        return sub[vid]

    for vid in nodes:
        depth(vid)
    return sub


def _lineage_layout(
    nodes: dict[str, GraphNode],
) -> tuple[dict[str, tuple[float, float]], dict[int, float], int, int]:
    """Node positions, the x of each generation's first column, and the drawing's width and height."""
    sub = _sub_columns(nodes)
    gens = sorted({n.generation for n in nodes.values()})
    max_sub = {g: max(sub[v] for v, n in nodes.items() if n.generation == g) for g in gens}
    col_x: dict[tuple[int, int], float] = {}
    x = 70.0
    for g in gens:
        for s in range(max_sub[g] + 1):
            col_x[(g, s)] = x
            x += 54 if s < max_sub[g] else 120
    columns: dict[tuple[int, int], list[str]] = {}
    for vid, n in sorted(nodes.items(), key=lambda kv: (kv[1].generation, sub[kv[0]])):
        columns.setdefault((n.generation, sub[vid]), []).append(vid)
    row_y: dict[str, float] = {}
    spacing = 26
    for key in sorted(columns):  # order each column by the mean height of its parents
        ids = columns[key]
        ids.sort(key=lambda v: (sum(row_y.get(p, 0.0) for p in nodes[v].parents) / max(len(nodes[v].parents), 1), v))
        for i, vid in enumerate(ids):
            row_y[vid] = 40 + i * spacing
    pos = {vid: (col_x[(n.generation, sub[vid])], row_y[vid]) for vid, n in nodes.items()}
    return pos, {g: col_x[(g, 0)] for g in gens}, int(x - 120 + 150), int(max(row_y.values()) + 40)


def _lineage_edges(nodes: dict[str, GraphNode], pos: dict[str, tuple[float, float]]) -> list[str]:
    """One curve per parent link; dashed for a second parent, bold along the best line."""
    body = []
    for vid, n in nodes.items():
        cx, cy = pos[vid]
        for i, p in enumerate(n.parents):
            if p not in pos:
                continue
            px, py = pos[p]
            mid = (px + cx) / 2
            cls = "edge best" if n.best_line and nodes[p].best_line and i == 0 else "edge"
            if i > 0:
                cls += " second"
            body.append(f'<path class="{cls}" d="M{px:.0f},{py:.0f} C{mid:.0f},{py:.0f} {mid:.0f},{cy:.0f} {cx:.0f},{cy:.0f}"/>')
    return body


def _lineage_nodes(
    nodes: dict[str, GraphNode], pos: dict[str, tuple[float, float]], color: dict[str, str], seed_id: str | None
) -> list[str]:
    """One circle per variant, coloured by operator; front members are labelled and link to their row."""
    body = []
    for vid, n in nodes.items():
        cx, cy = pos[vid]
        tip = f"{vid}  gen {n.generation}  {n.operator}" + (f" ({n.persona})" if n.persona else "")
        tip += "\n" + metric_tip(n.metrics)
        cls = "node" + (" front" if n.front else "") + (" bestnode" if n.best_line else "")
        shape = f'<circle class="{cls}" data-v="{esc(vid)}" cx="{cx:.0f}" cy="{cy:.0f}" r="{7 if n.front else 5}" fill="{color[n.operator]}"><title>{esc(tip)}</title></circle>'
        if n.front:
            body.append(f'<a href="#v-{esc(vid)}">{shape}</a>')
            body.append(f'<text class="nodelabel" x="{cx + 10:.1f}" y="{cy + 4:.1f}">{esc(vid[:8])}</text>')
        else:
            body.append(shape)
        if vid == seed_id:
            body.append(f'<text class="nodelabel" x="{cx - 10:.1f}" y="{cy + 4:.1f}" text-anchor="end">seed</text>')
    return body
