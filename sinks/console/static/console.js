// The console pages: live grid, one camera, zones at a glance, incidents. Plain DOM, no build step, no network
// beyond this server.
"use strict";

const app = {
  session: null, signedOut: false, cameras: [], thresholds: {}, camerasVersion: null, leaving: [], clockSkew: 0,
  title: document.title,
  page: null, follow: null,  // the page shown, and how it follows a change of its argument (an incident picked)
  lastAnswerAt: null, summary: null,  // when the server last answered (its clock); the open incidents' counts
  // Browser-side probe of what the operator sees: frames drawn and their capture-to-display delay (seconds).
  probe: { offered: 0, displayed: 0, delays: [], firstAt: null, lastAt: null },
};
window.consoleProbe = app.probe;

const $ = (selector, root = document) => root.querySelector(selector);
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// replaceChildren() would print a null child as the text "null": optional parts are left out instead.
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
}

// Never throws: a console that cannot be reached shows as "offline" in the header, with when it last answered, and
// the pages keep their last view, greyed out. 502 and 504 come from a reverse proxy whose console does not answer.
async function api(path, options = {}) {
  let response, text;
  try {
    response = await fetch(path, { credentials: "same-origin", cache: "no-store", ...options });
    text = await response.text();
  } catch {
    response = null;
  }
  if (!response || response.status === 502 || response.status === 504) {
    setOnline(false);
    return { ok: false, status: response ? response.status : 0,
      body: { error: "the console server cannot be reached" } };
  }
  app.lastAnswerAt = serverNow();
  setOnline(true);
  if (response.status === 401 && app.session) showAuthenticated(false);
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { error: text.trim() }; }
  if (!response.ok && !body) body = { error: `${response.status} ${response.statusText}` };
  return { ok: response.ok, status: response.status, body };
}

function setOnline(online) {
  document.body.classList.toggle("offline", !online);
  $("#connection").hidden = online;
  showOffline();
}

function showOffline() {
  if (!document.body.classList.contains("offline")) return;
  $("#connection").textContent = app.lastAnswerAt
    ? `offline · last update ${fmtTime(app.lastAnswerAt)} (${fmtDuration(serverNow() - app.lastAnswerAt)} ago)`
    : "offline · no answer yet";
}

const postJson = (path, payload) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
});

// A random id for one request that may be sent again (crypto.randomUUID needs https, which a console may lack).
const newRequestId = () => Array.from(crypto.getRandomValues(new Uint32Array(4)),
  (part) => part.toString(16).padStart(8, "0")).join("");

// What a page does when it is left (stop its timers and observers) is kept in app.leaving.
function every(ms, fn) {
  fn();
  const timer = setInterval(fn, ms);
  app.leaving.push(() => clearInterval(timer));
}

const serverNow = () => Date.now() / 1000 + app.clockSkew;

// Times are shown in the site's time zone (alerting.timezone), else the browser's, with the date when not today.
const formats = {};
function dateFormat(name, options) {
  if (!formats[name]) {
    formats[name] = new Intl.DateTimeFormat([], { timeZone: (app.session && app.session.timezone) || undefined,
      ...options });
  }
  return formats[name];
}
const clockTime = (t) => dateFormat("time", { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" })
  .format(new Date(t * 1000));
const dayOf = (t) => dateFormat("day", { year: "numeric", month: "short", day: "numeric" }).format(new Date(t * 1000));
const zoneName = (t) => dateFormat("zone", { timeZoneName: "short" }).formatToParts(new Date(t * 1000))
  .find((part) => part.type === "timeZoneName").value;
const fmtTime = (t) => (t ? (dayOf(t) === dayOf(serverNow()) ? clockTime(t) : `${dayOf(t)} ${clockTime(t)}`) : "-");
const fmtDateTime = (t) => (t ? `${dayOf(t)} ${clockTime(t)} ${zoneName(t)}` : "-");
function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
const levelBadge = (level) => el("span", { class: `badge level-${level}`, dataset: { level } }, level);

// How urgently each zone level and camera state needs an operator, on one scale: a zone at critical or danger,
// then a camera that delivers no frames, then a zone at warning, then a zone nobody can judge (unknown: no window, so
// it may be anything), a camera delivering too few frames or none yet, then caution. A site of many cameras lists
// them in this order, so the one that needs someone is on screen, not somewhere below the fold.
const ATTENTION = { normal: 0, up: 0, caution: 1, unknown: 2, degraded: 2, waiting: 2, warning: 3, reconnecting: 4,
  stalled: 4, down: 4, danger: 5, critical: 6 };
const attention = (name) => ATTENTION[name] ?? ATTENTION.unknown;

function worstLevel(zones) {
  let worst = null;
  for (const zone of Object.values(zones || {})) {
    const level = zone ? zone.level : "unknown";
    if (worst === null || attention(level) > attention(worst)) worst = level;
  }
  return worst;
}

// [most urgent, next] of a camera's zones and health, to sort by: worst first, then the site file's order.
function cameraAttention(live) {
  const zones = worstLevel(live.zones), health = attention(live.health.state);
  const level = zones === null ? 0 : attention(zones);
  return [Math.max(level, health), Math.min(level, health)];
}

const byAttention = (a, b) => b.rank[0] - a.rank[0] || b.rank[1] - a.rank[1] || a.index - b.index;

// -- live camera view ------------------------------------------------------------------------------------------

// A camera's picture is fetched only while it is shown: its tile on screen or near it, and the page not hidden (another
// tab, a locked screen). A site's grid of 50 cameras would otherwise fetch up to 200 pictures a second for nothing.
class CameraView {
  constructor(geometry, layers, shown = true) {
    this.geometry = geometry;
    this.layers = layers;
    this.shown = shown;
    this.canvas = el("canvas", { class: "view", width: 768, height: 432, dataset: { camera: geometry.id, seq: "" } });
    this.image = new Image();
    this.seq = null;
    this.loading = false;
    this.live = null;
    this.image.onload = () => {
      this.loading = false;
      this.seq = this.pendingSeq;
      this.canvas.dataset.seq = String(this.seq);
      const probe = app.probe, now = serverNow();
      probe.displayed += 1;
      probe.firstAt = probe.firstAt || now;
      probe.lastAt = now;
      probe.delays.push(now - this.pendingCapturedAt);
      if (probe.delays.length > 500) probe.delays.shift();
      this.draw();
    };
    this.image.onerror = () => { this.loading = false; };
  }

  wanted() {
    return this.shown && !document.hidden;
  }

  update(live) {
    const newFrame = live.frame && (!this.live || !this.live.frame || live.frame.seq !== this.live.frame.seq);
    if (newFrame && this.wanted()) app.probe.offered += 1;
    this.live = live;
    if (!this.load()) this.draw();
  }

  // Starts fetching the newest frame's picture, where one is wanted and not shown yet; false where none is.
  load() {
    const frame = this.live && this.live.frame;
    if (!frame || frame.seq === this.seq || this.loading || !this.wanted()) return false;
    this.loading = true;
    this.pendingSeq = frame.seq;
    this.pendingCapturedAt = frame.captured_at;
    this.image.src = `/api/cameras/${encodeURIComponent(this.geometry.id)}/frame.jpg?seq=${frame.seq}`;
    return true;
  }

  // A tile scrolled into view gets the newest picture at once, not at the next refresh.
  show(shown) {
    this.shown = shown;
    this.load();
  }

  draw() {
    if (this.image.complete && this.image.naturalWidth) {
      drawAnnotated(this.canvas, this.image, this.geometry, this.live, this.layers);
    }
  }
}

function healthBadge(health) {
  const state = health ? health.state : "unknown";
  const text = health && health.reason ? `${state}: ${health.reason}` : state;
  return el("span", { class: `badge health-${state}`, dataset: { health: state }, title: text }, text);
}

// The age is counted here from the capture time and the server's clock, so it goes on growing while the server
// cannot be reached.
function ageText(frame) {
  if (!frame) return el("span", { class: "age stale" }, "no frame");
  const age = el("span", { class: "age", dataset: { capturedAt: frame.captured_at } });
  showAge(age);
  return age;
}

function showAge(age) {
  const seconds = Math.max(0, serverNow() - Number(age.dataset.capturedAt));
  age.classList.toggle("stale", seconds > 5);
  age.textContent = `frame age ${seconds.toFixed(1)} s`;
}

// The server sends the boxes of the frame shown, or of one captured within a second of it. While the detector lags,
// the frame shown is the newest it has boxes of, older than the newest frame (`behind_s`); when it has stopped, the
// picture is shown without boxes rather than with boxes of another moment.
function detectionsText(live, counted) {
  if (!live.frame) return null;
  if (!live.detections) return el("span", { class: "age stale", dataset: { detections: "none" } }, "no detections");
  return [
    live.frame.behind_s > 0 ? el("span", { class: "age stale", dataset: { detections: "behind" } },
      `detector ${live.frame.behind_s.toFixed(1)} s behind`) : null,
    counted ? el("span", { class: "age" }, `${live.detections.boxes.length} objects`) : null];
}

function pageLive(root) {
  const layers = { boxes: true, zones: true, scene: true, heat: true };
  const tiles = {};
  const grid = el("div", { class: "grid" });
  // Near means within half a screen's height: a tile scrolled to is mostly drawn before it comes into view.
  const onScreen = new IntersectionObserver((entries) => {
    for (const entry of entries) tiles[entry.target.dataset.camera].view.show(entry.isIntersecting);
  }, { rootMargin: "50% 0px" });
  app.leaving.push(() => onScreen.disconnect());
  for (const geometry of app.cameras) {
    const view = new CameraView(geometry, layers, false);
    const head = el("div", { class: "tile-head" });
    const foot = el("div", { class: "tile-foot" });
    const section = el("section", { class: "tile", dataset: { camera: geometry.id } }, head,
      el("a", { href: `#/camera/${encodeURIComponent(geometry.id)}` }, view.canvas), foot);
    tiles[geometry.id] = { view, head, foot, section };
    grid.append(section);
    onScreen.observe(section);
  }
  const summary = el("div", { class: "reason grid-summary", id: "live-summary" });
  root.append(...(app.cameras.length ? [summary, grid] : [el("div", { class: "empty" }, "No cameras configured.")]));
  const refresh = async () => {
    const { ok, body } = await api("/api/live");
    if (!ok) return;
    app.clockSkew = body.now - Date.now() / 1000;
    const ranked = [];
    for (const [cameraId, live] of Object.entries(body.cameras)) {
      const tile = tiles[cameraId];
      if (!tile) continue;
      ranked.push({ tile, live, index: app.cameras.indexOf(tile.view.geometry), rank: cameraAttention(live) });
      tile.view.update(live);
      const worst = worstLevel(live.zones);
      fill(tile.head, el("span", { class: "name" }, tile.view.geometry.name), healthBadge(live.health),
        live.health.fps ? el("span", { class: "age" }, `${live.health.fps.toFixed(1)} fps`) : null,
        el("span", { class: "spacer" }), detectionsText(live, false), ageText(live.frame), worst ? levelBadge(worst) : null);
      const zones = Object.entries(live.zones);
      fill(tile.foot, ...zones.map(([zoneId, zone]) => el("span", {
        class: `chip level-${zone ? zone.level : "unknown"}`, dataset: { zone: zoneId, level: zone ? zone.level : "unknown" },
      }, `${zoneId}: ${zone ? zone.level : "waiting"}`)), zones.length ? null : el("span", { class: "reason" }, "no crowd zones"));
    }
    // Moved only when the order changes: a tile moved in the page loses the keyboard's focus.
    ranked.sort(byAttention);
    const order = ranked.map(({ tile }) => tile.section);
    if (order.some((section, index) => grid.children[index] !== section)) grid.append(...order);
    fill(summary, liveSummary(ranked));
  };
  every(1000 / app.session.refresh_hz, refresh);
}

// "50 cameras, the most urgent first: 1 zone critical · 1 down", or that all are well.
function liveSummary(ranked) {
  const counts = new Map();  // what is counted -> [its attention, how many]
  const count = (label, state) => {
    if (attention(state) > 0) counts.set(label, [attention(state), ((counts.get(label) || [])[1] || 0) + 1]);
  };
  for (const { live } of ranked) {
    count(live.health.state, live.health.state);
    for (const zone of Object.values(live.zones)) {
      const level = zone ? zone.level : "waiting";
      count(`zone ${level}`, level);
    }
  }
  const named = [...counts].sort(([, [a]], [, [b]]) => b - a).map(([label, [, n]]) => `${n} ${label}`);
  return `${ranked.length} cameras, the most urgent first: ${named.length ? named.join(" · ") : "all up and normal"}`;
}

function pageCamera(root, cameraId) {
  const geometry = app.cameras.find((camera) => camera.id === cameraId);
  if (!geometry) { root.append(el("div", { class: "empty" }, `Unknown camera ${cameraId}`)); return; }
  const layers = { boxes: true, zones: true, scene: true, heat: true };
  const view = new CameraView(geometry, layers);
  const head = el("div", { class: "tile-head" });
  const toggles = el("div", { class: "tile-foot" }, ...Object.keys(layers).map((layer) => el("label", {},
    el("input", { type: "checkbox", checked: "", onchange: (e) => { layers[layer] = e.target.checked; view.draw(); } }),
    ` ${layer}`)));
  const zonesPanel = el("div", { class: "card" });
  const linesPanel = el("div", { class: "card" });
  root.append(el("div", { class: "camera-page" },
    el("section", { class: "tile" }, head, view.canvas, toggles),
    el("aside", { class: "side" }, zonesPanel, linesPanel)));
  const refresh = async () => {
    const { ok, body } = await api(`/api/live?camera=${encodeURIComponent(cameraId)}`);
    if (!ok) return;
    app.clockSkew = body.now - Date.now() / 1000;
    const live = body.cameras[cameraId];
    view.update(live);
    fill(head, el("span", { class: "name" }, geometry.name), healthBadge(live.health),
      el("span", { class: "spacer" }), detectionsText(live, true), ageText(live.frame));
    fill(zonesPanel, el("div", { class: "card-head" }, el("h2", {}, "Zones")),
      ...geometry.zones.map((zone) => {
        const now = live.zones[zone.id];
        return el("div", { class: "zone-row", dataset: { zone: zone.id, level: now ? now.level : "unknown" } },
          el("div", {}, el("b", {}, zone.id), " ", levelBadge(now ? now.level : "unknown")),
          now ? el("div", { class: "reason" }, now.reason) : el("div", { class: "reason" }, "waiting for a window"),
          now ? el("div", { class: "age" }, `${countText(now)} · in ${now.inflow} / out ${now.outflow}`) : null);
      }));
    const lines = [...((geometry.scene || {}).counting_lines || [])];
    fill(linesPanel, el("div", { class: "card-head" }, el("h2", {}, "Counting lines")),
      lines.length ? el("dl", { class: "kv" }, ...lines.flatMap((line) => {
        const totals = live.line_totals[line.id] || {};
        const forward = line.forward || "in", backward = line.backward || "out";
        // Names no longer configured, which an analyzer started before a rename counts under until it restarts.
        const others = Object.keys(totals).filter((name) => name !== forward && name !== backward);
        return [el("dt", {}, line.id), el("dd", {}, [forward, backward, ...others].map(
          (name) => `${name} ${totals[name] || 0}`).join(" · "))];
      })) : el("div", { class: "reason zone-row" }, "none configured"));
  };
  every(1000 / app.session.refresh_hz, refresh);
}

// -- zones at a glance -----------------------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// Density over time with the threshold bands behind it, then the forecast ahead of now: the line at the rise the
// zone's last minutes bear out, which the analytics raise levels on, with the band the windows stray from it by.
// Where the line crosses a threshold it is marked with the time to it, the one the figures, the level's reason and
// the alerts give: an operator must read one time to danger, and Holt's short-term trend, which bends with every
// window, is not drawn.
function zoneChart(history, thresholds, now) {
  const W = 760, H = 220, left = 44, right = 12, top = 10, bottom = 24;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const last = history[history.length - 1];
  const forecast = last ? last.forecast : [];
  const t0 = history.length ? history[0].window_start : now - 600;
  const tEnd = Math.max(now, ...forecast.map((f) => last.window_end + f.horizon_s));
  const values = [...history.map((p) => p.density_max), ...forecast.map((f) => f.upper)];
  const yMax = Math.max(thresholds.danger * 1.15, ...values, 0.5);
  const x = (t) => left + (t - t0) / Math.max(1, tEnd - t0) * (W - left - right);
  const y = (v) => H - bottom - v / yMax * (H - top - bottom);
  const bands = [["normal", 0, thresholds.caution], ["caution", thresholds.caution, thresholds.warning],
    ["warning", thresholds.warning, thresholds.danger], ["danger", thresholds.danger, thresholds.critical],
    ["critical", thresholds.critical, yMax * 2]];
  for (const [level, low, high] of bands) {
    if (low >= yMax) continue;
    chart.append(svg("rect", { x: left, width: W - left - right, y: y(Math.min(high, yMax)),
      height: y(low) - y(Math.min(high, yMax)), fill: LEVEL_COLORS[level], "fill-opacity": 0.13 }));
    chart.append(Object.assign(svg("text", { x: 4, y: y(low) - 3, fill: LEVEL_COLORS[level], "font-size": 10 }),
      { textContent: low.toFixed(1) }));
  }
  chart.append(svg("line", { x1: x(now), x2: x(now), y1: top, y2: H - bottom, stroke: "#8a94a3", "stroke-dasharray": "3 3" }));
  if (history.length) {
    const path = history.map((p, i) => `${i ? "L" : "M"}${x(p.window_end).toFixed(1)},${y(p.density).toFixed(1)}`).join("");
    chart.append(svg("path", { d: path, fill: "none", stroke: "#e9ecef", "stroke-width": 2 }));
    for (const p of history) {
      chart.append(svg("circle", { cx: x(p.window_end), cy: y(p.density), r: 2.6, fill: LEVEL_COLORS[p.level] }));
    }
  }
  if (forecast.length) {
    const start = forecastStart(forecast, last.density);
    const points = [{ t: last.window_end, d: start, lo: start, hi: start },
      ...forecast.map((f) => ({ t: last.window_end + f.horizon_s, d: f.density, lo: f.lower, hi: f.upper }))];
    const band = points.map((p, i) => `${i ? "L" : "M"}${x(p.t)},${y(p.hi)}`).join("") +
      points.slice().reverse().map((p) => `L${x(p.t)},${y(p.lo)}`).join("") + "Z";
    chart.append(svg("path", { d: band, fill: "#4dabf7", "fill-opacity": 0.22, stroke: "none" }));
    chart.append(svg("path", { class: "forecast-line", d: points.map((p, i) => `${i ? "L" : "M"}${x(p.t)},${y(p.d)}`)
      .join(""), fill: "none", stroke: "#4dabf7", "stroke-width": 2, "stroke-dasharray": "6 4" }));
    chart.append(Object.assign(svg("text", { class: "forecast-label", x: x(last.window_end) + 4, y: top + 10,
      fill: "#4dabf7", "font-size": 10 }), { textContent: last.rise_over_s
      ? `at the rise of the last ${fmtDuration(last.rise_over_s)}` : "forecast" }));
    for (const [level, seconds] of Object.entries(last.seconds_to)) {
      const t = last.window_end + seconds;
      if (seconds <= 0 || t > tEnd || thresholds[level] > yMax) continue;
      const marker = svg("g", { class: "threshold-crossing", "data-level": level });
      marker.append(svg("circle", { cx: x(t), cy: y(thresholds[level]), r: 4, fill: LEVEL_COLORS[level],
        stroke: "#11151a" }));
      marker.append(Object.assign(svg("text", { x: x(t), y: y(thresholds[level]) - 7, fill: LEVEL_COLORS[level],
        "font-size": 10, "text-anchor": "middle" }), { textContent: `${level} ${fmtDuration(seconds)}` }));
      chart.append(marker);
    }
  }
  const axis = (t) => Object.assign(svg("text", { x: x(t), y: H - 6, fill: "#8a94a3", "font-size": 10,
    "text-anchor": "middle" }), { textContent: fmtTime(t) });
  // Time labels at the start, now and the forecast's end, each only where it does not overlap the one before.
  let lastX = -Infinity;
  for (const t of [t0, now, tEnd]) {
    if (x(t) - lastX >= 70 && x(t) <= W - 30) { chart.append(axis(t)); lastX = x(t); }
  }
  return chart;
}

// The forecast is a straight line from the zone's smoothed density at the window's end: drawn from there, it
// crosses each threshold at the time to it. That density is where the line through the first two points starts (with
// one point, the window's density is the nearest there is).
function forecastStart(forecast, density) {
  if (forecast.length < 2) return density;
  const [a, b] = forecast;
  return Math.max(0, a.density - (b.density - a.density) / (b.horizon_s - a.horizon_s) * a.horizon_s);
}

function figure(labelText, value) {
  return el("div", { class: "figure", dataset: { figure: labelText } }, el("div", { class: "label" }, labelText),
    el("div", { class: "value" }, value));
}

// When the forecast reaches the danger threshold: "now" at danger or above; "not expected" only from a forecast
// that stays below it over its whole horizon.
function timeToDanger(now) {
  const level = now ? now.level : "unknown";
  if (level === "unknown") return "unknown";
  if (LEVEL_ORDER.indexOf(level) >= LEVEL_ORDER.indexOf("danger") || now.seconds_to.danger === 0) return "now";
  if (now.seconds_to.danger !== undefined) return fmtDuration(now.seconds_to.danger);
  if (!now.forecast.length) return "no forecast yet";
  return `not expected within ${fmtDuration(Math.max(...now.forecast.map((point) => point.horizon_s)))}`;
}

function pageZones(root) {
  const container = el("div", { class: "zones-grid" });
  root.append(container);
  const refresh = async () => {
    const { ok, body } = await api("/api/zones");
    if (!ok) return;
    const ranked = body.zones.map((zone, index) => ({ zone, index, rank: [attention(zone.now ? zone.now.level
      : "waiting"), 0] })).sort(byAttention);
    fill(container, ...ranked.map(({ zone }) => {
      const now = zone.now, level = now ? now.level : "unknown";
      return el("section", { class: "card", dataset: { zone: zone.zone_id, level } },
        el("div", { class: "card-head" }, el("b", {}, `${zone.camera_name} / ${zone.zone_id}`), levelBadge(level),
          el("span", { class: "reason" }, now ? now.reason : "waiting for the first window")),
        zoneChart(zone.history, app.thresholds, body.now),
        el("div", { class: "figures" },
          figure("density", !now ? "-" : now.count_reliable ? `${now.density.toFixed(2)} p/m²` : "unreliable"),
          figure("people", !now ? "-" : now.count_reliable || now.people > 0
            ? `${now.count_reliable ? "" : "at least "}${fmtPeople(now.people)}` : "unreliable"),
          figure("time to danger", timeToDanger(now)),
          figure("inflow / outflow", now ? `${now.inflow} / ${now.outflow}` : "-"),
          figure("net per min", now ? `${now.net_per_minute > 0 ? "+" : ""}${now.net_per_minute}` : "-")));
    }));
    if (!body.zones.length) fill(container, el("div", { class: "empty" }, "No zones configured."));
  };
  every(2000, refresh);
}

// -- incidents -------------------------------------------------------------------------------------------------

// An incident is picked through its link (#/incidents/<id>), so a reload keeps it and it can be sent to others.
function pageIncidents(root, incidentId) {
  let selected = null, shown = null, refreshedAt = null;
  const listState = el("div");
  const list = el("section", { class: "card", id: "incident-list" }, listState);
  const detail = el("section", { class: "card" }, el("div", { class: "empty" }, "Select an incident."));
  root.append(el("div", { class: "incidents" }, list, detail));
  const operator = () => storage.get("cityguard-operator") || "console";

  // The parts of an incident's detail that stay while it is selected: its picture, what the operator types, the
  // answer to the last verdict. The facts (state, timeline) are redrawn from each refresh.
  const openDetail = (incidentId) => {
    const parts = { id: incidentId, head: el("div", { class: "card-head" }), picture: el("div"), facts: el("div"),
      message: el("div"), evidence: false };
    const note = el("input", { placeholder: "note (optional)", size: 30 });
    const by = el("input", { value: operator(), size: 12, title: "who acts",
      onchange: (e) => storage.set("cityguard-operator", e.target.value) });
    // Every click sends the same id until a verdict is answered as recorded: one clicked again after an error or no
    // answer (it may have been recorded) is never recorded twice. After that, a click is a verdict of its own.
    let requestId = newRequestId();
    const act = async (path, verdict) => {
      const result = await whileSending(buttons, () => postJson(
        `/api/incidents/${encodeURIComponent(incidentId)}/${path}`,
        { by: by.value, note: note.value, request_id: requestId }));
      // 409: the id's first request, whose answer did not come, was recorded, and this one differs from it (a note
      // typed meanwhile): the first stands, as the timeline shows, and the next click is a verdict of its own.
      const recordedBefore = result.status === 409;
      if (result.ok || recordedBefore) {
        requestId = newRequestId();
        if (selected === incidentId) await showDetail(incidentId);
        refresh();
      }
      // After the redraw, which leaves this part alone: the answer stays until the next verdict.
      fill(parts.message, el("div", { class: `notice ${result.ok ? "ok" : "error"}` }, result.ok
        ? `${verdict} ${result.body.repeated ? "was already recorded" : "recorded"}` +
          (result.body.hard_negative ? "; frame kept as a hard negative" : "")
        : recordedBefore
          ? "the earlier click was recorded, as the timeline shows; this changed one was not: click again to record it"
          : result.status === 401
            ? `${verdict} not recorded: signed out, as the session ended. Sign in again above, then click again.`
            : result.body.error),
      result.ok && result.body.hard_negative_error ? el("div", { class: "notice error" }, result.body.hard_negative_error) : null);
    };
    const buttons = [
      el("button", { class: "primary operator-only", id: "ack", disabled: !app.session.authenticated || null,
        onclick: () => act("ack", "acknowledgement") }, "Acknowledge"),
      el("button", { class: "danger operator-only", id: "false-alarm", disabled: !app.session.authenticated || null,
        onclick: () => act("false-alarm", "false alarm") }, "False alarm")];
    detail.dataset.incident = incidentId;  // which incident the buttons below act on
    fill(detail, parts.head, parts.picture, parts.facts,
      el("div", { class: "actions" }, by, note, ...buttons,
        el("span", { class: "reason read-only-hint", hidden: app.session.authenticated || null },
          "open the console URL with its token to act")),
      parts.message);
    return parts;
  };

  const drawDetail = (parts, body) => {
    fill(parts.head, el("span", { class: `badge sev-${body.severity}` }, body.severity), el("b", {}, body.title),
      el("span", { class: "spacer" }), el("span", { class: "age", dataset: { state: body.state } }, body.state));
    if (body.evidence && !parts.evidence) {
      parts.evidence = true;
      const canvas = el("canvas", { class: "view" }), image = new Image();
      image.onload = () => {
        const camera = app.cameras.find((c) => c.id === body.camera_id) || { zones: [], scene: null };
        drawAnnotated(canvas, image, camera, { detections: body.evidence.detections, zones: {}, line_totals: {} },
          { boxes: true, zones: false, scene: false, heat: false });
      };
      image.src = `/api/incidents/${encodeURIComponent(parts.id)}/evidence.jpg`;
      fill(parts.picture, canvas);
    } else if (!parts.evidence) {
      fill(parts.picture, el("div", { class: "empty" }, "No evidence frame kept (the console did not hold the " +
        "incident's frame)."));
    }
    const event = body.event || {};
    fill(parts.facts,
      el("dl", { class: "kv" },
        el("dt", {}, "reason"), el("dd", {}, event.reason || (body.timeline[0] || {}).message || "-"),
        el("dt", {}, "camera / zone"), el("dd", {}, `${body.camera_id || "-"} / ${body.zone_id || "-"}`),
        el("dt", {}, "opened"), el("dd", {}, fmtDateTime(body.opened_at)),
        el("dt", {}, "resolved"), el("dd", {}, fmtDateTime(body.resolved_at)),
        event.track_ids && event.track_ids.length ? [el("dt", {}, "tracks"), el("dd", {}, event.track_ids.join(", "))] : []),
      el("h2", { class: "section" }, "Timeline"),
      el("ul", { class: "timeline" },
        ...body.timeline.map((e) => el("li", {}, el("time", {}, fmtTime(e.at)), `${e.state} (${e.severity}) ${e.message}`)),
        ...body.acknowledgements.map((a) => el("li", {}, el("time", {}, fmtTime(a.at)), `alert acknowledged by ${a.by} ${a.note}`)),
        ...body.reviews.map((r) => el("li", { dataset: { verdict: r.verdict } }, el("time", {}, fmtTime(r.at)),
          `${r.verdict.replace("_", " ")} by ${r.by} ${r.note}`))));
  };

  const showDetail = async (incidentId) => {
    selected = incidentId;
    const { ok, body } = await api(`/api/incidents/${encodeURIComponent(incidentId)}`);
    if (selected !== incidentId) return;  // another incident was picked meanwhile
    if (!ok && shown && shown.id === incidentId) return;  // the list says the page is not current
    if (!ok) { shown = null; fill(detail, el("div", { class: "notice error" }, body.error)); return; }
    if (!shown || shown.id !== incidentId) shown = openDetail(incidentId);
    drawDetail(shown, body);
  };

  const refresh = async () => {
    const { ok, body } = await api("/api/incidents");
    if (!ok) {
      // The list and the detail stay as they were, marked as such, until a refresh succeeds.
      list.classList.add("stale");
      fill(listState, el("div", { class: "notice error", id: "incidents-stale" },
        `Not current: ${refreshedAt ? `last refreshed at ${fmtTime(refreshedAt)}` : "never loaded"} (${body.error})`));
      return;
    }
    refreshedAt = serverNow();
    list.classList.remove("stale");
    fill(listState);
    showIncidentSummary(body.summary);
    const listedOpen = body.incidents.filter((i) => i.state === "open").length, open = body.summary.open.total;
    const focused = document.activeElement && list.contains(document.activeElement)
      ? document.activeElement.dataset.incident : null;
    fill(list, el("div", { class: "card-head" }, el("h2", {}, "Open and recent incidents"),
      listedOpen < open ? el("span", { class: "reason", id: "open-shown" },
        `showing ${listedOpen} of ${open} open, the most urgent first`) : null), listState,
      ...body.incidents.map((incident) => el("a", {
        class: `incident-item${incident.id === selected ? " selected" : ""}` +
          (incident.acknowledged === false ? " unacknowledged" : ""),
        href: `#/incidents/${encodeURIComponent(incident.id)}`,
        "aria-current": incident.id === selected ? "true" : null,
        dataset: { incident: incident.id },
        // Links follow Enter; Space too, as it does on a button.
        onkeydown: (e) => { if (e.key === " ") { e.preventDefault(); e.currentTarget.click(); } },
      }, el("div", {}, el("span", { class: `badge sev-${incident.severity}` }, incident.severity), " ",
        el("span", { class: "title" }, incident.title)),
      el("div", { class: "reason" }, incident.state + (incident.acknowledged === false ? " · not acknowledged" : "") +
        ` · opened ${fmtTime(incident.opened_at)}` +
        (incident.review ? ` · ${incident.review.replace("_", " ")}` : "") +
        (incident.reason ? ` · ${incident.reason}` : "")))));
    if (!body.incidents.length) list.append(el("div", { class: "empty" }, "No incidents."));
    // The list is drawn anew: the keyboard stays on the incident it was on.
    const item = [...list.querySelectorAll(".incident-item")].find((i) => focused && i.dataset.incident === focused);
    if (item) item.focus();
    if (selected) showDetail(selected);
  };

  const select = (picked) => {
    for (const item of list.querySelectorAll(".incident-item")) {
      item.classList.toggle("selected", item.dataset.incident === picked);
      if (item.dataset.incident === picked) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    }
    if (picked) { showDetail(picked); return; }
    selected = shown = null;
    delete detail.dataset.incident;
    fill(detail, el("div", { class: "empty" }, "Select an incident."));
  };
  selected = incidentId || null;
  every(2000, refresh);
  return select;
}

// -- router ------------------------------------------------------------------------------------------------------

async function loadCameras() {
  const { ok, status, body } = await api("/api/cameras");
  if (!ok) return { ...body, status };
  app.cameras = body.cameras;
  app.thresholds = body.thresholds;
  app.camerasVersion = body.version;
  return null;
}

// The console restarted with cameras added or removed, or a scene was saved: the pages drawn from the camera list are
// drawn anew. The others keep what the operator is doing (an incident's note, a scene's edits) and use the new list
// from their next refresh or when next opened.
async function followCameras() {
  if (await loadCameras()) return;
  if (app.page === "live" || app.page === "camera") {
    app.page = null;
    route();
  }
}

// A link's part with a malformed escape (%E0%A4%A) is taken as written: it names no page or incident, which the page
// then says, instead of an error leaving it blank.
function decodedLinkPart(part) {
  try { return decodeURIComponent(part); } catch { return part; }
}

function route() {
  const [page = "live", arg] = location.hash.replace(/^#\/?/, "").split("/").map(decodedLinkPart);
  if (page === app.page && app.follow) { app.follow(arg); return; }
  for (const leave of app.leaving) leave();
  app.leaving = [];
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page || (page === "camera" && link.dataset.page === "live"));
  }
  const root = $("#page");
  fill(root);
  const pages = { live: pageLive, camera: pageCamera, zones: pageZones, incidents: pageIncidents, editor: window.pageEditor };
  app.page = page;
  app.follow = (pages[page] || pageLive)(root, arg) || null;
}

// The open incidents' counts, on every page: the badge counts those nobody has acknowledged, red while one of them
// is critical, when the title also flashes (the console may be in a background tab).
async function checkIncidents() {
  const { ok, body } = await api("/api/incident-summary");
  if (ok) showIncidentSummary(body);
}

// Unacknowledged warnings and criticals: an info incident (a zone at caution) is alerted to nobody and waits for no
// one's acknowledgement, so it would keep the badge from ever going empty.
function awaitingAcknowledgement() {
  const waiting = app.summary ? app.summary.unacknowledged : { total: 0 };
  return { total: waiting.total - (waiting.info || 0), critical: waiting.critical || 0 };
}

function showIncidentSummary(summary) {
  app.summary = summary;
  const badge = $("#open-count"), waiting = awaitingAcknowledgement();
  badge.textContent = waiting.total ? String(waiting.total) : "";
  badge.classList.toggle("critical", Boolean(waiting.critical));
  badge.title = `${waiting.total} warnings or criticals unacknowledged (${waiting.critical} critical) of ` +
    `${summary.open.total} open`;
  // Silenced ids of incidents since acknowledged or resolved are forgotten: one alerting again sounds again.
  const silenced = silencedIncidents().filter((id) => summary.unacknowledged_critical_ids.includes(id));
  storage.set(SILENCED_KEY, JSON.stringify(silenced));
  showTitle();
  showAlarm();
}

// -- audible alarm -------------------------------------------------------------------------------------------------

// A tone repeats while an unacknowledged critical incident is open and not silenced. Whether sound is wanted and which
// incidents were silenced are kept in the browser, so a reload keeps the choice and stays quiet for those incidents.
const SOUND_KEY = "cityguard-sound", SILENCED_KEY = "cityguard-silenced-incidents";
const ALARM_REPEAT_MS = 3000;
const alarm = { context: null, lastToneAt: 0 };

// The browser's storage, where a kiosk's policy may refuse it: then choices last as long as the page.
const remembered = new Map();
const storage = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return remembered.has(key) ? remembered.get(key) : null;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      remembered.set(key, value);
    }
  },
};

const soundWanted = () => storage.get(SOUND_KEY) !== "off";

function silencedIncidents() {
  try {
    const stored = JSON.parse(storage.get(SILENCED_KEY) || "[]");
    return Array.isArray(stored) ? stored : [];
  } catch {
    return [];
  }
}

function alarmingIncidents() {
  const silenced = silencedIncidents();
  return app.summary ? app.summary.unacknowledged_critical_ids.filter((id) => !silenced.includes(id)) : [];
}

// Browsers start an audio context suspended until the page has been clicked or typed in: "blocked" until then.
function soundState() {
  if (!alarm.context) return "unavailable";
  if (!soundWanted()) return "off";
  if (alarm.context.state !== "running") return "blocked";
  return alarmingIncidents().length ? "sounding" : "on";
}

const SOUND_LABELS = { off: "sound off", blocked: "click to enable sound", on: "sound on",
  sounding: "sound on · alarm sounding", unavailable: "no sound in this browser" };

function showAlarm() {
  const state = soundState(), control = $("#sound");
  control.dataset.sound = state;
  control.textContent = SOUND_LABELS[state];
  control.setAttribute("aria-pressed", String(state === "on" || state === "sounding"));
  const alarming = alarmingIncidents().length;
  $("#silence").hidden = !alarming;
  $("#silence").textContent = `silence alarm (${alarming} critical)`;
  if (state === "sounding" && Date.now() - alarm.lastToneAt >= ALARM_REPEAT_MS) {
    alarm.lastToneAt = Date.now();
    playTone(alarm.context);
  }
}

// Two short falling beeps, faded in and out so they do not click.
function playTone(context) {
  const start = context.currentTime;
  for (const [offset, frequency] of [[0, 880], [0.25, 660]]) {
    const oscillator = context.createOscillator(), gain = context.createGain();
    oscillator.type = "square";
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(0, start + offset);
    gain.gain.linearRampToValueAtTime(0.15, start + offset + 0.02);
    gain.gain.linearRampToValueAtTime(0, start + offset + 0.2);
    oscillator.connect(gain).connect(context.destination);
    oscillator.start(start + offset);
    oscillator.stop(start + offset + 0.2);
  }
}

function toggleSound() {
  if (!alarm.context) return;
  if (soundState() === "on" || soundState() === "sounding") {
    storage.set(SOUND_KEY, "off");
  } else {
    storage.set(SOUND_KEY, "on");
    alarm.context.resume();
  }
  showAlarm();
}

function silenceAlarm() {
  storage.set(SILENCED_KEY, JSON.stringify([...silencedIncidents(), ...alarmingIncidents()]));
  showAlarm();
}

function startAlarm() {
  try {
    alarm.context = new AudioContext();
  } catch {
    alarm.context = null; // no Web Audio here (a locked-down kiosk): the badge and the title still show criticals
  }
  alarm.context?.addEventListener("statechange", showAlarm);
  $("#sound").addEventListener("click", toggleSound);
  $("#silence").addEventListener("click", silenceAlarm);
  // Any click or key on the page lets the browser play sound; the sound control decides for itself.
  for (const gesture of ["pointerdown", "keydown"]) {
    document.addEventListener(gesture, (event) => {
      if (alarm.context && soundWanted() && !$("#sound").contains(event.target)) alarm.context.resume();
    });
  }
  showAlarm();
}

function showTitle() {
  const waiting = awaitingAcknowledgement();
  const flash = waiting.critical && Math.floor(Date.now() / 1000) % 2;
  document.title = !waiting.total ? app.title : `(${waiting.total}) ${flash ? "CRITICAL incident" : app.title}`;
}

// Twice a second: the clock, the ages of the frames shown, how long the server has not answered, the title, the
// alarm's next tone.
function tick() {
  const now = serverNow();
  $("#clock").textContent = `${fmtTime(now)} ${zoneName(now)}`;
  for (const age of document.querySelectorAll("[data-captured-at]")) showAge(age);
  showOffline();
  showTitle();
  showAlarm();
}

// Whether this page may act, in the header and on the controls that act. A session that ends (after
// console.session_hours, or once the console's token changed) shows at once, as soon as the health poll or any other
// request is refused, with a form to sign in again that keeps the page as it is: an incident's note, a scene's edits.
function showAuthenticated(authenticated) {
  if (app.session.authenticated !== authenticated) app.signedOut = !authenticated;
  app.session.authenticated = authenticated;
  const state = authenticated ? "operator" : app.signedOut ? "signed-out" : "read-only";
  $("#auth-state").dataset.auth = state;
  $("#auth-state").textContent = { operator: "operator", "signed-out": "signed out · read-only", "read-only":
    "read-only" }[state];
  $("#sign-in").hidden = state !== "signed-out";
  for (const control of document.querySelectorAll(".operator-only")) {
    control.disabled = !authenticated || "sending" in control.dataset;
  }
  for (const hint of document.querySelectorAll(".read-only-hint")) hint.hidden = authenticated;
}

// Disables the controls while `send` runs: clicked again, one would only repeat the request under way. They are
// marked as sending, so that showAuthenticated, which the health poll calls every 5 s, leaves them disabled meanwhile.
async function whileSending(controls, send) {
  for (const control of controls) {
    control.dataset.sending = "";
    control.disabled = true;
  }
  try {
    return await send();
  } finally {
    for (const control of controls) {
      delete control.dataset.sending;
      control.disabled = !app.session.authenticated;
    }
  }
}

async function signIn(event) {
  event.preventDefault();
  const token = $("#sign-in-token");
  const { ok, body } = await postJson("/api/session", { token: token.value });
  token.value = "";
  $("#sign-in-error").textContent = ok ? "" : body.error;
  if (!ok) return;
  if (app.session) {
    showAuthenticated(true);
  } else {
    showNoSession(false);
    start();
  }
}

// A page opened without a session where every request needs one (console.require_token_for_reads, or an address other
// than loopback), as when reloaded after its session ended: it says so and offers sign-in, then comes up.
function showNoSession(signedOut) {
  $("#auth-state").dataset.auth = signedOut ? "signed-out" : "";
  $("#auth-state").textContent = signedOut ? "signed out" : "";
  $("#no-session").hidden = !signedOut;
  $("#session-ended").hidden = signedOut;
  $("#sign-in").hidden = !signedOut;
}

// Whether the server still reads the topics (otherwise every page shows an old picture as if it were current),
// whether this page may still act, and whether its camera list is still the server's.
async function checkHealth() {
  const { ok, body } = await api("/api/health");
  if (!ok) return;
  showAuthenticated(body.authenticated);
  if (body.cameras_version !== app.camerasVersion) followCameras();
  const badge = $("#feed-health"), feed = body.feed;
  badge.hidden = feed.state === "up";
  badge.textContent = `topics ${feed.state}`;
  badge.title = feed.reason;
  badge.dataset.feed = feed.state;
}

const START_RETRY_MS = 3000;

// The page comes up once: a retry's timer and a sign-in may both ask it to.
let starting = false;

async function start() {
  if (starting || app.session) return;
  starting = true;
  try {
    await startPage();
  } finally {
    starting = false;
  }
}

// Signed out before the page came up: the sign-in form, and nothing of an earlier attempt's notice, which would say it
// is trying again when nothing is.
function showSignedOutAtStart(error) {
  $("#page").replaceChildren();
  showNoSession(true);
  // Refused for this client's wrong tokens, the answer says so itself: the console may well show its pages without a
  // session (on loopback), which the signed-out text would deny.
  $("#no-session").hidden = Boolean(error);
  $("#sign-in-error").textContent = error;
}

// A page opened or reloaded while the console restarts comes up by itself once the console answers: the screen of an
// operations room is often left alone for hours.
async function startPage() {
  const { ok, status, body } = await api("/api/session");
  // 429: wrong tokens came from this client (a proxy's own header, or guesses), and the right one is still taken.
  if (status === 401 || status === 429) {
    showSignedOutAtStart(status === 429 ? body.error : "");
    return;
  }
  const refused = ok ? await loadCameras() : body;
  if (refused && refused.status === 401) {  // the session ended between the two requests
    showSignedOutAtStart("");
    return;
  }
  if (refused) {
    $("#page").replaceChildren(el("div", { class: "notice error", id: "start-error" },
      `${refused.error || "not allowed"}; trying again every ${START_RETRY_MS / 1000} s`));
    setTimeout(start, START_RETRY_MS);
    return;
  }
  app.session = body;
  app.clockSkew = body.server_time - Date.now() / 1000;
  $("#site-name").textContent = body.site;
  app.title = `cityguard ${body.site}`;
  showAuthenticated(body.authenticated);
  setInterval(tick, 500);
  checkHealth();
  setInterval(checkHealth, 5000);
  checkIncidents();
  setInterval(checkIncidents, 3000);
  window.addEventListener("hashchange", route);
  route();
}

$("#sign-in").addEventListener("submit", signIn);
// The audio context is made as the page loads, before anything is awaited: whether the browser lets the page play
// sound is then judged on the page as it was opened, not on whatever happened in it while the console was answering.
startAlarm();
start();
