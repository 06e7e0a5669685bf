// duckpacs web viewer: plain JavaScript over DICOMweb (PS3.18), no build step.
"use strict";

const DW = "/dicom-web";
const PAGE = 25;
const $ = (id) => document.getElementById(id);
const state = { offset: 0, query: {}, viewer: null, admin: false, study: null };

function val(obj, tag) {
  const e = obj && obj[tag];
  if (!e || !e.Value || !e.Value.length) return "";
  const v = e.Value[0];
  // A person name (PS3.18 F.2.2): every group it has, e.g. "Yamada^Tarou = 山田^太郎".
  if (typeof v === "object" && v !== null) {
    return [v.Alphabetic, v.Ideographic, v.Phonetic].filter(Boolean).join(" = ");
  }
  return v;
}
function vals(obj, tag) {
  const e = obj && obj[tag];
  return e && e.Value ? e.Value : [];
}
function fmtDate(d) { return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d; }
function fmtName(n) { return String(n || "").replaceAll("^", " ").trim(); }
function status(text) { $("status").textContent = text || ""; }

// Marks our requests so the server answers 401 without a Basic challenge (no browser dialog).
const UI_HEADER = { "X-Requested-With": "duckpacs" };

async function api(url, options = {}) {
  const r = await fetch(url, { credentials: "same-origin", ...options,
    headers: { ...UI_HEADER, ...(options.headers || {}) } });
  if (r.status === 401) { showLogin(); throw new Error("authentication required"); }
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${msg}`);
  }
  return r;
}
const json = async (url) => (await api(url, { headers: { Accept: "application/dicom+json" } })).json();

function show(view) {
  for (const id of ["login-view", "list-view", "study-view", "viewer-view"]) $(id).hidden = id !== view;
  if (view !== "viewer-view") stopCine();
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

// --- study page ----------------------------------------------------------------------------
async function loadStudy(study) {
  show("study-view");
  const [info] = await json(`${DW}/studies?StudyInstanceUID=${study}&includefield=StudyDescription`);
  $("study-title").textContent = info
    ? `${fmtName(val(info, "00100010"))} — ${fmtDate(val(info, "00080020"))} ${val(info, "00081030")}` : study;
  $("download").href = `/api/studies/${study}/archive.zip`;
  state.study = study;
  await showSendBox();
  const series = await json(`${DW}/studies/${study}/series?includefield=SeriesDescription`);
  series.sort((a, b) => (Number(val(a, "00200011")) || 0) - (Number(val(b, "00200011")) || 0));
  $("series").replaceChildren(...series.map((s) => {
    const uid = val(s, "0020000E");
    const a = document.createElement("a");
    a.href = `#/viewer/${study}/${uid}`;
    a.className = "series";
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = "thumbnail";
    img.src = `${DW}/studies/${study}/series/${uid}/thumbnail`;
    const label = document.createElement("div");
    label.textContent = `${val(s, "00080060")} #${val(s, "00200011")} ${val(s, "0008103E")} (${val(s, "00201209")})`;
    a.append(img, label);
    return a;
  }));
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

// --- viewer --------------------------------------------------------------------------------
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
let cineTimer = null;

async function loadViewer(study, series) {
  show("viewer-view");
  $("back").href = `#/study/${study}`;
  const found = await json(`${DW}/studies/${study}/series/${series}/instances?includefield=NumberOfFrames`);
  found.sort((a, b) => (Number(val(a, "00200013")) || 0) - (Number(val(b, "00200013")) || 0));
  const images = [];
  for (const inst of found) {
    const frames = Number(val(inst, "00280008")) || 1;
    for (let f = 1; f <= frames; f++) images.push({ uid: val(inst, "00080018"), frame: f, frames });
  }
  state.viewer = { study, series, images, index: 0, window: null, zoom: 1, panX: 0, panY: 0,
    cache: new Map(), meta: new Map(), img: null, lastIndex: 0 };
  $("preset").value = "";
  canvas.width = canvas.clientWidth;
  canvas.height = canvas.clientHeight;
  await showImage(0);
  canvas.focus();
}

function imageUrl(v, item) {
  const base = `${DW}/studies/${v.study}/series/${v.series}/instances/${item.uid}`;
  const w = v.window ? `&window=${v.window.c.toFixed(1)},${Math.max(1, v.window.w).toFixed(1)}` : "";
  return `${base}/frames/${item.frame}/rendered?accept=image/png${w}`;
}

function loadImage(url, cache) {
  if (cache.has(url)) return cache.get(url);
  // Rendered PNG: what a browser decodes (the viewer never asks for DICOM pixel data).
  const p = api(url, { headers: { Accept: "image/png" } }).then(async (r) => {
    const voi = (r.headers.get("X-VOI-Window") || "").split(",");  // the window the server used
    const bitmap = await createImageBitmap(await r.blob());
    return { bitmap, window: voi.length >= 2 ? { c: Number(voi[0]), w: Number(voi[1]) } : null };
  });
  p.catch(() => cache.delete(url));
  cache.set(url, p);
  if (cache.size > 400) cache.delete(cache.keys().next().value);
  return p;
}

async function showImage(index) {
  const v = state.viewer;
  if (!v || !v.images.length) return;
  v.index = Math.max(0, Math.min(v.images.length - 1, index));
  const item = v.images[v.index];
  const loaded = await loadImage(imageUrl(v, item), v.cache);
  if (state.viewer !== v || v.images[v.index] !== item) return;
  v.img = loaded.bitmap;
  v.shownWindow = loaded.window;
  draw();
  $("position").textContent = `${v.index + 1} / ${v.images.length}`;
  showTags(v, item);
  // Prefetch ahead in the direction of travel (and one behind) so scrolling does not wait.
  const step = index < v.lastIndex ? -1 : 1;
  v.lastIndex = v.index;
  for (const n of [1, 2, 3, 4, 5, 6, 7, 8, -1].map((k) => v.index + k * step)) {
    if (n >= 0 && n < v.images.length) loadImage(imageUrl(v, v.images[n]), v.cache).catch(() => {});
  }
}

function draw() {
  const v = state.viewer;
  if (!v || !v.img) return;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const fit = Math.min(canvas.width / v.img.width, canvas.height / v.img.height) * v.zoom;
  const w = v.img.width * fit, h = v.img.height * fit;
  ctx.imageSmoothingEnabled = fit < 1;
  ctx.drawImage(v.img, (canvas.width - w) / 2 + v.panX, (canvas.height - h) / 2 + v.panY, w, h);
  const win = v.window || v.shownWindow;
  $("wl").textContent = win ? `W ${Math.round(win.w)} L ${Math.round(win.c)}` : "";
}

async function showTags(v, item) {
  let meta = v.meta.get(item.uid);
  if (!meta) {
    meta = json(`${DW}/studies/${v.study}/series/${v.series}/instances/${item.uid}/metadata`).then((m) => m[0]);
    v.meta.set(item.uid, meta);
  }
  const m = await meta;
  if (state.viewer !== v) return;
  const rows = [["Patient", fmtName(val(m, "00100010"))], ["Patient ID", val(m, "00100020")],
    ["Study date", fmtDate(val(m, "00080020"))], ["Modality", val(m, "00080060")],
    ["Series", val(m, "0008103E")], ["Instance", val(m, "00200013")],
    ["Frame", `${item.frame} / ${item.frames}`], ["Slice location", val(m, "00201041")],
    ["Size", `${val(m, "00280011")} × ${val(m, "00280010")}`], ["Window", val(m, "00281051") !== "" ? `${val(m, "00281050")} / ${val(m, "00281051")}` : ""]];
  $("tags").replaceChildren(...rows.flatMap(([k, text]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(text);
    return [dt, dd];
  }));
}

function setWindow(win) {
  const v = state.viewer;
  v.window = win;
  v.cache = new Map();
  showImage(v.index);
}

$("preset").addEventListener("change", (ev) => {
  const text = ev.target.value;
  if (!text) { setWindow(null); return; }
  const [c, w] = text.split(",").map(Number);
  setWindow({ c, w });
});
$("reset").addEventListener("click", () => {
  const v = state.viewer;
  v.zoom = 1; v.panX = 0; v.panY = 0;
  $("preset").value = "";
  setWindow(null);
});

let drag = null, wlTimer = null;
canvas.addEventListener("pointerdown", (ev) => {
  const v = state.viewer;
  if (!v) return;
  canvas.setPointerCapture(ev.pointerId);
  drag = { x: ev.clientX, y: ev.clientY, pan: ev.shiftKey || ev.button === 2,
    start: v.window || v.shownWindow || { c: 128, w: 256 }, panX: v.panX, panY: v.panY };
});
canvas.addEventListener("pointermove", (ev) => {
  const v = state.viewer;
  if (!drag || !v) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (drag.pan) { v.panX = drag.panX + dx; v.panY = drag.panY + dy; draw(); return; }
  const scale = Math.max(1, drag.start.w / 256);
  v.window = { c: drag.start.c + dy * scale, w: Math.max(1, drag.start.w + dx * scale) };
  $("wl").textContent = `W ${Math.round(v.window.w)} L ${Math.round(v.window.c)}`;
  clearTimeout(wlTimer);
  wlTimer = setTimeout(() => setWindow(v.window), 60);
});
canvas.addEventListener("pointerup", () => { drag = null; });
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("wheel", (ev) => {
  const v = state.viewer;
  if (!v) return;
  ev.preventDefault();
  if (ev.ctrlKey) { v.zoom = Math.max(0.1, Math.min(20, v.zoom * (ev.deltaY < 0 ? 1.15 : 1 / 1.15))); draw(); }
  else showImage(v.index + Math.sign(ev.deltaY));
}, { passive: false });
canvas.addEventListener("keydown", (ev) => {
  const v = state.viewer;
  if (!v) return;
  const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
  if (ev.key in keys) { ev.preventDefault(); showImage(v.index + keys[ev.key]); }
  else if (ev.key === "+" || ev.key === "=") { v.zoom *= 1.2; draw(); }
  else if (ev.key === "-") { v.zoom /= 1.2; draw(); }
  else if (ev.key === "Home") showImage(0);
  else if (ev.key === "End") showImage(v.images.length - 1);
});

function stopCine() { if (cineTimer) { clearInterval(cineTimer); cineTimer = null; $("cine").textContent = "▶ Cine"; } }
$("cine").addEventListener("click", () => {
  const v = state.viewer;
  if (cineTimer) { stopCine(); return; }
  $("cine").textContent = "■ Stop";
  cineTimer = setInterval(() => showImage((v.index + 1) % v.images.length), 1000 / 15);
});
window.addEventListener("resize", () => { canvas.width = canvas.clientWidth; canvas.height = canvas.clientHeight; draw(); });

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

// --- routing -------------------------------------------------------------------------------
async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  try {
    if (parts[0] === "study" && parts[1]) await loadStudy(parts[1]);
    else if (parts[0] === "viewer" && parts[2]) await loadViewer(parts[1], parts[2]);
    else await loadStudies();
  } catch (e) { status(e.message); }
}
window.addEventListener("hashchange", route);
whoami().then((ok) => { if (ok) route(); });
