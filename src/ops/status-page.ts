/**
 * The status page served at `/` and `/status` by the ops server: one self-contained HTML
 * document (inline CSS, inline JS drawing SVG; no CDN, since connectors often run without
 * internet access) that polls `api/timeseries` every 2 s. The URL is relative so the page also
 * works behind a reverse proxy that mounts the ops port under a path prefix. With an ops token,
 * open `/status#token=<token>` (or type it when asked): the script sends it with each fetch.
 */
export function statusPageHtml(): string {
  return PAGE;
}

const CSS = `
:root { --fg:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff; --warn:#b44d12; --bad:#ba2525; --ok:#1f7a4d; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; align-items:baseline; gap:16px; padding:14px 24px; background:#102a43; color:#f0f4f8; flex-wrap:wrap; }
header h1 { margin:0; font-size:18px; font-weight:600; }
header .meta { color:#bcccdc; font-size:13px; }
header .conn { margin-left:auto; font-size:13px; }
header .conn.lost { color:#ffb8b8; font-weight:600; }
main { padding:16px 24px 32px; max-width:1400px; margin:0 auto; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:10px; margin-bottom:16px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.tile .label { color:var(--muted); font-size:12px; }
.tile .value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.tile .value.warn { color:var(--warn); } .tile .value.bad { color:var(--bad); }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(520px,1fr)); gap:16px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; }
.card h2 { margin:0 0 2px; font-size:15px; font-weight:600; }
.card .sub { color:var(--muted); font-size:12px; margin-bottom:6px; }
.plot { position:relative; }
.plot svg { display:block; width:100%; }
.plot svg text { font-size:11px; fill:var(--muted); font-variant-numeric:tabular-nums; }
.plot .axis { stroke:#9aa5b1; stroke-width:1; }
.plot .gridline { stroke:var(--line); stroke-width:1; }
.empty { position:absolute; inset:10px 14px 34px 58px; display:flex; align-items:center; justify-content:center; color:var(--muted); font-style:italic; text-align:center; padding:0 16px; }
.legend { display:flex; flex-wrap:wrap; gap:4px 16px; margin-top:4px; font-size:12px; }
.legend span.item { display:inline-flex; align-items:center; gap:6px; white-space:nowrap; }
.legend i { display:inline-block; width:14px; height:3px; border-radius:2px; }
.legend i.dashed { background:none !important; border-top:2px dashed; height:0; }
.legend b { font-variant-numeric:tabular-nums; }
.split { display:grid; grid-template-rows:auto auto; gap:6px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:right; padding:5px 10px; border-bottom:1px solid var(--line); }
th:first-child, td:first-child { text-align:left; }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.paused { color:var(--warn); font-weight:600; }
.facts { display:flex; flex-wrap:wrap; gap:8px 28px; margin-top:10px; color:var(--muted); }
.facts b { color:var(--fg); }
`;

// Plain ES5-style JS without template literals so it can live in this TS template string.
const JS = `
var COLORS = ['#2680c2','#e12d39','#199473','#f0b429','#8719e0','#de3a11','#0e7c86','#9446ed','#647acb','#c99a2e'];
var SVGNS = 'http://www.w3.org/2000/svg';
var state = { data: null, lastOk: 0, failed: false };

function $(id) { return document.getElementById(id); }
function el(tag, attrs, text) {
  var e = document.createElementNS(SVGNS, tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmtNum(v) {
  if (v === null || v === undefined || isNaN(v)) return '–';
  var a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  if (a >= 100 || v === Math.round(v)) return String(Math.round(v));
  return String(Number(v.toPrecision(3)));
}
function fmtBytes(v) {
  if (v === null || v === undefined) return '–';
  var u = ['B','KiB','MiB','GiB','TiB'], i = 0;
  while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(Math.round(v)) : v.toFixed(1)) + ' ' + u[i];
}
function fmtTime(t) { var d = new Date(t); return d.toTimeString().slice(0, 8); }
/** Top of the y axis: a round number whose quarters (4 grid divisions) are round too; whole for counts. */
function niceMax(v, integer) {
  if (integer && v <= 100) {
    var small = [4, 8, 12, 16, 20, 24, 32, 40, 48, 60, 80, 100];
    for (var k = 0; k < small.length; k++) if (small[k] >= v) return small[k];
  }
  if (!(v > 0)) return 1;
  var p = Math.pow(10, Math.floor(Math.log10(v))), steps = [1, 1.2, 1.6, 2, 3, 4, 5, 6, 8, 10];
  for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
  return 10 * p;
}

/**
 * Draws a line chart into the .plot element 'host': series [{name, color, dash, values:[[t,v]]}],
 * a y-axis label with the unit, time on x. Each path carries data-series and data-points.
 */
function lineChart(host, spec) {
  var width = Math.max(300, host.clientWidth || 500), height = spec.height || 210;
  var m = { l: 58, r: 14, t: 10, b: 34 };
  var w = width - m.l - m.r, h = height - m.t - m.b;
  var svg = el('svg', { width: width, height: height, viewBox: '0 0 ' + width + ' ' + height, 'data-chart': spec.id });
  // Every chart shares the time domain of the whole history, so their x axes line up.
  var t0 = spec.domain[0], t1 = spec.domain[1], vmax = 0, drawn = 0;
  spec.series.forEach(function (s) {
    s.values.forEach(function (p) { vmax = Math.max(vmax, p[1]); });
    if (s.values.length >= 2) drawn++;
  });
  if (t1 - t0 < 1000) t0 = t1 - 1000;
  var ymax = niceMax(vmax * 1.05, spec.integer);
  var fmt = spec.format || fmtNum;
  function x(t) { return m.l + ((t - t0) / (t1 - t0)) * w; }
  function y(v) { return m.t + h - (v / ymax) * h; }
  for (var i = 0; i <= 4; i++) {
    var v = (ymax * i) / 4, yy = y(v);
    svg.appendChild(el('line', { class: 'gridline', x1: m.l, x2: m.l + w, y1: yy, y2: yy }));
    svg.appendChild(el('text', { x: m.l - 6, y: yy + 4, 'text-anchor': 'end' }, fmt(v)));
  }
  if (drawn > 0) {
    for (var j = 0; j <= 4; j++) {
      var tt = t0 + ((t1 - t0) * j) / 4;
      svg.appendChild(el('text', { x: x(tt), y: m.t + h + 15, 'text-anchor': j === 0 ? 'start' : j === 4 ? 'end' : 'middle' }, fmtTime(tt)));
    }
  }
  svg.appendChild(el('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: m.t + h }));
  svg.appendChild(el('line', { class: 'axis', x1: m.l, x2: m.l + w, y1: m.t + h, y2: m.t + h }));
  svg.appendChild(el('text', { x: m.l + w / 2, y: height - 3, 'text-anchor': 'middle' }, 'time (local)'));
  svg.appendChild(el('text', { x: 12, y: m.t + h / 2, 'text-anchor': 'middle', transform: 'rotate(-90 12 ' + (m.t + h / 2) + ')' }, spec.unit));
  spec.series.forEach(function (s) {
    if (s.values.length === 0) return;
    var d = s.values.map(function (p, k) { return (k ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1); }).join(' ');
    var smax = s.values.reduce(function (a, p) { return Math.max(a, p[1]); }, 0);
    var attrs = { d: d, fill: 'none', stroke: s.color, 'stroke-width': s.dash ? 1.5 : 2, 'stroke-linejoin': 'round',
      'data-series': s.name, 'data-points': s.values.length, 'data-max': smax, 'data-last': s.values[s.values.length - 1][1] };
    if (s.dash) attrs['stroke-dasharray'] = typeof s.dash === 'string' ? s.dash : '6 4';
    var path = el('path', attrs);
    path.appendChild(el('title', {}, s.name));
    svg.appendChild(path);
  });
  host.replaceChildren(svg);
  if (drawn === 0) {
    var empty = document.createElement('div');
    empty.className = 'empty';
    empty.textContent = spec.empty || 'No data yet: the first samples arrive within a few seconds.';
    host.appendChild(empty);
  }
  var legend = $(spec.id + '-legend');
  if (legend) {
    legend.replaceChildren();
    spec.series.forEach(function (s) {
      var item = document.createElement('span');
      item.className = 'item';
      item.setAttribute('data-series', s.name);
      if (s.title) item.title = s.title;
      var sw = document.createElement('i');
      if (s.dash) { sw.className = 'dashed'; sw.style.borderColor = s.color; } else sw.style.background = s.color;
      var last = s.values.length ? s.values[s.values.length - 1][1] : null;
      var val = document.createElement('b');
      val.textContent = last === null ? '–' : fmt(last) + (spec.valueSuffix || '');
      item.append(sw, document.createTextNode(s.name + ' '), val);
      legend.appendChild(item);
    });
  }
}

/** dash: true for the default dash pattern, or an SVG stroke-dasharray. */
function series(points, name, color, pick, dash) {
  var values = [];
  points.forEach(function (p) { var v = pick(p); if (v !== null && v !== undefined) values.push([p.t, v]); });
  return { name: name, color: color, values: values, dash: dash || false };
}

var BUDGET_NAMES = { 'used:instance': 'used by this instance', 'limit:quota': 'quota (all instances)', 'limit:instance': "this instance's share" };

/** Keys seen in any point's 'field' (or in the objects themselves when field is ''). */
function keysOf(points, field) {
  var seen = {};
  points.forEach(function (p) { var o = field ? p[field] : p; for (var k in o) seen[k] = true; });
  return Object.keys(seen).sort();
}

/** 't.app.erp.customers/2' -> 'customers/2': the table is what people recognise. */
function shortPartition(key) {
  var slash = key.lastIndexOf('/'), topic = key.slice(0, slash), dot = topic.lastIndexOf('.');
  return topic.slice(dot + 1) + '/' + key.slice(slash + 1);
}

function setTile(id, text, level) {
  var e = $(id);
  e.textContent = text;
  e.className = 'value' + (level ? ' ' + level : '');
}

function render() {
  var d = state.data;
  if (!d) return;
  var pts = d.points, last = pts.length ? pts[pts.length - 1] : null;
  var domain = last ? [pts[0].t, last.t] : [Date.now() - 60000, Date.now()];
  $('name').textContent = d.name;
  $('retention').textContent = 'history: last ' + Math.round(d.retentionSeconds / 60) + ' min, sampled every ' + d.intervalSeconds + ' s';
  $('updated').textContent = last ? 'last updated ' + fmtTime(last.t) : 'waiting for the first sample';
  $('updated').setAttribute('data-t', last ? String(last.t) : '');

  lineChart($('throughput'), {
    id: 'throughput', unit: 'per second', domain: domain,
    series: [
      series(pts, 'events captured/s', COLORS[0], function (p) { return p.rates.eventsProduced; }),
      series(pts, 'records written/s', COLORS[2], function (p) { return p.rates.recordsWritten; }),
    ],
  });

  var budget = [], used = pts.map(function (p) { return p.budget.used; }), limits = pts.map(function (p) { return p.budget.limit; });
  keysOf(used, '').forEach(function (scope, i) {
    budget.push(series(pts, BUDGET_NAMES['used:' + scope] || 'used (' + scope + ')', COLORS[(i + 2) % COLORS.length], function (p) { return p.budget.used[scope]; }));
  });
  keysOf(limits, '').forEach(function (scope, i) {
    budget.push(series(pts, BUDGET_NAMES['limit:' + scope] || 'limit (' + scope + ')', scope === 'quota' ? '#e12d39' : COLORS[(i + 3) % COLORS.length], function (p) { return p.budget.limit[scope]; }, scope === 'quota' ? '6 4' : '2 5'));
  });
  $('budget-sub').textContent = d.quota
    ? 'CRM requests in the last ' + d.quota.windowSeconds + ' s window vs the quota of ' + fmtNum(d.quota.requests) + ' (dashed)'
    : 'CRM requests per window vs the quota (dashed)';
  lineChart($('budget'), { id: 'budget', unit: 'requests / window', domain: domain, series: budget, integer: true, empty: 'No budget data yet (or this process runs no sink).' });

  var lag = keysOf(pts, 'lag').map(function (key, i) {
    var s = series(pts, shortPartition(key), COLORS[i % COLORS.length], function (p) { return p.lag[key]; });
    s.title = key;
    return s;
  });
  lineChart($('lag'), { id: 'lag', unit: 'messages behind', domain: domain, height: 250, series: lag, integer: true, empty: 'No consumer lag reported yet (first lag sample pending, or this process runs no sink).' });

  lineChart($('throttles'), { id: 'throttles', unit: 'throttles / s', height: 130, domain: domain,
    series: [series(pts, 'throttles/s', COLORS[1], function (p) { return p.rates.throttles; })] });
  lineChart($('dlq'), { id: 'dlq', unit: 'records', height: 130, domain: domain, integer: true,
    series: [series(pts, 'dead-lettered (total)', COLORS[5], function (p) { return p.totals.deadLettered; })] });

  var totalLag = 0;
  if (last) for (var k in last.lag) totalLag += last.lag[k];
  setTile('t-captured', last ? fmtNum(last.rates.eventsProduced) : '–');
  setTile('t-written', last ? fmtNum(last.rates.recordsWritten) : '–');
  setTile('t-written-total', last ? fmtNum(last.totals.recordsWritten) : '–');
  setTile('t-lag', last ? fmtNum(totalLag) : '–', totalLag > 10000 ? 'warn' : '');
  setTile('t-slot', last ? fmtBytes(last.slotLagBytes) : '–');
  setTile('t-throttles', last ? fmtNum(last.rates.throttles) : '–', last && last.rates.throttles > 0 ? 'warn' : '');
  setTile('t-dlq', last ? fmtNum(last.totals.deadLettered) : '–', last && last.totals.deadLettered > 0 ? 'bad' : '');
  setTile('t-paused', last ? fmtNum(last.pausedPartitions) : '–', last && last.pausedPartitions > 0 ? 'warn' : '');
  $('t-written-total').setAttribute('data-value', last ? String(last.totals.recordsWritten) : '');

  renderTable(d, last);
}

function cell(tr, text, cls) {
  var td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function renderTable(d, last) {
  var rows = d.details.partitions;
  if (!rows && last) rows = Object.keys(last.lag).sort().map(function (key) {
    var slash = key.lastIndexOf('/');
    return { topic: key.slice(0, slash), partition: Number(key.slice(slash + 1)), committed: null, end: null, lag: last.lag[key], paused: null };
  });
  var body = $('partitions');
  body.replaceChildren();
  (rows || []).forEach(function (p) {
    var tr = document.createElement('tr');
    cell(tr, p.topic); cell(tr, String(p.partition));
    cell(tr, p.committed === null || p.committed === undefined ? '–' : String(p.committed));
    cell(tr, p.end === null || p.end === undefined ? '–' : String(p.end));
    cell(tr, String(p.lag));
    cell(tr, p.paused === null || p.paused === undefined ? '–' : p.paused ? 'paused' : 'no', p.paused ? 'paused' : '');
    cell(tr, p.stalledSeconds === null || p.stalledSeconds === undefined ? '–' : p.stalledSeconds + ' s', p.stalledSeconds >= 300 ? 'paused' : '');
    body.appendChild(tr);
  });
  if (!rows || rows.length === 0) {
    var tr = document.createElement('tr'), td = document.createElement('td');
    td.colSpan = 7; td.className = 'empty-row'; td.textContent = 'No partitions yet.'; td.style.textAlign = 'center';
    tr.appendChild(td); body.appendChild(tr);
  }
  var slot = d.details.slot;
  $('f-slot').textContent = slot
    ? slot.name + (slot.exists ? (slot.active ? ' (streaming)' : ' (inactive)') : ' (does not exist)') + (slot.confirmedFlushLsn ? ', confirmed ' + slot.confirmedFlushLsn : '')
    : 'not watched by this process';
  $('f-slotlag').textContent = last ? fmtBytes(last.slotLagBytes) : '–';
  $('f-dlq').textContent = last ? fmtNum(last.totals.deadLettered) : '–';
  $('f-requests').textContent = last ? fmtNum(last.totals.crmRequests) : '–';
}

// The ops token (ops.token), when the connector has one: from the URL fragment (/status#token=...,
// which browsers never send to the server), kept for this tab only, or asked for on a 401.
var opsToken = (function () {
  var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    try { sessionStorage.setItem('pg2crm-ops-token', decodeURIComponent(m[1])); } catch (e) {}
    history.replaceState(null, '', location.pathname + location.search);
    return decodeURIComponent(m[1]);
  }
  try { return sessionStorage.getItem('pg2crm-ops-token') || ''; } catch (e) { return ''; }
})();

function poll() {
  fetch('api/timeseries', { cache: 'no-store', headers: opsToken ? { authorization: 'Bearer ' + opsToken } : {} })
    .then(function (r) {
      if (r.status === 401 && !state.tokenRefused) {
        var t = window.prompt('This connector requires its ops token (ops.token):', '');
        if (t) { opsToken = t.trim(); try { sessionStorage.setItem('pg2crm-ops-token', opsToken); } catch (e) {} }
        else state.tokenRefused = true; // asked once; reload the page (or open #token=...) to try again
      }
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    })
    .then(function (d) { state.data = d; state.lastOk = Date.now(); state.failed = false; render(); })
    .catch(function () { state.failed = true; })
    .then(function () {
      var c = $('conn');
      c.textContent = state.failed ? 'connection lost: retrying' : 'live';
      c.className = 'conn' + (state.failed ? ' lost' : '');
      setTimeout(poll, 2000);
    });
}
window.addEventListener('resize', render);
poll();
`;

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pg2crm status</title>
<style>${CSS}</style>
</head>
<body>
<header>
  <h1>pg2crm · <span id="name">…</span></h1>
  <span class="meta" id="updated">loading…</span>
  <span class="meta" id="retention"></span>
  <span class="conn" id="conn">connecting…</span>
</header>
<main>
  <section class="tiles">
    <div class="tile"><div class="label">events captured / s</div><div class="value" id="t-captured">–</div></div>
    <div class="tile"><div class="label">records written / s</div><div class="value" id="t-written">–</div></div>
    <div class="tile"><div class="label">records written (total)</div><div class="value" id="t-written-total">–</div></div>
    <div class="tile"><div class="label">consumer lag (messages)</div><div class="value" id="t-lag">–</div></div>
    <div class="tile"><div class="label">replication slot holds</div><div class="value" id="t-slot">–</div></div>
    <div class="tile"><div class="label">CRM throttles / s</div><div class="value" id="t-throttles">–</div></div>
    <div class="tile"><div class="label">dead-lettered (total)</div><div class="value" id="t-dlq">–</div></div>
    <div class="tile"><div class="label">paused partitions</div><div class="value" id="t-paused">–</div></div>
  </section>
  <section class="grid">
    <div class="card">
      <h2>Throughput</h2>
      <div class="sub">Change events captured from PostgreSQL and records the CRM accepted, per second</div>
      <div class="plot" id="throughput"></div>
      <div class="legend" id="throughput-legend"></div>
    </div>
    <div class="card">
      <h2>CRM budget</h2>
      <div class="sub" id="budget-sub">CRM requests per window vs the quota (dashed)</div>
      <div class="plot" id="budget"></div>
      <div class="legend" id="budget-legend"></div>
    </div>
    <div class="card">
      <h2>Consumer lag per partition</h2>
      <div class="sub">End offset minus the sink group's committed offset (same figure as <code>pg2crm status</code>)</div>
      <div class="plot" id="lag"></div>
      <div class="legend" id="lag-legend"></div>
    </div>
    <div class="card split">
      <div>
        <h2>Throttles and dead letters</h2>
        <div class="sub">Responses in which the CRM throttled pg2crm, per second</div>
        <div class="plot" id="throttles"></div>
        <div class="legend" id="throttles-legend"></div>
      </div>
      <div>
        <div class="sub">Records sent to the dead-letter topic by this process (cumulative)</div>
        <div class="plot" id="dlq"></div>
        <div class="legend" id="dlq-legend"></div>
      </div>
    </div>
  </section>
  <section class="card" style="margin-top:16px">
    <h2>Partitions</h2>
    <table>
      <thead><tr><th>topic</th><th>partition</th><th>committed</th><th>end</th><th>lag</th><th>paused</th><th title="seconds the committed offset has stood still with lag">stalled</th></tr></thead>
      <tbody id="partitions"></tbody>
    </table>
    <div class="facts">
      <span>slot: <b id="f-slot">–</b></span>
      <span>slot lag: <b id="f-slotlag">–</b></span>
      <span>dead-lettered: <b id="f-dlq">–</b></span>
      <span>CRM requests: <b id="f-requests">–</b></span>
    </div>
  </section>
</main>
<script>${JS}</script>
</body>
</html>
`;
