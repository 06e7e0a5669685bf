// duckpacs admin page: correcting a study's patient or study data
// (POST /api/studies/{uid}/modify) and merging patients (POST /api/patients/merge).
// Uses call(), fail() and load() of admin.js, loaded before this file.
"use strict";

const MODIFY_FIELDS = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex",
  "AccessionNumber", "StudyDescription"];

function changed(summary) {
  const words = Object.entries(summary.changes || {}).map(([k, v]) => {
    const old = ((summary.before || {})[k] || []).join(" | ") || "(empty)";
    return `${k}: ${old} → ${v || "(empty)"}`;
  });
  return words.join("; ");
}

function shown(summary) {
  $("correct-result").textContent = summary.applied
    ? `${summary.instances} instance(s) of ${summary.studies.length} study(ies) corrected: ${changed(summary)}`
    : `${summary.studies.length} study(ies) would change: ${changed(summary)}`;
}

// Ask what would change first, then apply once the user agrees.
async function correct(url, body) {
  const plan = await call(url, { ...body, apply: false });
  shown(plan);
  if (!plan.studies.length) throw new Error("nothing archived matches");
  if (!window.confirm(`${plan.studies.length} study(ies): ${changed(plan)}. Apply?`)) return;
  shown(await call(url, body));
  await load();
}

$("modify-study").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const uid = $("modify-uid").value.trim();
  const changes = {};
  for (const k of MODIFY_FIELDS) {
    const v = $(`modify-${k}`).value.trim();
    if (v) changes[k] = v;
  }
  if (!uid || !Object.keys(changes).length) { fail("Give the study and at least one new value."); return; }
  fail("");
  correct(`/api/studies/${encodeURIComponent(uid)}/modify`, { changes }).catch((e) => fail(e.message));
});

$("merge-patient").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = { from: $("merge-from").value.trim(), into: $("merge-into").value.trim() };
  const name = $("merge-name").value.trim();
  if (name) body.name = name;
  fail("");
  correct("/api/patients/merge", body).catch((e) => fail(e.message));
});
