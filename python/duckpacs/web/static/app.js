// duckpacs web UI: log in, find studies, upload, and read a study in the viewer (viewer.js).
// Plain JavaScript modules over DICOMweb (PS3.18), no build step, nothing inline (CSP).
"use strict";

import { $, DW, UI_HEADER, api, json, val, vals, fmtDate, fmtName, status, setUnauthorizedHandler } from "./common.js";
import { getViewer } from "./viewer.js";

const PAGE = 25;
const state = { offset: 0, query: {}, admin: false, study: null };
let viewerReady = false;  // the viewer is built on first use
setUnauthorizedHandler(() => showLogin());

function show(view) {
  for (const id of ["login-view", "list-view", "viewer-view"]) $(id).hidden = id !== view;
  if (view !== "viewer-view" && viewerReady) getViewer().stop();
}

// --- login -------------------------------------------------------------------------------
function showLogin() { show("login-view"); $("logout").hidden = true; $("upload-label").hidden = true; }

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  const body = JSON.stringify({ user: $("login-user").value, password: $("login-password").value });
  const r = await fetch("/api/login", { method: "POST", body, headers: { ...UI_HEADER, "Content-Type": "application/json" } });
  if (!r.ok) { $("login-error").textContent = "Wrong user name or password."; return; }
  await whoami();
  route();
});
$("logout").addEventListener("click", async () => {
  await fetch("/api/logout", { method: "POST", headers: UI_HEADER });
  $("who").textContent = "";
  showLogin();
});

async function whoami() {
  const r = await fetch("/api/me", { headers: UI_HEADER });
  if (!r.ok) { showLogin(); return false; }
  const me = await r.json();
  $("who").textContent = me.auth === "anonymous" ? "local access" : `${me.user} (${me.roles.join(", ")})`;
  $("logout").hidden = me.auth === "anonymous";
  $("upload-label").hidden = !(me.roles.includes("uploader") || me.roles.includes("admin"));
  state.admin = me.roles.includes("admin");
  $("admin-link").hidden = !state.admin;
  return true;
}

// --- study list ----------------------------------------------------------------------------
$("search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const q = {};
  for (const key of ["PatientName", "PatientID", "ModalitiesInStudy", "AccessionNumber"]) {
    const v = String(f.get(key) || "").trim();
    if (v) q[key] = key === "PatientName" && !v.includes("*") ? `*${v}*` : v;
  }
  const from = String(f.get("from") || "").replaceAll("-", ""), to = String(f.get("to") || "").replaceAll("-", "");
  if (from || to) q.StudyDate = from === to ? from : `${from}-${to}`;
  state.query = q;
  state.offset = 0;
  loadStudies();
});
$("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadStudies(); });
$("next").addEventListener("click", () => { state.offset += PAGE; loadStudies(); });

async function loadStudies() {
  show("list-view");
  const params = new URLSearchParams({ ...state.query, limit: PAGE + 1, offset: state.offset,
    includefield: "StudyDescription", fuzzymatching: "true" });
  const studies = await json(`${DW}/studies?${params}`);
  const rows = studies.slice(0, PAGE).map((s) => {
    const tr = document.createElement("tr");
    const uid = val(s, "0020000D");
    tr.dataset.uid = uid;
    for (const text of [fmtName(val(s, "00100010")), val(s, "00100020"), fmtDate(val(s, "00080020")),
      vals(s, "00080061").join(", "), val(s, "00081030"), val(s, "00080050"), val(s, "00201206"), val(s, "00201208")]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => { location.hash = `#/study/${uid}`; });
    return tr;
  });
  $("studies").tBodies[0].replaceChildren(...rows);
  $("prev").disabled = state.offset === 0;
  $("next").disabled = studies.length <= PAGE;
  $("page").textContent = studies.length ? `${state.offset + 1}–${state.offset + rows.length}` : "no studies";
}

// "Send to...": through the server's forwarding queue (retried like the routing rules).
async function showSendBox() {
  $("send-box").hidden = true;
  if (!state.admin) return;
  let peers = [];
  try { peers = await (await api("/api/peers")).json(); } catch (e) { return; }
  if (!peers.length) return;
  $("send-to").replaceChildren(...peers.map((p) => {
    const o = document.createElement("option");
    o.value = p.name;
    o.textContent = `${p.name} (${p.ae_title})`;
    return o;
  }));
  $("send-box").hidden = false;
}
$("send").addEventListener("click", async () => {
  const to = $("send-to").value;
  try {
    const r = await api(`/api/studies/${state.study}/send`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ to }) });
    const body = await r.json();
    status(`Queued ${body.queued} instances for ${to} (see Queue & storage).`);
  } catch (e) { status(`Not sent: ${e.message}`); }
});

// --- upload: files or zips through STOW-RS (PS3.18 10.5) ----------------------------------
async function unzip(file) {
  const buf = new Uint8Array(await file.arrayBuffer());
  const view = new DataView(buf.buffer);
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error(`${file.name}: not a zip file`);
  const count = view.getUint16(eocd + 10, true);
  let p = view.getUint32(eocd + 16, true);
  const out = [];
  for (let n = 0; n < count; n++) {
    if (view.getUint32(p, true) !== 0x02014b50) throw new Error(`${file.name}: damaged zip directory`);
    const method = view.getUint16(p + 10, true), size = view.getUint32(p + 20, true);
    const nameLen = view.getUint16(p + 28, true), extra = view.getUint16(p + 30, true), comment = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true);
    const name = new TextDecoder().decode(buf.subarray(p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extra + comment;
    if (name.endsWith("/")) continue;
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const data = buf.subarray(start, start + size);
    if (method === 0) out.push(new Blob([data]));
    else if (method === 8) out.push(await new Response(new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"))).blob());
  }
  return out;
}

$("upload").addEventListener("change", async (ev) => {
  const files = [...ev.target.files];
  ev.target.value = "";
  try {
    const blobs = [];
    for (const f of files) {
      if (f.name.toLowerCase().endsWith(".zip")) blobs.push(...await unzip(f));
      else blobs.push(f);
    }
    const dicom = [];
    for (const b of blobs) {  // DICM at byte 128 (PS3.10 7.1)
      const head = new Uint8Array(await b.slice(128, 132).arrayBuffer());
      if (String.fromCharCode(...head) === "DICM") dicom.push(b);
    }
    let stored = 0, failed = 0;
    for (let i = 0; i < dicom.length; i += 50) {
      status(`uploading ${i + 1}–${Math.min(dicom.length, i + 50)} of ${dicom.length}…`);
      const boundary = `duckpacs-${Math.random().toString(16).slice(2)}`;
      const parts = [];
      for (const b of dicom.slice(i, i + 50)) parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, b, "\r\n");
      parts.push(`--${boundary}--\r\n`);
      const r = await fetch(`${DW}/studies`, { method: "POST", body: new Blob(parts),
        headers: { ...UI_HEADER, "Content-Type": `multipart/related; type="application/dicom"; boundary=${boundary}`, Accept: "application/dicom+json" } });
      const body = await r.json();
      stored += vals(body, "00081199").length;
      failed += vals(body, "00081198").length;
    }
    status(`uploaded: ${stored} stored, ${failed} refused, ${blobs.length - dicom.length} not DICOM`);
    route();
  } catch (e) { status(`upload failed: ${e.message}`); }
});

// --- reading a study --------------------------------------------------------------------------
async function openStudy(study, series) {
  show("viewer-view");
  viewerReady = true;
  state.study = study;
  const viewer = getViewer();
  showSendBox();  // beside the images, not before them
  await viewer.open(study, series);
}

// --- routing -------------------------------------------------------------------------------
async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  try {
    if (parts[0] === "study" && parts[1]) await openStudy(parts[1]);
    else if (parts[0] === "viewer" && parts[2]) await openStudy(parts[1], parts[2]);
    else await loadStudies();
  } catch (e) { status(e.message); }
}
window.addEventListener("hashchange", route);
whoami().then((ok) => { if (ok) route(); });
