"""`ge report`: one self-contained HTML file about a run (live or finished) that opens offline.

Every plot is inline SVG drawn here; the page's only script is inline, small, and allowed by a
Content-Security-Policy hash, so nothing is fetched and nothing injected can run. Every piece of
run data (variant code, LLM text, failure output, even metric names) is HTML-escaped.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import html
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.inspection.views_data import (
    RunData,
    _open,
    failure_groups,
    front_rows,
    load_run_data,
    reflection_rows,
    variant_calls,
    write_atomic,
)

MAX_DIFF_CHARS = 60_000
MAX_REPLY_CHARS = 20_000
MAX_FRONT_DIFFS = 60

_VIRIDIS = (
    (68, 1, 84), (72, 35, 116), (64, 67, 135), (52, 94, 141), (41, 120, 142), (32, 144, 140),
    (34, 167, 132), (68, 190, 112), (121, 209, 81), (189, 222, 38), (253, 231, 37),
)
_PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
)


def _e(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 5) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != value or value in (math.inf, -math.inf):
        return str(value)
    return f"{value:.{digits}g}"


def _gen_color(gen: int, max_gen: int) -> str:
    """Viridis (cut before the palest yellow) by generation."""
    t = 0.0 if max_gen <= 0 else min(max(gen / max_gen, 0.0), 1.0) * 0.92
    pos = t * (len(_VIRIDIS) - 1)
    i = min(int(pos), len(_VIRIDIS) - 2)
    f = pos - i
    rgb = [round(a + (b - a) * f) for a, b in zip(_VIRIDIS[i], _VIRIDIS[i + 1], strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# --------------------------------------------------------------------------- data


@dataclass
class GroupStats:
    """Children of one operator or persona: how many were proposed, valid, better than a parent."""

    name: str
    proposed: int = 0
    valid: int = 0
    improved: int = 0
    rejected: int = 0
    pending: int = 0  # not evaluated yet: left out of the rates

    def as_dict(self) -> dict[str, Any]:
        decided = self.proposed - self.pending
        return {
            "name": self.name,
            "proposed": self.proposed,
            "decided": decided,
            "valid": self.valid,
            "improved": self.improved,
            "rejected": self.rejected,
            "pending": self.pending,
            "valid_rate": self.valid / decided if decided else None,
            "improved_rate": self.improved / decided if decided else None,
        }


@dataclass
class Report:
    """Everything the page shows, as plain data (also what `ge report --json` summarises)."""

    title: str
    run_dir: str
    state: str
    generated_at: float
    counts: dict[str, Any]
    objectives: list[dict[str, Any]]
    selected: list[tuple[str, str]]
    max_gen: int
    points: list[dict[str, Any]] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    spend_axis: str | None = None
    operators: list[dict[str, Any]] = field(default_factory=list)
    personas: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    graph: list[dict[str, Any]] = field(default_factory=list)
    best_line: list[str] = field(default_factory=list)
    reflections: list[dict[str, Any]] = field(default_factory=list)
    seed_id: str | None = None
    time_span_s: float = 0.0


def _operator_name(op: str | None, offline: bool) -> str:
    op = op or "?"
    if offline and op in ("mutation", "crossover"):
        return f"offline-{op}"
    return op


def _group_stats(data: RunData, events: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ops: dict[str, GroupStats] = {}
    personas: dict[str, GroupStats] = {}
    for v in data.variants.values():
        if v.operator == "seed":
            continue
        for key, table in ((v.operator, ops), (v.persona or "(none)", personas)):
            stats = table.setdefault(key, GroupStats(key))
            stats.proposed += 1
            if v.status in ("pending", "evaluating"):
                stats.pending += 1
            elif data.scores(v.id) is not None:
                stats.valid += 1
                stats.improved += data.improved(v.id)
    offline = data.config.llm.offline
    for event in events:
        name = _operator_name(event.data.get("operator"), offline)
        stats = ops.setdefault(name, GroupStats(name))
        stats.proposed += 1
        stats.rejected += 1
    order = lambda s: (-s.proposed, s.name)  # noqa: E731
    return [s.as_dict() for s in sorted(ops.values(), key=order)], [
        s.as_dict() for s in sorted(personas.values(), key=order)
    ]


def _progress(data: RunData, index: Any, calls: list[Any], start: float) -> tuple[list[dict[str, Any]], str | None]:
    """One row per successful evaluation in time order: time, LLM spend so far, best so far."""
    times = [c.created_at for c in calls]
    cost = [0.0]
    tokens = [0]
    for c in calls:
        cost.append(cost[-1] + c.cost_usd)
        tokens.append(tokens[-1] + c.prompt_tokens + c.completion_tokens)
    spend_axis = "usd" if cost[-1] > 0 else ("tokens" if tokens[-1] > 0 else None)
    rows = []
    for ev in index.evaluations():
        scores = data.scores(ev.variant_id)
        if ev.status != "ok" or scores is None:
            continue
        when = (ev.started_at or start) + (ev.duration_s or 0.0)
        k = bisect.bisect_right(times, when)
        rows.append({"variant": ev.variant_id, "t": max(when - start, 0.0), "usd": cost[k], "tokens": tokens[k], "scores": scores})
    rows.sort(key=lambda r: r["t"])
    best: dict[str, float] = {}
    for row in rows:
        for name, direction in data.objectives:
            value = row["scores"][name]
            old = best.get(name)
            if old is None or (value > old if direction == "max" else value < old):
                best[name] = value
        row["best"] = dict(best)
    return rows, spend_axis


def collect(run_dir: Path) -> Report:
    """Read everything the report shows from the run (read-only, no lock)."""
    from guided_evolution.runstore.git_store import GitStore

    with _open(run_dir) as (index, resolved, paths):
        data = load_run_data(index, resolved, paths)
        cfg = resolved.config
        counts = index.counts()
        events = index.events()
        calls = index.calls()
        last = index.last_generation()
        start = min([e.time for e in events] + [v.created_at for v in data.variants.values()] or [time.time()])
        if data.finished:
            state = f"finished: {data.finished}"
        else:
            state = "running or stopped (not finished)"
        max_gen = max((v.generation for v in data.variants.values()), default=0)
        rows = front_rows(index, cfg) if data.objectives else []
        front_ids = {r["id"] for r in rows}
        points = []
        for v in data.variants.values():
            scores = data.scores(v.id)
            if scores is not None:
                points.append(
                    {"id": v.id, "generation": v.generation, "operator": v.operator, "scores": scores, "front": v.id in front_ids}
                )
        progress, spend_axis = _progress(data, index, calls, start)
        operators, personas = _group_stats(data, [e for e in events if e.kind == "proposal_rejected"])
        failures = failure_groups(data, [e for e in events if e.kind == "proposal_rejected"])
        best_line = data.ancestry([rows[0]["id"]]) if rows else []
        graph = []
        on_line = set(best_line)
        for vid in data.ancestry([r["id"] for r in rows]):
            v = data.variants.get(vid)
            if v is None:
                continue
            ev = data.latest.get(vid)
            graph.append(
                {
                    "id": vid, "generation": v.generation, "operator": v.operator, "persona": v.persona,
                    "parents": [p for p in v.parents if p in data.variants], "front": vid in front_ids,
                    "best_line": vid in on_line, "metrics": ev.metrics if ev else None,
                }
            )
        reflections = reflection_rows(index, data, only=on_line)
        seen = {r["variant"] for r in reflections}
        for vid in best_line:  # reflections kept only on the commit (index rebuilt from git)
            v = data.variants.get(vid)
            if v is not None and v.eot_reflection and vid not in seen:
                ev = data.latest.get(vid)
                reflections.append(
                    {"variant": vid, "elite": None, "segment": v.segment, "time": v.created_at, "generation": v.generation,
                     "metrics": ev.metrics if ev else None, "improved": data.improved(vid), "text": v.eot_reflection}
                )
        reflections.sort(key=lambda r: (r["generation"] or 0, r["time"] or 0))
        seed_commit = data.variants[data.seed_id].commit_sha if data.seed_id in data.variants else None
        with GitStore.open(paths.repo) as store:
            for n, row in enumerate(rows):
                v = data.variants[row["id"]]
                row["persona"] = v.persona
                row["model"] = v.model
                row["parents"] = v.parents
                row["reflection"] = v.eot_reflection
                own = [c for c in variant_calls(index, v, calls) if c.id == v.llm_call_id]
                row["reply"] = own[0].reply if own else None
                row["diff"] = None
                if seed_commit and v.commit_sha and n < MAX_FRONT_DIFFS and v.id != data.seed_id:
                    row["diff"] = store.diff(seed_commit, v.commit_sha)
        end = max([e.time for e in events] + [start])
        return Report(
            title=Path(data.run_dir).name,
            run_dir=data.run_dir,
            state=state,
            generated_at=time.time(),
            counts={**counts, "generation": last.generation if last else 0, "generations": cfg.evolution.generations,
                    "models": ", ".join(m.model for m in cfg.llm.models)},
            objectives=[{"name": o.name, "direction": o.direction, "select": o.select} for o in cfg.objectives],
            selected=data.objectives,
            max_gen=max_gen,
            points=points,
            front=rows,
            progress=progress,
            spend_axis=spend_axis,
            operators=operators,
            personas=personas,
            failures=failures,
            graph=graph,
            best_line=best_line,
            reflections=reflections,
            seed_id=data.seed_id,
            time_span_s=max(end - start, progress[-1]["t"] if progress else 0.0),
        )


# --------------------------------------------------------------------------- SVG plotting


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
            parts.append(f'<text class="tick" x="{px:.1f}" y="{base + 16}" text-anchor="middle">{_e(_tick_label(t, self.xticks))}</text>')
        for t in self.yticks:
            py = self.y(t)
            parts.append(f'<line class="grid" x1="{self.left}" x2="{self.width - self.right}" y1="{py:.1f}" y2="{py:.1f}"/>')
            parts.append(f'<text class="tick" x="{self.left - 6}" y="{py + 4:.1f}" text-anchor="end">{_e(_tick_label(t, self.yticks))}</text>')
        parts.append(f'<text class="label" x="{(self.left + self.width - self.right) / 2:.0f}" y="{self.height - 10}" text-anchor="middle">{_e(xlabel)}</text>')
        cy = (self.top + base) / 2
        parts.append(f'<text class="label" x="14" y="{cy:.0f}" text-anchor="middle" transform="rotate(-90 14 {cy:.0f})">{_e(ylabel)}</text>')
        return "".join(parts)


def _svg(frame_w: int, frame_h: int, body: str, label: str) -> str:
    return (f'<svg class="plot" role="img" aria-label="{_e(label)}" viewBox="0 0 {frame_w} {frame_h}" '
            f'width="{frame_w}" height="{frame_h}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _arrow(direction: str) -> str:
    return "↑ better" if direction == "max" else "↓ better"


def _metric_tip(metrics: dict[str, Any] | None) -> str:
    return "  ".join(f"{k}={_num(v)}" for k, v in (metrics or {}).items())


def _gen_legend(max_gen: int) -> str:
    stops = "".join(
        f'<stop offset="{i / 10:.1f}" stop-color="{_gen_color(round(i / 10 * max_gen), max_gen) if max_gen else _gen_color(0, 1)}"/>'
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
        def xval(p: dict[str, Any], xo: tuple[str, str] | None = xo) -> float:
            return float(p["generation"]) if xo is None else p["scores"][xo[0]]

        xs = [xval(p) for p in rep.points]
        ys = [p["scores"][yo[0]] for p in rep.points]
        front_pts = [p for p in rep.points if p["front"]]
        fr = _Frame.fit(xs, ys, [xval(p) for p in front_pts], [p["scores"][yo[0]] for p in front_pts], width=560, height=380)
        off = 0
        body = [fr.axes("generation" if xo is None else f"{xo[0]}  ({_arrow(xo[1])})", f"{yo[0]}  ({_arrow(yo[1])})")]
        front = sorted((p for p in rep.points if p["front"]), key=xval)
        if len(front) > 1 and xo is not None and len(sel) == 2:
            pts = [(fr.x(xval(p)), fr.y(p["scores"][yo[0]])) for p in front]
            d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}" + "".join(f"H{x:.1f}V{y:.1f}" for x, y in pts[1:])
            body.append(f'<path class="frontline" d="{d}"/>')
        for p in sorted(rep.points, key=lambda p: (p["front"], p["generation"])):
            color = _gen_color(p["generation"], rep.max_gen)
            tip = f"{p['id']}  gen {p['generation']}  {p['operator']}\n{_metric_tip(p['scores'])}"
            cls = "pt front" if p["front"] else "pt"
            r = 6 if p["front"] else 4
            px, py = fr.x(xval(p)), fr.y(p["scores"][yo[0]])
            if fr.outside(xval(p), p["scores"][yo[0]]):
                off += 1
                body.append(f'<path class="off" d="M{px:.1f},{py - 5:.1f}l4.5,8h-9z"><title>{_e(tip)} (off scale)</title></path>')
                continue
            shape = f'<circle class="{cls}" data-v="{_e(p["id"])}" cx="{px:.1f}" cy="{py:.1f}" r="{r}" fill="{color}"><title>{_e(tip)}</title></circle>'
            body.append(f'<a href="#v-{_e(p["id"])}">{shape}</a>' if p["front"] else shape)
        seed = next((p for p in rep.points if p["id"] == rep.seed_id), None)
        if seed is not None:
            sx, sy = fr.x(xval(seed)), fr.y(seed["scores"][yo[0]])
            body.append(f'<text class="seedlabel" x="{sx + 8:.1f}" y="{sy - 8:.1f}">seed</text>')
        note = f'<div class="offnote">{off} off-scale variant(s) drawn as triangles at the edge</div>' if off else ""
        out.append(_svg(fr.width, fr.height, "".join(body), f"Pareto front {yo[0]}") + note)
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
        get: Callable[[dict[str, Any]], float] = lambda r: r["t"] / scale  # noqa: E731
        xmax = rep.time_span_s / scale
    elif rep.spend_axis == "usd":
        xlabel, get = "LLM spend (USD)", lambda r: r["usd"]
        xmax = max(rep.progress[-1]["usd"], rep.counts.get("cost_usd", 0.0))
    else:
        xlabel, get = "LLM tokens (no prices known)", lambda r: float(r["tokens"])
        xmax = float(max(rep.progress[-1]["tokens"], rep.counts.get("prompt_tokens", 0) + rep.counts.get("completion_tokens", 0)))
    out = []
    for name, direction in rep.selected:
        xs = [get(r) for r in rep.progress] + [xmax]
        ys = [r["scores"][name] for r in rep.progress]
        fr = _Frame.fit([0.0, *xs], ys, keep_y=[r["best"][name] for r in rep.progress], width=420, height=300)
        body = [fr.axes(xlabel, f"{name}  ({_arrow(direction)})")]
        for r in rep.progress:
            cls = "dot off" if fr.outside(get(r), r["scores"][name]) else "dot"
            body.append(f'<circle class="{cls}" cx="{fr.x(get(r)):.1f}" cy="{fr.y(r["scores"][name]):.1f}" r="2.5"/>')
        first = rep.progress[0]
        d = f"M{fr.x(get(first)):.1f},{fr.y(first['best'][name]):.1f}"
        marks = []
        prev = first["best"][name]
        for r in rep.progress[1:]:
            value = r["best"][name]
            if value != prev:
                d += f"H{fr.x(get(r)):.1f}V{fr.y(value):.1f}"
                marks.append(f'<circle class="step" cx="{fr.x(get(r)):.1f}" cy="{fr.y(value):.1f}" r="3.5"><title>{_e(r["variant"])}: {_e(_num(value))}</title></circle>')
                prev = value
        d += f"H{fr.x(xmax):.1f}"
        body.append(f'<path class="best" d="{d}"/>')
        body.extend(marks)
        out.append(_svg(fr.width, fr.height, "".join(body), f"best {name} over {axis}"))
    return out


def lineage_svg(rep: Report) -> str:
    """The ancestry of the Pareto variants, one column per generation; the best line in bold."""
    nodes = {n["id"]: n for n in rep.graph}
    if not nodes:
        return ""
    sub: dict[str, int] = {}

    def depth(vid: str) -> int:  # same-generation chains (fix children) get sub-columns
        if vid not in sub:
            sub[vid] = 0
            n = nodes[vid]
            same = [depth(p) + 1 for p in n["parents"] if p in nodes and nodes[p]["generation"] == n["generation"]]
            sub[vid] = max(same, default=0)
        return sub[vid]

    for vid in nodes:
        depth(vid)
    gens = sorted({n["generation"] for n in nodes.values()})
    max_sub = {g: max(sub[v] for v, n in nodes.items() if n["generation"] == g) for g in gens}
    col_x: dict[tuple[int, int], float] = {}
    x = 70.0
    for g in gens:
        for s in range(max_sub[g] + 1):
            col_x[(g, s)] = x
            x += 54 if s < max_sub[g] else 120
    width = int(x - 120 + 150)
    columns: dict[tuple[int, int], list[str]] = {}
    for vid, n in sorted(nodes.items(), key=lambda kv: (kv[1]["generation"], sub[kv[0]])):
        columns.setdefault((n["generation"], sub[vid]), []).append(vid)
    row_y: dict[str, float] = {}
    spacing = 26
    for key in sorted(columns):  # order each column by the mean height of its parents
        ids = columns[key]
        ids.sort(key=lambda v: (sum(row_y.get(p, 0.0) for p in nodes[v]["parents"]) / max(len(nodes[v]["parents"]), 1), v))
        for i, vid in enumerate(ids):
            row_y[vid] = 40 + i * spacing
    height = int(max(row_y.values()) + 40)
    ops = sorted({n["operator"] for n in nodes.values()})
    color = {op: _PALETTE[i % len(_PALETTE)] for i, op in enumerate(ops)}
    body = []
    for g in gens:
        body.append(f'<text class="tick" x="{col_x[(g, 0)]:.0f}" y="18" text-anchor="middle">gen {g}</text>')
    pos = {vid: (col_x[(n["generation"], sub[vid])], row_y[vid]) for vid, n in nodes.items()}
    for vid, n in nodes.items():
        cx, cy = pos[vid]
        for i, p in enumerate(n["parents"]):
            if p not in pos:
                continue
            px, py = pos[p]
            mid = (px + cx) / 2
            cls = "edge best" if n["best_line"] and nodes[p]["best_line"] and i == 0 else "edge"
            if i > 0:
                cls += " second"
            body.append(f'<path class="{cls}" d="M{px:.1f},{py:.1f} C{mid:.1f},{py:.1f} {mid:.1f},{cy:.1f} {cx:.1f},{cy:.1f}"/>')
    for vid, n in nodes.items():
        cx, cy = pos[vid]
        tip = f"{vid}  gen {n['generation']}  {n['operator']}" + (f" ({n['persona']})" if n.get("persona") else "")
        tip += "\n" + _metric_tip(n.get("metrics"))
        cls = "node" + (" front" if n["front"] else "") + (" bestnode" if n["best_line"] else "")
        shape = f'<circle class="{cls}" data-v="{_e(vid)}" cx="{cx:.1f}" cy="{cy:.1f}" r="{7 if n["front"] else 5}" fill="{color[n["operator"]]}"><title>{_e(tip)}</title></circle>'
        if n["front"]:
            body.append(f'<a href="#v-{_e(vid)}">{shape}</a>')
            body.append(f'<text class="nodelabel" x="{cx + 10:.1f}" y="{cy + 4:.1f}">{_e(vid[:8])}</text>')
        else:
            body.append(shape)
        if vid == rep.seed_id:
            body.append(f'<text class="nodelabel" x="{cx - 10:.1f}" y="{cy + 4:.1f}" text-anchor="end">seed</text>')
    legend = "".join(
        f'<span class="chip"><span class="swatch" style="background:{color[op]}"></span>{_e(op)}</span>' for op in ops
    )
    svg = _svg(max(width, 300), max(height, 80), "".join(body), "lineage of the Pareto front")
    return f'<div class="legendrow">{legend}<span class="chip"><span class="swatch ring"></span>on the Pareto front</span><span class="chip"><span class="bar best"></span>best line</span><span class="chip"><span class="bar second"></span>second parent (crossover)</span></div><div class="scroll">{svg}</div>'


# --------------------------------------------------------------------------- HTML


_CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#ffffff;--panel:#f6f8fa;--accent:#0969da;--good:#1a7f37;--bad:#cf222e}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#24292f;color:#fff;padding:22px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header .sub{color:#c9d1d9;margin-top:4px;font-size:13px}
main{max-width:1240px;margin:0 auto;padding:8px 32px 48px}
h2{font-size:18px;margin:34px 0 4px;padding-bottom:6px;border-bottom:1px solid var(--line)}
p.note{color:var(--muted);margin:6px 0 12px}
nav{margin:14px 0 0;color:var(--muted)}
nav a{color:var(--accent);text-decoration:none}
nav a:hover{text-decoration:underline}
tr.main td{border-bottom:none}
tr.more td{padding-top:0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:12px;margin-top:20px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.plots{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.plots figure{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
.plots figcaption{color:var(--muted);font-size:12px;padding:0 6px 4px}
svg .area{fill:#fbfcfd;stroke:var(--line)}
svg .grid{stroke:#e6e9ec;stroke-width:1}
svg text{font-family:inherit}
svg .tick{font-size:11px;fill:var(--muted)}
svg .label{font-size:12px;fill:var(--fg)}
svg .pt{stroke:#fff;stroke-width:.8;opacity:.55}
svg .pt.front{stroke:#111;stroke-width:1.6;opacity:1}
svg .pt.hl,svg .node.hl{stroke:#e8590c;stroke-width:3}
svg .frontline{fill:none;stroke:#24292f;stroke-width:1.2;stroke-dasharray:4 3;opacity:.7}
svg .seedlabel,svg .nodelabel{font-size:11px;fill:var(--fg);paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
svg .dot{fill:#8c959f;opacity:.45}
svg .dot.off{fill:none;stroke:#cf222e;opacity:.8}
svg .off{fill:#fff;stroke:#cf222e;stroke-width:1.3}
.offnote{color:var(--muted);font-size:12px;padding:0 6px}
svg .best{fill:none;stroke:var(--accent);stroke-width:2.2}
svg .step{fill:var(--accent);stroke:#fff;stroke-width:1}
svg .edge{fill:none;stroke:#afb8c1;stroke-width:1.2}
svg .edge.second{stroke-dasharray:4 3}
svg .edge.best{stroke:#24292f;stroke-width:2.6}
svg .node{stroke:#fff;stroke-width:1}
svg .node.front{stroke:#111;stroke-width:1.8}
svg .node.bestnode{stroke:#111;stroke-width:2.4}
.legendrow{display:flex;flex-wrap:wrap;gap:14px;margin:8px 0;color:var(--muted);font-size:12px}
.chip{display:inline-flex;align-items:center;gap:6px}
.swatch{display:inline-block;width:11px;height:11px;border-radius:50%}
.swatch.ring{border:2px solid #111;background:#fff}
.bar{display:inline-block;width:22px;height:0;border-top:2px solid #afb8c1}
.bar.best{border-top:3px solid #24292f}.bar.second{border-top:2px dashed #afb8c1}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:8px;background:#fff}
table{border-collapse:collapse;width:100%;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--panel);font-weight:600;font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
td.num,th.num{text-align:right;white-space:nowrap}
.nw{white-space:nowrap}
td.id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
tr[data-variant]:hover{background:#fff8e6}
.rate{display:flex;align-items:center;gap:8px;min-width:180px}
.rate .track{flex:1;height:10px;background:#eaeef2;border-radius:5px;overflow:hidden}
.rate .fill{height:100%;background:var(--accent)}
.rate .fill.good{background:var(--good)}.rate .fill.bad{background:var(--bad)}
.rate span{width:64px;text-align:right;font-size:12.5px}
pre{margin:6px 0;padding:10px 12px;background:var(--panel);border:1px solid var(--line);border-radius:6px;overflow:auto;max-height:520px;font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre.wrap{white-space:pre-wrap;word-break:break-word}
.diff .add{background:#e6ffec;color:#116329;display:block}
.diff .del{background:#ffebe9;color:#82071e;display:block}
.diff .hunk{color:#8250df;display:block}
.diff .meta{color:var(--muted);font-weight:600;display:block}
details{margin:4px 0}
summary{cursor:pointer;color:var(--accent)}
.badge{display:inline-block;padding:0 7px;border-radius:10px;font-size:11.5px;background:#ddf4ff;color:#0550ae;margin-left:6px}
.badge.good{background:#dafbe1;color:#116329}
.refl{border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:10px 0;background:#fff}
.refl .head{font-size:12.5px;color:var(--muted)}
footer{color:var(--muted);font-size:12px;margin-top:40px;border-top:1px solid var(--line);padding-top:10px}
"""

_SCRIPT = """
(function () {
  "use strict";
  var errors = 0;
  window.addEventListener("error", function () { errors += 1; mark(); });
  function mark() {
    var el = document.getElementById("ge-status");
    if (!el) { return; }
    el.setAttribute("data-plots", String(document.querySelectorAll("svg.plot").length));
    el.setAttribute("data-errors", String(errors));
    el.setAttribute("data-ready", "1");
  }
  function highlight(id, on) {
    var sel = '[data-v="' + (window.CSS && CSS.escape ? CSS.escape(id) : id) + '"]';
    document.querySelectorAll(sel).forEach(function (el) { el.classList.toggle("hl", on); });
  }
  document.querySelectorAll("tr[data-variant]").forEach(function (row) {
    var id = row.getAttribute("data-variant");
    row.addEventListener("mouseenter", function () { highlight(id, true); });
    row.addEventListener("mouseleave", function () { highlight(id, false); });
  });
  mark();
}());
"""


def _diff_html(text: str) -> str:
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + "\n… (diff cut; see `ge diff`)\n"
    lines = []
    for line in text.splitlines():
        if line.startswith(("+++", "---", "diff --git", "index ")):
            cls = "meta"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        elif line.startswith("@@"):
            cls = "hunk"
        else:
            lines.append(_e(line) + "\n")
            continue
        lines.append(f'<span class="{cls}">{_e(line) or " "}</span>')
    return '<pre class="diff">' + "".join(lines) + "</pre>"


def _rate(count: int, total: int, cls: str = "") -> str:
    if not total:
        return "–"
    share = count / total
    return (f'<div class="rate"><div class="track"><div class="fill {cls}" style="width:{share * 100:.1f}%"></div></div>'
            f"<span>{share * 100:.0f}% ({count})</span></div>")


def _stats_table(title: str, rows: list[dict[str, Any]], note: str) -> str:
    if not rows:
        return f"<h3>{_e(title)}</h3><p class=note>no children yet</p>"
    body = "".join(
        f"<tr><td>{_e(r['name'])}</td><td class=num>{r['proposed']}</td><td>{_rate(r['valid'], r['decided'], 'good')}</td>"
        f"<td>{_rate(r['improved'], r['decided'])}</td><td class=num>{r['rejected'] or ''}</td><td class=num>{r['pending'] or ''}</td></tr>"
        for r in rows
    )
    return (f"<h3>{_e(title)}</h3><table><thead><tr><th>{_e(title.split()[-1])}</th><th class=num>children</th>"
            "<th>valid</th><th>improved on a parent</th><th class=num>rejected</th><th class=num>pending</th></tr></thead>"
            f"<tbody>{body}</tbody></table><p class=note>{_e(note)}</p>")


def _failures_html(rep: Report) -> str:
    if not rep.failures:
        return "<p class=note>No failed evaluation and no rejected proposal.</p>"
    total = sum(g["count"] for g in rep.failures)
    rows = "".join(
        f"<tr><td>{_rate(g['count'], total, 'bad')}</td>"
        f"<td>{_e(g['stage'])}</td><td>{_e(g['reason'])}"
        + (f"<details><summary>examples</summary><pre class=wrap>{_e(chr(10).join(g['examples']))}</pre></details>" if g["examples"] else "")
        + f"</td><td class=id>{_e(', '.join(v[:10] for v in g['variants'][:4]))}</td></tr>"
        for g in rep.failures
    )
    return ("<table><thead><tr><th>share (count)</th><th>where</th><th>reason (numbers and ids blanked)</th>"
            f"<th>variants</th></tr></thead><tbody>{rows}</tbody></table>")


def _front_html(rep: Report) -> str:
    if not rep.front:
        return "<p class=note>No successfully evaluated variant yet.</p>"
    objs = rep.objectives
    head = "".join(f"<th class=num>{_e(o['name'])} {'↑' if o['direction'] == 'max' else '↓'}</th>" for o in objs)
    rows = []
    for r in rep.front:
        vid = r["id"]
        metrics = r.get("metrics") or {}
        cells = "".join(f"<td class=num>{_e(_num(metrics.get(o['name']), 7))}</td>" for o in objs)
        badge = '<span class="badge good">best line</span>' if vid in rep.best_line[:1] else ""
        rows.append(
            f'<tr id="v-{_e(vid)}" data-variant="{_e(vid)}"{" class=main" if r.get("diff") or r.get("reply") or r.get("reflection") else ""}><td class=id>{_e(vid)}{badge}</td><td class=num>{_e(r.get("generation"))}</td>'
            f"<td class=nw>{_e(r.get('operator'))}</td><td>{_e(r.get('persona') or '–')}</td><td class=nw>{_e(r.get('model') or '–')}</td>{cells}</tr>"
        )
        extra = []
        if r.get("diff"):
            added = sum(1 for line in r["diff"].splitlines() if line.startswith("+") and not line.startswith("+++"))
            removed = sum(1 for line in r["diff"].splitlines() if line.startswith("-") and not line.startswith("---"))
            extra.append(f"<details><summary>diff against the seed (+{added} −{removed})</summary>{_diff_html(r['diff'])}</details>")
        elif vid == rep.seed_id:
            extra.append("<span class=note>the seed itself</span>")
        if r.get("reflection"):
            extra.append(f"<details><summary>EoT reflection</summary><pre class=wrap>{_e(r['reflection'])}</pre></details>")
        if r.get("reply"):
            reply = r["reply"] if len(r["reply"]) <= MAX_REPLY_CHARS else r["reply"][:MAX_REPLY_CHARS] + "\n… (cut)"
            extra.append(f"<details><summary>LLM reply</summary><pre class=wrap>{_e(reply)}</pre></details>")
        if extra:
            rows.append(f'<tr class="more"><td colspan="{5 + len(objs)}">{"".join(extra)}</td></tr>')
    return (f"<table><thead><tr><th>variant</th><th class=num>gen</th><th>operator</th><th>persona</th><th>model</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _reflections_html(rep: Report) -> str:
    if not rep.reflections:
        return "<p class=note>No EoT reflection along the best line (EoT needs an LLM and starts at <code>eot_start_generation</code>).</p>"
    out = []
    for r in rep.reflections:
        badge = '<span class="badge good">improved</span>' if r.get("improved") else ""
        out.append(
            f'<div class="refl"><div class="head"><span class=id>{_e(r["variant"])}</span> · generation {_e(r["generation"])}'
            f' · elite {_e(r.get("elite") or "–")} · {_e(_metric_tip(r.get("metrics")))}{badge}</div>'
            f'<pre class="wrap">{_e(r["text"])}</pre></div>'
        )
    return "".join(out)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def render(rep: Report) -> str:
    """The whole HTML page."""
    c = rep.counts
    cards = [
        ("generation", f"{c['generation']} / {c['generations']}"),
        ("variants", _num(c["variants"])),
        ("evaluated", _num(c["evaluated"])),
        ("failed", _num(c["failed"] + c.get("invalid", 0))),
        ("pending", _num(c["pending"] + c["evaluating"])),
        ("front size", _num(len(rep.front))),
        ("LLM calls", _num(c["llm_calls"])),
        ("tokens", _num(c["prompt_tokens"] + c["completion_tokens"])),
        ("LLM spend", f"${c['cost_usd']:.4f}"),
    ]
    cards_html = "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>' for k, v in cards)
    objs = ", ".join(f"{o['name']} ({o['direction']}{'' if o['select'] else ', reported only'})" for o in rep.objectives)

    fronts = front_svgs(rep)
    if fronts:
        front_block = ('<div class="legendrow">' + _gen_legend(rep.max_gen) + "<span>outlined: on the Pareto front "
                       "(click a point to jump to its row)</span></div><div class=plots>"
                       + "".join(_figure(s, "every successfully evaluated variant") for s in fronts) + "</div>")
    else:
        front_block = "<p class=note>No successfully evaluated variant yet.</p>"
    over_time = progress_svgs(rep, "time")
    if rep.spend_axis is not None and not rep.progress:
        over_spend = "<p class=note>No successful evaluation yet.</p>"
    elif rep.spend_axis is not None:
        over_spend = "<div class=plots>" + "".join(_figure(s, "best so far (line) and every evaluation (dots)") for s in progress_svgs(rep, "spend")) + "</div>"
    else:
        over_spend = "<p class=note>No LLM calls in this run (offline operators), so there is no spend to plot against.</p>"
    progress_block = (
        ("<h3>Over time</h3><div class=plots>" + "".join(_figure(s, "best so far (line) and every evaluation (dots)") for s in over_time) + "</div>")
        if over_time else "<p class=note>No successful evaluation yet.</p>"
    ) + "<h3>Over LLM spend</h3>" + over_spend

    graph = lineage_svg(rep)
    sections = [
        ("front", "Pareto front", f"<p class=note>Selection objectives: {_e(objs)}.</p>{front_block}"),
        ("progress", "Best so far", progress_block),
        ("operators", "Operators and personas",
         _stats_table("per operator", rep.operators, "Rates are over children that are decided (not pending). valid = evaluated successfully; improved = dominates at least one parent "
                      "on the selection objectives and is dominated by none; rejected = the proposal never became a variant "
                      "(no code block, invalid segment, LLM error).")
         + _stats_table("per persona", rep.personas, "Rejected proposals have no persona and are left out of this table.")),
        ("failures", "Failure reasons", _failures_html(rep)),
        ("lineage", "Lineage of the Pareto front", graph or "<p class=note>No Pareto variant yet.</p>"),
        ("eot", "EoT reflections along the best line", _reflections_html(rep)),
        ("table", "The Pareto front, variant by variant", _front_html(rep)),
    ]
    nav = " · ".join(f'<a href="#{k}">{_e(t)}</a>' for k, t, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{_e(t)}</h2>{content}</section>' for k, t, content in sections)
    script = _SCRIPT
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rep.generated_at))
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>ge report · {_e(rep.title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>ge report · {_e(rep.title)}</h1><div class="sub">{_e(rep.state)} · models {_e(c["models"])} · '
        f"{_e(rep.run_dir)}</div></header><main>"
        f'<div class="cards">{cards_html}</div><nav>{nav}</nav>{body}'
        f'<footer id="ge-status" data-ready="0">Generated by ge on {_e(generated)}. Self-contained: no network access '
        "is needed to view this file.</footer></main>"
        f"<script>{script}</script></body></html>\n"
    )


def write_report(run_dir: Path, output: Path) -> dict[str, Any]:
    """Collect, render and atomically write the report; a summary of what was written."""
    output = Path(output)
    if output.is_dir():
        output = output / "report.html"
    if not output.parent.is_dir():
        raise GeError(f"directory {output.parent} does not exist", "create it or pass another -o")
    rep = collect(Path(run_dir))
    page = render(rep)
    write_atomic(output, page, "pass a writable -o")
    return {
        "path": str(output),
        "bytes": len(page.encode()),
        "variants": rep.counts["variants"],
        "front": len(rep.front),
        "plots": page.count('<svg class="plot"'),
        "failure_groups": len(rep.failures),
        "reflections": len(rep.reflections),
    }
