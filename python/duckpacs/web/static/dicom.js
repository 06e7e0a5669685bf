// Images from original-precision frames: fetch over WADO-RS (PS3.18 10.4.1.1.1), unpack the
// stored values, apply the Modality LUT and the VOI (PS3.4 N.2.1), colour models of PS3.3
// C.7.6.3.1.2. Runs in the browser; no build step.
"use strict";

import { api, val, vals, num } from "./common.js";

const PER_FRAME = "52009230", SHARED = "52009229";  // PS3.3 C.7.6.16 functional groups
// Functional group sequences that hold the per-frame version of a top-level attribute.
const GROUP_OF = {
  "00280030": "00289110", "00180050": "00289110",  // Pixel Measures
  "00200037": "00209116",  // Plane Orientation
  "00200032": "00209113",  // Plane Position
  "00281052": "00289145", "00281053": "00289145",  // Pixel Value Transformation
  "00281050": "00289132", "00281051": "00289132", "00281055": "00289132", "00281056": "00289132",  // Frame VOI LUT
};

// CT windows a reader expects (centre, width in HU).
export const CT_PRESETS = [
  { name: "Brain", c: 40, w: 80 },
  { name: "Lung", c: -600, w: 1500 },
  { name: "Bone", c: 300, w: 1500 },
  { name: "Abdomen", c: 40, w: 400 },
];

// Values of attribute `tag` for frame `frame` (1-based): the per-frame group, then the shared
// group, then the top level (enhanced multi-frame keeps them in the groups).
export function frameValues(meta, frame, tag) {
  const seq = GROUP_OF[tag];
  if (seq) {
    for (const group of [vals(meta, PER_FRAME)[frame - 1], vals(meta, SHARED)[0]]) {
      const item = group && vals(group, seq)[0];
      if (item && item[tag] && item[tag].Value) return item[tag].Value;
    }
  }
  return vals(meta, tag);
}
function frameNumber(meta, frame, tag, fallback = null) {
  const v = frameValues(meta, frame, tag)[0];
  return v === undefined || v === null || v === "" ? fallback : Number(v);
}

// What the display pipeline needs to know about one frame.
export function frameInfo(meta, frame) {
  const spacing = frameValues(meta, frame, "00280030").map(Number);
  const imager = vals(meta, "00181164").map(Number);
  const centres = frameValues(meta, frame, "00281050").map(Number);
  const widths = frameValues(meta, frame, "00281051").map(Number);
  const names = frameValues(meta, frame, "00281055");
  const windows = centres.map((c, i) => ({ c, w: widths[i] ?? widths[0], name: names[i] || `File ${i + 1}` }))
    .filter((w) => Number.isFinite(w.c) && w.w >= 1);
  const aspect = vals(meta, "00280034").map(Number);
  return {
    rows: num(meta, "00280010"), cols: num(meta, "00280011"),
    samples: num(meta, "00280002", 1), photometric: String(val(meta, "00280004") || "MONOCHROME2").toUpperCase(),
    bitsAllocated: num(meta, "00280100", 16), bitsStored: num(meta, "00280101", num(meta, "00280100", 16)),
    signed: num(meta, "00280103", 0) === 1, planar: num(meta, "00280006", 0),
    slope: frameNumber(meta, frame, "00281053", 1), intercept: frameNumber(meta, frame, "00281052", 0),
    windows, voiFunction: String(frameValues(meta, frame, "00281056")[0] || "LINEAR").toUpperCase(),
    // [row spacing, column spacing] in mm, and where it came from (PS3.3 10.7.1.3).
    spacing: spacing.length === 2 ? spacing : imager.length === 2 ? imager : null,
    spacingSource: spacing.length === 2 ? "Pixel Spacing" : imager.length === 2 ? "Imager Pixel Spacing" : null,
    aspect: spacing.length === 2 ? spacing[0] / spacing[1] : aspect.length === 2 ? aspect[0] / aspect[1] : 1,
    orientation: frameValues(meta, frame, "00200037").map(Number),
    position: frameValues(meta, frame, "00200032").map(Number),
    thickness: frameNumber(meta, frame, "00180050"),
    modality: val(meta, "00080060"),
  };
}

const FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';

// One frame's bytes, uncompressed little endian (the server decodes compressed ones and then
// says so, with the photometric interpretation of what it sends).
export async function fetchFrame(url) {
  const r = await api(url, { headers: { Accept: FRAME_ACCEPT } });
  const decoded = r.headers.get("X-Decoded-Photometric");
  const body = new Uint8Array(await r.arrayBuffer());
  return { bytes: firstPart(body, r.headers.get("Content-Type")), decoded };
}

// The body of the first part of a multipart/related answer (RFC 2046 5.1.1).
export function firstPart(body, contentType) {
  const m = /boundary="?([^";]+)"?/i.exec(contentType || "");
  if (!m) return body;
  const start = indexOf(body, [13, 10, 13, 10], 0) + 4;
  const delim = [...new TextEncoder().encode(`\r\n--${m[1]}`)];
  let end = body.length - delim.length;
  while (end >= start && !matches(body, delim, end)) end--;
  return body.subarray(start, end < start ? body.length : end);
}
function matches(body, pat, at) {
  for (let i = 0; i < pat.length; i++) if (body[at + i] !== pat[i]) return false;
  return true;
}
function indexOf(body, pat, from) {
  for (let i = from; i <= body.length - pat.length; i++) if (matches(body, pat, i)) return i;
  throw new Error("multipart answer without a part header");
}

// A binary attribute (LUT data) from the metadata: inline base64 or by its bulk data URI.
export async function binaryValue(meta, tag, baseUrl) {
  const e = meta[tag];
  if (!e) return null;
  if (e.InlineBinary) return Uint8Array.from(atob(e.InlineBinary), (c) => c.charCodeAt(0));
  if (e.BulkDataURI) {
    const r = await api(new URL(e.BulkDataURI, new URL(baseUrl, location.href)).href,
      { headers: { Accept: 'multipart/related; type="application/octet-stream"' } });
    return firstPart(new Uint8Array(await r.arrayBuffer()), r.headers.get("Content-Type"));
  }
  if (e.Value) return new Uint8Array(new Uint16Array(e.Value.map(Number)).buffer);
  return null;
}

// A lookup table (descriptor + data, PS3.3 C.7.6.3.1.5 / C.11.2.1.3) ready to apply.
export async function loadLut(item, descriptorTag, dataTag, baseUrl) {
  const d = vals(item, descriptorTag).map(Number);
  const bytes = await binaryValue(item, dataTag, baseUrl);
  if (d.length !== 3 || !bytes) return null;
  const count = d[0] === 0 ? 65536 : d[0];
  const copy = bytes.slice();  // aligned
  const data = copy.length >= count * 2 ? new Uint16Array(copy.buffer, 0, count) : Uint8Array.from(copy.subarray(0, count));
  return { first: d[1], bits: d[2], data, max: (1 << d[2]) - 1 };
}
function lutLookup(lut, v) {
  const i = Math.min(lut.data.length - 1, Math.max(0, Math.round(v) - lut.first));
  return lut.data[i];
}

// The stored values of a grayscale frame as modality values (rescale applied).
function grayValues(bytes, info, decoded) {
  const n = info.rows * info.cols;
  const buf = bytes.slice().buffer;  // aligned copy
  let raw;
  if (info.bitsAllocated === 1 && !decoded) {
    raw = new Uint8Array(n);
    const b = new Uint8Array(buf);
    for (let i = 0; i < n; i++) raw[i] = (b[i >> 3] >> (i & 7)) & 1;  // PS3.5 8.1.1: LSB first
  } else if (info.bitsAllocated === 1 || info.bitsAllocated === 8) {
    raw = info.signed ? new Int8Array(buf, 0, n) : new Uint8Array(buf, 0, n);
  } else if (info.bitsAllocated === 16) {
    raw = info.signed && decoded ? new Int16Array(buf, 0, n) : new Uint16Array(buf, 0, n);
  } else if (info.bitsAllocated === 32) {
    raw = info.signed ? new Int32Array(buf, 0, n) : new Uint32Array(buf, 0, n);
  } else {
    throw new Error(`${info.bitsAllocated} bits allocated: not a size DICOM uses for images`);
  }
  // Bits above Bits Stored are not part of the value (PS3.5 8.1.1); signed values are
  // two's complement in Bits Stored bits. pydicom's decoded values are already clean.
  const fix = !decoded && info.bitsAllocated === 16 && (info.bitsStored < 16 || info.signed);
  const mask = (1 << info.bitsStored) - 1, sign = 1 << (info.bitsStored - 1);
  const out = new Float32Array(n);
  let min = Infinity, max = -Infinity;
  for (let i = 0; i < n; i++) {
    let v = raw[i];
    if (fix) { v &= mask; if (info.signed && v & sign) v -= mask + 1; }
    v = v * info.slope + info.intercept;
    out[i] = v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { values: out, min, max };
}

// A colour frame as RGBA bytes (PS3.3 C.7.6.3.1.2: RGB, YBR_FULL, YBR_FULL_422, palette).
function colourPixels(bytes, info, decoded, palette) {
  const n = info.rows * info.cols;
  const rgba = new Uint8ClampedArray(n * 4);
  const photometric = decoded || info.photometric;
  if (photometric === "PALETTE COLOR") {
    const b = bytes.slice().buffer;
    const idx = info.bitsAllocated === 16 ? new Uint16Array(b, 0, n) : new Uint8Array(b, 0, n);
    const [r, g, bl] = palette;
    for (let i = 0; i < n; i++) {
      rgba[4 * i] = lutLookup(r, idx[i]) * 255 / r.max;
      rgba[4 * i + 1] = lutLookup(g, idx[i]) * 255 / g.max;
      rgba[4 * i + 2] = lutLookup(bl, idx[i]) * 255 / bl.max;
      rgba[4 * i + 3] = 255;
    }
    return rgba;
  }
  const wide = info.bitsAllocated === 16;
  const src = wide ? new Uint16Array(bytes.slice().buffer, 0, n * 3) : bytes;
  const scale = wide ? 255 / ((1 << info.bitsStored) - 1) : 1;
  const planar = !decoded && info.planar === 1;
  const sample = (i, s) => src[planar ? s * n + i : 3 * i + s] * scale;
  for (let i = 0; i < n; i++) {
    let r, g, b;
    if (photometric === "YBR_FULL_422") {  // two pixels share Cb Cr: Y1 Y2 Cb Cr
      const base = (i >> 1) * 4;
      [r, g, b] = ybrToRgb(src[base + (i & 1)], src[base + 2], src[base + 3]);
    } else if (photometric === "YBR_FULL") {
      [r, g, b] = ybrToRgb(sample(i, 0), sample(i, 1), sample(i, 2));
    } else {
      r = sample(i, 0); g = sample(i, 1); b = sample(i, 2);
    }
    rgba[4 * i] = r; rgba[4 * i + 1] = g; rgba[4 * i + 2] = b; rgba[4 * i + 3] = 255;
  }
  return rgba;
}
function ybrToRgb(y, cb, cr) {  // PS3.3 C.7.6.3.1.2, full range
  return [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)];
}

// A decoded frame: modality values (grayscale) or RGBA (colour), with what it needs to draw.
export function decodeFrame(frame, info, luts) {
  const colour = info.samples === 3 || info.photometric === "PALETTE COLOR" || frame.decoded === "RGB";
  const image = { width: info.cols, height: info.rows, info, voiLut: luts.voi };
  if (colour) {
    image.rgba = colourPixels(frame.bytes, info, frame.decoded, luts.palette);
  } else {
    Object.assign(image, grayValues(frame.bytes, info, frame.decoded));
    image.monochrome1 = info.photometric === "MONOCHROME1";
  }
  return image;
}

// The window shown when none is chosen: the file's first, else the values' full range.
export function defaultWindow(image) {
  if (image.info.windows.length) return { ...image.info.windows[0], fn: image.info.voiFunction };
  if (image.voiLut) return null;  // the VOI LUT Sequence applies
  const low = image.min, high = image.max;
  return { c: (low + high + 1) / 2, w: Math.max(high - low + 1, 2), fn: "LINEAR", name: "Full range" };
}

// 8-bit output of the VOI (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID; or a VOI LUT).
function voi(win, lut) {
  if (!win) return (v) => lutLookup(lut, v) * 255 / lut.max;
  const { c, w } = win;
  if (win.fn === "SIGMOID") return (v) => 255 / (1 + Math.exp(-4 * (v - c) / w));
  if (win.fn === "LINEAR_EXACT") return (v) => ((v - c) / w + 0.5) * 255;
  return (v) => ((v - (c - 0.5)) / (w - 1) + 0.5) * 255;
}

// RGBA pixels of an image through the window; MONOCHROME1 and the user's invert flip it.
export function toRgba(image, win, invert) {
  if (image.rgba) {
    if (!invert) return image.rgba;
    const out = new Uint8ClampedArray(image.rgba);
    for (let i = 0; i < out.length; i += 4) { out[i] = 255 - out[i]; out[i + 1] = 255 - out[i + 1]; out[i + 2] = 255 - out[i + 2]; }
    return out;
  }
  const f = voi(win, image.voiLut);
  const flip = image.monochrome1 !== Boolean(invert);
  const n = image.values.length, out = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    let g = Math.round(Math.min(255, Math.max(0, f(image.values[i]))));
    if (flip) g = 255 - g;
    out[4 * i] = g; out[4 * i + 1] = g; out[4 * i + 2] = g; out[4 * i + 3] = 255;
  }
  return out;
}

// Letters of the patient direction a unit vector points to (PS3.3 C.7.6.2.1.1: x to the
// patient's left, y posterior, z head), the largest component first.
export function direction(v) {
  return [[v[0], "L", "R"], [v[1], "P", "A"], [v[2], "H", "F"]]
    .filter(([c]) => Math.abs(c) > 0.3)
    .sort((a, b) => Math.abs(b[0]) - Math.abs(a[0]))
    .map(([c, pos, neg]) => (c > 0 ? pos : neg)).join("");
}
// Markers at the image's right and bottom edges (row and column directions) and opposites.
export function orientationMarkers(iop) {
  if (!iop || iop.length !== 6) return null;
  const row = iop.slice(0, 3), col = iop.slice(3);
  return { right: direction(row), left: direction(row.map((x) => -x)),
    bottom: direction(col), top: direction(col.map((x) => -x)) };
}
