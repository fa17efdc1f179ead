// ge serve: the page. Every text that comes from a run is written with textContent (or as a text
// node); nothing is parsed as HTML. Numbers only reach SVG attributes.
'use strict';
(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const footer = document.getElementById('ge-status');
  const main = document.getElementById('main');
  const countError = () => { footer.dataset.errors = String(Number(footer.dataset.errors) + 1); };
  window.addEventListener('error', countError);
  footer.dataset.load = String(Math.random()).slice(2);  // a reload would draw another

  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined) e.append(kid instanceof Node ? kid : String(kid));
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, typeof v === 'number' ? v.toFixed(1) : v);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  const fmt = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6)))) : v === null || v === undefined ? '–' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const short = (id) => String(id).slice(0, 10);
  async function getJson(url) {
    const r = await fetch(url, { cache: 'no-store', credentials: 'same-origin' });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }
  function section(id, title, wide) {
    let s = document.getElementById(id);
    if (!s) { s = el('section', { id, class: wide ? 'wide' : '' }); main.append(s); }
    s.replaceChildren(el('h2', {}, title));
    return s;
  }
  function table(head, rows) {
    return el('table', {}, el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : el('td', {}, c)))))));
  }

  // ------------------------------------------------------------------ the runs of a directory
  async function listPage() {
    main.className = 'list';
    try {
      const d = await getJson('/api/runs');
      document.getElementById('title').textContent = d.dir;
      const s = section('runs', 'Runs');
      if (!d.runs.length) s.append(el('p', { class: 'muted' }, 'no run here yet: start one with ge run SEED_DIR'));
      else s.append(table(['run', 'state', 'generation', 'evaluated', 'failed', 'LLM calls'], d.runs.map((r) => [
        el('a', { href: '/run/' + encodeURIComponent(r.name) }, r.name),
        r.error ? el('span', { class: 'bad' }, r.error) : r.state.state + (r.state.stop_reason ? ': ' + r.state.stop_reason : ''),
        r.counts ? `${r.counts.generation} / ${r.counts.generations}` : '', r.counts ? r.counts.evaluated : '',
        r.counts ? r.counts.failed : '', r.counts ? r.counts.llm_calls : ''])));
      footer.dataset.ready = '1';
    } catch (err) { countError(); main.replaceChildren(el('p', { class: 'bad' }, String(err.message))); }
    setTimeout(listPage, 3000);
  }

  // ------------------------------------------------------------------ one run
  const run = { name: null, epoch: '', cursor: 0, points: new Map(), progress: [], head: null, version: -1, selected: null, plot: null };

  async function poll() {
    const base = '/api/run/' + encodeURIComponent(run.name);
    let wait = 1500;  // while live: a poll costs a browser ~10 ms of CPU, a redraw more
    try {
      const d = await getJson(`${base}/live?epoch=${run.epoch}&cursor=${run.cursor}`);
      if (d.reset) { run.points.clear(); run.progress = []; }
      for (const p of d.points) {
        if (p[1] === null) run.points.delete(p[0]);
        else run.points.set(p[0], { id: p[0], gen: p[1], op: p[2], s: p[3] });
      }
      run.progress.push(...d.progress);
      run.epoch = d.epoch; run.cursor = d.cursor;
      if (d.version !== run.version || d.reset) { run.version = d.version; run.head = d; render(d); }
      footer.dataset.version = String(d.version);
      footer.dataset.points = String(run.points.size);
      footer.dataset.ready = '1';
      if (d.state.state !== 'live') wait = 3000;
    } catch (err) {
      countError();
      document.getElementById('reason').textContent = 'cannot read the run: ' + err.message;
      wait = 3000;
    }
    setTimeout(poll, wait);
  }

  const drawn = {};  // what each section was last drawn from: an unchanged section is left alone
  function changed(part, value) {
    const text = JSON.stringify(value);
    if (drawn[part] === text) return false;
    drawn[part] = text;
    return true;
  }

  function render(d) {
    document.title = 'ge serve: ' + d.run;
    document.getElementById('title').textContent = d.run;
    const badge = document.getElementById('state');
    badge.textContent = d.state.state + (d.state.pid ? ` (pid ${d.state.pid})` : '');
    badge.className = 'badge ' + d.state.state;
    document.getElementById('reason').textContent = [d.state.stop_reason, d.state.fix && 'fix: ' + d.state.fix].filter(Boolean).join('; ');
    if (changed('counts', [d.counts, d.models, d.objectives])) renderCounts(d);
    if (changed('front', [run.epoch, run.cursor, d.front, run.selected])) renderFront(d);
    if (!document.getElementById('variant')) section('variant', 'Variant').append(el('p', { class: 'muted' }, 'click a point of the plot, a front row or a failed variant'));
    if (changed('progress', [run.epoch, run.progress.length, d.counts.evaluated])) renderProgress(d);
    if (changed('failures', d.failures)) renderFailures(d);
    if (changed('isolation', [d.isolation, d.isolation_notes])) renderIsolation(d);
    if (!footer.dataset.paint) {  // ms from the navigation to the frame after the first drawing
      requestAnimationFrame(() => requestAnimationFrame(() => { footer.dataset.paint = String(Math.round(performance.now())); }));
    }
  }

  function renderCounts(d) {
    const c = d.counts;
    const s = section('counts', 'Progress', true);
    s.append(table(['generation', 'children', 'evaluated', 'failed', 'pending', 'LLM calls', 'cost (USD)'],
      [[`${c.generation} / ${c.generations}`, c.children, c.evaluated, c.failed, c.pending + c.evaluating, c.llm_calls, fmt(c.cost_usd)]]));
    s.append(el('p', { class: 'muted' }, 'models: ' + d.models.join(', ') + '; objectives: ' +
      d.objectives.map((o) => `${o.name} (${o.direction}${o.select ? '' : ', reported only'})`).join(', ')));
  }

  function extent(values, keep) {
    // The middle 98 % of the values and every value of `keep` (the front): one wild variant
    // must not squash the others into a line; points beyond are drawn on the border.
    const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
    const q = (f) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))];
    const within = sorted.length > 50 ? [q(0.01), q(0.99)] : sorted;
    let lo = Math.min(...within, ...(keep || [])), hi = Math.max(...within, ...(keep || []));
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    if (lo === hi) { lo -= 0.5; hi += 0.5; }
    const pad = (hi - lo) * 0.05;
    return [lo - pad, hi + pad];
  }
  const clamp = (v, r) => Math.min(Math.max(v, r[0]), r[1]);
  function axes(g, W, H, M, xr, yr, xl, yl) {
    g.append(sv('line', { class: 'axis', x1: M.l, y1: H - M.b, x2: W - M.r, y2: H - M.b }), sv('line', { class: 'axis', x1: M.l, y1: M.t, x2: M.l, y2: H - M.b }));
    // enough digits that the five ticks differ: a span of 1e-5 around -0.319 needs six
    const tick = (v, r) => String(Number(v.toPrecision(Math.min(12, Math.max(3, Math.ceil(Math.log10(Math.max(Math.abs(r[0]), Math.abs(r[1])) / (r[1] - r[0]))) + 2)))));
    for (let i = 0; i <= 4; i++) {
      const xv = xr[0] + ((xr[1] - xr[0]) * i) / 4, yv = yr[0] + ((yr[1] - yr[0]) * i) / 4;
      g.append(sv('text', { x: M.l + ((W - M.l - M.r) * i) / 4, y: H - M.b + 14, 'text-anchor': 'middle' }, tick(xv, xr)));
      g.append(sv('text', { x: M.l - 4, y: H - M.b - ((H - M.t - M.b) * i) / 4 + 4, 'text-anchor': 'end' }, tick(yv, yr)));
    }
    g.append(sv('text', { x: (W + M.l) / 2, y: H - 8, 'text-anchor': 'middle' }, xl), sv('text', { x: 12, y: M.t - 6 }, yl));
  }

  function renderFront(d) {
    const oldRows = document.getElementById('front-rows');
    const s = section('front', `Pareto front (${d.front_size} variants, ${d.front.length} distinct points)`);
    const sel = d.selected, pts = [...run.points.values()];
    const two = sel.length >= 2;
    const X = (p) => (two ? p.s[0] : p.gen), Y = (p) => (two ? p.s[1] : p.s[0]);
    const W = 640, H = 400, M = { l: 70, r: 16, t: 24, b: 42 };
    const onFront = d.front.map((f) => run.points.get(f.id)).filter(Boolean);
    const xr = extent(pts.map(X), onFront.map(X)), yr = extent(pts.map(Y), onFront.map(Y));
    const sx = (v) => M.l + ((clamp(v, xr) - xr[0]) / (xr[1] - xr[0])) * (W - M.l - M.r);
    const sy = (v) => H - M.b - ((clamp(v, yr) - yr[0]) / (yr[1] - yr[0])) * (H - M.t - M.b);
    const g = sv('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, id: 'front-plot' });
    axes(g, W, H, M, xr, yr, two ? sel[0] : 'generation', two ? sel[1] : sel[0] || '');
    const placed = pts.map((p) => [sx(X(p)), sy(Y(p)), p.id]);
    // every valid variant on a canvas under the plot (10,000 SVG dots cost a browser ~80 ms a redraw)
    const cloud = el('canvas', { width: W * devicePixelRatio, height: H * devicePixelRatio, class: 'cloud' });
    const ctx = cloud.getContext('2d');
    ctx.scale(devicePixelRatio, devicePixelRatio);
    ctx.fillStyle = '#99bbbb';
    for (const [x, y] of placed) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    const front = d.front.map((f) => ({ f, p: run.points.get(f.id) })).filter((e) => e.p);
    if (two) {
      const stair = front.map((e) => [sx(X(e.p)), sy(Y(e.p))]).sort((a, b) => a[0] - b[0]);
      g.append(sv('polyline', { class: 'stair', points: stair.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ') }));
    }
    for (const { f, p } of front) {
      const c = sv('circle', { class: 'front', cx: sx(X(p)), cy: sy(Y(p)), r: 6, 'data-id': p.id });
      c.append(sv('title', {}, `${p.id} gen ${p.gen} ${p.op}` + (f.same ? ` (+${f.same} with the same scores)` : '')));
      g.append(c);
    }
    const chosen = run.selected && run.points.get(run.selected);
    if (chosen) g.append(sv('circle', { class: 'ring', cx: sx(X(chosen)), cy: sy(Y(chosen)), r: 9 }));
    g.addEventListener('click', (ev) => {
      const id = ev.target.getAttribute && ev.target.getAttribute('data-id');
      if (id) return select(id);
      const m = g.getScreenCTM().inverse(), q = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m);
      let best = null, dist = 144;
      for (const [x, y, pid] of placed) { const dd = (x - q.x) ** 2 + (y - q.y) ** 2; if (dd < dist) { dist = dd; best = pid; } }
      if (best) select(best);
    });
    run.plot = g;
    const more = sel.length > 2 ? `; the front is on all ${sel.length} selection objectives, the plot shows the first two` : '';
    s.append(el('div', { class: 'plotbox' }, cloud, g), el('p', { class: 'muted' }, `${pts.length} valid variants; red: the front (click one)${more}`));
    if (oldRows && !changed('front-rows', d.front)) return s.append(oldRows);  // the same rows
    changed('front-rows', d.front);
    const rows = el('div', { id: 'front-rows' });
    s.append(rows);
    renderFrontRows(d, rows);
  }

  function renderFrontRows(d, holder) {
    const rows = d.front.map((f) => ({ f, p: run.points.get(f.id) })).filter((e) => e.p);
    holder.replaceChildren(table(['variant', 'generation', 'operator', ...d.selected, 'ties'], rows.slice(0, 40).map(({ f, p }) => [
      el('button', { class: 'link', onclick: () => select(p.id), 'data-id': p.id }, short(p.id)), p.gen, p.op, ...p.s.map(fmt), f.same ? `+${f.same}` : ''])));
  }

  function renderProgress(d) {
    const s = section('progress', 'Best so far (by successful evaluations)');
    const total = Math.max(d.counts.evaluated, run.progress.length ? run.progress[run.progress.length - 1].n : 0);
    d.selected.forEach((name, i) => {
      const dir = d.objectives.find((o) => o.name === name).direction;
      const rows = run.progress.filter((r) => name in r.best);
      const W = 640, H = 180, M = { l: 70, r: 16, t: 20, b: 34 };
      const xr = [0, Math.max(total, 1)], yr = extent(rows.map((r) => r.best[name]), rows.length ? [rows[rows.length - 1].best[name]] : []);
      const sx = (v) => M.l + ((v - xr[0]) / (xr[1] - xr[0])) * (W - M.l - M.r);
      const sy = (v) => H - M.b - ((clamp(v, yr) - yr[0]) / (yr[1] - yr[0])) * (H - M.t - M.b);
      const g = sv('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, id: `best-${i}` });
      axes(g, W, H, M, xr, yr, 'successful evaluations', `${name} (${dir})`);
      const line = [];
      rows.forEach((r, k) => { if (k) line.push([sx(r.n), sy(rows[k - 1].best[name])]); line.push([sx(r.n), sy(r.best[name])]); });
      if (rows.length) line.push([sx(total), sy(rows[rows.length - 1].best[name])]);
      g.append(sv('polyline', { class: 'curve', points: line.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ') }));
      s.append(g);
    });
  }

  function renderFailures(d) {
    const s = section('failures', `Failures by reason (${d.failures.reduce((a, f) => a + f.count, 0)})`);
    if (!d.failures.length) return s.append(el('p', { class: 'muted' }, 'none'));
    s.append(table(['count', 'stage', 'reason', 'variants'], d.failures.map((f) => [
      f.count, f.stage, el('td', {}, el('div', {}, f.reason), f.details.length ? el('div', { class: 'muted' }, f.details.join('; ')) : null),
      el('td', {}, f.variants.map((v) => [el('button', { class: 'link', onclick: () => select(v) }, short(v)), ' '])),
    ])));
  }

  function renderIsolation(d) {
    const s = section('isolation', 'Isolation of the evaluations', true);
    const iso = d.isolation;
    if (!iso) return s.append(el('p', { class: 'muted' }, 'not recorded (the run started before ge recorded its isolation)'));
    const bad = new Set(iso.uncontained || []);
    const dl = el('dl', { class: 'iso' });
    for (const k of ['backend', 'layers', 'filesystem', 'network', 'secrets', 'processes', 'resources']) {
      if (iso[k] === undefined) continue;
      dl.append(el('dt', {}, k), el('dd', { class: bad.has(k) ? 'bad' : '' }, Array.isArray(iso[k]) ? iso[k].join(', ') : fmt(iso[k])));
    }
    s.append(dl);
    for (const w of [...(iso.warnings || []), ...d.isolation_notes]) s.append(el('p', { class: 'bad' }, 'warning: ' + w));
  }

  // ------------------------------------------------------------------ one variant
  async function select(id) {
    run.selected = id;
    if (run.head && changed('front', [run.epoch, run.cursor, run.head.front, run.selected])) renderFront(run.head);
    const s = section('variant', 'Variant ' + short(id));
    s.append(el('p', { class: 'muted' }, 'loading…'));
    try {
      const d = await getJson('/api/run/' + encodeURIComponent(run.name) + '/variant/' + encodeURIComponent(id));
      if (run.selected === id) showVariant(s, d);
    } catch (err) { countError(); s.append(el('p', { class: 'bad' }, err.message)); }
  }

  function diffPre(text) {
    const pre = el('pre', { class: 'diff' });
    for (const line of String(text || '(no change)').split('\n')) {
      const kind = line.startsWith('+') && !line.startsWith('+++') ? 'add' : line.startsWith('-') && !line.startsWith('---') ? 'del' : line.startsWith('@@') ? 'hunk' : '';
      pre.append(kind ? el('span', { class: kind }, line) : line, '\n');
    }
    return pre;
  }
  function block(title, text, open) {
    if (text === null || text === undefined || text === '') return null;
    return el('details', open ? { open: '' } : {}, el('summary', {}, title), el('pre', {}, text));
  }

  function showVariant(s, d) {
    const v = d.variant;
    s.replaceChildren(el('h2', {}, 'Variant ' + v.id));
    s.append(el('p', {}, [`generation ${v.generation} · ${v.operator} · status ${v.status}`, v.persona && ` · persona ${v.persona}`,
      v.model && ` · model ${v.model}`, v.segment && ` · segment ${v.segment}`, v.branch && ` · ${v.branch}`].filter(Boolean).join('')));
    const parents = v.parents.map((p) => el('button', { class: 'link', onclick: () => select(p) }, short(p)));
    s.append(el('p', {}, 'parents: ', parents.length ? parents.flatMap((b) => [b, ' ']) : 'none'));
    const names = [...new Set([...Object.keys(v.metrics || {}), ...Object.values(v.parent_metrics).flatMap((m) => Object.keys(m || {}))])];
    s.append(el('h3', {}, 'Metrics'), table(['metric', 'this', ...v.parents.map((p) => 'parent ' + short(p))],
      names.map((n) => [n, fmt((v.metrics || {})[n]), ...v.parents.map((p) => fmt((v.parent_metrics[p] || {})[n]))])));
    if (v.failure_reason) s.append(el('p', { class: 'bad' }, 'failed: ' + v.failure_reason));
    const holder = el('div', { id: 'diff' });
    const tabs = d.diffs.map((df, i) => el('button', { class: 'tab', onclick: () => showDiff(i) }, df.label));
    const showDiff = (i) => {
      tabs.forEach((t, k) => { t.className = 'tab' + (k === i ? ' on' : ''); });
      const df = d.diffs[i];
      holder.replaceChildren(df.error ? el('p', { class: 'bad' }, df.error) : el('p', { class: 'muted' }, `${df.files.join(', ')}: +${df.added} −${df.removed}`), df.error ? '' : diffPre(df.diff));
    };
    s.append(el('h3', {}, 'Diff'), el('div', {}, tabs), holder);
    if (d.diffs.length) showDiff(0); else holder.append(el('p', { class: 'muted' }, 'the seed has no parent'));
    s.append(...[block('Reflection (EoT)', v.eot_reflection, true), block('Evaluator feedback', v.feedback, true),
      block('Prompt', v.prompt), block('Reply', v.reply), block('Evaluator output', v.output_tail, !!v.failure_reason)].filter(Boolean));
    const sel = run.head ? run.head.selected : [];
    const nodes = d.lineage.nodes;
    s.append(el('h3', {}, `Lineage (${nodes.length} ancestors${d.lineage.more ? `, ${d.lineage.more} more not shown` : ''})`),
      table(['variant', 'generation', 'operator', 'status', ...sel, 'better than its parents'], nodes.map((n) => (n.missing ? [short(n.id), 'missing from the index'] : [
        el('button', { class: 'link', onclick: () => select(n.id) }, short(n.id)), n.generation, n.operator, n.status,
        ...sel.map((k) => fmt((n.metrics || {})[k])), n.improved ? 'yes' : '']))));
  }

  const m = location.pathname.match(/^\/run\/([^/]+)\/?$/);
  if (m) {
    run.name = decodeURIComponent(m[1]);
    main.replaceChildren();
    poll();
  } else listPage();
})();
