// smik ui: draws /api/graph as plain SVG. Namespaces are boxes, laid left
// to right the way traffic flows; edges are curves from client to server.
// No library: the layout is small enough to write here, and the page must
// work with no network but the local server.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 5000;
const NODE_W = 170, NODE_H = 40, NODE_GAP = 22, PAD = 28, HEAD = 26;
const COL_GAP = 200, INNER_GAP = 190, NS_GAP = 30;  // room for the edges' labels

const state = {
  kind: null, window: null, ns: "",
  graph: null,
  selected: null,      // edge id
  explainPort: "", explainProto: "tcp",
  autoExplain: false,  // a link that names port= explains its edge at once
};

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function html(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// ---- numbers -------------------------------------------------------------------

function rateText(perSecond) {
  if (perSecond >= 1) return perSecond.toFixed(perSecond >= 10 ? 0 : 1) + "/s";
  const perMin = perSecond * 60;
  return perMin.toFixed(perMin >= 10 ? 0 : 1) + "/min";
}

function pct(rate) { return rate === null ? "-" : (rate * 100).toFixed(1) + "%"; }

function ms(v) { return v < 10 ? v.toFixed(3) : v.toFixed(1); }

function health(e) {
  if (e.successRate === null) return "idle";
  if (e.successRate >= 0.99) return "ok";
  if (e.successRate >= 0.9) return "warn";
  return "bad";
}

// ---- layout --------------------------------------------------------------------

// Left to right in the direction traffic flows: each node's rank is the
// longest chain of clients before it (cycles cut after as many rounds as
// there are nodes). A namespace's box starts at its lowest rank; inside it,
// nodes stand in columns by rank, in name order. Namespaces of one rank
// share a band, stacked top to bottom.
function ranks(graph) {
  const rank = new Map(graph.nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < graph.nodes.length; round++) {
    let changed = false;
    for (const e of graph.edges) {
      if (e.from === e.to || !rank.has(e.from) || !rank.has(e.to)) continue;
      const r = rank.get(e.from) + 1;
      if (r > rank.get(e.to) && r <= graph.nodes.length) { rank.set(e.to, r); changed = true; }
    }
    if (!changed) break;
  }
  return rank;
}

function layout(graph) {
  const rank = ranks(graph);
  const byNs = new Map();
  for (const n of graph.nodes) {
    const ns = n.kind === "Namespace" ? n.name : n.namespace;
    if (!byNs.has(ns)) byNs.set(ns, []);
    byNs.get(ns).push(n);
  }
  const bands = new Map();  // lowest rank -> [{ns, cols: [[node...]...]}]
  for (const [ns, nodes] of byNs) {
    const low = Math.min(...nodes.map((n) => rank.get(n.id)));
    const cols = [];
    for (const n of nodes) {
      const c = rank.get(n.id) - low;
      while (cols.length <= c) cols.push([]);
      cols[c].push(n);
    }
    const box = {ns, cols: cols.filter((c) => c.length)};
    if (!bands.has(low)) bands.set(low, []);
    bands.get(low).push(box);
  }
  const groups = [], pos = new Map();
  let x = PAD, height = 0;
  for (const low of [...bands.keys()].sort((a, b) => a - b)) {
    let y = PAD, bandW = 0;
    for (const box of bands.get(low).sort((a, b) => a.ns.localeCompare(b.ns))) {
      const rows = Math.max(...box.cols.map((c) => c.length));
      const w = box.cols.length * NODE_W + (box.cols.length - 1) * INNER_GAP + 28;
      const h = HEAD + rows * (NODE_H + NODE_GAP) + 4;
      groups.push({ns: box.ns, x, y, w, h});
      box.cols.forEach((col, ci) => col.forEach((n, i) => {
        pos.set(n.id, {x: x + 14 + ci * (NODE_W + INNER_GAP),
                       y: y + HEAD + i * (NODE_H + NODE_GAP), node: n});
      }));
      y += h + NS_GAP;
      bandW = Math.max(bandW, w);
    }
    height = Math.max(height, y - NS_GAP + PAD);
    x += bandW + COL_GAP;
  }
  return {groups, pos, width: x - COL_GAP + PAD, height};
}

// A curve from the side of `a` that faces `b` to the side of `b` facing `a`;
// a pair of opposite edges bend apart so both stay readable.
function edgePath(a, b, bend) {
  if (a === b) {  // a resource talking to itself: a loop on its right side
    const x = a.x + NODE_W, y = a.y + NODE_H / 2;
    return {d: `M${x},${y - 8} C${x + 50},${y - 40} ${x + 50},${y + 40} ${x},${y + 8}`,
            mx: x + 40, my: y};
  }
  const ax = a.x + NODE_W / 2, ay = a.y + NODE_H / 2, bx = b.x + NODE_W / 2, by = b.y + NODE_H / 2;
  const sameCol = Math.abs(ax - bx) < 1;
  const x1 = sameCol ? a.x + NODE_W : (bx > ax ? a.x + NODE_W : a.x);
  const x2 = sameCol ? b.x + NODE_W : (bx > ax ? b.x : b.x + NODE_W);
  const y1 = ay, y2 = by;
  const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1;
  let cx = (x1 + x2) / 2 - (dy / len) * bend, cy = (y1 + y2) / 2 + (dx / len) * bend;
  if (sameCol) cx = Math.max(x1, x2) + 40 + Math.abs(y2 - y1) / 4;
  return {d: `M${x1},${y1} Q${cx},${cy} ${x2},${y2}`,
          mx: 0.25 * x1 + 0.5 * cx + 0.25 * x2, my: 0.25 * y1 + 0.5 * cy + 0.25 * y2};
}

// ---- drawing -------------------------------------------------------------------

function draw() {
  const graph = state.graph;
  const svg = document.getElementById("graph");
  const layers = document.getElementById("layers");
  layers.replaceChildren();
  const L = layout(graph);
  // Natural size when it fits, shrunk to fit when it does not.
  const w = Math.max(L.width, svg.clientWidth || 0), h = Math.max(L.height, svg.clientHeight || 0);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
  svg.setAttribute("data-nodes", graph.nodes.length);
  svg.setAttribute("data-edges", graph.edges.length);

  const nsLayer = el("g", {class: "namespaces"}, layers);
  for (const g of L.groups) {
    const box = el("g", {class: "namespace", "data-namespace": g.ns}, nsLayer);
    el("rect", {x: g.x, y: g.y, width: g.w, height: g.h, rx: 8}, box);
    el("text", {x: g.x + 10, y: g.y + 17}, box).textContent = g.ns;
  }

  const edgeLayer = el("g", {class: "edges"}, layers);
  const ids = new Set(graph.edges.map((e) => e.id));
  for (const e of graph.edges) {
    const a = L.pos.get(e.from), b = L.pos.get(e.to);
    if (!a || !b) continue;
    const p = edgePath(a, b, ids.has(e.to + ">" + e.from) ? 26 : 14);
    const cls = ["edge", health(e)];
    if (e.denied > 0) cls.push("denied");
    if (e.id === state.selected) cls.push("selected");
    const g = el("g", {class: cls.join(" "), "data-id": e.id, "data-from": e.from,
                       "data-to": e.to, "data-success": e.success, "data-failure": e.failure,
                       "data-denied": e.denied, "data-side": e.side}, edgeLayer);
    el("path", {class: "line", d: p.d, "marker-end": "url(#arrow)"}, g);
    el("path", {class: "hit", d: p.d}, g);
    const label = el("text", {class: "edge-label", x: p.mx, y: p.my - 4, "text-anchor": "middle"}, g);
    label.textContent = `${rateText(e.perSecond)} · ${e.success} ok`;
    if (e.failure > e.denied) label.textContent += ` · ${e.failure - e.denied} failed`;
    if (e.denied > 0) {
      const mark = el("tspan", {class: "denied-mark"}, label);
      mark.textContent = ` · ${e.denied} denied`;
    }
    g.addEventListener("click", () => select(e.id, true));
  }

  const nodeLayer = el("g", {class: "nodes"}, layers);
  for (const [id, p] of L.pos) {
    const n = p.node;
    const g = el("g", {class: "node", "data-id": id, "data-kind": n.kind,
                       "data-namespace": n.namespace, "data-name": n.name}, nodeLayer);
    el("rect", {x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 6}, g);
    const t = el("text", {x: p.x + 8, y: p.y + 16}, g);
    t.textContent = n.name.length > 24 ? n.name.slice(0, 23) + "…" : n.name;
    const sub = el("text", {class: "sub", x: p.x + 8, y: p.y + 31}, g);
    sub.textContent = `in: ${n.inbound.success} ok, ${n.inbound.failure} failed`;
    const title = el("title", {}, g);
    title.textContent = id;
  }
}

// ---- the edge panel ------------------------------------------------------------

function podOf(id) {  // "Pod/ns/name" -> "ns/name"
  const parts = id.split("/");
  return parts.length === 3 && parts[0] === "Pod" ? parts[1] + "/" + parts[2] : null;
}

function row(table, name, value) {
  const tr = html("tr");
  tr.appendChild(html("td", name));
  tr.appendChild(html("td", String(value), "num"));
  table.appendChild(tr);
}

function countsTable(e) {
  const t = html("table");
  t.id = "counts";
  // requests on ports with HTTP rules, connections elsewhere (see the footer)
  row(t, "succeeded", e.success);
  row(t, "failed", e.failure);
  row(t, "of which denied by policy", e.denied);
  row(t, "success rate", pct(e.successRate));
  row(t, "rate", rateText(e.perSecond));
  row(t, "latency p50 (ms)", e.success || e.failure ? ms(e.p50Ms) : "-");
  row(t, "latency p90 (ms)", e.success || e.failure ? ms(e.p90Ms) : "-");
  row(t, "latency p99 (ms)", e.success || e.failure ? ms(e.p99Ms) : "-");
  return t;
}

function showEdge() {
  const aside = document.getElementById("detail");
  const e = state.graph && state.graph.edges.find((x) => x.id === state.selected);
  // A refresh of the edge on show renews its numbers only: the port being
  // typed and the explanation asked for stay.
  if (e && aside.getAttribute("data-edge") === e.id) {
    document.getElementById("counts").replaceWith(countsTable(e));
    return;
  }
  aside.replaceChildren();
  if (!e) {
    aside.removeAttribute("data-edge");
    aside.appendChild(html("p", "Click an edge for its numbers and the policy that decides it.",
                           "muted"));
    return;
  }
  aside.setAttribute("data-edge", e.id);
  aside.appendChild(html("h2", `${e.from.split("/").slice(1).join("/")} → ` +
                               `${e.to.split("/").slice(1).join("/")}`));
  aside.appendChild(html("p", `last ${state.graph.window}, counted at the ` +
                              (e.side === "client" ? "client" : "server (no client end answered)"),
                         "muted"));
  aside.appendChild(countsTable(e));

  aside.appendChild(html("h2", "Policy"));
  const from = podOf(e.from), to = podOf(e.to);
  if (!from || !to) {
    aside.appendChild(html("p", "smik explain judges one pod's connection to another: draw the " +
                                "graph of Pods to ask about this edge.", "muted"));
    return;
  }
  const form = html("form");
  const port = html("input");
  port.type = "number"; port.min = 1; port.max = 65535; port.placeholder = "port";
  port.id = "explain-port"; port.value = state.explainPort;
  const proto = html("select");
  proto.id = "explain-proto";
  for (const p of ["tcp", "udp"]) {
    const o = html("option", p); o.value = p; proto.appendChild(o);
  }
  proto.value = state.explainProto;
  const go = html("button", "explain");
  form.append("port", port, proto, go);
  aside.appendChild(form);
  const out = html("div");
  out.id = "explain";
  aside.appendChild(out);
  port.addEventListener("input", () => { state.explainPort = port.value; });
  proto.addEventListener("change", () => { state.explainProto = proto.value; });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.explainPort = port.value; state.explainProto = proto.value;
    explain(from, to, port.value, proto.value, out);
  });
  if (state.autoExplain && state.explainPort) {
    state.autoExplain = false;
    explain(from, to, state.explainPort, state.explainProto, out);
  }
}

// The local server's JSON; its {error} (or the status) thrown when not 2xx.
async function getJson(url) {
  const r = await fetch(url);
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}

async function explain(from, to, port, proto, out) {
  out.replaceChildren(html("p", "asking…", "muted"));
  const q = new URLSearchParams({from, to, port, proto});
  let j;
  try {
    j = await getJson("/api/explain?" + q);
  } catch (err) {
    out.replaceChildren(html("div", "explain failed: " + err.message, "verdict unavailable"));
    return;
  }
  if (!j.available) {
    const d = html("div", "No explanation available: " + j.reason, "verdict unavailable");
    d.setAttribute("data-verdict", "unavailable");
    out.replaceChildren(d);
    return;
  }
  const r = j.reply;
  const v = html("div", undefined, "verdict " + (r.allowed ? "allowed" : "denied"));
  v.setAttribute("data-verdict", r.allowed ? "allowed" : "denied");
  v.appendChild(html("strong", r.allowed ? "allowed" : "denied"));
  v.appendChild(html("p", r.summary));
  if (r.trafficTarget) {
    const tt = html("p", "TrafficTarget " + r.trafficTarget + (r.rule ? ", " + r.rule : ""));
    tt.setAttribute("data-traffic-target", r.trafficTarget);
    v.appendChild(tt);
  }
  const list = html("ul");
  for (const d of r.details || []) list.appendChild(html("li", d));
  v.appendChild(list);
  out.replaceChildren(v, html("p", "judged by " + j.source, "muted"));
}

function select(id, byClick) {
  state.selected = id;
  if (byClick) state.autoExplain = false;
  document.querySelectorAll(".edge").forEach((g) =>
    g.classList.toggle("selected", g.getAttribute("data-id") === id));
  showEdge();
  syncUrl();
}

// ---- data ----------------------------------------------------------------------

function syncUrl() {
  const q = new URLSearchParams({kind: state.kind, window: state.window});
  if (state.ns) q.set("namespace", state.ns);
  if (state.selected) q.set("edge", state.selected);
  history.replaceState(null, "", "?" + q);
}

function notice(text) {
  const n = document.getElementById("notice");
  n.hidden = !text;
  n.textContent = text || "";
}

async function refresh() {
  const q = new URLSearchParams({kind: state.kind, window: state.window});
  if (state.ns) q.set("namespace", state.ns);
  let g;
  try {
    g = await getJson("/api/graph?" + q);
  } catch (err) {
    notice("Cannot read TrafficMetrics: " + err.message);
    return;
  }
  const notes = [];
  if (g.missingNodes.length) notes.push("Partial: no answer from node(s) " + g.missingNodes.join(", "));
  if (g.errors.length) notes.push(g.errors.join("; "));
  notice(notes.join(" — "));
  state.graph = g;
  document.getElementById("source").textContent = "from " + g.source;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.setAttribute("data-loaded", "true");
  draw();
  showEdge();
}

function setWindow(w) {
  state.window = w;
  document.querySelectorAll("#windows button").forEach((b) =>
    b.classList.toggle("active", b.dataset.window === w));
  syncUrl();
}

async function start() {
  let config = {kind: "deployment", window: "5m"};
  try { config = await (await fetch("/api/config")).json(); } catch (err) { /* defaults */ }
  const q = new URLSearchParams(location.search);
  state.kind = q.get("kind") || config.kind;
  state.ns = q.get("namespace") || "";
  state.selected = q.get("edge");
  state.explainPort = q.get("port") || "";
  state.explainProto = q.get("proto") || "tcp";
  state.autoExplain = !!state.explainPort;
  const kind = document.getElementById("kind");
  kind.value = state.kind;
  kind.addEventListener("change", () => {
    state.kind = kind.value; state.selected = null; syncUrl(); refresh();
  });
  document.querySelectorAll("#windows button").forEach((b) =>
    b.addEventListener("click", () => { setWindow(b.dataset.window); refresh(); }));
  setWindow(q.get("window") || config.window);
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
