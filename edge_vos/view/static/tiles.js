// The stream bar, shown when the service runs several streams: one tile per stream with its name, state,
// rate and object count and, on a wide screen, a small live picture with its masks (a frame a second, which
// the view sends only for them); a click (or the keys 1..9) shows that stream large. On a phone the tiles
// carry no picture, so a page showing one camera is sent that camera's frames and nothing else of the others.

import { FILL_ALPHA, PALETTE } from "./colours.js";
import { ui, view } from "./state.js";

const THUMB_WIDTH = 176;
const THUMB_EVERY_MS = 900;  // the selected stream's own tile is repainted at most this often
const NARROW = window.matchMedia("(max-width: 720px)");
const tiles = new Map();  // stream name -> { button, canvas, state, meta, paintedAt }
const labelCanvas = document.createElement("canvas");  // a label map at tile size (ids in the red channel)
const labelCtx = labelCanvas.getContext("2d", { willReadFrequently: true });
let selectHandler = () => {};
let layoutHandler = () => {};

export function onSelectStream(handler) {
  selectHandler = handler;
}

// What to do when the screen becomes narrow or wide (pictures in the tiles or not: the watch changes).
export function onLayoutChange(handler) {
  layoutHandler = handler;
}
NARROW.addEventListener("change", () => {
  renderTiles();
  layoutHandler();
});

export const thumbsWanted = () => !NARROW.matches;

export function renderTiles() {
  const names = [...view.streams.keys()];
  ui.streams.hidden = names.length < 2;
  if (names.length < 2) return;
  names.forEach((name, i) => {
    let tile = tiles.get(name);
    if (!tile) {
      tile = makeTile(name, i);
      tiles.set(name, tile);
    }
    if (ui.streams.children[i] !== tile.button) ui.streams.insertBefore(tile.button, ui.streams.children[i] || null);
    const s = view.streams.get(name);
    tile.button.classList.toggle("selected", name === view.selected);
    tile.button.setAttribute("aria-pressed", String(name === view.selected));
    tile.button.dataset.state = s.state;
    tile.state.textContent = s.state;
    const objects = (s.objects || []).length;
    tile.meta.textContent = [s.fps ? `${Number(s.fps).toFixed(1)} fps` : "", objects ? `${objects} obj` : ""]
      .filter(Boolean).join(" · ");
    tile.canvas.hidden = !thumbsWanted();
  });
}

function makeTile(name, i) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tile";
  button.dataset.stream = name;
  button.title = `show stream ${name}${i < 9 ? ` (${i + 1})` : ""}`;
  const canvas = document.createElement("canvas");
  canvas.width = THUMB_WIDTH;
  canvas.height = Math.round(THUMB_WIDTH * 9 / 16);
  const caption = document.createElement("span");
  caption.className = "tile-caption";
  const label = document.createElement("span");
  label.className = "tile-name";
  label.textContent = name;
  const state = document.createElement("span");
  state.className = "tile-state";
  const meta = document.createElement("span");
  meta.className = "tile-meta";
  caption.append(label, state, meta);
  button.append(canvas, caption);
  button.addEventListener("click", () => selectHandler(name));
  return { button, canvas, state, meta, paintedAt: 0, image: false };
}

// A frame of a stream into its tile: the preview with the masks coloured over it, at tile size.
export async function paintThumb({ header, jpeg, png }) {
  const tile = tiles.get(header.stream);
  const now = performance.now();
  if (!tile || tile.canvas.hidden || now - tile.paintedAt < THUMB_EVERY_MS) return;
  tile.paintedAt = now;
  const w = THUMB_WIDTH;
  const h = Math.max(1, Math.round((THUMB_WIDTH * header.height) / header.width));
  const [image, labels] = await Promise.all([
    jpeg.length ? createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }), { resizeWidth: w, resizeHeight: h })
      : Promise.resolve(null),
    createImageBitmap(new Blob([png], { type: "image/png" }),
                      { colorSpaceConversion: "none", premultiplyAlpha: "none", resizeWidth: w, resizeHeight: h,
                        resizeQuality: "pixelated" }),
  ]);
  const canvas = tile.canvas;
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  if (image) {
    ctx.drawImage(image, 0, 0, w, h);
    image.close();
    tile.image = true;
  } else if (!tile.image) {
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, w, h);
  }
  labelCanvas.width = w;
  labelCanvas.height = h;
  labelCtx.imageSmoothingEnabled = false;  // ids stay ids (where the resize options are not supported)
  labelCtx.drawImage(labels, 0, 0, w, h);
  labels.close();
  const ids = labelCtx.getImageData(0, 0, w, h);
  const px = ids.data;
  for (let i = 0; i < px.length; i += 4) {
    const id = px[i];
    px[i] = PALETTE[id * 3];
    px[i + 1] = PALETTE[id * 3 + 1];
    px[i + 2] = PALETTE[id * 3 + 2];
    px[i + 3] = id ? FILL_ALPHA + 40 : 0;
  }
  labelCtx.putImageData(ids, 0, 0);
  ctx.drawImage(labelCanvas, 0, 0);
}
