// The panels around the frame: the objects list, the stream's state and the frozen badge, toasts, the
// service's stats. Rows are updated in place (a row is replaced only when its object comes or goes), so a
// button never changes under the pointer while scores and areas move.

import { Refused, command } from "./api.js";
import { colour } from "./colours.js";
import { correction, prompt, ui, view } from "./state.js";

const objectRows = new Map();
let lastObjectsKey = "";
let idTouched = false;
let correctHandler = () => {};

// What a row's Correct button does (correct.js starts a correction of that object).
export function onCorrectObject(handler) {
  correctHandler = handler;
}

export function toast(text, kind = "info", action = null) {
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  const span = document.createElement("span");
  span.textContent = text;
  el.appendChild(span);
  if (action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = action.label;
    b.addEventListener("click", () => { el.remove(); action.run(); });
    el.appendChild(b);
  }
  ui.toasts.appendChild(el);
  setTimeout(() => el.remove(), action ? 12000 : 5000);
  while (ui.toasts.children.length > 4) ui.toasts.firstChild.remove();
}

export function reportUnreachable(err) {
  if (!(err instanceof Refused)) toast(`cannot reach the view: ${err.message}`, "error");
}

export function renderObjects(objects) {
  const key = JSON.stringify(objects.map((o) => [o.id, o.area, Math.round(o.score * 100)]));
  if (key === lastObjectsKey) return;
  lastObjectsKey = key;
  ui.objCount.textContent = objects.length ? String(objects.length) : "";
  const ids = new Set(objects.map((o) => o.id));
  for (const [id, row] of objectRows) {
    if (!ids.has(id)) {
      row.li.remove();
      objectRows.delete(id);
    }
  }
  let empty = ui.objects.querySelector("li.empty");
  if (!objects.length && !empty) {
    empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = "none tracked";
    ui.objects.appendChild(empty);
  } else if (objects.length && empty) empty.remove();
  for (const o of objects) {
    let row = objectRows.get(o.id);
    if (!row) {
      row = objectRow(o.id);
      objectRows.set(o.id, row);
      const next = [...objectRows.keys()].filter((id) => id > o.id).sort((a, b) => a - b)[0];
      ui.objects.insertBefore(row.li, next === undefined ? null : objectRows.get(next).li);
    }
    row.li.classList.toggle("lost", !o.area);
    row.li.classList.toggle("selected", correction.id === o.id);
    row.meta.textContent = o.area ? `score ${o.score.toFixed(2)} · ${o.area} px` : "not visible";
  }
  suggestId(objects);
}

export function markSelected() {
  for (const [id, row] of objectRows) row.li.classList.toggle("selected", correction.id === id);
}

function button(text, className, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.title = title;
  b.addEventListener("click", () => onClick(b));
  return b;
}

function objectRow(objId) {
  const li = document.createElement("li");
  li.dataset.id = String(objId);
  const sw = document.createElement("span");
  sw.className = "swatch";
  sw.style.background = colour(objId);
  const id = document.createElement("span");
  id.className = "obj-id";
  id.textContent = `#${objId}`;
  const meta = document.createElement("span");
  meta.className = "obj-meta";
  const text = document.createElement("span");
  text.className = "obj-text";
  text.append(id, meta);
  const actions = document.createElement("span");
  actions.className = "obj-actions";
  actions.append(
    button("Correct", "correct", `fix object ${objId}'s mask on the frame on screen: click what is wrong (C)`,
           () => correctHandler(objId)),
    button("Remove", "remove", `stop tracking object ${objId}`, (b) => removeObject(objId, b)),
  );
  li.append(sw, text, actions);
  return { li, meta };
}

ui.objId.addEventListener("input", () => { idTouched = true; });
export function idWasUsed() {
  idTouched = false;
}

function suggestId(objects) {
  if (document.activeElement === ui.objId) return;  // never change what the user is typing
  const used = new Set(objects.map((o) => o.id));
  const current = Number(ui.objId.value);
  if (idTouched && current >= 1 && current <= 254 && !used.has(current)) return;
  let id = 1;
  while (used.has(id) && id < 254) id++;
  ui.objId.value = String(id);
  idTouched = false;
}

async function removeObject(id, b) {
  b.disabled = true;
  try {
    const reply = await command({ cmd: "remove", id }, view.selected);
    if (reply.ok) toast(`object ${id} removed`, "ok");
    else toast(reply.error || "remove failed", "error");
  } catch (err) {
    reportUnreachable(err);
  } finally {
    b.disabled = false;
  }
}

export function renderState(detail) {
  let state = view.streamState;
  let text = state;
  if (state === "refused") text = "token refused";
  else if (!view.socketOpen && state !== "ended") {
    state = "reconnecting";
    text = "reconnecting";
    detail = detail || "the connection to the view was lost; retrying";
  }
  ui.state.dataset.state = state;
  ui.state.textContent = text;
  if (detail !== undefined) ui.state.title = detail;
  renderFrozen();
}

export function renderFrozen() {
  ui.box.classList.toggle("frozen", view.frozen);
  ui.freeze.setAttribute("aria-pressed", String(view.frozen));
  ui.badge.hidden = !view.frozen || !view.shown;
  if (!view.frozen || !view.shown) return;
  const frozen = correction.frame || prompt.frame || view.shown;
  const left = framesLeft(frozen);
  let text = `frozen · frame ${frozen.capture_seq}`;
  if (left !== null && left < 0) text += " · no longer kept by the service";
  else if (left !== null) {
    const fps = view.latest && view.latest.view ? view.latest.view.fps : 0;
    text += fps > 0 ? ` · usable for ~${Math.max(0, Math.floor(left / fps))} s` : ` · ${left} frames left`;
  }
  ui.badge.textContent = text;
  ui.badge.classList.toggle("stale", left !== null && left < 0);
}

// Frames the service will still process before it forgets `header`'s frame (it keeps its last
// `history` frames for prompts on a past frame); negative once forgotten, null when unknown.
export function framesLeft(header) {
  if (!view.latest) return null;
  if (view.history) return view.history - 1 - (view.latest.frame - header.frame);
  const r = view.recentFrames;
  if (!r) return null;
  return header.capture_seq >= r[0] ? 0 : -1;
}

export async function showStats() {
  try {
    const reply = await command({ cmd: "stats" }, view.selected);
    if (!reply.ok) {
      toast(reply.error || "stats failed", "error");
      return;
    }
    const s = reply.stats;
    const rows = [
      ["frames processed", s.frames_processed], ["fps", s.fps], ["step p50", `${s.step_ms_p50} ms`],
      ["source", s.source ? `${s.source.state}, ${s.source.reconnects} reconnects` : "–"],
      ["skipped", s.source ? s.source.skipped : "–"],
      ["dropped", s.dropped ? Object.values(s.dropped).reduce((a, b) => a + b, 0) : "–"],
      ["objects", (s.objects || []).join(", ") || "none"],
      ["recent frames", s.recent_frames ? s.recent_frames.join("–") : "–"],
      ["subscribers", s.subscribers], ["uptime", `${Math.round(s.uptime_s)} s`],
    ];
    ui.stats.replaceChildren(...rows.map(([k, v]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = String(v);
      div.append(dt, dd);
      return div;
    }));
    ui.statsRaw.textContent = JSON.stringify(s, null, 2);
  } catch (err) {
    reportUnreachable(err);
  }
}
