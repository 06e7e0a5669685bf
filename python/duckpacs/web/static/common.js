// Shared helpers of the web UI: the DICOMweb prefix, fetch with our header, DICOM JSON values.
"use strict";

export const DW = "/dicom-web";
export const $ = (id) => document.getElementById(id);

// Marks our requests so the server answers 401 without a Basic challenge (no browser dialog).
export const UI_HEADER = { "X-Requested-With": "duckpacs" };

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(url, options = {}) {
  const r = await fetch(url, { credentials: "same-origin", ...options,
    headers: { ...UI_HEADER, ...(options.headers || {}) } });
  if (r.status === 401) { onUnauthorized(); throw new Error("authentication required"); }
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${msg}`);
  }
  return r;
}
export const json = async (url) => (await api(url, { headers: { Accept: "application/dicom+json" } })).json();

// The first value of a DICOM JSON attribute (PS3.18 F.2), a person name as all its groups.
export function val(obj, tag) {
  const e = obj && obj[tag];
  if (!e || !e.Value || !e.Value.length) return "";
  const v = e.Value[0];
  if (typeof v === "object" && v !== null && !Array.isArray(v)) {
    return [v.Alphabetic, v.Ideographic, v.Phonetic].filter(Boolean).join(" = ");
  }
  return v;
}
export function vals(obj, tag) {
  const e = obj && obj[tag];
  return e && e.Value ? e.Value : [];
}
export function num(obj, tag, fallback = null) {
  const v = val(obj, tag);
  return v === "" || v === null || Number.isNaN(Number(v)) ? fallback : Number(v);
}
export function fmtDate(d) { return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d; }
export function fmtName(n) { return String(n || "").replaceAll("^", " ").trim(); }
export function status(text) { $("status").textContent = text || ""; }
export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}
