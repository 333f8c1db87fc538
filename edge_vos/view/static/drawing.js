// Drawing the frame: the preview JPEG, the label map coloured per object (outlines opaque), and the SVG
// layers on top (each object's box and tag; the prompt being drawn). A correction's mask replaces its
// object's pixels in the label map on screen.

import { FILL_ALPHA, PALETTE, colour } from "./colours.js";
import { SVG_NS, ui, view } from "./state.js";

const ctx = ui.canvas.getContext("2d");
const labelCanvas = document.createElement("canvas");  // the decoded label map (ids in the red channel)
const labelCtx = labelCanvas.getContext("2d", { willReadFrequently: true });
const overlayCanvas = document.createElement("canvas");  // the coloured masks at label map size
const overlayCtx = overlayCanvas.getContext("2d");
let overlayImage = null;

export function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

export function pxScale() {  // frame pixels per screen pixel, so strokes and text keep their on-screen size
  const shown = view.shown;
  const rect = ui.svg.getBoundingClientRect();
  return shown && rect.width ? shown.width / rect.width : 1;
}

let tagLayer = svgEl("g", { class: "tags" }, ui.svg);
export const promptLayer = svgEl("g", { class: "prompt" }, ui.svg);

export function paint(header, labels) {
  const w = header.width;
  const h = header.height;
  if (!view.shown || view.shown.width !== w || view.shown.height !== h) {
    ui.svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    ui.box.style.aspectRatio = `${w} / ${h}`;
    ui.box.style.setProperty("--ratio", String(w / h));  // a tall frame is narrowed to fit the window (style.css)
    ui.size.textContent = `${w}×${h}`;
  }
  if (labelCanvas.width !== w || labelCanvas.height !== h) {
    labelCanvas.width = overlayCanvas.width = w;
    labelCanvas.height = overlayCanvas.height = h;
    overlayImage = overlayCtx.createImageData(w, h);
  }
  labelCtx.clearRect(0, 0, w, h);
  labelCtx.drawImage(labels, 0, 0);
  colourise(labelCtx.getImageData(0, 0, w, h).data, w, h);
  composite(header);
}

// The frame on screen again, with the label map as it is now (after a correction).
function composite(header) {
  const w = header.width;
  const image = view.image;
  const cw = image ? image.width : w;
  const ch = image ? image.height : header.height;
  if (ui.canvas.width !== cw || ui.canvas.height !== ch) {
    ui.canvas.width = cw;
    ui.canvas.height = ch;
  }
  if (image) ctx.drawImage(image, 0, 0, cw, ch);
  else {
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, cw, ch);
  }
  ctx.imageSmoothingEnabled = w > cw;  // smooth when shrinking a large label map, crisp when enlarging
  ctx.drawImage(overlayCanvas, 0, 0, cw, ch);
  view.shown = header;
  ui.placeholder.hidden = true;
  ui.frameNo.textContent = String(header.capture_seq);
  drawTags(header);
}

function colourise(ids, w, h) {
  const out = overlayImage.data;
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i += 4) {
      const id = ids[i];
      if (id === 0) {
        out[i + 3] = 0;
        continue;
      }
      const edge = (x > 0 && ids[i - 4] !== id) || (x < w - 1 && ids[i + 4] !== id)
        || (y > 0 && ids[i - 4 * w] !== id) || (y < h - 1 && ids[i + 4 * w] !== id);
      out[i] = PALETTE[id * 3];
      out[i + 1] = PALETTE[id * 3 + 1];
      out[i + 2] = PALETTE[id * 3 + 2];
      out[i + 3] = edge ? 255 : FILL_ALPHA;
    }
  }
  overlayCtx.putImageData(overlayImage, 0, 0);
}

// Object `id`'s pixels on the frame on screen become `mask` (Uint8Array, row-major, the label map's size):
// what the service answered to a correction. Its box and area in the tag follow.
export function paintCorrection(id, mask) {
  const header = view.shown;
  const w = labelCanvas.width;
  const h = labelCanvas.height;
  if (!header || mask.length !== w * h) return false;
  const image = labelCtx.getImageData(0, 0, w, h);
  const ids = image.data;
  let area = 0;
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let p = 0, i = 0; p < mask.length; p++, i += 4) {
    if (mask[p]) {
      ids[i] = id;
      area++;
      const x = p % w;
      const y = (p - x) / w;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    } else if (ids[i] === id) ids[i] = 0;
  }
  labelCtx.putImageData(image, 0, 0);
  colourise(ids, w, h);
  const objects = header.objects.map((o) => (o.id !== id ? o
    : { ...o, area, bbox: area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0] }));
  composite({ ...header, objects });
  return true;
}

// The object id painted at frame pixel (x, y) of the frame on screen (0: background).
export function idAt(x, y) {
  const w = labelCanvas.width;
  const h = labelCanvas.height;
  if (!w || x < 0 || y < 0 || x >= w || y >= h) return 0;
  return labelCtx.getImageData(Math.floor(x), Math.floor(y), 1, 1).data[0];
}

export function drawTags(header) {
  const s = pxScale();
  const layer = svgEl("g", { class: "tags" });
  for (const o of header.objects) {
    if (!o.area) continue;
    const [x, y, bw, bh] = o.bbox;
    svgEl("rect", { class: "bbox", x, y, width: bw, height: bh, stroke: colour(o.id), "stroke-width": 1.2 * s }, layer);
    const text = `#${o.id} ${o.score.toFixed(2)}`;
    const fs = 12 * s;
    const tw = text.length * fs * 0.6 + 8 * s;
    const th = fs * 1.5;
    const ty = y - th - 2 * s >= 0 ? y - th - 2 * s : y + 2 * s;
    const g = svgEl("g", { class: "tag" }, layer);
    svgEl("rect", { x, y: ty, width: tw, height: th, rx: 3 * s }, g);
    svgEl("rect", { x, y: ty, width: 4 * s, height: th, fill: colour(o.id) }, g);
    const t = svgEl("text", { x: x + 7 * s, y: ty + th / 2, "font-size": fs }, g);
    t.textContent = text;
  }
  ui.svg.replaceChild(layer, tagLayer);
  tagLayer = layer;
}
