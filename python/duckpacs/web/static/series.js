// A series as the viewer scrolls it: its frames in order, each instance's metadata, and a
// cache of frames fetched from WADO-RS with a byte budget and a small pool of requests.
"use strict";

import { DW, json, val, vals, num } from "./common.js";
import { fetchFrame, frameInfo, loadLut, decodeFrame } from "./dicom.js";

const CACHE_BYTES = 384 << 20;  // frames kept in memory (a 500-slice CT is about 260 MB)
// Frame requests in flight: under a browser's six connections per host (HTTP/1.1), so that
// metadata and queries still find one free.
const POOL = 4;

const META_AHEAD = 6;  // images around the current one whose metadata is fetched ahead
const frames = new Map();  // url -> {promise, size}
let cachedBytes = 0;
let inFlight = 0;
const waiting = [];  // [{url, priority, resolve, reject}]

function pump() {
  while (inFlight < POOL && waiting.length) {
    waiting.sort((a, b) => a.priority - b.priority);
    const job = waiting.shift();
    inFlight++;
    fetchFrame(job.url).then(job.resolve, job.reject).finally(() => { inFlight--; pump(); });
  }
}

// A frame's bytes; `priority` orders the queue (0 first: the frame on screen).
export function getFrame(url, priority = 0) {
  const hit = frames.get(url);
  if (hit) {
    frames.delete(url); frames.set(url, hit);  // most recently used last
    const job = waiting.find((j) => j.url === url);
    if (job) job.priority = priority;  // its distance from where the reader is now
    return hit.promise;
  }
  const entry = { size: 0 };
  entry.promise = new Promise((resolve, reject) => { waiting.push({ url, priority, resolve, reject }); pump(); })
    .then((f) => { entry.size = f.bytes.length; cachedBytes += entry.size; evict(); return f; });
  entry.promise.catch(() => frames.delete(url));
  frames.set(url, entry);
  return entry.promise;
}
// Queued frames of a series that are no longer near the reader go after all others.
const FAR = 1000;
function demote(prefix, keep) {
  for (const job of waiting) {
    if (job.url.startsWith(prefix) && !keep.has(job.url) && job.priority < FAR) job.priority += FAR;
  }
}

function evict() {
  for (const [url, entry] of frames) {
    if (cachedBytes <= CACHE_BYTES) break;
    if (!entry.size) continue;
    frames.delete(url);
    cachedBytes -= entry.size;
  }
}
export class Series {
  constructor(study, uid, qidoRow) {
    this.study = study;
    this.uid = uid;
    this.row = qidoRow || {};
    this.base = `${DW}/studies/${study}/series/${uid}`;
    this.items = [];
    this.meta = new Map();  // instance uid -> Promise<DICOM JSON>
    this.luts = new Map();
    this.all = null;  // Promise of every instance's metadata
    this.positions = new Map();  // slice positions along a normal (synchronised scrolling)
  }

  async load() {
    const found = await json(`${this.base}/instances?includefield=NumberOfFrames`);
    found.sort((a, b) => (num(a, "00200013", 0)) - (num(b, "00200013", 0)));
    for (const inst of found) {
      const frames = num(inst, "00280008", 1) || 1;
      const uid = val(inst, "00080018");
      for (let f = 1; f <= frames; f++) this.items.push({ uid, frame: f, frames, number: val(inst, "00200013") });
    }
    return this;
  }

  // Every instance's metadata in one request, once the first image is up (it is large and
  // takes a while on a long series: images shown meanwhile ask for their own).
  loadAll() {
    if (!this.all) {
      this.all = json(`${this.base}/metadata`).then((list) => {
        const byUid = new Map(list.map((m) => [val(m, "00080018"), m]));
        for (const [uid, m] of byUid) if (!this.meta.has(uid)) this.meta.set(uid, Promise.resolve(m));
        return byUid;
      });
      this.all.catch(() => { this.all = null; });
    }
    return this.all;
  }

  metadata(uid) {
    if (!this.meta.has(uid)) {
      const p = json(`${this.base}/instances/${uid}/metadata`).then((m) => m[0]);
      p.catch(() => this.meta.delete(uid));
      this.meta.set(uid, p);
    }
    return this.meta.get(uid);
  }

  frameUrl(item) { return `${this.base}/instances/${item.uid}/frames/${item.frame}`; }

  // Palette and VOI LUTs of an instance, loaded once.
  lutsFor(uid, meta) {
    if (!this.luts.has(uid)) {
      const base = `${this.base}/instances/${uid}/metadata`;
      const palette = val(meta, "00280004") === "PALETTE COLOR"
        ? Promise.all([["00281101", "00281201"], ["00281102", "00281202"], ["00281103", "00281203"]]
          .map(([d, t]) => loadLut(meta, d, t, base)))
        : Promise.resolve(null);
      const item = vals(meta, "00283010")[0];
      const voi = item ? loadLut(item, "00283002", "00283006", base) : Promise.resolve(null);
      this.luts.set(uid, Promise.all([palette, voi]).then(([p, v]) => ({ palette: p, voi: v })));
    }
    return this.luts.get(uid);
  }

  // The decoded image of item `index`: metadata and frame fetched together.
  async image(index, priority = 0) {
    const item = this.items[index];
    const [meta, frame] = await Promise.all([this.metadata(item.uid), getFrame(this.frameUrl(item), priority)]);
    const info = frameInfo(meta, item.frame);
    const luts = await this.lutsFor(item.uid, meta);
    return { ...decodeFrame(frame, info, luts), meta, item, index };
  }

  // Frames around `index`, `ahead` in the direction of travel and `behind` the other way,
  // nearest first (a frame behind counts as twice as far); the metadata of the nearest too,
  // until the series' metadata has arrived (on a long series that takes seconds).
  prefetch(index, dir, ahead, behind) {
    const wanted = [];
    for (let k = 1; k <= ahead; k++) wanted.push([index + k * dir, k]);
    for (let k = 1; k <= behind; k++) wanted.push([index - k * dir, 2 * k]);
    const keep = new Set([this.frameUrl(this.items[index])]);  // the one on screen stays first
    for (const [n, priority] of wanted) {
      if (n < 0 || n >= this.items.length) continue;
      const url = this.frameUrl(this.items[n]);
      keep.add(url);
      getFrame(url, priority).catch(() => {});
      if (priority <= META_AHEAD) this.metadata(this.items[n].uid).catch(() => {});
    }
    demote(`${this.base}/`, keep);
  }
}
