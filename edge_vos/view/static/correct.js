// Correcting a tracked object's mask on the frame on screen (issue #21): select the object (its Correct
// button, or C with its id in the id field), then click what is wrong: a part it missed (positive) or a
// part painted wrongly (negative: shift-click, right-click, or the sign button). Each click goes to the
// service at once as `add` with "correct": true on that frame; the service starts from the object's mask
// there and answers with the fixed mask, which replaces the object's pixels on screen, so the next click
// builds on it. Done returns to the live picture, where the track goes on from the fixed mask.

import { command } from "./api.js";
import { paintCorrection, pxScale, svgEl } from "./drawing.js";
import { framesLeft, markSelected, renderFrozen, reportUnreachable, toast } from "./panels.js";
import { clearPrompt, framePoint, holdFrame, setTool } from "./prompt.js";
import { correction, prompt, ui, view } from "./state.js";

const clickLayer = svgEl("g", { class: "correction" }, ui.svg);

export function startCorrection(id) {
  if (!view.shown) return;
  if (!view.shown.objects.some((o) => o.id === id)) {
    toast(`object ${id} is not on the frame on screen; nothing to correct`, "error");
    return;
  }
  clearPrompt();  // a new object's prompt in progress is dropped
  correction.id = id;
  correction.frame = view.shown;
  holdFrame();
  clickLayer.replaceChildren();
  ui.promptTools.hidden = true;
  ui.correctBar.hidden = false;
  ui.correctId.textContent = `#${id}`;
  ui.hint.textContent = `Correcting object ${id} on frame ${view.shown.capture_seq}: click a part it missed, `
    + "shift-click or right-click a part painted wrongly. Done (Enter) returns to the live picture.";
  markSelected();
  renderFrozen();
}

export function endCorrection() {
  if (correction.id === null) return;
  correction.id = null;
  correction.frame = null;
  clickLayer.replaceChildren();
  ui.correctBar.hidden = true;
  ui.promptTools.hidden = false;
  if (view.autoFrozen) {
    view.frozen = false;
    view.autoFrozen = false;
  }
  markSelected();
  setTool(prompt.tool);
  renderFrozen();
}

export function toggleCorrectionSign() {
  correction.sign = 1 - correction.sign;
  ui.correctSign.dataset.sign = String(correction.sign);
  ui.correctSign.textContent = correction.sign ? "+ missed part" : "− wrong part";
}

// A mask from uncompressed COCO RLE ({"size": [h, w], "counts": [...]}: runs in column-major order, the
// first one background) as a row-major Uint8Array of h * w.
export function decodeRle(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);
  let index = 0;
  rle.counts.forEach((run, i) => {
    if (i % 2) {
      for (let k = index; k < index + run; k++) mask[(k % h) * w + Math.floor(k / h)] = 1;
    }
    index += run;
  });
  return mask;
}

ui.svg.addEventListener("pointerdown", (event) => {
  if (correction.id === null || !view.shown || (event.button !== 0 && event.button !== 2)) return;
  const p = framePoint(event);
  if (!p) return;
  event.preventDefault();
  const label = event.button === 2 ? 0 : event.shiftKey ? 1 - correction.sign : correction.sign;
  sendCorrection(p.map((v) => Math.round(v * 10) / 10), label);
});

async function sendCorrection(point, label) {
  if (correction.busy) return;
  const id = correction.id;
  const frame = correction.frame;
  const left = framesLeft(frame);
  if (left !== null && left < 0) {
    toast(`frame ${frame.capture_seq} is no longer kept by the service; press Done and correct a newer frame`,
          "error");
    return;
  }
  const s = pxScale();
  const mark = svgEl("circle", { class: label ? "pt-pos" : "pt-neg", cx: point[0], cy: point[1], r: 6 * s,
                                 "stroke-width": 2 * s }, clickLayer);
  correction.busy = true;
  ui.box.classList.add("busy");
  try {
    const reply = await command({ cmd: "add", id, correct: true, points: [point], labels: [label],
                                  frame: frame.capture_seq }, frame.stream);
    if (reply.ok && correction.id === id && correction.frame === frame) {
      paintCorrection(id, decodeRle(reply.rle));
      toast(`object ${id} corrected on frame ${reply.frame} (${reply.area} px)`, "ok");
    } else if (!reply.ok) {
      mark.remove();
      toast(reply.error || "the correction failed", "error");
    }
  } catch (err) {
    mark.remove();
    reportUnreachable(err);
  } finally {
    correction.busy = false;
    ui.box.classList.remove("busy");
  }
}
