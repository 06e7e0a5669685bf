// One viewport: a series on a canvas, with window/level, zoom, pan, overlays, orientation
// markers, a scale bar and measurements. Everything is drawn from original-precision frames.
"use strict";

import { el, val, num, fmtName, fmtDate, status } from "./common.js";
import { defaultWindow, toRgba, orientationMarkers } from "./dicom.js";
import { POINTS, label } from "./measure.js";

// Frames fetched ahead of the one on screen (in the direction of scrolling) and behind it.
const AHEAD = 32, BEHIND = 8;

export class Viewport {
  constructor(viewer, n) {
    this.viewer = viewer;
    this.n = n;
    this.canvas = el("canvas", { tabIndex: 0 });
    this.ctx = this.canvas.getContext("2d");
    this.offscreen = document.createElement("canvas");
    this.corners = {};
    for (const c of ["tl", "tr", "bl", "br"]) this.corners[c] = el("div", { class: `ov ${c}` });
    this.markers = {};
    for (const m of ["top", "left", "right", "bottom"]) this.markers[m] = el("div", { class: `mk ${m}` });
    this.element = el("div", { class: "viewport", dataset: { n: String(n) } }, this.canvas,
      ...Object.values(this.corners), ...Object.values(this.markers));
    this.series = null;
    this.image = null;
    this.index = 0;
    this.reset();
    this.token = 0;
    this.draft = null;  // a measurement being drawn
    this.bindPointer();
  }

  reset() {
    this.zoom = 1; this.panX = 0; this.panY = 0;
    this.userWindow = null; this.invert = false;
  }

  async setSeries(series, index = 0) {
    this.series = series;
    this.element.dataset.series = series.uid;
    this.reset();
    this.image = null;
    await this.show(index);
  }

  // Show item `index` of the series; the newest call wins when several are in flight.
  async show(index) {
    const s = this.series;
    if (!s || !s.items.length) return;
    index = Math.max(0, Math.min(s.items.length - 1, index));
    const dir = index < this.index ? -1 : 1;
    this.index = index;
    const token = ++this.token;
    // The prefetch starts once this image is here: on a cold series the first image then
    // has the server to itself.
    let image;
    try {
      image = await s.image(index, 0).finally(() => s.prefetch(index, dir, AHEAD, BEHIND));
    } catch (e) {
      if (token === this.token) this.fail(index, e);
      return;
    }
    if (token !== this.token) return;
    this.image = image;
    this.renderImage();
    this.draw();
    this.updateOverlays();
    if (s.items.length > 1) s.loadAll().catch(() => {});
    this.viewer.shown(this);
    // For scripts and the benchmark: which image is on screen now.
    this.element.dispatchEvent(new CustomEvent("duckpacs:shown", { bubbles: true,
      detail: { viewport: this.n, series: s.uid, index } }));
  }

  // An image that cannot be shown (a compression the server cannot decode, a network
  // error): say so where it would have been, keep the viewport usable.
  fail(index, error) {
    this.image = null;
    this.draw();
    const ctx = this.ctx;
    ctx.fillStyle = "#ff6b6b";
    ctx.font = "14px system-ui, sans-serif";
    ctx.fillText(`Image ${index + 1} cannot be shown: ${error.message}`, 12, this.canvas.height / 2);
    status(`Image ${index + 1} of series ${this.series.uid}: ${error.message}`);
  }

  get window() { return this.userWindow || (this.image ? defaultWindow(this.image) : null); }

  setWindow(win) {
    this.userWindow = win;
    this.renderImage();
    this.draw();
    this.updateOverlays();
    this.viewer.shown(this);
  }

  toggleInvert() { this.invert = !this.invert; this.renderImage(); this.draw(); this.updateOverlays(); }

  // The frame through the window into an offscreen canvas at the image's own size.
  renderImage() {
    const img = this.image;
    if (!img) return;
    this.offscreen.width = img.width;
    this.offscreen.height = img.height;
    const data = new ImageData(toRgba(img, this.window, this.invert), img.width, img.height);
    this.offscreen.getContext("2d").putImageData(data, 0, 0);
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    this.canvas.height = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    this.draw();
  }

  // Image pixels to canvas pixels: scale, aspect (row/column spacing) and integral offsets
  // (so that at 1:1 every image pixel lands on one canvas pixel).
  geometry() {
    const img = this.image, cw = this.canvas.width, ch = this.canvas.height;
    const aspect = img.info.aspect || 1;
    const fit = Math.min(cw / img.width, ch / (img.height * aspect));
    const scale = fit * this.zoom;
    const w = img.width * scale, h = img.height * scale * aspect;
    return { scale, aspect, w, h, ox: Math.round((cw - w) / 2 + this.panX), oy: Math.round((ch - h) / 2 + this.panY), fit };
  }
  toCanvas(p) {
    const g = this.geometry();
    return { x: g.ox + p.x * g.scale, y: g.oy + p.y * g.scale * g.aspect };
  }
  toImage(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect(), g = this.geometry();
    const dpr = this.canvas.width / r.width;
    return { x: ((clientX - r.left) * dpr - g.ox) / g.scale, y: ((clientY - r.top) * dpr - g.oy) / (g.scale * g.aspect) };
  }
  // Client (page) coordinates of an image point: what a test or a script clicks on.
  imageToClient(x, y) {
    const r = this.canvas.getBoundingClientRect(), dpr = this.canvas.width / r.width;
    const p = this.toCanvas({ x, y });
    return { x: r.left + p.x / dpr, y: r.top + p.y / dpr };
  }
  actualSize() { if (this.image) { this.zoom = 1 / this.geometry().fit; this.panX = 0; this.panY = 0; this.draw(); this.updateOverlays(); } }

  draw() {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    const g = this.geometry();
    ctx.imageSmoothingEnabled = g.scale < 1;
    ctx.drawImage(this.offscreen, g.ox, g.oy, g.w, g.h);
    this.drawMeasurements();
    if (this.viewer.overlays) this.drawScaleBar(g);
  }

  drawScaleBar(g) {
    const sp = this.image.info.spacing;
    if (!sp) return;
    const pxPerMm = g.scale / sp[1];
    const mm = [1, 2, 5, 10, 20, 50, 100, 200, 500].filter((l) => l * pxPerMm <= this.canvas.width / 4).pop();
    if (!mm) return;
    const ctx = this.ctx, len = mm * pxPerMm, x = this.canvas.width - len - 20, y = this.canvas.height - 40;
    ctx.strokeStyle = ctx.fillStyle = "#ffd24d";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, y - 5); ctx.lineTo(x, y); ctx.lineTo(x + len, y); ctx.lineTo(x + len, y - 5);
    ctx.stroke();
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(mm >= 10 ? `${mm / 10} cm` : `${mm} mm`, x, y - 8);
  }

  key() { return this.image ? `${this.image.item.uid}/${this.image.item.frame}` : ""; }
  measurements() { return this.viewer.measurementsOf(this.key()); }

  drawMeasurements() {
    const ctx = this.ctx;
    const all = [...this.measurements(), ...(this.draft ? [this.draft] : [])];
    ctx.lineWidth = 1.5;
    ctx.font = "13px system-ui, sans-serif";
    for (const m of all) {
      const pts = m.points.map((p) => this.toCanvas(p));
      ctx.strokeStyle = ctx.fillStyle = m.saved ? "#7CFC8A" : "#4da3ff";
      ctx.beginPath();
      if (m.kind === "ellipse" && pts.length === 2) {
        ctx.ellipse((pts[0].x + pts[1].x) / 2, (pts[0].y + pts[1].y) / 2,
          Math.abs(pts[1].x - pts[0].x) / 2, Math.abs(pts[1].y - pts[0].y) / 2, 0, 0, 2 * Math.PI);
      } else {
        pts.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
      }
      ctx.stroke();
      if (m.points.length === POINTS[m.kind]) {
        m.text = label(m, this.image);
        this.drawLabel(m.text, pts[pts.length - 1]);
      }
    }
  }

  // A measurement's text beside its last point, kept inside the canvas, on a dark box so
  // that it reads over bright anatomy.
  drawLabel(text, at) {
    const ctx = this.ctx, colour = ctx.fillStyle;
    const w = ctx.measureText(text).width;
    const x = Math.max(4, Math.min(at.x + 8, this.canvas.width - w - 4));
    const y = Math.max(16, Math.min(at.y - 8, this.canvas.height - 6));
    ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
    ctx.fillRect(x - 3, y - 13, w + 6, 17);
    ctx.fillStyle = colour;
    ctx.fillText(text, x, y);
  }

  updateOverlays() {
    const img = this.image;
    this.element.classList.toggle("no-overlays", !this.viewer.overlays);
    if (!img) return;
    const m = img.meta, info = img.info, s = this.series;
    const ageSex = [val(m, "00101010"), val(m, "00100040")].filter(Boolean).join(" ");
    this.corners.tl.replaceChildren(...lines([fmtName(val(m, "00100010")), val(m, "00100020"), ageSex]));
    this.corners.tr.replaceChildren(...lines([fmtDate(val(m, "00080020")), val(m, "00081030"), val(m, "00080080")]));
    const frames = img.item.frames > 1 ? ` fr ${img.item.frame}/${img.item.frames}` : "";
    const loc = num(m, "00201041");
    this.corners.bl.replaceChildren(...lines([
      `Se ${val(m, "00200011")} ${val(m, "0008103E")}`.trim(),
      `Im ${val(m, "00200013")}${frames} (${this.index + 1}/${s.items.length})`,
      [loc !== null ? `Loc ${loc.toFixed(1)} mm` : "", info.thickness ? `Thk ${info.thickness} mm` : ""].filter(Boolean).join("  "),
    ]));
    const win = this.window;
    const zoom = this.image ? `Zoom ${Math.round(this.geometry().scale * 100)}%` : "";
    this.corners.br.replaceChildren(...lines([
      win ? `W ${Math.round(win.w)} L ${Math.round(win.c)}` : (img.rgba ? "colour" : "VOI LUT"), zoom,
      this.invert ? "inverted" : "",
    ]));
    const mk = orientationMarkers(info.orientation);
    for (const side of ["top", "left", "right", "bottom"]) this.markers[side].textContent = mk ? mk[side] : "";
  }

  bindPointer() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("pointerdown", (ev) => {
      this.viewer.activate(this);
      if (!this.image) return;
      c.setPointerCapture(ev.pointerId);
      const tool = ev.button === 2 || ev.shiftKey ? "pan" : this.viewer.tool;
      if (tool in POINTS) { this.measurePoint(tool, this.toImage(ev.clientX, ev.clientY), true); drag = { tool }; return; }
      drag = { tool, x: ev.clientX, y: ev.clientY, win: this.window || { c: 128, w: 256 }, panX: this.panX, panY: this.panY, zoom: this.zoom };
    });
    c.addEventListener("pointermove", (ev) => {
      if (!this.image) return;
      if (this.draft) { this.measurePoint(this.draft.kind, this.toImage(ev.clientX, ev.clientY), false); return; }
      if (!drag || drag.tool in POINTS) return;
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (drag.tool === "pan") { this.panX = drag.panX + dx; this.panY = drag.panY + dy; this.draw(); }
      else if (drag.tool === "zoom") { this.zoom = Math.max(0.1, Math.min(40, drag.zoom * Math.exp(-dy / 150))); this.draw(); this.updateOverlays(); }
      else if (!this.image.rgba) {
        const k = Math.max(0.5, drag.win.w / 256);
        this.setWindow({ c: drag.win.c + dy * k, w: Math.max(1, drag.win.w + dx * k), fn: "LINEAR", name: "Manual" });
      }
    });
    c.addEventListener("pointerup", (ev) => {
      if (this.draft && drag && drag.tool in POINTS) {
        const p = this.toImage(ev.clientX, ev.clientY), last = this.draft.points[this.draft.points.length - 2];
        // A drag finishes a segment; a click leaves the next point to the next click.
        if (last && Math.hypot(p.x - last.x, p.y - last.y) * this.geometry().scale > 3) this.measurePoint(this.draft.kind, p, true);
      }
      drag = null;
    });
    c.addEventListener("contextmenu", (ev) => ev.preventDefault());
    c.addEventListener("wheel", (ev) => {
      if (!this.series) return;
      ev.preventDefault();
      if (ev.ctrlKey) { this.zoomBy(ev.deltaY < 0 ? 1.15 : 1 / 1.15); }
      else this.scroll(Math.sign(ev.deltaY));
    }, { passive: false });
  }

  zoomBy(f) { this.zoom = Math.max(0.1, Math.min(40, this.zoom * f)); this.draw(); this.updateOverlays(); }
  scroll(step) { return this.show(this.index + step); }

  // Add (fix=true) or move (fix=false) the draft's last point; the last point finishes it.
  measurePoint(kind, p, fix) {
    if (!this.draft) {
      if (!fix) return;
      this.draft = { kind, points: [p, p] };
    } else if (fix) {
      this.draft.points[this.draft.points.length - 1] = p;
      if (this.draft.points.length === POINTS[kind]) {
        const done = this.draft;
        this.draft = null;
        this.viewer.addMeasurement(this.key(), done, this.image);
      } else {
        this.draft.points.push(p);
      }
    } else {
      this.draft.points[this.draft.points.length - 1] = p;
    }
    this.draw();
  }
}

function lines(texts) { return texts.filter(Boolean).map((t) => el("div", {}, t)); }
