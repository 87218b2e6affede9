// milepost dispatcher dashboard: the map of vans, stops and routes, live from /v1/live.
// No build step, no framework: Leaflet from node_modules (served by milepost api), the
// API with the dispatcher's key (kept in this tab's sessionStorage), and the DOM.
"use strict";

const cfg = JSON.parse(document.getElementById("config").textContent);
const KEY = "milepost.dispatcher-key";
const SILENT_S = 300;
const COLORS = { driving: "#1a7f37", at_stop: "#1f5fbf", at_hub: "#6e40c9", stopped: "#9a6700",
                 silent: "#cf222e" };
const vans = new Map();      // vehicle_id -> {data, marker, button}
const stops = new Map();     // stop_id -> {stop, layer}
const routes = new Map();    // vehicle_id -> [stop_id]
const exceptions = new Map(); // tracking_number -> exception
let selected = null;
let routeLayer = null;
let lastEventId = null;

const $ = (id) => document.getElementById(id);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}
const hhmm = (t) => t ? new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "–";
const ago = (t) => Math.max(0, Math.round((Date.now() - new Date(t).getTime()) / 1000));

function status(text, down = false) { const s = $("status"); s.textContent = text; s.classList.toggle("down", down); }

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` } });
  if (r.status === 401 || r.status === 403) { signOut("That key was refused (it must be a dispatcher key)."); throw new Error("auth"); }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// ------------------------------------------------------------------ the map
const map = L.map("map", { zoomSnap: 0.5, keyboard: true });  // SVG: one element per van
if (cfg.tiles) L.tileLayer(cfg.tiles, { attribution: cfg.attribution, maxZoom: 19 }).addTo(map);
map.attributionControl.setPrefix("Leaflet");
map.setView([52.52, 13.405], 13);

function drawStops(list) {
  const bounds = [];
  for (const s of list) {
    const g = s.geofence;
    const style = s.kind === "hub" ? { color: COLORS.at_hub, weight: 2, fillOpacity: 0.08 }
      : s.kind === "dock" ? { color: "#57606a", weight: 1, fillOpacity: 0.2 }
      : { color: COLORS.at_stop, weight: 1, fillOpacity: 0.1 };
    let layer;
    if (g.type === "Point") {
      layer = L.circle([g.coordinates[1], g.coordinates[0]], { radius: s.radius_m || 30, ...style });
      bounds.push([g.coordinates[1], g.coordinates[0]]);
    } else {
      layer = L.geoJSON(g, { style: () => style });
      const b = layer.getBounds(); if (b.isValid()) bounds.push(b.getCenter());
    }
    // a DOM node, not a string: Leaflet puts strings in innerHTML, and names come from manifests
    layer.bindTooltip(el("span", {}, `${s.stop_id}${s.name ? " · " + s.name : ""} (${s.kind})`));
    layer.addTo(map);
    stops.set(s.stop_id, { stop: s, layer });
  }
  if (bounds.length) map.fitBounds(L.latLngBounds(bounds).pad(0.1));
}

function center(stopId) {
  const s = stops.get(stopId); if (!s) return null;
  const g = s.stop.geofence;
  return g.type === "Point" ? [g.coordinates[1], g.coordinates[0]] : s.layer.getBounds().getCenter();
}

function stateOf(v) {
  if (ago(v.time) > SILENT_S) return "silent";
  return v.motion && v.motion !== "silent" ? v.motion : ((v.speed_mps ?? 0) >= 1 ? "driving" : "stopped");
}

function upsertVan(v) {
  let van = vans.get(v.vehicle_id);
  if (!van) {
    const marker = L.circleMarker([v.lat, v.lon], { radius: 8, weight: 2, color: "#fff", fillOpacity: 0.95,
      className: "van" }).addTo(map).on("click", () => selectVan(v.vehicle_id));
    marker.getElement()?.setAttribute("data-vehicle", v.vehicle_id);
    marker.bindTooltip(el("span", {}, v.vehicle_id), { permanent: false, direction: "top" });
    const button = el("button", { type: "button", onclick: () => selectVan(v.vehicle_id) });
    van = { data: v, marker, button };
    vans.set(v.vehicle_id, van);
    $("vans").append(el("li", {}, button));
    $("van-count").textContent = vans.size;
  }
  van.data = { ...van.data, ...v };
  van.marker.setLatLng([van.data.lat, van.data.lon]);
  paintVan(van);
}

function paintVan(van) {
  const state = stateOf(van.data);
  van.marker.setStyle({ fillColor: COLORS[state] });
  van.marker.getElement()?.setAttribute("data-state", state);
  van.button.replaceChildren(el("span", { class: `dot ${state}` }), `${van.data.vehicle_id}`,
    el("span", { class: "sub" }, ` ${state.replace("_", " ")}${van.data.stop_id ? " · " + van.data.stop_id : ""}`));
  van.button.dataset.state = state;
  if (selected === van.data.vehicle_id) renderVanFacts(van);
}

// ------------------------------------------------------------------ the side panel
async function selectVan(id) {
  const van = vans.get(id); if (!van) return;
  selected = id;
  map.panTo(van.marker.getLatLng());
  drawRoute(id);
  const d = $("detail");
  d.replaceChildren(el("h2", {}, `Van ${id}`), el("dl", { id: "van-facts" }),
    el("h3", {}, "Parcels"), el("ul", { class: "parcels", id: "van-parcels" }, el("li", {}, "loading…")));
  renderVanFacts(van);
  try {
    const page = await api(`/v1/parcels?vehicle_id=${encodeURIComponent(id)}&limit=500`);
    const list = $("van-parcels"); if (!list || selected !== id) return;
    list.replaceChildren(...page.parcels.map((p) => el("li", {}, el("button", {
      type: "button", "data-tracking": p.tracking_number, onclick: () => showParcel(p.tracking_number) },
      el("span", { class: p.status === "Exception" ? "exc" : "" }, p.tracking_number),
      el("span", { class: "sub" }, ` ${p.sub_status || p.status} · ${p.stop_id || ""} · ETA ${hhmm(p.eta)}`)))));
    if (!page.parcels.length) list.replaceChildren(el("li", { class: "hint" }, "No parcels on this van."));
    const aboard = page.parcels.filter((p) => ["InTransit", "OutForDelivery", "AttemptFail", "Exception"].includes(p.status)).length;
    const facts = $("van-facts"); if (facts) facts.append(el("dt", {}, "Parcels aboard"), el("dd", { id: "aboard" }, aboard));
    markRoute(id, page.parcels);
  } catch (e) { if (e.message !== "auth") $("van-parcels").replaceChildren(el("li", {}, String(e.message))); }
}

function renderVanFacts(van) {
  const f = $("van-facts"); if (!f) return;
  const aboard = $("aboard")?.textContent;
  const v = van.data;
  f.replaceChildren(el("dt", {}, "State"), el("dd", {}, stateOf(v).replace("_", " ")),
    el("dt", {}, "Speed"), el("dd", {}, v.speed_mps == null ? "–" : `${(v.speed_mps * 3.6).toFixed(0)} km/h`),
    el("dt", {}, "Last fix"), el("dd", {}, `${ago(v.time)} s ago (${hhmm(v.time)})`),
    el("dt", {}, "Stop"), el("dd", {}, v.stop_id || "–"));
  if (aboard != null) f.append(el("dt", {}, "Parcels aboard"), el("dd", { id: "aboard" }, aboard));
}

function drawRoute(id) {
  if (routeLayer) routeLayer.remove();
  const hub = (routes.get(id) || {}).hub;
  const ids = (routes.get(id) || {}).stops || [];
  const pts = [hub, ...ids].map(center).filter(Boolean);
  routeLayer = L.layerGroup([L.polyline(pts, { color: COLORS.at_stop, weight: 3, dashArray: "6 6" })]);
  ids.forEach((s, i) => {
    const c = center(s);
    if (!c) return;
    const m = L.circleMarker(c, { radius: 6, color: COLORS.at_stop, fillColor: "#fff", fillOpacity: 1 });
    m.routeIndex = i;
    routeLayer.addLayer(m.bindTooltip(el("span", {}, `${i + 1}. ${s}`)));
  });
  routeLayer.addTo(map);
}

function markRoute(id, parcels) {
  // a stop is done when none of its parcels is still to deliver
  if (!routeLayer || selected !== id) return;
  const open = new Set(parcels.filter((p) => !["Delivered", "AttemptFail"].includes(p.status)).map((p) => p.stop_id));
  const ids = (routes.get(id) || {}).stops || [];
  routeLayer.eachLayer((l) => {
    if (!(l instanceof L.CircleMarker)) return;
    const done = !open.has(ids[l.routeIndex]);
    l.setStyle({ fillColor: done ? COLORS.driving : "#fff" });
  });
}

async function showParcel(tn) {
  const d = $("detail");
  d.replaceChildren(el("h2", {}, `Parcel ${tn}`), el("p", { class: "hint" }, "loading…"));
  try {
    const p = await api(`/v1/parcels/${encodeURIComponent(tn)}`);
    const back = p.vehicle_id ? el("button", { type: "button", onclick: () => selectVan(p.vehicle_id) }, `Van ${p.vehicle_id}`) : "";
    d.replaceChildren(el("h2", {}, `Parcel ${tn}`),
      el("dl", {}, el("dt", {}, "Status"), el("dd", { class: p.status === "Exception" ? "exc" : "", id: "parcel-status" }, `${p.status} · ${p.sub_status || ""}`),
        el("dt", {}, "Stop"), el("dd", {}, `${p.stop_id || "–"} ${p.stop_name || ""}`),
        el("dt", {}, "ETA"), el("dd", {}, p.eta ? `${hhmm(p.eta)} (${hhmm(p.eta_earliest)}–${hhmm(p.eta_latest)})` : "–"),
        el("dt", {}, "Promised"), el("dd", {}, hhmm(p.promised_by)), el("dt", {}, "Van"), el("dd", {}, back || "–")),
      el("h3", {}, "Timeline"),
      el("ol", { class: "timeline" }, ...p.timeline.slice().reverse().map((e) => el("li", {},
        el("strong", {}, `${hhmm(e.time)} ${e.sub_status || e.status}`),
        el("div", { class: "sub" }, [e.vehicle_id, e.stop_id, e.detail && e.detail.evidence].filter(Boolean).join(" · "))))));
  } catch (e) { if (e.message !== "auth") d.replaceChildren(el("h2", {}, `Parcel ${tn}`), el("p", {}, "Not found.")); }
}

function addException(x) {
  exceptions.set(x.tracking_number, x);
  renderExceptions();
}

function renderExceptions() {
  const items = [...exceptions.values()].sort((a, b) => (b.since || b.time).localeCompare(a.since || a.time));
  $("exc-count").textContent = items.length;
  $("exceptions").replaceChildren(...items.map((x) => el("li", {}, el("button", {
    type: "button", "data-tracking": x.tracking_number, onclick: () => { if (x.vehicle_id) selectVan(x.vehicle_id).then(() => showParcel(x.tracking_number)); else showParcel(x.tracking_number); } },
    el("span", { class: "exc" }, (x.sub_status || x.status).replace("Exception_", "")),
    el("span", {}, ` ${x.tracking_number}`),
    el("span", { class: "sub" }, ` ${x.vehicle_id || "no van"} · ${hhmm(x.since || x.time)}`)))));
}

// ------------------------------------------------------------------ live
async function live() {
  for (;;) {
    try {
      const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`, Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const r = await fetch("/v1/live", { headers });
      if (r.status === 401 || r.status === 403) { signOut("That key was refused."); return; }
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      status("live");
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) { onMessage(buf.slice(0, i)); buf = buf.slice(i + 2); }
      }
      throw new Error("stream ended");
    } catch (e) {
      status(`live stream lost (${e.message}); reconnecting…`, true);
      await new Promise((ok) => setTimeout(ok, 2000));
    }
  }
}

let received = 0;
function onMessage(block) {
  document.body.dataset.liveMessages = String(++received);  // for monitoring and tests
  let event = "message", data = "", id = null;
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
    else if (line.startsWith("id: ")) id = line.slice(4);
  }
  if (id) lastEventId = id;
  if (!data) return;
  const d = JSON.parse(data);
  if (event === "position") {
    const old = vans.get(d.vehicle_id);
    // keep the stop the API placed the van at until the next full refresh, unless it drives off
    upsertVan({ ...d, motion: (d.speed_mps ?? 0) >= 1 ? "driving" : old?.data.motion });
  } else if (event === "exception") {
    addException({ ...d, since: d.time });
  } else if (event === "parcel") {
    if (d.status !== "Exception" && exceptions.has(d.tracking_number)) {
      const closed = !["AttemptFail"].includes(d.status);
      if (closed) { exceptions.delete(d.tracking_number); renderExceptions(); }
    }
    if (d.status === "AttemptFail") addException({ ...d, since: d.time });
    if (selected && d.vehicle_id === selected) refreshSelected();
  }
}

// a van leaving the hub moves all its parcels at once: one refresh of its panel, not one each
let refreshTimer = null;
function refreshSelected() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; if (selected) selectVan(selected); }, 1000);
}

async function refresh() {
  const v = await api("/v1/vehicles");
  for (const x of v.vehicles) upsertVan(x);
}

// ------------------------------------------------------------------ start
function signOut(message) {
  sessionStorage.removeItem(KEY);
  $("login-error").textContent = message || "";
  $("login").showModal();
}

$("logout").addEventListener("click", () => { signOut(""); location.reload(); });
$("login-form").addEventListener("submit", () => {
  sessionStorage.setItem(KEY, $("key").value.trim());
  start();
});
$("search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim(); if (!q) return;
  const van = [...vans.keys()].find((k) => k.toLowerCase() === q.toLowerCase());
  if (van) selectVan(van); else showParcel(q);
});

let started = false;
async function start() {
  if (started) return;
  started = true;
  try {
    const plan = await api("/v1/manifest");
    for (const r of plan.routes) routes.set(r.vehicle_id, { hub: r.hub_stop_id, stops: r.stop_ids });
    drawStops(plan.stops);
    await refresh();
    const ex = await api("/v1/exceptions");
    for (const x of ex.exceptions) exceptions.set(x.tracking_number, x);
    renderExceptions();
    live();
    setInterval(() => refresh().catch(() => {}), 30000); // the API's own motion and stop
    setInterval(() => vans.forEach(paintVan), 10000);     // silent vans turn red
  } catch (e) {
    started = false;
    if (e.message !== "auth") status(`cannot load the dashboard: ${e.message}`, true);
  }
}

if (sessionStorage.getItem(KEY)) start(); else $("login").showModal();
