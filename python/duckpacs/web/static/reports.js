// The study's non-image objects: saved measurements (TID 1500 SR, PS3.16) to show again on
// their images, and reports (any other SR, encapsulated PDF) to read beside the images.
"use strict";

import { DW, json, val, vals, fmtDate, fmtName } from "./common.js";

const PDF = "1.2.840.10008.5.1.4.1.1.104.1";
const SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88.";
export const NON_IMAGE = new Set(["SR", "DOC", "KO", "PR"]);

const meaning = (item, tag = "0040A043") => val(vals(item, tag)[0], "00080104");

// Every report and measurement SR of a study, with its metadata.
export async function studyObjects(study) {
  const found = await json(`${DW}/studies/${study}/instances?includefield=SOPClassUID&includefield=SeriesInstanceUID`);
  const wanted = found.filter((i) => String(val(i, "00080016")).startsWith(SR_PREFIX) || val(i, "00080016") === PDF);
  const out = await Promise.all(wanted.map(async (i) => {
    const series = val(i, "0020000E"), uid = val(i, "00080018");
    const [meta] = await json(`${DW}/studies/${study}/series/${series}/instances/${uid}/metadata`);
    return { study, series, uid, sopClass: val(i, "00080016"), meta };
  }));
  return {
    measurementReports: out.filter((o) => isMeasurementReport(o.meta)),
    reports: out.filter((o) => !isMeasurementReport(o.meta)).map((o) => ({ ...o, pdf: o.sopClass === PDF })),
  };
}

function isMeasurementReport(meta) {
  const t = vals(meta, "0040A504")[0];
  return val(vals(meta, "0040A043")[0], "00080100") === "126000" || (t && val(t, "0040DB00") === "1500");
}

function* walk(items) {
  for (const item of items) {
    yield item;
    yield* walk(vals(item, "0040A730"));
  }
}

// The measurements of a TID 1500 report, each on the image and frame it was drawn on.
export function measurementsOf(meta) {
  const out = [];
  for (const group of walk(vals(meta, "0040A730"))) {
    if (val(vals(group, "0040A043")[0], "00080100") !== "125007") continue;
    const children = vals(group, "0040A730");
    const scoord = children.find((c) => val(c, "0040A040") === "SCOORD");
    if (!scoord) continue;
    const ref = vals(vals(scoord, "0040A730")[0], "00081199")[0];
    if (!ref) continue;
    const data = vals(scoord, "00700022").map(Number);
    const pts = [];
    for (let i = 0; i + 1 < data.length; i += 2) pts.push({ x: data[i], y: data[i + 1] });
    let kind, points;
    if (val(scoord, "00700023") === "ELLIPSE") {
      const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
      kind = "ellipse";
      points = [{ x: Math.min(...xs), y: Math.min(...ys) }, { x: Math.max(...xs), y: Math.max(...ys) }];
    } else {
      kind = pts.length === 3 ? "angle" : "length";
      points = pts;
    }
    const values = children.filter((c) => val(c, "0040A040") === "NUM").map((c) => {
      const mv = vals(c, "0040A300")[0];
      const unit = val(vals(mv, "004008EA")[0], "00080100");
      return `${meaning(c)} ${Number(val(mv, "0040A30A")).toFixed(1)} ${unit === "[hnsf'U]" ? "HU" : unit}`;
    });
    const frame = Number(val(ref, "00081160")) || 1;
    out.push({ kind, points, saved: true, key: `${val(ref, "00081155")}/${frame}`, text: values.join(", ") });
  }
  return out;
}

// A structured report as indented text: headings, then "concept: value" lines.
export function srText(meta) {
  const lines = [];
  const title = [meaning(meta), fmtDate(val(meta, "00080023")), fmtName(val(meta, "00100010"))].filter(Boolean).join(" — ");
  lines.push(title, "");
  const visit = (items, depth) => {
    for (const item of items) {
      const pad = "  ".repeat(depth), type = val(item, "0040A040"), name = meaning(item);
      let text = null;
      if (type === "TEXT") text = val(item, "0040A160");
      else if (type === "CODE") text = meaning(item, "0040A168");
      else if (type === "NUM") {
        const mv = vals(item, "0040A300")[0];
        text = `${val(mv, "0040A30A")} ${val(vals(mv, "004008EA")[0], "00080100")}`;
      } else if (type === "PNAME") text = fmtName(val(item, "0040A123"));
      else if (type === "DATE") text = fmtDate(val(item, "0040A121"));
      else if (type === "UIDREF") text = val(item, "0040A124");
      if (type === "CONTAINER") lines.push(`${pad}${name}`);
      else if (text !== null) lines.push(`${pad}${name}: ${text}`);
      visit(vals(item, "0040A730"), depth + 1);
    }
  };
  visit(vals(meta, "0040A730"), 0);
  return lines.join("\n");
}

export function documentUrl(o) { return `/api/studies/${o.study}/series/${o.series}/instances/${o.uid}/document`; }
export function reportTitle(o) {
  const title = o.pdf ? val(o.meta, "00420010") || "PDF document" : meaning(o.meta) || "Report";
  return `${title} ${fmtDate(val(o.meta, "00080023") || val(o.meta, "00080020"))}`.trim();
}
