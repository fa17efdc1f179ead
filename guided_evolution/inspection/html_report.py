"""`ge report`: one self-contained HTML file about a run (live or finished) that opens offline.

Every plot is inline SVG (`report_svg`) drawn from the run's data (`report_data`); the page's only
script is inline, small, and allowed by a Content-Security-Policy hash, so nothing is fetched and
nothing injected can run. Every piece of run data (variant code, LLM text, failure output, even
metric names) is HTML-escaped. The module is long because the page's CSS and script (some 110
lines) stand in it verbatim: the page must be one file that needs nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.inspection.export import write_atomic
from guided_evolution.inspection.html_parts import better, esc, fmt_num
from guided_evolution.inspection.json_view import OMITTED_IF_NONE, JsonView
from guided_evolution.inspection.report_data import (
    CompareRow,
    Comparison,
    FrontDetails,
    GroupRow,
    Report,
    bandit_html,
    collect,
    compare,
    run_label,
    with_islands,
)
from guided_evolution.inspection.report_diversity import diversity_html
from guided_evolution.inspection.report_svg import (
    compare_svgs,
    front_svgs,
    gen_legend,
    lineage_svg,
    metric_tip,
    progress_svgs,
)
from guided_evolution.inspection.run_data import diff_stats
from guided_evolution.inspection.views_data import (
    ISOLATION_ASPECTS,
    ISOLATION_NOT_RECORDED,
    column_numbers,
    front_groups,
    isolation_notes,
    isolation_warnings,
)

MAX_DIFF_CHARS = 60_000
MAX_REPLY_CHARS = 20_000

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
svg .best.ctl{stroke:#8250df;stroke-dasharray:6 3}
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
.iso td:first-child{width:120px;color:var(--muted)}
.iso tr.warn td{background:#fff1f0;color:var(--bad);font-weight:600}
.warnbox{border:1px solid #ffc1bd;background:#fff1f0;color:var(--bad);border-radius:6px;padding:6px 12px;margin:6px 0}
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
            lines.append(esc(line) + "\n")
            continue
        lines.append(f'<span class="{cls}">{esc(line) or " "}</span>')
    return '<pre class="diff">' + "".join(lines) + "</pre>"


def _rate(count: int, total: int, cls: str = "") -> str:
    if not total:
        return "–"
    share = count / total
    return (
        f'<div class="rate"><div class="track"><div class="fill {cls}" style="width:{share * 100:.1f}%"></div></div>'
        f"<span>{share * 100:.0f}% ({count})</span></div>"
    )


def _stats_table(title: str, rows: list[GroupRow], note: str) -> str:
    if not rows:
        return f"<h3>{esc(title)}</h3><p class=note>no children yet</p>"
    body = "".join(
        f"<tr><td>{esc(r.name)}</td><td class=num>{r.proposed}</td><td>{_rate(r.valid, r.decided, 'good')}</td>"
        f"<td>{_rate(r.improved, r.decided)}</td><td class=num>{r.rejected or ''}</td><td class=num>{r.pending or ''}</td></tr>"
        for r in rows
    )
    return (
        f"<h3>{esc(title)}</h3><table><thead><tr><th>{esc(title.split()[-1])}</th><th class=num>children</th>"
        "<th>valid</th><th>improved on a parent</th><th class=num>rejected</th><th class=num>pending</th></tr></thead>"
        f"<tbody>{body}</tbody></table><p class=note>{esc(note)}</p>"
    )


def _failures_html(rep: Report) -> str:
    if not rep.failures:
        return "<p class=note>No failed evaluation and no rejected proposal.</p>"
    total = sum(g.count for g in rep.failures)
    rows = "".join(
        f"<tr><td>{_rate(g.count, total, 'bad')}</td>"
        f"<td>{esc(g.stage)}</td><td>{esc(g.reason)}"
        + (
            f"<details><summary>examples</summary><pre class=wrap>{esc(chr(10).join(g.examples))}</pre></details>"
            if g.examples
            else ""
        )
        + f"</td><td class=id>{esc(', '.join(v[:10] for v in g.variants[:4]))}</td></tr>"
        for g in rep.failures
    )
    return (
        "<table><thead><tr><th>share (count)</th><th>where</th><th>reason (numbers and ids blanked)</th>"
        f"<th>variants</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _front_html(rep: Report) -> str:
    """The front's table: variants with equal selection values are one row (the oldest, with
    ``×N`` and the others' ids), the values of a column with the same digits."""
    if not rep.front:
        return "<p class=note>No successfully evaluated variant yet.</p>"
    objs = rep.objectives
    head = "".join(
        f"<th class=num>{esc(o.name)} {'↑' if o.direction == 'max' else '↓'}</th>"
        for o in objs
    )
    groups = front_groups(rep.front, objs)
    columns = []
    for o in objs:
        values = [(g.row.metrics or {}).get(o.name) for g in groups]
        numbers = column_numbers(values, 7)
        columns.append([n or fmt_num(v) for n, v in zip(numbers, values, strict=True)])
    rows = []
    for i, group in enumerate(groups):
        r = group.row
        vid = r.id
        cells = "".join(f"<td class=num>{esc(column[i])}</td>" for column in columns)
        badge = '<span class="badge good">best line</span>' if vid in rep.best_line[:1] else ""
        if group.count > 1:
            badge += f'<span class=badge title="{esc(", ".join(group.same))}">×{group.count}</span>'
        rows.append(
            f'<tr id="v-{esc(vid)}" data-variant="{esc(vid)}"{" class=main" if r.diff or r.reply or r.reflection else ""}><td class=id>{esc(vid)}{badge}</td><td class=num>{esc(r.generation)}</td>'
            f"<td class=nw>{esc(r.operator)}</td><td>{esc(r.persona or '–')}</td><td class=nw>{esc(r.model or '–')}</td>{cells}</tr>"
        )
        extra = _front_extra(r, rep.seed_id)
        if group.same:
            extra.insert(0, f"<span class=note>×{group.count}: also {esc(', '.join(group.same))} (equal selection values)</span>")
        if extra:
            rows.append(
                f'<tr class="more"><td colspan="{5 + len(objs)}">{"".join(extra)}</td></tr>'
            )
    return (
        "<p class=note>Variants with equal values on every selection objective are one row: "
        "the oldest, with their count (×N).</p>"
        f"<table><thead><tr><th>variant</th><th class=num>gen</th><th>operator</th><th>persona</th><th>model</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _front_extra(r: FrontDetails, seed_id: str | None) -> list[str]:
    """A front row's folded details: its diff against the seed, reflection and LLM reply."""
    extra = []
    if r.diff:
        _, added, removed = diff_stats(r.diff)
        extra.append(
            f"<details><summary>diff against the seed (+{added} −{removed})</summary>{_diff_html(r.diff)}</details>"
        )
    elif r.id == seed_id:
        extra.append("<span class=note>the seed itself</span>")
    if r.reflection:
        extra.append(
            f"<details><summary>EoT reflection</summary><pre class=wrap>{esc(r.reflection)}</pre></details>"
        )
    if r.reply:
        cut = len(r.reply) > MAX_REPLY_CHARS
        reply = r.reply[:MAX_REPLY_CHARS] + "\n… (cut)" if cut else r.reply
        extra.append(
            f"<details><summary>LLM reply</summary><pre class=wrap>{esc(reply)}</pre></details>"
        )
    return extra


def _reflections_html(rep: Report) -> str:
    if not rep.reflections:
        return "<p class=note>No EoT reflection along the best line (EoT needs an LLM and starts at <code>eot_start_generation</code>).</p>"
    out = []
    for r in rep.reflections:
        badge = '<span class="badge good">improved</span>' if r.improved else ""
        out.append(
            f'<div class="refl"><div class="head"><span class=id>{esc(r.variant)}</span> · generation {esc(r.generation)}'
            f" · elite {esc(r.elite or '–')} · {esc(metric_tip(r.metrics))}{badge}</div>"
            f'<pre class="wrap">{esc(r.text)}</pre></div>'
        )
    return "".join(out)


def _clock(when: Any) -> str:
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        if isinstance(when, (int, float))
        else "–"
    )


def _isolation_html(rep: Report) -> str:
    """The isolation the evaluations ran under: backend and five aspects, uncontained ones in red."""
    info = rep.isolation
    iso = info.isolation
    if not iso:
        return f'<div class="warnbox">Isolation {esc(ISOLATION_NOT_RECORDED)}.</div>'
    bad = set(iso.get("uncontained") or [])
    layers = iso.get("layers") if isinstance(iso.get("layers"), list) else []
    backend = esc(iso.get("backend") or "–") + (" (no sandbox)" if "backend" in bad else "")
    rows = [
        f"<tr{' class=warn' if 'backend' in bad else ''}><td>backend</td><td>{backend}"
        + (
            f" <span class=note>· layers: {esc(', '.join(str(x) for x in layers))}</span>"
            if layers
            else ""
        )
        + "</td></tr>"
    ]
    for aspect in ISOLATION_ASPECTS:
        value = iso.get(aspect)
        text = (
            "not recorded"
            if value is None
            else esc(value) + (" (not contained)" if aspect in bad else "")
        )
        rows.append(
            f"<tr{' class=warn' if aspect in bad else ''}><td>{esc(aspect)}</td><td>{text}</td></tr>"
        )
    warnings = [f"warning: {w}" for w in isolation_warnings(iso)] + isolation_notes(info)
    notes = "".join(f"<div class=warnbox>{esc(w)}</div>" for w in warnings)
    if info.isolation_changes:
        notes += (
            "<table><thead><tr><th>started</th><th>backend</th><th>summary</th></tr></thead><tbody>"
        )
        for h in info.isolation_history:
            notes += f"<tr><td class=nw>{esc(_clock(h.get('time')))}</td><td>{esc(h.get('backend'))}</td>"
            notes += f"<td>{esc(h.get('summary') or '')}</td></tr>"
        notes += "</tbody></table>"
    since = f"<p class=note>As recorded at the latest start ({esc(_clock(iso.get('time')))}).</p>"
    return since + f'<table class="iso"><tbody>{"".join(rows)}</tbody></table>' + notes


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def _cards_html(rep: Report) -> str:
    """The counters at the top of the page."""
    c = rep.counts
    cards = [
        ("generation", f"{c['generation']} / {c['generations']}"),
        ("variants", fmt_num(c["variants"])),
        ("evaluated", fmt_num(c["evaluated"])),
        ("failed", fmt_num(c["failed"] + c.get("invalid", 0))),
        ("pending", fmt_num(c["pending"] + c["evaluating"])),
        ("front size", fmt_num(len(rep.front))),
        ("LLM calls", fmt_num(c["llm_calls"])),
        ("tokens", fmt_num(c["prompt_tokens"] + c["completion_tokens"])),
        ("LLM spend", f"${c['cost_usd']:.4f}"),
    ]
    return "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div></div>'
        for k, v in cards
    )


def _front_block(rep: Report) -> str:
    """The objectives and the Pareto front plots."""
    objs = ", ".join(
        f"{o.name} ({o.direction}{'' if o.select else ', reported only'})"
        for o in rep.objectives
    )
    fronts = front_svgs(rep)
    if fronts:
        front_block = (
            '<div class="legendrow">'
            + gen_legend(rep.max_gen)
            + "<span>outlined: on the Pareto front "
            "(click a point to jump to its row)</span></div><div class=plots>"
            + "".join(_figure(s, "every successfully evaluated variant") for s in fronts)
            + "</div>"
        )
    else:
        front_block = "<p class=note>No successfully evaluated variant yet.</p>"
    return f"<p class=note>Selection objectives: {esc(objs)}.</p>{front_block}"


def _progress_block(rep: Report) -> str:
    """Best so far over time and over LLM spend."""
    over_time = progress_svgs(rep, "time")
    if rep.spend_axis is not None and not rep.progress:
        over_spend = "<p class=note>No successful evaluation yet.</p>"
    elif rep.spend_axis is not None:
        over_spend = (
            "<div class=plots>"
            + "".join(
                _figure(s, "best so far (line) and every evaluation (dots)")
                for s in progress_svgs(rep, "spend")
            )
            + "</div>"
        )
    else:
        over_spend = "<p class=note>No LLM calls in this run (offline operators), so there is no spend to plot against.</p>"
    return (
        (
            (
                "<h3>Over time</h3><div class=plots>"
                + "".join(
                    _figure(s, "best so far (line) and every evaluation (dots)") for s in over_time
                )
                + "</div>"
            )
            if over_time
            else "<p class=note>No successful evaluation yet.</p>"
        )
        + "<h3>Over LLM spend</h3>"
        + over_spend
    )


def _compare_html(rep: Report, cmp: Comparison) -> str:
    """The control run's best-so-far lines over the run's, and both runs' best at the same count."""
    labels = (run_label(rep), run_label(cmp.control))
    plots = compare_svgs(rep, cmp.control, labels, "evaluations")
    if rep.counts.get("llm_calls") or cmp.control.counts.get("llm_calls"):
        plots += compare_svgs(rep, cmp.control, labels, "calls")
    figures = "".join(_figure(s, f"{labels[0]} (solid) and {labels[1]} (dashed)") for s in plots)
    n = cmp.evaluations
    head = (
        f"<p class=note>This run: {esc(labels[0])}, {len(rep.progress)} successful evaluations; "
        f"control: {esc(labels[1])} ({esc(cmp.control.run_dir)}), {len(cmp.control.progress)}.</p>"
    )
    if n == 0:
        return head + "<p class=note>One of the runs has no successful evaluation yet.</p>"
    cell = lambda v: f"<td class=num>{esc(fmt_num(v))}</td>"  # noqa: E731
    rows = []
    for r in cmp.rows:
        if r.run is None or r.control is None or r.run == r.control:
            ahead = "even"
        else:
            ahead = labels[0] if (r.run > r.control) == (r.direction == "max") else labels[1]
        rows.append(f"<tr><td>{esc(r.objective)}</td><td>{esc(better(r.direction))}</td>{cell(r.run)}{cell(r.control)}<td>{esc(ahead)}</td></tr>")
    table = (
        f'<table id="compare-table"><thead><tr><th>objective</th><th>better</th><th class=num>{esc(labels[0])}</th>'
        f"<th class=num>{esc(labels[1])}</th><th>ahead</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return (
        head + f"<div class=plots>{figures}</div>"
        f"<h3>Best after {n} successful evaluations each (the shorter run's count)</h3>{table}"
    )


def _children_html(rep: Report) -> str:
    """Children per generation: configured, planned (given an operator) and new; then diversity."""
    row = "<tr><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>"
    cells = ((r.generation, r.configured, r.planned, r.new) for r in rep.children)
    body = "".join(row.format(*map(fmt_num, r)) for r in cells)
    return f"<h3>children per generation</h3><table><thead><tr><th class=num>generation</th><th class=num>configured</th><th class=num>planned</th><th class=num>new</th></tr></thead><tbody>{body}</tbody></table>{diversity_html(rep.diversity)}"


def _sections(rep: Report, cmp: Comparison | None = None) -> list[tuple[str, str, str]]:
    """(anchor, title, HTML) of each section, in page order (the comparison after the progress)."""
    compared = [("compare", "Compared with a control run", _compare_html(rep, cmp))] if cmp else []
    return [
        ("isolation", "Isolation of the evaluations", _isolation_html(rep)),
        ("front", "Pareto front", _front_block(rep)),
        ("progress", "Best so far", _progress_block(rep)),
        *compared,
        (
            "operators",
            "Operators and personas",
            _stats_table(
                "per operator",
                rep.operators,
                "Rates are over children that are decided (not pending). valid = evaluated successfully; improved = dominates at least one parent "
                "on the selection objectives and is dominated by none; rejected = the proposal never became a variant "
                "(no code block, invalid segment, LLM error).",
            )
            + _stats_table(
                "per persona",
                rep.personas,
                "Rejected proposals have no persona and are left out of this table.",
            )
            + _children_html(rep) + bandit_html(rep.bandit, rep.tokens),
        ),
        ("failures", "Failure reasons", _failures_html(rep)),
        (
            "lineage",
            "Lineage of the Pareto front",
            lineage_svg(rep) or "<p class=note>No Pareto variant yet.</p>",
        ),
        ("eot", "EoT reflections along the best line", _reflections_html(rep)),
        ("table", "The Pareto front, variant by variant", _front_html(rep)),
    ]


def render(rep: Report, cmp: Comparison | None = None) -> str:
    """The whole HTML page (with a control run's comparison when ``cmp`` is given)."""
    c = rep.counts
    sections = with_islands(_sections(rep, cmp), rep.islands)  # islands, gene: when present
    nav = " · ".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in sections)
    body = "".join(
        f'<section id="{k}"><h2>{esc(t)}</h2>{content}</section>' for k, t, content in sections
    )
    script = _SCRIPT
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rep.generated_at))
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>ge report · {esc(rep.title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>ge report · {esc(rep.title)}</h1><div class="sub">{esc(rep.state)} · models {esc(c["models"])} · '
        f"{esc(rep.run_dir)}</div></header><main>"
        f'<div class="cards">{_cards_html(rep)}</div><nav>{nav}</nav>{body}'
        f'<footer id="ge-status" data-ready="0">Generated by ge on {esc(generated)}. Self-contained: no network access '
        "is needed to view this file.</footer></main>"
        f"<script>{script}</script></body></html>\n"
    )


@dataclass(frozen=True)
class ReportSummary(JsonView):
    """What `ge report` wrote: the file, its size, how much of the run it shows, and with
    ``--compare`` the comparison the page shows."""

    path: str
    bytes: int
    variants: int
    front: int
    plots: int
    failure_groups: int
    reflections: int
    comparison: ComparisonSummary | None = field(default=None, metadata=OMITTED_IF_NONE)


@dataclass(frozen=True)
class ComparisonSummary(JsonView):
    """`ge report --compare`'s table: each selection objective's best so far in the run and in
    the control after the same number of successful evaluations (the shorter run's count)."""

    control: str  # the control run's directory
    evaluations: int
    objectives: list[CompareRow]

    @classmethod
    def of(cls, comparison: Comparison) -> ComparisonSummary:
        return cls(comparison.control.run_dir, comparison.evaluations, list(comparison.rows))


def write_report(run_dir: Path, output: Path, control: Path | None = None) -> ReportSummary:
    """Collect, render and atomically write the report; a summary of what was written. With
    ``control``, that run's best-so-far lines are overlaid (refused before anything is written
    when the two runs' selection objectives differ)."""
    output = Path(output)
    if output.is_dir():
        output = output / "report.html"
    if not output.parent.is_dir():
        raise GeError(f"directory {output.parent} does not exist", "create it or pass another -o")
    rep = collect(Path(run_dir))
    cmp = compare(rep, collect(Path(control))) if control is not None else None
    page = render(rep, cmp)
    write_atomic(output, page, "pass a writable -o")
    return ReportSummary(
        path=str(output),
        bytes=len(page.encode()),
        variants=int(rep.counts["variants"]),
        front=len(rep.front),
        plots=page.count('<svg class="plot"'),
        failure_groups=len(rep.failures),
        reflections=len(rep.reflections),
        comparison=ComparisonSummary.of(cmp) if cmp is not None else None,
    )
