// duckpacs admin page: the forwarding queue (/api/admin/queue), storage figures, the
// Modality Worklist (/api/admin/worklist) and the trash (/api/admin/trash).
"use strict";

const $ = (id) => document.getElementById(id);
const UI_HEADER = { "X-Requested-With": "duckpacs" };

function fail(message) { $("admin-error").textContent = message || ""; }

async function call(url, body) {
  const options = { credentials: "same-origin", headers: { ...UI_HEADER } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const r = await fetch(url, options);
  if (r.status === 401) throw new Error("Log in on the main page first (an admin account).");
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${r.status}: ${data.error || r.statusText}`);
  return data;
}

function size(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function when(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }

function cells(tr, values) {
  for (const v of values) {
    const td = document.createElement("td");
    if (v instanceof Node) td.appendChild(v); else td.textContent = v === null || v === undefined ? "" : String(v);
    tr.appendChild(td);
  }
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", async () => {
    try { await action(); await load(); } catch (e) { fail(e.message); }
  });
  return b;
}

function showStorage(s) {
  const limits = [];
  if (s.max_bytes) limits.push(`limit ${size(s.max_bytes)}`);
  if (s.min_free_bytes) limits.push(`keep ${size(s.min_free_bytes)} free`);
  const reclaimable = Math.max(0, s.reclaimable_bytes - s.trash_bytes);
  $("storage").textContent = `${s.instances} instances in ${s.studies} studies, `
    + `${size(s.stored_bytes)} stored at rest, ${size(s.free_bytes)} free on disk; `
    + `trash ${s.trash_instances} instances (${size(s.trash_bytes)}, kept ${s.trash_days} days); `
    + `${size(reclaimable)} reclaimable by compaction; ${limits.join(", ") || "no limits"} `
    + `(${s.on_limit}); ${s.protected} protected studies. `
    + (s.refusing ? `Refusing new instances: ${s.refusing}` : "Accepting new instances.");
}

function age(seconds) {
  if (seconds < 60) return "less than a minute";
  if (seconds < 3600) return `${Math.round(seconds / 60)} minutes`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} hours`;
  return `${Math.round(seconds / 86400)} days`;
}

function showBackup(s) {
  const line = $("backup");
  line.textContent = s.backup_at
    ? `Last backup ${age(s.backup_age_seconds)} ago (${s.backup_at}) to ${s.backup_destination}, `
      + `${size(s.backup_bytes)}.`
    : "No backup yet: run duckpacs backup --to DIR.";
  if (s.backup_stale && s.backup_at) line.textContent += ` Older than ${s.backup_warn_days} days.`;
  line.classList.toggle("warning", s.backup_stale);
}

function showDestinations(list) {
  $("destinations").tBodies[0].replaceChildren(...list.map((d) => {
    const tr = document.createElement("tr");
    const actions = document.createElement("span");
    actions.append(
      button("Retry all", () => call("/api/admin/queue/retry", { destination: d.destination })),
      button("Drop all", () => call("/api/admin/queue/drop", { destination: d.destination })));
    cells(tr, [d.destination, d.waiting, d.sending + d.answered, d.failed, d.sent, when(d.next_try), d.error, actions]);
    return tr;
  }));
}

function showJobs(jobs) {
  $("jobs").tBodies[0].replaceChildren(...jobs.map((j) => {
    const tr = document.createElement("tr");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = String(j.id);
    cells(tr, [box, j.id, j.destination, j.state, j.attempts, j.study_instance_uid, j.sop_instance_uid, j.origin, j.error]);
    return tr;
  }));
}

function selected() {
  return [...document.querySelectorAll("#jobs tbody input:checked")].map((b) => Number(b.value));
}

const WORKLIST_FIELDS = ["PatientID", "PatientName", "Modality", "ScheduledStationAETitle",
  "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "RequestedProcedureDescription"];

function showWorklist(entries) {
  $("worklist").tBodies[0].replaceChildren(...entries.map((e) => {
    const tr = document.createElement("tr");
    cells(tr, [e.id, e.status, e.PatientID, e.PatientName, e.AccessionNumber, e.Modality,
      e.ScheduledStationAETitle, e.ScheduledProcedureStepStartDate, e.ScheduledProcedureStepStartTime,
      e.RequestedProcedureDescription,
      button("Remove", () => call("/api/admin/worklist/remove", { ids: [e.id] }))]);
    return tr;
  }));
}

// The trash (/api/admin/trash): deleted batches, restorable until compaction empties them.
async function remove(url) {
  const r = await fetch(url, { method: "DELETE", credentials: "same-origin", headers: { ...UI_HEADER } });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${r.status}: ${data.error || r.statusText}`);
  return data;
}

function showTrash(batches) {
  $("trash").tBodies[0].replaceChildren(...batches.map((b) => {
    const tr = document.createElement("tr");
    const what = `${b.level} ${Object.entries(b.query).map(([k, v]) => `${k}=${v}`).join(" ")}`;
    const restore = button("Restore", () => call(`/api/admin/trash/${encodeURIComponent(b.batch)}/restore`, {}));
    cells(tr, [b.batch, new Date(b.deleted_at).toLocaleString(), b.user, b.from, what, b.instances, size(b.bytes), restore]);
    return tr;
  }));
}

async function load() {
  fail("");
  showWorklist(await call("/api/admin/worklist"));
  showTrash(await call("/api/admin/trash"));
  const params = new URLSearchParams({ state: $("state").value, to: $("to").value.trim(), limit: "500" });
  const data = await call(`/api/admin/queue?${params}`);
  showStorage(data.storage);
  showBackup(data.storage);
  showDestinations(data.destinations);
  showJobs(data.jobs);
}

$("delete-study").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const uid = $("delete-uid").value.trim();
  if (!uid || !window.confirm(`Move study ${uid} to the trash?`)) return;
  remove(`/api/studies/${encodeURIComponent(uid)}`).then(() => { $("delete-uid").value = ""; return load(); })
    .catch((e) => fail(e.message));
});
$("filter").addEventListener("submit", (ev) => { ev.preventDefault(); load().catch((e) => fail(e.message)); });
$("retry-selected").addEventListener("click", () => {
  const ids = selected();
  if (ids.length) call("/api/admin/queue/retry", { ids }).then(load).catch((e) => fail(e.message));
});
$("drop-selected").addEventListener("click", () => {
  const ids = selected();
  if (ids.length) call("/api/admin/queue/drop", { ids }).then(load).catch((e) => fail(e.message));
});
$("worklist-add").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const entry = {};
  for (const k of WORKLIST_FIELDS) entry[k] = $(`wl-${k}`).value.trim();
  call("/api/admin/worklist", entry).then(() => {
    for (const k of WORKLIST_FIELDS) $(`wl-${k}`).value = "";
    return load();
  }).catch((e) => fail(e.message));
});
load().catch((e) => fail(e.message));
setInterval(() => load().catch((e) => fail(e.message)), 5000);
