// Prompting a new object on the frame the user sees: a box (drag; clicks inside refine it), clicks
// (shift-click: background) or a polygon. The add command names that frame's capture_seq, which the
// service keeps among its recent frames. While a correction is being made (correct.js) these tools rest.

import { command } from "./api.js";
import { promptLayer, pxScale, svgEl } from "./drawing.js";
import { framesLeft, idWasUsed, renderFrozen, reportUnreachable, toast } from "./panels.js";
import { correction, prompt, ui, view } from "./state.js";

let nextSign = 1;

const HINTS = {
  box: "Drag a box around an object, then press Track.",
  points: "Click on the object (positive), shift-click the background (negative), then press Track.",
  polygon: "Click the outline's corners; double-click or click the first corner to close, then press Track.",
};

export function setTool(tool) {
  clearPrompt();
  prompt.tool = tool;
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("on", b.dataset.tool === tool);
  ui.sign.hidden = tool !== "points";
  ui.hint.textContent = HINTS[tool];
}

export function toggleSign() {
  nextSign = 1 - nextSign;
  ui.sign.dataset.sign = String(nextSign);
  ui.sign.textContent = nextSign ? "+ positive" : "− negative";
}

export function framePoint(event) {  // pointer position in frame pixels
  const shown = view.shown;
  const rect = ui.svg.getBoundingClientRect();
  if (!shown || !rect.width) return null;
  const x = ((event.clientX - rect.left) / rect.width) * shown.width;
  const y = ((event.clientY - rect.top) / rect.height) * shown.height;
  // Pixel (i, j) spans [i, i+1): keep clicks inside the frame (x < width, y < height).
  return [Math.max(0, Math.min(shown.width - 0.1, x)), Math.max(0, Math.min(shown.height - 0.1, y))];
}

// Freezes the picture for an annotation (thawed again when it is sent or cleared).
export function holdFrame() {
  if (!view.frozen) {
    view.frozen = true;
    view.autoFrozen = true;
  }
}

function beginPrompt() {
  if (prompt.frame === null) {
    prompt.frame = view.shown;
    holdFrame();
    renderFrozen();
  }
}

function hasPrompt() {
  if (prompt.tool === "box") return !!prompt.box;
  if (prompt.tool === "points") return prompt.labels.includes(1);
  return prompt.polygon.length >= 3;
}

export function clearPrompt() {
  prompt.box = null;
  prompt.previousBox = null;
  prompt.points = [];
  prompt.labels = [];
  prompt.polygon = [];
  prompt.closed = false;
  prompt.frame = null;
  prompt.drag = null;
  if (view.autoFrozen) {
    view.frozen = false;
    view.autoFrozen = false;
  }
  drawPrompt();
  renderFrozen();
}

export function drawPrompt() {
  promptLayer.replaceChildren();
  const s = pxScale();
  if (prompt.box) {
    const [x0, y0, x1, y1] = prompt.box;
    svgEl("rect", { class: "prompt-box", x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0),
                    height: Math.abs(y1 - y0), "stroke-width": 2 * s }, promptLayer);
  }
  if (prompt.polygon.length) {
    const pts = prompt.polygon.map((p) => p.join(",")).join(" ");
    svgEl(prompt.closed ? "polygon" : "polyline", { class: "prompt-poly", points: pts, "stroke-width": 2 * s }, promptLayer);
    prompt.polygon.forEach(([x, y], i) => svgEl("circle", { class: "pt-pos", cx: x, cy: y, r: (i === 0 ? 5 : 3.5) * s,
                                                             "stroke-width": s }, promptLayer));
  }
  prompt.points.forEach(([x, y], i) => {
    svgEl("circle", { class: prompt.labels[i] ? "pt-pos" : "pt-neg", cx: x, cy: y, r: 6 * s, "stroke-width": 2 * s },
          promptLayer);
  });
  const ready = hasPrompt();
  ui.confirm.disabled = !ready;
  ui.cancel.disabled = !ready && !prompt.points.length && !prompt.polygon.length && !prompt.box;
}

const round1 = (p) => p.map((v) => Math.round(v * 10) / 10);

ui.svg.addEventListener("pointerdown", (event) => {
  if (correction.id !== null || event.button !== 0 || !view.shown) return;
  const p = framePoint(event);
  if (!p) return;
  event.preventDefault();
  beginPrompt();
  if (prompt.tool === "box") {
    ui.svg.setPointerCapture(event.pointerId);
    prompt.drag = p;
    prompt.previousBox = prompt.box;
    prompt.box = [p[0], p[1], p[0], p[1]];
    drawPrompt();
  }
});

ui.svg.addEventListener("pointermove", (event) => {
  if (prompt.tool !== "box" || !prompt.drag) return;
  const p = framePoint(event);
  if (!p) return;
  prompt.box = [prompt.drag[0], prompt.drag[1], p[0], p[1]];
  drawPrompt();
});

ui.svg.addEventListener("pointerup", (event) => {
  if (correction.id !== null) return;
  const p = framePoint(event);
  if (!p) return;
  if (prompt.tool === "box" && prompt.drag) {
    prompt.drag = null;
    const [x0, y0, x1, y1] = prompt.box;
    prompt.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)].map(Math.round);
    if (prompt.box[2] - prompt.box[0] < 4 || prompt.box[3] - prompt.box[1] < 4) {
      if (prompt.previousBox) {  // a click on a drawn box: a point that refines it (shift: background)
        prompt.box = prompt.previousBox;
        prompt.points.push(round1(p));
        prompt.labels.push(event.shiftKey ? 0 : 1);
        drawPrompt();
        return;
      }
      clearPrompt();
      ui.hint.textContent = "That box is too small: drag across the object.";
      return;
    }
    prompt.points = [];
    prompt.labels = [];
    drawPrompt();
    ui.hint.textContent = `Box on frame ${prompt.frame.capture_seq}: press Track to follow it as object `
      + `${ui.objId.value} (click inside to add a point, shift-click to exclude a part).`;
  } else if (prompt.tool === "points") {
    prompt.points.push(round1(p));
    prompt.labels.push(event.shiftKey ? 1 - nextSign : nextSign);
    drawPrompt();
  } else if (prompt.tool === "polygon" && !prompt.closed) {
    const first = prompt.polygon[0];
    const near = first && Math.hypot(first[0] - p[0], first[1] - p[1]) < 8 * pxScale();
    const last = prompt.polygon[prompt.polygon.length - 1];
    const repeated = last && Math.hypot(last[0] - p[0], last[1] - p[1]) < 2 * pxScale();  // a double-click's clicks
    if (near && prompt.polygon.length >= 3) prompt.closed = true;
    else if (!repeated) prompt.polygon.push(round1(p));
    drawPrompt();
  }
});

ui.svg.addEventListener("dblclick", (event) => {
  if (correction.id === null && prompt.tool === "polygon" && prompt.polygon.length >= 3) {
    event.preventDefault();
    prompt.closed = true;
    drawPrompt();
  }
});
ui.svg.addEventListener("contextmenu", (event) => event.preventDefault());

function buildCommand(onLiveFrame) {
  const id = Number(ui.objId.value);
  if (!Number.isInteger(id) || id < 1 || id > 254) throw new Error("the object id must be 1..254");
  const cmd = { cmd: "add", id };
  if (!onLiveFrame) cmd.frame = prompt.frame.capture_seq;
  if (prompt.tool === "box") {
    cmd.box = prompt.box;
    if (prompt.points.length) {
      cmd.points = prompt.points;
      cmd.labels = prompt.labels;
    }
  } else if (prompt.tool === "points") {
    cmd.points = prompt.points;
    cmd.labels = prompt.labels;
  } else cmd.polygon = prompt.polygon;
  return cmd;
}

export async function sendPrompt(onLiveFrame = false) {
  if (correction.id !== null || !hasPrompt()) return;
  let cmd;
  try {
    cmd = buildCommand(onLiveFrame);
  } catch (err) {
    toast(err.message, "error");
    return;
  }
  const left = framesLeft(prompt.frame);
  if (!onLiveFrame && left !== null && left < 0) {
    toast(`frame ${prompt.frame.capture_seq} is no longer kept by the service (it keeps its last ${view.history || "few"} `
          + "frames; raise control.history to annotate longer)", "error",
          { label: "Track on live frame", run: () => sendPrompt(true) });
    return;
  }
  ui.confirm.disabled = true;
  try {
    const reply = await command(cmd, prompt.frame.stream);  // the stream the prompt was drawn on
    if (reply.ok) {
      toast(`object ${reply.id} added on frame ${reply.frame} (${reply.area} px)`, "ok");
      idWasUsed();
      clearPrompt();
      ui.hint.textContent = "Tracking. Prompt another object, or press Correct on an object to fix its mask.";
    } else if (reply.field === "frame") {
      toast(`${reply.error}. The service keeps only its most recent frames.`, "error",
            { label: "Track on live frame", run: () => sendPrompt(true) });
    } else {
      toast(reply.error || "the command failed", "error");
    }
  } catch (err) {
    reportUnreachable(err);
  } finally {
    drawPrompt();
  }
}
