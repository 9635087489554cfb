// Drawing a camera picture with its overlays on a canvas; shared by the live view, incidents and the editor.
"use strict";

const LEVEL_COLORS = {
  normal: "#2f9e44", caution: "#f2c21b", warning: "#f08c00", danger: "#e03131", critical: "#9c1c7a",
  unknown: "#6c737d",
};
const LEVEL_ORDER = ["unknown", "normal", "caution", "warning", "danger", "critical"];
const SCENE_STYLES = {
  lanes: { color: "#3bc9db", dash: [10, 6] },
  crosswalks: { color: "#f8f9fa", dash: [4, 4] },
  sidewalks: { color: "#adb5bd", dash: [2, 4] },
  no_stopping_zones: { color: "#ff922b", dash: [12, 4] },
  intersection: { color: "#ffd43b", dash: [6, 6] },
  stop_lines: { color: "#ffffff", dash: [] },
  counting_lines: { color: "#e64980", dash: [] },
};

const fmtPeople = (people) => (people >= 10 ? String(Math.round(people)) : people.toFixed(1));
// A zone window's count in words. An unreliable count is no measure of the crowd (a frozen picture counts no one;
// without a fresh density map the detector's count is only a floor): shown as one beside a level held at danger it
// would read as a calm zone.
const countText = (now) => (now.count_reliable
  ? `${now.density.toFixed(2)} p/m² · ${fmtPeople(now.people)} people`
  : now.people > 0 ? `at least ${fmtPeople(now.people)} people (count unreliable)` : "count unreliable");

function hexAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

function tracePolygon(ctx, points) {
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.closePath();
}

function label(ctx, text, x, y, color, scale) {
  ctx.font = `${Math.round(12 * scale)}px system-ui, sans-serif`;
  const w = ctx.measureText(text).width + 8 * scale, h = 17 * scale;
  x = Math.max(0, Math.min(x, ctx.canvas.width - w));  // kept inside the picture
  y = Math.max(h, y);
  ctx.fillStyle = "rgba(10, 12, 16, 0.78)";
  ctx.fillRect(x, y - h, w, h);
  ctx.fillStyle = color;
  ctx.fillText(text, x + 4 * scale, y - 5 * scale);
}

function centroid(points) {
  const n = points.length;
  return [points.reduce((s, p) => s + p[0], 0) / n, points.reduce((s, p) => s + p[1], 0) / n];
}

function arrow(ctx, from, to, color, scale) {
  const angle = Math.atan2(to[1] - from[1], to[0] - from[0]), head = 14 * scale;
  const shape = () => {
    ctx.beginPath(); ctx.moveTo(...from); ctx.lineTo(...to); ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(...to);
    ctx.lineTo(to[0] - head * Math.cos(angle - 0.45), to[1] - head * Math.sin(angle - 0.45));
    ctx.lineTo(to[0] - head * Math.cos(angle + 0.45), to[1] - head * Math.sin(angle + 0.45));
    ctx.closePath(); ctx.fill(); ctx.stroke();
  };
  ctx.setLineDash([]);
  ctx.strokeStyle = ctx.fillStyle = "rgba(10, 12, 16, 0.8)";  // dark outline: visible on any picture
  ctx.lineWidth = 7 * scale;
  shape();
  ctx.strokeStyle = ctx.fillStyle = color;
  ctx.lineWidth = 3 * scale;
  shape();
}

// Density heat: the pooled map (0..255 of its peak) as a transparent-to-red ramp stretched over the picture.
function drawHeat(ctx, heat, width, height) {
  const cells = document.createElement("canvas");
  cells.width = heat.cols; cells.height = heat.rows;
  const c = cells.getContext("2d"), image = c.createImageData(heat.cols, heat.rows);
  heat.cells.forEach((v, i) => {
    const t = v / 255;
    image.data[i * 4] = 255;
    image.data[i * 4 + 1] = Math.round(230 * (1 - t));
    image.data[i * 4 + 2] = 0;
    image.data[i * 4 + 3] = Math.round(170 * Math.sqrt(t));
  });
  c.putImageData(image, 0, 0);
  ctx.save();
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(cells, 0, 0, width, height);
  ctx.restore();
}

function drawZones(ctx, zones, levels, scale) {
  for (const zone of zones) {
    const now = levels && levels[zone.id];
    const level = now ? now.level : "unknown", color = LEVEL_COLORS[level] || LEVEL_COLORS.unknown;
    tracePolygon(ctx, zone.polygon);
    ctx.fillStyle = hexAlpha(color, 0.38);
    ctx.fill();
    ctx.setLineDash([]);
    ctx.lineWidth = 2.5 * scale;
    ctx.strokeStyle = color;
    ctx.stroke();
    const [x, y] = zone.polygon.reduce((best, p) => (p[1] < best[1] ? p : best), zone.polygon[0]);
    const figures = now ? ` · ${countText(now)}` : "";
    label(ctx, `${zone.id} · ${level.toUpperCase()}${figures}`, Math.max(0, x), Math.max(18 * scale, y + 2), "#fff", scale);
    for (const line of zone.entrances || []) drawCountingLine(ctx, line, null, scale);
  }
}

function drawCountingLine(ctx, line, totals, scale) {
  const style = SCENE_STYLES.counting_lines;
  ctx.setLineDash(style.dash);
  ctx.strokeStyle = style.color;
  ctx.lineWidth = 3 * scale;
  ctx.beginPath(); ctx.moveTo(...line.start); ctx.lineTo(...line.end); ctx.stroke();
  const forward = line.forward || "in", backward = line.backward || "out";
  const counts = totals ? ` ${forward} ${totals[forward] || 0} / ${backward} ${totals[backward] || 0}` : "";
  label(ctx, `${line.id}${counts}`, (line.start[0] + line.end[0]) / 2, (line.start[1] + line.end[1]) / 2 - 4,
        style.color, scale);
}

function drawScene(ctx, scene, lineTotals, scale) {
  if (!scene) return;
  ctx.lineWidth = 2 * scale;
  for (const kind of ["lanes", "crosswalks", "sidewalks", "no_stopping_zones"]) {
    const style = SCENE_STYLES[kind];
    for (const item of scene[kind] || []) {
      ctx.setLineDash(style.dash.map((d) => d * scale));
      ctx.strokeStyle = style.color;
      ctx.lineWidth = 2 * scale;
      tracePolygon(ctx, item.polygon);
      ctx.stroke();
      const c = centroid(item.polygon);
      if (kind === "lanes") {
        const d = item.direction, n = Math.hypot(d[0], d[1]) || 1, len = 70 * scale;
        ctx.setLineDash([]);
        arrow(ctx, [c[0] - d[0] / n * len / 2, c[1] - d[1] / n * len / 2],
              [c[0] + d[0] / n * len / 2, c[1] + d[1] / n * len / 2], style.color, scale);
      }
      label(ctx, item.id, c[0] + 6, c[1] - 8, style.color, scale);
    }
  }
  if (scene.intersection) {
    const style = SCENE_STYLES.intersection;
    ctx.setLineDash(style.dash); ctx.strokeStyle = style.color;
    tracePolygon(ctx, scene.intersection.polygon); ctx.stroke();
  }
  for (const line of scene.stop_lines || []) {
    ctx.setLineDash([]); ctx.strokeStyle = SCENE_STYLES.stop_lines.color; ctx.lineWidth = 4 * scale;
    ctx.beginPath(); ctx.moveTo(...line.start); ctx.lineTo(...line.end); ctx.stroke();
  }
  for (const line of scene.counting_lines || []) drawCountingLine(ctx, line, (lineTotals || {})[line.id] || {}, scale);
  ctx.setLineDash([]);
}

function boxColor(className) {
  if (className === "person") return "#4dabf7";
  if (["car", "bus", "truck", "motorcycle", "bicycle"].includes(className)) return "#ffd43b";
  return "#b197fc";
}

// Track ids are long (16 digits); the last four tell apart the boxes of one picture and fit on a small box.
const shortTrackId = (track) => String(track).slice(-4);

function drawDetections(ctx, detections, scale) {
  if (!detections) return;
  ctx.setLineDash([]);
  ctx.lineWidth = 2 * scale;
  detections.boxes.forEach(([x1, y1, x2, y2], i) => {
    const name = detections.class_name[i], color = boxColor(name);
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const track = detections.track_id ? detections.track_id[i] : -1;
    const text = track >= 0 ? `#${shortTrackId(track)} ${name}` : name;
    label(ctx, text, x1, Math.max(14 * scale, y1), color, scale * 0.85);
  });
}

// The size to draw a camera's picture at: its own (the frame's or the detections' width and height), in whose
// pixels boxes and geometry are, though capture may have sent a smaller JPEG; else the JPEG's.
function pictureSize(image, ...sized) {
  const known = sized.find((item) => item && item.width);
  return known ? [known.width, known.height] : [image.naturalWidth, image.naturalHeight];
}

// The whole annotated picture: image, heat, zones coloured by level, boxes, scene.
function drawAnnotated(canvas, image, geometry, live, layers) {
  if (!image.naturalWidth) return;
  const [width, height] = pictureSize(image, live && live.frame, live && live.detections);
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  // Line widths and text follow the size the picture is shown at, so a small tile stays legible.
  const ctx = canvas.getContext("2d"), scale = Math.max(1, width / 900, width / (canvas.clientWidth || width));
  ctx.drawImage(image, 0, 0, width, height);
  if (!live) return;
  if (layers.heat && live.heat) drawHeat(ctx, live.heat, width, height);
  if (layers.zones) drawZones(ctx, geometry.zones, live.zones, scale);
  if (layers.boxes) drawDetections(ctx, live.detections, scale);
  if (layers.scene) drawScene(ctx, geometry.scene, live.line_totals, scale);  // counts stay readable over boxes
}
