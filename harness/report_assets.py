"""The report page's inline stylesheet and script (vanilla JS drawing SVG; no network).

The script reads the ``kv-data`` JSON block and draws the fault lanes, the timeline, the latency
and throughput charts (sharing one zoomable time window) and each anomaly's key timeline. It
puts text from the history into the page only through ``textContent``. When done it sets
``document.body.dataset.rendered`` to the charts drawn and ``data-render-ms`` to the time since
navigation started; an uncaught error is listed in ``data-errors`` (the browser tests read both).
"""

#: The verdict badge, ``<span class="verdict valid">valid</span>``; ``kvcheck serve`` uses it too.
VERDICT_STYLE = r"""
.verdict { color: white; padding: .1em .5em; border-radius: .3em; font-size: 80%; }
.verdict.valid { background: #1a7f37; } .verdict.invalid { background: #cf222e; }
.verdict.unknown { background: #9a6700; }
"""

STYLE = VERDICT_STYLE + r"""
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #1f2328; }
h1 { margin: 0 0 .3em; } h2 { margin: 1.2em 0 .3em; font-size: 1.15em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { text-align: left; padding: .15em .8em .15em 0; vertical-align: top; }
th { font-weight: 600; color: #444; }
table.config { float: right; margin-left: 2em; font-size: 90%; }
.error { color: #cf222e; } .hint { color: #57606a; font-size: 90%; }
section { border-top: 1px solid #d0d7de; clear: both; }
.chart { width: 100%; user-select: none; }
.chart svg { display: block; cursor: grab; }
.legend span { margin-right: 1em; } .legend span::before { content: "\25A0 "; }
.legend .ok::before { color: #2da44e; } .legend .fail::before { color: #cf222e; }
.legend .info::before { color: #d4a72c; }
.anomaly { margin: .6em 0; } .anomaly p { margin: .2em 0; }
table.zones td.hit { font-weight: 600; }
table.convergence td.cell { text-align: center; min-width: 2em; font-family: monospace; }
td.cA { background: #dafbe1; } td.cB, td.cC, td.cD { background: #ffebe9; }
td.c- { background: #fff8c5; } td.c\? { background: #eaeef2; }
#tip { position: fixed; z-index: 10; background: #fff; border: 1px solid #8c959f;
  padding: .3em .5em; font: 12px/1.35 monospace; white-space: pre-wrap; max-width: 40em;
  pointer-events: none; box-shadow: 0 2px 6px rgba(0,0,0,.15); }
"""

SCRIPT = r"""
(function () {
"use strict";
const errors = [];
window.addEventListener("error", function (e) {
  errors.push(String(e.message));
  document.body.dataset.errors = errors.join("; ");
});
const D = JSON.parse(document.getElementById("kv-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const TYPE = ["ok", "fail", "info"];
const COLOUR = ["#2da44e", "#cf222e", "#d4a72c"];
// By lane colour: partition, kill, pause, clock, packet, membership, disk, power, zone, any
// other kind.
const FAULTS = ["#0969da", "#8250df", "#bf3989", "#1b7c83", "#bc4c00", "#7d4e00", "#953800",
                "#1a7f37", "#a40e26", "#6e7781"];
const LEFT = 70, RIGHT = 20, TOP = 24, BOTTOM = 24;
const end = Math.max(D.duration, 1);
const view = {t0: 0, t1: end};
const charts = [];
const tip = document.getElementById("tip");
const faultColour = w => FAULTS[D.faults[w.lane].colour];

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function label(parent, x, y, s, attrs) {
  const t = el("text", Object.assign({x: x, y: y, "font-size": 11}, attrs || {}), parent);
  t.textContent = s;
  return t;
}
function seconds(ms) { return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s"; }
function ticks(lo, hi, n) {
  const raw = (hi - lo) / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * p).find(s => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
  return out;
}
function showTip(ev, lines) {
  tip.textContent = lines.join("\n");
  tip.hidden = false;
  tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 320) + "px";
  tip.style.top = (ev.clientY + 12) + "px";
}
function callLines(i) {
  const C = D.calls;
  const lines = [TYPE[C.type[i]] + " " + C.f[i] + " key " + C.key[i] + " via " + C.node[i],
    "process " + C.process[i] + ", history index " + C.index[i] +
      (C.final[i] ? ", final read" : ""),
    seconds(C.t0[i]) + " → " + seconds(C.t1[i]) + "  (" + (C.t1[i] - C.t0[i]).toFixed(2) +
      " ms)",
    "argument: " + C.arg[i], "result: " + C.ret[i]];
  if (C.error[i]) lines.push("error: " + C.error[i]);
  return lines;
}

// A chart over the shared time window: axes, nemesis bands, zoom and pan.
function chart(host, height, draw, bands) {
  const width = Math.max(host.clientWidth || 0, 600);
  const svg = el("svg", {width: width, height: height, role: "img"}, host);
  const plotW = width - LEFT - RIGHT, plotH = height - TOP - BOTTOM;
  const c = {svg: svg, host: host, width: width, height: height, plotW: plotW, plotH: plotH};
  c.x = t => LEFT + (t - view.t0) / (view.t1 - view.t0) * plotW;
  c.render = function () {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const clip = "clip-" + host.id;
    const defs = el("defs", {}, svg);
    el("rect", {x: LEFT, y: 0, width: plotW, height: height}, el("clipPath", {id: clip}, defs));
    const g = el("g", {"clip-path": "url(#" + clip + ")"}, svg);
    draw(c, g);
    if (bands) drawBands(c, g);
    const axis = el("g", {class: "axis"}, svg);
    el("line", {x1: LEFT, x2: LEFT + plotW, y1: TOP + plotH, y2: TOP + plotH,
      stroke: "#57606a"}, axis);
    for (const t of ticks(view.t0, view.t1, 8)) {
      el("line", {x1: c.x(t), x2: c.x(t), y1: TOP + plotH, y2: TOP + plotH + 4,
        stroke: "#57606a"}, axis);
      label(axis, c.x(t), TOP + plotH + 16, seconds(t), {"text-anchor": "middle"});
    }
  };
  zoomable(c);
  charts.push(c);
  c.render();
  return c;
}
// A window's left and right edge on chart c, within the plot; null when out of view.
function extent(c, w) {
  if (w.end < view.t0 || w.start > view.t1) return null;
  const x0 = Math.max(c.x(w.start), LEFT - 1), x1 = Math.min(c.x(w.end), LEFT + c.plotW + 1);
  return [x0, Math.max(x1, x0 + 2)];
}
function drawBands(c, g) {
  D.windows.forEach(function (w) {
    const x = extent(c, w);
    if (x) el("rect", {x: x[0], y: TOP, width: x[1] - x[0], height: c.plotH,
      fill: faultColour(w), "fill-opacity": 0.1, "pointer-events": "none", class: "band"}, g);
  });
}
function windowLines(w) {
  const lines = [w.fault + " on " + (w.targets || "-"),
    seconds(w.start) + " → " + seconds(w.end) + "  (" + seconds(w.end - w.start) + ")"];
  if (w.detail) lines.push(w.detail);
  if (w.availability) lines.push("availability: " + w.availability + " invoked in it");
  w.zones.forEach(z => lines.push("  " + (z.zone === null ? "no zone" : "zone " + z.zone) +
    ": " + z.share + (z.hit ? " (holds a target)" : "")));
  const during = D.windows.filter(o => o !== w && o.start < w.end && o.end > w.start);
  if (during.length) {
    lines.push("overlaps: " + during.map(o => o.fault + " " + (o.targets || "-")).join("; "));
  }
  return lines;
}
// The shared time window; the URL's #t=<from>-<to> (seconds) names it, so it can be linked.
function clampView(t0, t1) {
  const span = Math.min(Math.max(t1 - t0, 1), end);
  t0 = Math.min(Math.max(t0, 0), end - span);
  view.t0 = t0; view.t1 = t0 + span;
}
const linked = /^#t=([0-9.]+)-([0-9.]+)$/.exec(location.hash);
if (linked) clampView(+linked[1] * 1000, +linked[2] * 1000);
function setView(t0, t1) {
  clampView(t0, t1);
  history.replaceState(null, "", "#t=" + (view.t0 / 1000).toFixed(3) + "-" +
    (view.t1 / 1000).toFixed(3));
  if (!setView.pending) {
    setView.pending = true;
    requestAnimationFrame(function () {
      setView.pending = false;
      charts.forEach(c => c.render());
    });
  }
}
function zoomable(c) {
  const at = ev => view.t0 + (ev.offsetX - LEFT) / c.plotW * (view.t1 - view.t0);
  c.svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    const t = at(ev), f = ev.deltaY < 0 ? 0.8 : 1.25;
    setView(t - (t - view.t0) * f, t + (view.t1 - t) * f);
  }, {passive: false});
  let drag = null;
  c.svg.addEventListener("mousedown", ev => { drag = {x: ev.clientX, t0: view.t0, t1: view.t1}; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    const dt = (ev.clientX - drag.x) / c.plotW * (drag.t1 - drag.t0);
    setView(drag.t0 - dt, drag.t1 - dt);
  });
  c.svg.addEventListener("dblclick", () => setView(0, end));
  c.svg.addEventListener("mousemove", function (ev) {
    const t = ev.target;
    if (t.dataset && t.dataset.c !== undefined) showTip(ev, callLines(+t.dataset.c));
    else if (t.dataset && t.dataset.w !== undefined) {
      showTip(ev, windowLines(D.windows[+t.dataset.w]));
    } else tip.hidden = true;
  });
  c.svg.addEventListener("mouseleave", () => { tip.hidden = true; });
}

// One lane per fault kind, each window a bar labelled with its targets (cut to fit), so windows
// of different kinds that overlap in time stay apart.
function drawFaults(host) {
  const row = 18;
  return chart(host, TOP + BOTTOM + D.faults.length * row, function (c, g) {
    D.windows.forEach(function (w, i) {
      const x = extent(c, w), y = TOP + w.lane * row;
      if (!x) return;
      el("rect", {x: x[0], y: y + 1, width: x[1] - x[0], height: row - 2, rx: 2,
        fill: faultColour(w), class: "window", "data-fault": w.fault, "data-w": i}, g);
      const room = Math.floor((x[1] - x[0] - 6) / 6.5);
      if (w.targets && room >= 2) {
        label(g, x[0] + 3, y + row - 5, w.targets.length > room
          ? w.targets.slice(0, room - 1) + "…" : w.targets,
          {fill: "#fff", "pointer-events": "none"});
      }
    });
    D.faults.forEach((f, k) => label(c.svg, 4, TOP + k * row + row - 5,
      f.fault.length > 11 ? f.fault.slice(0, 10) + "…" : f.fault,
      {fill: FAULTS[f.colour], "font-weight": 600, class: "lane"}));
  }, false);
}

function drawTimeline(host) {
  const C = D.calls, lanes = [...new Set(C.lane)].sort((a, b) => a - b);
  const row = Math.max(6, Math.min(16, 360 / Math.max(lanes.length, 1)));
  const laneY = new Map(lanes.map((l, i) => [l, TOP + i * row]));
  return chart(host, TOP + BOTTOM + lanes.length * row + 4, function (c, g) {
    for (let i = 0; i < C.t0.length; i++) {
      if (C.t1[i] < view.t0 || C.t0[i] > view.t1) continue;
      const x0 = c.x(C.t0[i]);
      el("rect", {x: x0, y: laneY.get(C.lane[i]) + 1, width: Math.max(c.x(C.t1[i]) - x0, 1.5),
        height: row - 2, fill: COLOUR[C.type[i]], "data-c": i}, g);
    }
    lanes.forEach(l => label(c.svg, 4, laneY.get(l) + row - 3, "worker " + l,
      {"font-size": Math.min(11, row)}));
  }, true);
}

function yAxis(c, lo, hi, log, unit) {
  const y = log
    ? v => TOP + c.plotH - (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))
      * c.plotH
    : v => TOP + c.plotH - (v - lo) / (hi - lo) * c.plotH;
  const vs = log ? ticks(Math.log10(lo), Math.log10(hi), 5).map(e => Math.pow(10, e))
    : ticks(lo, hi, 5);
  for (const v of vs) {
    el("line", {x1: LEFT, x2: LEFT + c.plotW, y1: y(v), y2: y(v), stroke: "#eaeef2"}, c.svg);
    label(c.svg, LEFT - 4, y(v) + 4, (+v.toPrecision(3)) + " " + unit, {"text-anchor": "end"});
  }
  return y;
}
// A line through the points whose y is not null, broken where it is.
function polyline(c, g, xs, ys, colour, name) {
  let d = "", move = true;
  for (let i = 0; i < xs.length; i++) {
    if (ys[i] === null) { move = true; continue; }
    d += (move ? "M" : "L") + c.x(xs[i]).toFixed(1) + "," + ys[i].toFixed(1);
    move = false;
  }
  el("path", {d: d || "M0,0", fill: "none", stroke: colour, "stroke-width": 1.5,
    "data-series": name}, g);
}
function legend(c, items) {
  items.forEach(function (it, i) {
    const x = LEFT + c.plotW - 70 * (items.length - i);
    el("rect", {x: x, y: TOP + 2, width: 10, height: 10, fill: it[1]}, c.svg);
    label(c.svg, x + 13, TOP + 11, it[0]);
  });
}
function bucketTimes() {
  const w = D.buckets.width;
  return D.buckets.p50.map((_, i) => (i + 0.5) * w);
}

function drawLatency(host) {
  const C = D.calls, B = D.buckets, lat = [];
  for (let i = 0; i < C.t0.length; i++) {
    if (C.type[i] !== 2) lat.push(Math.max(C.t1[i] - C.t0[i], 0.001));
  }
  const all = lat.concat(B.p99.filter(v => v !== null));
  const lo = Math.max(Math.min(...all, 1), 0.001), hi = Math.max(...all, lo * 10);
  const times = bucketTimes();
  return chart(host, 260, function (c, g) {
    const y = yAxis(c, lo, hi, true, "ms");
    for (let i = 0; i < C.t0.length; i++) {
      if (C.type[i] === 2 || C.t0[i] < view.t0 || C.t0[i] > view.t1) continue;
      el("circle", {cx: c.x(C.t0[i]), cy: y(Math.max(C.t1[i] - C.t0[i], 0.001)), r: 1.8,
        fill: COLOUR[C.type[i]], "fill-opacity": 0.5, "data-c": i}, g);
    }
    const q = [["p50", "#0969da"], ["p95", "#8250df"], ["p99", "#1f2328"]];
    q.forEach(s => polyline(c, g, times, B[s[0]].map(v => v === null ? null : y(v)), s[1], s[0]));
    legend(c, q);
  }, true);
}

function drawThroughput(host) {
  const P = D.buckets.per_second, times = bucketTimes();
  const hi = Math.max(1, ...P.ok, ...P.fail, ...P.info) * 1.1;
  return chart(host, 220, function (c, g) {
    const y = yAxis(c, 0, hi, false, "/s");
    TYPE.forEach((t, k) => polyline(c, g, times, P[t].map(y), COLOUR[k], t));
    legend(c, TYPE.map((t, k) => [t, COLOUR[k]]));
  }, true);
}

// Each anomaly's key around its ops, one lane per process, its own ops outlined.
function drawKeyline(host, a) {
  if (!a.calls.length) {
    host.textContent = "(no client calls: this anomaly was found in the final state)";
    return;
  }
  const procs = [...new Set(a.calls.map(c => String(c.process)))];
  const t0 = Math.min(...a.calls.map(c => c.t0)), t1 = Math.max(...a.calls.map(c => c.t1));
  const pad = Math.max((t1 - t0) * 0.02, 1), row = 16;
  const width = Math.max(host.clientWidth || 0, 600), plotW = width - LEFT - RIGHT;
  const x = t => LEFT + (t - t0 + pad) / (t1 - t0 + 2 * pad) * plotW;
  const svg = el("svg", {width: width, height: TOP + procs.length * row + 4}, host);
  procs.forEach((p, i) => label(svg, 4, TOP + i * row + 12, "process " + p));
  for (const t of ticks(t0, t1, 6)) label(svg, x(t), 12, seconds(t), {"text-anchor": "middle"});
  a.calls.forEach(function (c) {
    const yy = TOP + procs.indexOf(String(c.process)) * row;
    const r = el("rect", {x: x(c.t0), y: yy + 1, width: Math.max(x(c.t1) - x(c.t0), 2),
      height: row - 2, fill: COLOUR[c.type], "fill-opacity": c.marked ? 1 : 0.35,
      stroke: c.marked ? "#1f2328" : "none", "stroke-width": 1.5}, svg);
    if (c.marked) r.setAttribute("class", "marked");
    r.addEventListener("mousemove", ev => showTip(ev, [c.label, "via " + c.node,
      seconds(c.t0) + " → " + seconds(c.t1), c.marked ? "part of this anomaly" : ""]));
    r.addEventListener("mouseleave", () => { tip.hidden = true; });
    if (c.marked && x(c.t1) - x(c.t0) > 40) {
      label(svg, x(c.t0) + 3, yy + 12, c.label, {"font-size": 10, fill: "#fff",
        "pointer-events": "none"});
    }
  });
}

const rendered = [];
if (D.windows.length) {
  drawFaults(document.getElementById("faults")); rendered.push("faults");
}
if (D.calls.t0.length) {
  drawTimeline(document.getElementById("timeline")); rendered.push("timeline");
  drawLatency(document.getElementById("latency")); rendered.push("latency");
  drawThroughput(document.getElementById("throughput")); rendered.push("throughput");
}
document.querySelectorAll(".keyline").forEach(h => drawKeyline(h, D.anomalies[+h.dataset.anomaly]));
if (D.anomalies.length) rendered.push("anomalies");
document.body.dataset.rendered = rendered.join(" ");
document.body.dataset.renderMs = String(Math.round(performance.now()));
})();
"""
