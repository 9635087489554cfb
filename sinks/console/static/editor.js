// Scene editor: draw and edit zones, lanes, crosswalks, sidewalks, stop lines, counting lines and no-stopping zones
// on a live snapshot; calibration by measured area or ground point pairs. The server validates with the pipeline's
// configuration model and saves into the site YAML, comments kept.
"use strict";

const KINDS = {
  zone: { title: "Zone", list: (g) => g.zones, polygon: "polygon" },
  lane: { title: "Lane", list: (g) => scene(g).lanes, polygon: "polygon", direction: true },
  crosswalk: { title: "Crosswalk", list: (g) => scene(g).crosswalks, polygon: "polygon" },
  sidewalk: { title: "Sidewalk", list: (g) => scene(g).sidewalks, polygon: "polygon" },
  no_stopping: { title: "No-stopping zone", list: (g) => scene(g).no_stopping_zones, polygon: "polygon" },
  stop_line: { title: "Stop line", list: (g) => scene(g).stop_lines, line: true, polygon: "queue_area" },
  counting_line: { title: "Counting line", list: (g) => scene(g).counting_lines, line: true },
};
const SCENE_LISTS = { lane: "lanes", crosswalk: "crosswalks", sidewalk: "sidewalks", no_stopping: "no_stopping_zones",
  stop_line: "stop_lines", counting_line: "counting_lines" };
const KIND_COLORS = { zone: "#74c0fc", lane: "#3bc9db", crosswalk: "#f8f9fa", sidewalk: "#adb5bd",
  no_stopping: "#ff922b", stop_line: "#ffffff", counting_line: "#e64980" };

function scene(geometry) {
  geometry.scene = geometry.scene || {};
  for (const list of Object.values(SCENE_LISTS)) geometry.scene[list] = geometry.scene[list] || [];
  return geometry.scene;
}

// What is sent back: the file's own structure, without the empty lists the editor added.
function cleanGeometry(geometry, calibration) {
  let sceneOut = null;
  if (geometry.scene) {
    sceneOut = {};
    for (const [key, value] of Object.entries(geometry.scene)) {
      if (!(Array.isArray(value) && value.length === 0 && Object.values(SCENE_LISTS).includes(key))) sceneOut[key] = value;
    }
    if (!Object.keys(sceneOut).length) sceneOut = null;
  }
  return { zones: geometry.zones, calibration, scene: sceneOut };
}

window.pageEditor = function pageEditor(root, cameraId) {
  cameraId = cameraId || (app.cameras[0] || {}).id;
  if (!cameraId) { root.append(el("div", { class: "empty" }, "No cameras configured.")); return; }
  let geometry = null, original = null, version = null, pairs = [], selected = null, drawing = null, dragging = null,
    snapshot = null;
  const image = new Image();
  const canvas = el("canvas", { class: "view editor-canvas", width: 768, height: 432 });
  const tools = el("div", { class: "tools" });
  const items = el("ul", { class: "items" });
  const form = el("div", { class: "form" });
  const calibrationPanel = el("div", { class: "form" });
  const message = el("div", { id: "editor-message" });
  const hint = el("div", { class: "reason hint" });
  const picker = el("select", { onchange: (e) => { location.hash = `#/editor/${encodeURIComponent(e.target.value)}`; } },
    ...app.cameras.map((c) => el("option", { value: c.id, selected: c.id === cameraId || null }, c.name)));
  const saveButton = el("button", { class: "primary operator-only", id: "save-scene", disabled: !app.session.authenticated || null,
    onclick: () => save() }, "Save to site YAML");
  root.append(el("div", { class: "editor" },
    el("section", { class: "card" }, el("div", { class: "card-head" }, el("h2", {}, "Draw")), tools,
      el("div", { class: "card-head" }, el("h2", {}, "Items")), items),
    el("section", { class: "tile" }, el("div", { class: "tile-head" }, picker,
      el("button", { onclick: () => loadSnapshot() }, "Refresh snapshot"), el("span", { class: "spacer" }), saveButton),
      hint, canvas, message),
    el("section", { class: "card" }, el("div", { class: "card-head" }, el("h2", {}, "Selected")), form,
      el("div", { class: "card-head" }, el("h2", {}, "Calibration (ground point pairs)")), calibrationPanel)));
  if (!app.session.authenticated) {
    fill(message, el("div", { class: "notice info" }, "Read-only: open the console URL with its token to save."));
  }

  const scale = () => Math.max(1, canvas.width / 900);
  const toImage = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [Math.round((event.clientX - rect.left) * canvas.width / rect.width),
      Math.round((event.clientY - rect.top) * canvas.height / rect.height)];
  };
  const near = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1]) <= 10 * scale();

  function allItems() {
    const out = [];
    for (const kind of Object.keys(KINDS)) {
      if (kind !== "zone" && !geometry.scene) continue;
      for (const obj of KINDS[kind].list(geometry)) out.push({ kind, obj });
    }
    return out;
  }

  function handlesOf(item) {
    const spec = KINDS[item.kind], handles = [];
    if (spec.line) handles.push([item.obj, "start"], [item.obj, "end"]);
    if (spec.polygon && item.obj[spec.polygon]) item.obj[spec.polygon].forEach((_, i) => handles.push([item.obj[spec.polygon], i]));
    for (const line of item.obj.entrances || []) handles.push([line, "start"], [line, "end"]);
    return handles;
  }

  function render() {
    if (!image.naturalWidth || !geometry) return;  // the snapshot and the geometry load independently
    const [width, height] = pictureSize(image, snapshot);  // geometry is in the camera's own pixels
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    const ctx = canvas.getContext("2d"), s = scale();
    ctx.drawImage(image, 0, 0, width, height);
    for (const item of allItems()) {
      const spec = KINDS[item.kind], color = KIND_COLORS[item.kind], isSelected = item.obj === (selected && selected.obj);
      ctx.setLineDash(isSelected ? [] : [8, 5]);
      ctx.lineWidth = (isSelected ? 3 : 2) * s;
      ctx.strokeStyle = color;
      if (spec.polygon && item.obj[spec.polygon]) {
        tracePolygon(ctx, item.obj[spec.polygon]);
        ctx.fillStyle = hexAlpha(color, isSelected ? 0.25 : 0.12);
        ctx.fill(); ctx.stroke();
      }
      if (spec.line) {
        ctx.setLineDash([]); ctx.lineWidth = 4 * s;
        ctx.beginPath(); ctx.moveTo(...item.obj.start); ctx.lineTo(...item.obj.end); ctx.stroke();
      }
      for (const line of item.obj.entrances || []) {
        ctx.setLineDash([]); ctx.lineWidth = 4 * s; ctx.strokeStyle = KIND_COLORS.counting_line;
        ctx.beginPath(); ctx.moveTo(...line.start); ctx.lineTo(...line.end); ctx.stroke();
        label(ctx, `entrance ${line.id}`, line.end[0] + 4, line.end[1] - 6, KIND_COLORS.counting_line, s);
      }
      const anchor = spec.line ? item.obj.start : centroid(item.obj.polygon);
      if (spec.direction) {
        const c = centroid(item.obj.polygon), d = item.obj.direction, n = Math.hypot(d[0], d[1]) || 1, len = 80 * s;
        arrow(ctx, [c[0] - d[0] / n * len / 2, c[1] - d[1] / n * len / 2], [c[0] + d[0] / n * len / 2, c[1] + d[1] / n * len / 2],
          color, s);
      }
      label(ctx, `${KINDS[item.kind].title.toLowerCase()} ${item.obj.id}`, anchor[0] + 4, anchor[1] - 6, color, s);
      if (isSelected) {
        ctx.fillStyle = "#fff";
        for (const [owner, key] of handlesOf(item)) {
          const [x, y] = owner[key];
          ctx.fillRect(x - 4 * s, y - 4 * s, 8 * s, 8 * s);
        }
      }
    }
    pairs.forEach((pair, i) => {
      if (!pair.image) return;
      ctx.fillStyle = "#ffd43b";
      ctx.beginPath(); ctx.arc(pair.image[0], pair.image[1], 5 * s, 0, Math.PI * 2); ctx.fill();
      label(ctx, `P${i + 1}`, pair.image[0] + 6, pair.image[1] - 4, "#ffd43b", s);
    });
    if (drawing && drawing.points.length) {
      ctx.setLineDash([4, 4]); ctx.strokeStyle = "#ffd43b"; ctx.lineWidth = 2 * s;
      ctx.beginPath();
      drawing.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      if (drawing.cursor) ctx.lineTo(...drawing.cursor);
      ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = "#ffd43b";
      for (const [x, y] of drawing.points) ctx.fillRect(x - 3 * s, y - 3 * s, 6 * s, 6 * s);
    }
  }

  function nextId(kind) {
    const taken = new Set(allItems().map((item) => item.obj.id));
    const base = kind.replace("_", "-");
    for (let n = 1; ; n += 1) if (!taken.has(`${base}-${n}`)) return `${base}-${n}`;
  }

  function startDrawing(kind) {
    drawing = { kind, stage: KINDS[kind].line ? "line" : "polygon", points: [], obj: null };
    hint.textContent = drawing.stage === "line" ? "Click the two end points of the line."
      : "Click the corners; click the first corner again, double-click or press Enter to close. Esc cancels.";
    renderTools(); render();
  }

  function finishStage() {
    const kind = drawing.kind, spec = KINDS[kind], points = drawing.points;
    if (kind === "entrance") {  // a counting line across a zone's entrance: the zone's inflow and outflow
      const zone = drawing.zone, taken = new Set((zone.entrances || []).map((line) => line.id));
      let n = 1;
      while (taken.has(`${zone.id}-entrance-${n}`)) n += 1;
      zone.entrances = [...(zone.entrances || []), { id: `${zone.id}-entrance-${n}`, start: points[0], end: points[1] }];
      drawing = null;
      hint.textContent = "Crossings along the line's normal count as inflow (\"in\"), the other way as outflow.";
      refreshPanels();
      return;
    }
    if (drawing.stage === "line") {
      drawing.obj = kind === "counting_line" ? { id: nextId(kind), start: points[0], end: points[1] }
        : { id: nextId(kind), start: points[0], end: points[1], queue_area: [] };
      if (kind === "stop_line") {
        drawing.stage = "polygon"; drawing.points = [];
        hint.textContent = "Now outline the queue area behind the stop line (where waiting vehicles stand).";
        return;
      }
    } else if (drawing.stage === "polygon") {
      if (points.length < 3) return;
      if (drawing.obj) drawing.obj.queue_area = points;
      else drawing.obj = { id: nextId(kind), polygon: points };
      if (spec.direction) {
        drawing.stage = "direction"; drawing.points = [];
        hint.textContent = "Click two points along the allowed direction of travel.";
        return;
      }
    } else if (drawing.stage === "direction") {
      drawing.obj.direction = [points[1][0] - points[0][0], points[1][1] - points[0][1]];
    }
    // A lane whose direction is redrawn is in its list already, and stays there until then: a cancelled redraw
    // (Esc, another tool) keeps the lane as it was.
    const list = spec.list(geometry);
    if (!list.includes(drawing.obj)) list.push(drawing.obj);
    selected = { kind, obj: drawing.obj };
    drawing = null;
    hint.textContent = "Drag the white handles to adjust. Save writes the site YAML.";
    refreshPanels();
  }

  canvas.addEventListener("mousedown", (event) => {
    if (drawing || !selected) return;
    const point = toImage(event);
    const hit = handlesOf(selected).find(([owner, key]) => near(owner[key], point));
    if (hit) { dragging = hit; event.preventDefault(); }
  });
  canvas.addEventListener("mousemove", (event) => {
    const point = toImage(event);
    if (dragging) { dragging[0][dragging[1]] = point; render(); return; }
    if (drawing) { drawing.cursor = point; render(); }
  });
  // Assigned, not added: one handler for whichever editor page is open.
  window.onmouseup = () => { if (dragging) { dragging = null; refreshPanels(); } };
  canvas.addEventListener("click", (event) => {
    const point = toImage(event);
    if (drawing && drawing.kind === "calibration") {
      pairs[drawing.index].image = point;
      drawing = null; hint.textContent = "";
      refreshPanels();
      return;
    }
    if (drawing) {
      if (drawing.stage === "polygon" && drawing.points.length >= 3 && near(drawing.points[0], point)) { finishStage(); render(); return; }
      drawing.points.push(point);
      const needed = drawing.stage === "polygon" ? Infinity : 2;
      if (drawing.points.length >= needed) finishStage();
      render();
      return;
    }
    const hit = allItems().reverse().find((item) => {
      const spec = KINDS[item.kind];
      if (spec.line && (near(item.obj.start, point) || near(item.obj.end, point))) return true;
      const polygon = spec.polygon && item.obj[spec.polygon];
      return polygon && polygon.length >= 3 && insidePolygon(point, polygon);
    });
    selected = hit || null;
    refreshPanels();
  });
  canvas.addEventListener("dblclick", () => {
    if (drawing && drawing.stage === "polygon") { drawing.points.pop(); finishStage(); render(); }
  });
  document.onkeydown = (event) => {
    if (!drawing) return;
    if (event.key === "Escape") { drawing = null; hint.textContent = ""; renderTools(); render(); }
    if (event.key === "Enter" && drawing.stage === "polygon") { finishStage(); render(); }
  };

  function insidePolygon([x, y], polygon) {
    let inside = false;
    for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
      const [xi, yi] = polygon[i], [xj, yj] = polygon[j];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function renderTools() {
    fill(tools, ...Object.entries(KINDS).map(([kind, spec]) => el("button", {
      class: drawing && drawing.kind === kind ? "selected" : "", dataset: { tool: kind },
      onclick: () => startDrawing(kind),
    }, `+ ${spec.title}`)));
  }

  function field(labelText, value, onInput, attrs = {}) {
    return el("label", {}, labelText, el("input", { value: value ?? "", ...attrs,
      oninput: (e) => { onInput(e.target.value); render(); renderItems(); } }));
  }

  function renderForm() {
    if (!selected) { fill(form, el("div", { class: "reason" }, "Click an item on the picture or in the list.")); return; }
    const obj = selected.obj, kind = selected.kind;
    const parts = [el("div", {}, el("b", {}, KINDS[kind].title)),
      field("id", obj.id, (v) => { obj.id = v; }, { name: "item-id" })];
    if (kind === "zone") {
      parts.push(field("measured ground area, m² (blank: from the calibration)", obj.area_m2, (v) => {
        if (v === "") delete obj.area_m2; else obj.area_m2 = Number(v);
      }, { type: "number", min: 0, step: "any", name: "area" }));
      for (const line of obj.entrances || []) {
        parts.push(el("div", { class: "reason" }, `entrance ${line.id} `, el("button", { onclick: () => {
          obj.entrances = obj.entrances.filter((other) => other !== line);
          if (!obj.entrances.length) delete obj.entrances;
          refreshPanels();
        } }, "remove")));
      }
      parts.push(el("button", { dataset: { tool: "entrance" }, onclick: () => {
        drawing = { kind: "entrance", stage: "line", points: [], zone: obj };
        hint.textContent = "Click the two end points of a line across the zone's entrance.";
      } }, "+ Entrance line (inflow / outflow)"));
    }
    if (kind === "lane") {
      parts.push(el("div", { class: "reason" }, `direction (dx, dy): ${obj.direction.join(", ")}`),
        el("button", { onclick: () => { drawing = { kind: "lane", stage: "direction", points: [], obj };
          hint.textContent = "Click two points along the allowed direction of travel."; } }, "Redraw direction"));
    }
    if (kind === "counting_line") {
      parts.push(field("name of crossings along the line's normal", obj.forward ?? "in", (v) => { obj.forward = v; }),
        field("name of crossings the other way", obj.backward ?? "out", (v) => { obj.backward = v; }));
    }
    parts.push(el("button", { class: "danger", onclick: () => {
      const list = KINDS[kind].list(geometry);
      list.splice(list.indexOf(obj), 1);
      selected = null; refreshPanels();
    } }, "Delete"));
    fill(form, ...parts);
  }

  function renderItems() {
    fill(items, ...allItems().map((item) => el("li", {
      class: selected && selected.obj === item.obj ? "selected" : "", dataset: { kind: item.kind, id: item.obj.id },
      onclick: () => { selected = item; refreshPanels(); },
    }, el("span", { class: "reason" }, KINDS[item.kind].title), item.obj.id)));
  }

  function renderCalibration() {
    const rows = pairs.map((pair, i) => el("tr", {},
      el("td", {}, `P${i + 1}`),
      el("td", {}, el("button", { onclick: () => { drawing = { kind: "calibration", index: i, points: [] };
        hint.textContent = `Click where ground point P${i + 1} is in the picture.`; } },
        pair.image ? `${pair.image[0]}, ${pair.image[1]}` : "pick")),
      ...[0, 1].map((axis) => el("td", {}, el("input", { type: "number", step: "any", value: pair.ground[axis] ?? "",
        placeholder: axis ? "y m" : "x m", oninput: (e) => { pair.ground[axis] = e.target.value === "" ? null : Number(e.target.value); } }))),
      el("td", {}, el("button", { onclick: () => { pairs.splice(i, 1); refreshPanels(); } }, "×"))));
    fill(calibrationPanel, 
      el("div", { class: "reason" }, "Four or more points on the ground with their positions in metres (a measured " +
        "plan); the homography is fitted on save. Or give each zone a measured area instead."),
      el("table", { class: "pairs" }, el("tbody", {}, ...rows)),
      el("button", { onclick: () => { pairs.push({ image: null, ground: [null, null] }); refreshPanels(); } }, "+ point pair"));
  }

  function refreshPanels() { renderTools(); renderItems(); renderForm(); renderCalibration(); render(); }

  function calibrationOut() {
    const complete = pairs.filter((p) => p.image && p.ground[0] !== null && p.ground[1] !== null);
    if (!complete.length) return null;
    const out = { ...(original.calibration || {}),
      image_points: complete.map((p) => p.image), ground_points: complete.map((p) => p.ground) };
    const before = original.calibration || {};
    if (JSON.stringify([before.image_points, before.ground_points]) !== JSON.stringify([out.image_points, out.ground_points])) {
      delete out.homography;  // refitted from the new pairs
    }
    return out;
  }

  // Save stays disabled until the answer comes and, after a save, until the saved scene and its version are loaded
  // back: clicked before that, it would send the version this save replaced, refused as if someone else had saved.
  function save() {
    return whileSending([saveButton], async () => {
      // The version read with the geometry: a save made over someone else's newer one is refused (409), not merged.
      const result = await postJson(`/api/scene/${encodeURIComponent(cameraId)}`,
        { version, ...cleanGeometry(geometry, calibrationOut()) });
      const body = result.body || {};
      const saved = { saved: String(!!body.saved) };
      fill(message, el("div", { class: `notice ${result.ok ? "ok" : "error"}`, dataset: saved },
        result.ok ? body.message : (body.error || "not saved")),
      result.status === 409 ? el("button", { id: "reload-scene", onclick: () => { fill(message); loadGeometry(); } },
        "Reload the saved scene (drops this editor's changes)") : null);
      if (result.ok) { await loadCameras(); await loadGeometry(); }
    });
  }

  async function loadGeometry() {
    const { ok, body } = await api(`/api/scene/${encodeURIComponent(cameraId)}`);
    if (!ok) { fill(message, el("div", { class: "notice error" }, body.error)); return; }
    original = body.geometry;
    version = body.version;
    geometry = JSON.parse(JSON.stringify(body.geometry));
    geometry.zones = geometry.zones || [];
    const calibration = geometry.calibration || {};
    pairs = (calibration.image_points || []).map((point, i) => ({ image: point, ground: [...calibration.ground_points[i]] }));
    selected = null;
    window.consoleEditor = { geometry: () => cleanGeometry(geometry, calibrationOut()) };
    refreshPanels();
  }

  async function loadSnapshot() {
    image.onload = render;
    image.onerror = () => hint.textContent = "No snapshot yet: waiting for the camera's first frame.";
    // The newest frame's identity and size come first: the snapshot shown is that frame.
    const live = await fetch(`/api/live?camera=${encodeURIComponent(cameraId)}`).then((r) => r.ok ? r.json() : null)
      .catch(() => null);
    snapshot = live && live.cameras[cameraId] ? live.cameras[cameraId].frame : null;
    const which = snapshot ? `seq=${snapshot.seq}` : `at=${Date.now()}`;
    image.src = `/api/cameras/${encodeURIComponent(cameraId)}/frame.jpg?${which}`;
  }

  hint.textContent = "Pick a tool on the left and click on the picture.";
  loadGeometry();
  loadSnapshot();
};
