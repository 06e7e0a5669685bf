// Measurements in image pixel coordinates: length, angle, elliptical ROI (PS3.3 10.7.1.3 for
// what Pixel Spacing and Imager Pixel Spacing mean).
"use strict";

// Length in mm between two image points, or in pixels without a spacing.
export function length(info, a, b) {
  const dx = b.x - a.x, dy = b.y - a.y;
  if (!info.spacing) return { value: Math.hypot(dx, dy), unit: "px" };
  const [rowSp, colSp] = info.spacing;
  return { value: Math.hypot(dx * colSp, dy * rowSp), unit: "mm" };
}

// The angle at b between b->a and b->c, in degrees, measured in the patient (spacing-aware).
export function angle(info, a, b, c) {
  const [rowSp, colSp] = info.spacing || [1, 1];
  const u = [(a.x - b.x) * colSp, (a.y - b.y) * rowSp], v = [(c.x - b.x) * colSp, (c.y - b.y) * rowSp];
  const cos = (u[0] * v[0] + u[1] * v[1]) / (Math.hypot(...u) * Math.hypot(...v));
  return Math.acos(Math.max(-1, Math.min(1, cos))) * 180 / Math.PI;
}

// Statistics of the modality values inside the ellipse inscribed in the box a-b.
export function ellipseStats(image, a, b) {
  const cx = (a.x + b.x) / 2, cy = (a.y + b.y) / 2;
  const rx = Math.abs(b.x - a.x) / 2, ry = Math.abs(b.y - a.y) / 2;
  const [rowSp, colSp] = image.info.spacing || [1, 1];
  const out = { count: 0, area: Math.PI * rx * colSp * ry * rowSp, areaUnit: image.info.spacing ? "mm²" : "px²" };
  if (!image.values || rx < 0.5 || ry < 0.5) return out;
  let sum = 0, sum2 = 0, min = Infinity, max = -Infinity;
  for (let y = Math.max(0, Math.floor(cy - ry)); y <= Math.min(image.height - 1, Math.ceil(cy + ry)); y++) {
    for (let x = Math.max(0, Math.floor(cx - rx)); x <= Math.min(image.width - 1, Math.ceil(cx + rx)); x++) {
      // pixel centres are at x + 0.5 in these coordinates
      const nx = (x + 0.5 - cx) / rx, ny = (y + 0.5 - cy) / ry;
      if (nx * nx + ny * ny > 1) continue;
      const v = image.values[y * image.width + x];
      sum += v; sum2 += v * v; out.count++;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  if (!out.count) return out;
  out.mean = sum / out.count;
  out.sd = Math.sqrt(Math.max(0, sum2 / out.count - out.mean * out.mean));
  out.min = min; out.max = max;
  out.unit = image.info.modality === "CT" ? "HU" : "";
  return out;
}

// The label of a finished measurement on `image`.
export function label(m, image) {
  const info = image.info;
  if (m.kind === "length") {
    const l = length(info, m.points[0], m.points[1]);
    const note = info.spacingSource === "Imager Pixel Spacing" ? " (at detector)" : "";
    return `${l.value.toFixed(1)} ${l.unit}${note}`;
  }
  if (m.kind === "angle") return `${angle(info, ...m.points).toFixed(1)}°`;
  const s = ellipseStats(image, m.points[0], m.points[1]);
  if (s.mean === undefined) return `area ${s.area.toFixed(1)} ${s.areaUnit}`;
  const u = s.unit ? ` ${s.unit}` : "";
  return `mean ${s.mean.toFixed(1)}${u} SD ${s.sd.toFixed(1)} min ${s.min.toFixed(0)} max ${s.max.toFixed(0)} area ${s.area.toFixed(1)} ${s.areaUnit}`;
}

export const POINTS = { length: 2, angle: 3, ellipse: 2 };
