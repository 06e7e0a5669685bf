// The reading view: series panel with thumbnails, 1/2/2x2 viewports, presets, tools,
// synchronised scrolling, prior studies, DICOM tags of the current image, keyboard shortcuts.
"use strict";

import { $, DW, api, json, val, vals, fmtDate, fmtName, el, status } from "./common.js";
import { CT_PRESETS, frameInfo as frameInfoOf } from "./dicom.js";
import { Series } from "./series.js";
import { Viewport } from "./viewport.js";
import { label, length, angle, ellipseStats } from "./measure.js";
import { NON_IMAGE, studyObjects, measurementsOf, srText, documentUrl, reportTitle } from "./reports.js";

const LAYOUTS = { 1: 1, 2: 2, 4: 4 };

class Viewer {
  constructor() {
    this.viewports = [];
    this.active = null;
    this.tool = "wl";
    this.overlays = true;
    this.sync = true;
    this.series = new Map();  // series uid -> Promise<Series>
    this.marks = new Map();  // "sop/frame" -> measurements
    this.study = null;
    this.layout(1);
    this.bindToolbar();
    window.addEventListener("resize", () => this.viewports.forEach((v) => v.resize()));
  }

  layout(count, fill = true) {
    count = LAYOUTS[count] || 1;
    const box = $("viewports");
    while (this.viewports.length < count) this.viewports.push(new Viewport(this, this.viewports.length));
    box.className = `viewports layout-${count}`;
    box.replaceChildren(...this.viewports.slice(0, count).map((v) => v.element));
    for (const b of document.querySelectorAll("[data-layout]")) b.classList.toggle("on", Number(b.dataset.layout) === count);
    this.visible = this.viewports.slice(0, count);
    this.visible.forEach((v) => v.resize());
    if (!this.visible.includes(this.active)) this.activate(this.visible[0]);
    if (fill) this.fillEmpty();
  }

  // Fill empty viewports with the next series of the study, as a reader expects. Called
  // again when the study's series list arrives, so a layout chosen before it is filled too.
  fillEmpty() {
    const shown = new Set(this.visible.map((v) => v.filling || v.series?.uid));
    const rest = (this.seriesRows || []).map((r) => val(r, "0020000E")).filter((uid) => !shown.has(uid));
    for (const v of this.visible) {
      if (v.series || v.filling || !rest.length) continue;
      // The viewport stays the user's: a series dropped on it while this one loads wins.
      const study = this.study, uid = rest.shift();
      v.filling = uid;
      this.openSeries(study, uid)
        .then((s) => (v.series || this.study !== study ? null : v.setSeries(s)))
        .finally(() => { v.filling = null; });
    }
  }

  activate(v) {
    this.active = v;
    for (const w of this.viewports) w.element.classList.toggle("active", w === v);
    this.shown(v);
  }

  openSeries(study, uid, row) {
    if (!this.series.has(uid)) {
      const p = new Series(study, uid, row).load();
      p.catch(() => this.series.delete(uid));
      this.series.set(uid, p);
    }
    return this.series.get(uid);
  }

  async load(viewport, study, uid, index = 0) {
    const s = await this.openSeries(study, uid);
    await viewport.setSeries(s, index);
  }

  // The study: its series in the panel, the first in viewport 1, priors and reports listed.
  async open(study, seriesUid) {
    const fresh = this.study !== study;
    this.study = study;
    if (fresh) {
      this.seriesRows = null;  // the last study's; fillEmpty must wait for this one's
      this.marks = new Map();
      this.listMeasurements();
      for (const v of this.viewports) { v.series = null; v.image = null; v.draw(); }
    }
    // The series asked for comes first: the study's queries, thumbnails and priors wait
    // for its first image (they would compete with it for the server and the connections).
    const target = this.active || this.visible[0];
    if (seriesUid) await this.load(target, study, seriesUid);
    const [[info], rows] = await Promise.all([
      json(`${DW}/studies?StudyInstanceUID=${study}&includefield=StudyDescription`),
      json(`${DW}/studies/${study}/series?includefield=SeriesDescription`),
    ]);
    this.info = info;
    $("study-title").textContent = info ? `${fmtName(val(info, "00100010"))} — ${fmtDate(val(info, "00080020"))} ${val(info, "00081030")}` : study;
    $("download").href = `/api/studies/${study}/archive.zip`;
    $("download-dicomdir").href = `/api/studies/${study}/dicomdir.zip`;
    rows.sort((a, b) => (Number(val(a, "00200011")) || 0) - (Number(val(b, "00200011")) || 0));
    this.seriesRows = rows.filter((r) => !NON_IMAGE.has(val(r, "00080060")));
    this.fillPanel(study, this.seriesRows);
    if (!seriesUid && this.seriesRows.length) await this.load(target, study, val(this.seriesRows[0], "0020000E"));
    this.fillEmpty();
    if (info) this.listPriors(info, study);
    if (fresh) await this.loadObjects(study);
    return rows;
  }

  fillPanel(study, rows) {
    $("series-list").replaceChildren(...rows.map((s) => {
      const uid = val(s, "0020000E");
      const img = el("img", { loading: "lazy", alt: "thumbnail", src: `${DW}/studies/${study}/series/${uid}/thumbnail` });
      const text = el("div", {}, `${val(s, "00080060")} #${val(s, "00200011")} ${val(s, "0008103E")} (${val(s, "00201209")})`);
      const card = el("div", { class: "series", draggable: true, tabIndex: 0, dataset: { series: uid, study } }, img, text);
      card.addEventListener("dragstart", (ev) => ev.dataTransfer.setData("application/x-duckpacs-series", JSON.stringify({ study, uid })));
      card.addEventListener("click", () => this.load(this.active, study, uid));
      return card;
    }));
  }

  // Other studies of the same patient, newest first; one click puts it beside this one.
  async listPriors(info, study) {
    const pid = val(info, "00100020");
    if (!pid) { $("priors").replaceChildren(); return; }
    const found = await json(`${DW}/studies?PatientID=${encodeURIComponent(pid)}&includefield=StudyDescription`);
    const priors = found.filter((s) => val(s, "0020000D") !== study)
      .sort((a, b) => String(val(b, "00080020")).localeCompare(String(val(a, "00080020"))));
    $("priors").replaceChildren(...priors.map((p) => {
      const uid = val(p, "0020000D");
      const b = el("button", { class: "prior", dataset: { study: uid } }, `${fmtDate(val(p, "00080020"))} ${vals(p, "00080061").join("/")} ${val(p, "00081030")}`);
      b.addEventListener("click", () => this.openPrior(uid));
      return b;
    }));
  }

  // A prior in the second viewport (the layout grows to two), its series listed under it.
  async openPrior(study) {
    if (this.visible.length < 2) this.layout(2, false);
    const rows = await json(`${DW}/studies/${study}/series?includefield=SeriesDescription`);
    rows.sort((a, b) => (Number(val(a, "00200011")) || 0) - (Number(val(b, "00200011")) || 0));
    const images = rows.filter((r) => !NON_IMAGE.has(val(r, "00080060")));
    if (images.length) await this.load(this.visible[1], study, val(images[0], "0020000E"));
  }

  // Saved measurements back on their images; reports listed in the panel.
  async loadObjects(study) {
    const { measurementReports, reports } = await studyObjects(study);
    if (this.study !== study) return;
    for (const r of measurementReports) {
      for (const m of measurementsOf(r.meta)) {
        if (!this.marks.has(m.key)) this.marks.set(m.key, []);
        this.marks.get(m.key).push(m);
      }
    }
    this.listMeasurements();
    this.visible.forEach((v) => v.draw());
    $("reports").replaceChildren(...reports.map((o) => {
      const b = el("button", { class: "report", dataset: { instance: o.uid } }, reportTitle(o));
      b.addEventListener("click", () => this.showReport(o));
      return b;
    }));
  }

  showReport(o) {
    $("report-title").textContent = reportTitle(o);
    if (o.pdf) {
      const url = documentUrl(o);
      const frame = el("iframe", { src: url, title: reportTitle(o) });
      const link = el("a", { href: url, target: "_blank", rel: "noopener", class: "button" }, "Open in a new tab");
      $("report-body").replaceChildren(link, frame);
    } else {
      $("report-body").replaceChildren(el("div", { class: "sr-text" }, srText(o.meta)));
    }
    $("report-view").hidden = false;
  }

  // Unsaved measurements, one SR per study they were drawn in (a prior's go to the prior).
  async saveMeasurements() {
    const byStudy = new Map();
    for (const m of [...this.marks.values()].flat()) {
      if (m.saved || !m.image) continue;
      const study = val(m.image.meta, "0020000D");
      if (!byStudy.has(study)) byStudy.set(study, []);
      byStudy.get(study).push(m);
    }
    try {
      for (const [study, list] of byStudy) {
        const body = JSON.stringify({ measurements: list.map(srPayload) });
        await api(`/api/studies/${study}/measurements`, { method: "POST", body, headers: { "Content-Type": "application/json" } });
        list.forEach((m) => { m.saved = true; });
      }
      status(`Measurements saved (${[...byStudy.values()].flat().length}).`);
      $("save-sr").disabled = true;
    } catch (e) { status(`Not saved: ${e.message}`); }
    this.listMeasurements();
    this.visible.forEach((v) => v.draw());
  }

  measurementsOf(key) { return this.marks.get(key) || []; }
  addMeasurement(key, m, image) {
    if (!this.marks.has(key)) this.marks.set(key, []);
    m.text = label(m, image);
    m.image = image;
    this.marks.get(key).push(m);
    $("save-sr").disabled = false;
    this.listMeasurements();
  }

  listMeasurements() {
    const all = [...this.marks.values()].flat();
    $("measurements").replaceChildren(...all.map((m) => {
      const li = el("li", { class: m.saved ? "saved" : "" }, `${m.kind}: ${m.text}`);
      if (m.image) li.title = `image ${val(m.image.meta, "00200013")}`;
      return li;
    }));
  }

  // After a viewport shows an image: toolbar text, tags, and the synchronised viewports.
  shown(v) {
    if (v !== this.active || !v || !v.series) return;
    $("position").textContent = `${v.index + 1} / ${v.series.items.length}`;
    const win = v.window;
    $("wl").textContent = win ? `W ${Math.round(win.w)} L ${Math.round(win.c)}` : "";
    this.fillPresets(v);
    if (!$("tags-panel").hidden) this.showTags(v);
    if (this.sync) this.syncFrom(v);
  }

  fillPresets(v) {
    const img = v.image;
    if (!img) return;
    const key = `${img.item.uid}|${img.info.modality}`;
    if (this.presetKey === key) return;
    this.presetKey = key;
    const opts = [el("option", { value: "" }, "Default window")];
    img.info.windows.forEach((w, i) => opts.push(el("option", { value: `file:${i}` }, `${w.name} ${w.c}/${w.w}`)));
    if (img.info.modality === "CT") CT_PRESETS.forEach((p) => opts.push(el("option", { value: `${p.c},${p.w}` }, `CT ${p.name.toLowerCase()} ${p.c}/${p.w}`)));
    $("preset").replaceChildren(...opts);
  }

  applyPreset(value) {
    const v = this.active;
    if (!v || !v.image) return;
    if (!value) { v.setWindow(null); return; }
    if (value.startsWith("file:")) { v.setWindow({ ...v.image.info.windows[Number(value.slice(5))], fn: v.image.info.voiFunction }); return; }
    const [c, w] = value.split(",").map(Number);
    v.setWindow({ c, w, fn: "LINEAR" });
  }

  // Scroll the other viewports of the same frame of reference to the nearest slice
  // (position along the slice normal, PS3.3 C.7.6.2.1.1).
  async syncFrom(v) {
    const img = v.image;
    const frame = val(img.meta, "00200052");
    const here = slicePosition(img.info);
    if (!frame || here === null) return;
    for (const other of this.visible) {
      if (other === v || !other.series || other.series === v.series) continue;
      const positions = await positionsAlong(other.series, img.info.orientation, frame);
      if (!positions) continue;
      let best = -1, bestD = Infinity;
      positions.forEach((p, i) => {
        if (p !== null && Math.abs(p - here) < bestD) { bestD = Math.abs(p - here); best = i; }
      });
      if (best >= 0 && best !== other.index) other.show(best);
    }
  }

  async showTags(v) {
    const m = v.image && v.image.meta;
    if (!m) return;
    const filter = $("tag-filter").value.toLowerCase();
    const rows = [];
    const walk = (obj, depth) => {
      for (const [tag, e] of Object.entries(obj)) {
        const text = tagText(e);
        if (!filter || tag.toLowerCase().includes(filter) || text.toLowerCase().includes(filter)) {
          rows.push(el("tr", {}, el("td", {}, `${"› ".repeat(depth)}(${tag.slice(0, 4)},${tag.slice(4)})`), el("td", {}, e.vr || ""), el("td", {}, text)));
        }
        if (e.vr === "SQ") (e.Value || []).forEach((item) => walk(item, depth + 1));
      }
    };
    walk(m, 0);
    $("tag-table").replaceChildren(...rows);
  }

  bindToolbar() {
    for (const b of document.querySelectorAll("[data-layout]")) b.addEventListener("click", () => this.layout(Number(b.dataset.layout)));
    for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => this.setTool(b.dataset.tool));
    $("preset").addEventListener("change", (ev) => this.applyPreset(ev.target.value));
    $("invert").addEventListener("click", () => this.active && this.active.toggleInvert());
    $("actual").addEventListener("click", () => this.active && this.active.actualSize());
    $("reset").addEventListener("click", () => { const v = this.active; if (v) { v.reset(); v.renderImage(); v.draw(); v.updateOverlays(); this.shown(v); } });
    $("overlay-toggle").addEventListener("click", () => this.toggleOverlays());
    $("sync").addEventListener("click", () => { this.sync = !this.sync; $("sync").classList.toggle("on", this.sync); });
    $("tags-toggle").addEventListener("click", () => this.toggleTags());
    $("tag-filter").addEventListener("input", () => this.active && this.showTags(this.active));
    $("cine").addEventListener("click", () => this.toggleCine());
    $("save-sr").addEventListener("click", () => this.saveMeasurements());
    $("report-close").addEventListener("click", () => { $("report-view").hidden = true; $("report-body").replaceChildren(); });
    $("viewports").addEventListener("dragover", (ev) => ev.preventDefault());
    $("viewports").addEventListener("drop", (ev) => {
      ev.preventDefault();
      const data = ev.dataTransfer.getData("application/x-duckpacs-series");
      const target = this.visible.find((v) => v.element.contains(ev.target));
      if (!data || !target) return;
      const { study, uid } = JSON.parse(data);
      this.activate(target);
      this.load(target, study, uid).catch((e) => status(e.message));
    });
    document.addEventListener("keydown", (ev) => this.onKey(ev));
  }

  setTool(tool) {
    this.tool = tool;
    for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("on", b.dataset.tool === tool);
    for (const v of this.viewports) v.draft = null;
  }
  toggleOverlays() {
    this.overlays = !this.overlays;
    this.viewports.forEach((v) => { v.updateOverlays(); v.draw(); });
  }
  toggleTags() {
    $("tags-panel").hidden = !$("tags-panel").hidden;
    if (!$("tags-panel").hidden && this.active) this.showTags(this.active);
  }
  toggleCine() {
    if (this.cine) { clearInterval(this.cine); this.cine = null; $("cine").textContent = "▶ Cine"; return; }
    const v = this.active;
    if (!v || !v.series) return;
    $("cine").textContent = "■ Stop";
    this.cine = setInterval(() => v.show((v.index + 1) % v.series.items.length), 1000 / 15);
  }
  stop() { if (this.cine) this.toggleCine(); }

  // Keyboard: arrows/PageUp/PageDown/Home/End scroll, 1-4 CT presets, 0 default window,
  // i invert, o overlays, t tags, n/p next/previous series, l/a/e/w tools, Escape cancels.
  onKey(ev) {
    if ($("viewer-view").hidden || ev.target.matches("input, select, textarea") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const v = this.active;
    if (!v || !v.series) return;
    const steps = { ArrowDown: 1, ArrowRight: 1, PageDown: 10, ArrowUp: -1, ArrowLeft: -1, PageUp: -10 };
    const k = ev.key;
    if (k in steps) v.scroll(steps[k]);
    else if (k === "Home") v.show(0);
    else if (k === "End") v.show(v.series.items.length - 1);
    else if (k >= "1" && k <= "4" && v.image && v.image.info.modality === "CT") { const p = CT_PRESETS[Number(k) - 1]; v.setWindow({ c: p.c, w: p.w, fn: "LINEAR", name: p.name }); }
    else if (k === "0") v.setWindow(null);
    else if (k === "i") v.toggleInvert();
    else if (k === "o") this.toggleOverlays();
    else if (k === "t") this.toggleTags();
    else if (k === "n" || k === "p") this.nextSeries(k === "n" ? 1 : -1);
    else if (k === "+" || k === "=") v.zoomBy(1.2);
    else if (k === "-") v.zoomBy(1 / 1.2);
    else if (k === "l") this.setTool("length");
    else if (k === "a") this.setTool("angle");
    else if (k === "e") this.setTool("ellipse");
    else if (k === "w") this.setTool("wl");
    else if (k === "Escape") { v.draft = null; v.draw(); }
    else return;
    ev.preventDefault();
  }

  nextSeries(step) {
    const rows = this.seriesRows || [];
    const v = this.active;
    const at = rows.findIndex((r) => val(r, "0020000E") === v.series.uid);
    if (at < 0 || !rows.length) return;
    const next = rows[(at + step + rows.length) % rows.length];
    this.load(v, this.study, val(next, "0020000E"));
  }
}

// Positions of a series' images along the normal of `orientation`, computed once per
// orientation; null when the series is in another frame of reference.
async function positionsAlong(s, orientation, frameOfReference) {
  const key = `${frameOfReference}|${orientation.join(",")}`;
  if (!s.positions.has(key)) {
    const p = (async () => {
      await s.loadAll().catch(() => null);  // one request rather than one per image
      const metas = await Promise.all(s.items.map((it) => s.metadata(it.uid)));
      if (val(metas[0], "00200052") !== frameOfReference) return null;
      return s.items.map((it, i) => slicePosition(frameInfoOf(metas[i], it.frame), orientation));
    })();
    p.catch(() => s.positions.delete(key));
    s.positions.set(key, p);
  }
  return s.positions.get(key).catch(() => null);
}

// Position of a slice along the normal of `orientation` (its own if not given).
function slicePosition(info, orientation) {
  const iop = orientation || info.orientation, ipp = info.position;
  if (!iop || iop.length !== 6 || !ipp || ipp.length !== 3) return null;
  const n = [iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5], iop[0] * iop[4] - iop[1] * iop[3]];
  return n[0] * ipp[0] + n[1] * ipp[1] + n[2] * ipp[2];
}

// What the server needs to encode one measurement (TID 1410 group, values in UCUM units).
function srPayload(m) {
  const img = m.image, info = img.info;
  const values = {};
  if (m.kind === "length") { const l = length(info, ...m.points); values.length = [l.value, l.unit]; }
  else if (m.kind === "angle") values.angle = [angle(info, ...m.points), "deg"];
  else {
    const s = ellipseStats(img, ...m.points);
    values.area = [s.area, info.spacing ? "mm2" : "px2"];
    if (s.mean !== undefined) for (const k of ["mean", "sd", "min", "max"]) values[k] = [s[k], s.unit];
  }
  return { kind: m.kind, points: m.points.map((p) => [p.x, p.y]), values, frame: img.item.frame,
    series: val(img.meta, "0020000E"), instance: img.item.uid, sop_class: val(img.meta, "00080016") };
}

function tagText(e) {
  if (e.vr === "SQ") return `${(e.Value || []).length} item(s)`;
  if (e.BulkDataURI) return "(bulk data)";
  if (e.InlineBinary) return `(${Math.floor(e.InlineBinary.length * 3 / 4)} bytes)`;
  return (e.Value || []).map((x) => (typeof x === "object" && x !== null ? fmtName(x.Alphabetic || "") : String(x))).join("\\");
}

let viewer = null;
export function getViewer() {
  if (!viewer) { viewer = new Viewer(); window.duckpacs = { viewer }; }
  return viewer;
}
