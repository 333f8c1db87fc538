// edge-vos live view. Plain ES modules, no build step, no third-party code (docs/view.md):
//   state.js    the page's elements and shared state        colours.js  one colour per object id
//   api.js      the HTTP API and its token                  stream.js   the WebSocket frame stream
//   drawing.js  the frame, the coloured masks, the tags     panels.js   objects list, state, toasts, stats
//   prompt.js   box / clicks / polygon for a new object     correct.js  clicks that fix a tracked object
//   tiles.js    the stream bar (several cameras)
// This module wires the controls and the keyboard, chooses the stream shown large, asks for the token when
// needed, and starts the stream.

import { command, currentToken, onTokenRefused, setToken } from "./api.js";
import { endCorrection, startCorrection, toggleCorrectionSign } from "./correct.js";
import { drawTags } from "./drawing.js";
import { onCorrectObject, renderFrozen, renderObjects, renderState, reportUnreachable, showStats, toast }
  from "./panels.js";
import { clearPrompt, drawPrompt, sendPrompt, setTool, toggleSign } from "./prompt.js";
import { $, correction, multiStream, prompt, ui, view } from "./state.js";
import { onStreamsChanged, refreshState, sendWatch, start } from "./stream.js";
import { onLayoutChange, onSelectStream, renderTiles } from "./tiles.js";

onCorrectObject((id) => (correction.id === id ? endCorrection() : startCorrection(id)));

// ---- the stream shown large ---------------------------------------------------------------------------
// `#stream=NAME` in the address keeps the choice over a reload (and can be linked to).
const wantedStream = () => new URLSearchParams(location.hash.slice(1)).get("stream");

function selectStream(name) {
  if (!view.streams.has(name) || name === view.selected) return;
  endCorrection();
  clearPrompt();
  view.selected = name;
  view.frozen = false;
  view.autoFrozen = false;
  view.shown = null;
  view.latest = null;
  view.recentFrames = null;
  view.painted = [];
  if (view.image) view.image.close();
  view.image = null;
  const state = view.streams.get(name);
  view.streamState = state.state;
  ui.stream.textContent = name;
  ui.placeholder.textContent = `waiting for frames of ${name}…`;
  ui.placeholder.hidden = false;
  ui.canvas.getContext("2d").clearRect(0, 0, ui.canvas.width, ui.canvas.height);
  drawTags({ objects: [] });
  for (const el of [ui.fps, ui.latency, ui.frameNo]) el.textContent = "–";
  renderObjects(state.objects || []);
  if (multiStream()) history.replaceState(null, "", `${location.pathname}#stream=${encodeURIComponent(name)}`);
  ui.reset.title = multiStream() ? `forget every object of stream ${name} and its memory`
    : "forget every object and the memory";
  renderTiles();
  renderState(state.detail || "");
  sendWatch();
  refreshState();
}

onSelectStream(selectStream);
onLayoutChange(sendWatch);
onStreamsChanged(() => {
  const wanted = wantedStream();
  if (wanted && view.streams.has(wanted) && view.selected !== wanted) selectStream(wanted);
  else if (!view.selected) selectStream(view.streams.keys().next().value);
});

for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
ui.sign.addEventListener("click", toggleSign);
ui.correctSign.addEventListener("click", toggleCorrectionSign);
ui.correctDone.addEventListener("click", endCorrection);
ui.freeze.addEventListener("click", () => {
  view.frozen = !view.frozen;
  view.autoFrozen = false;
  if (!view.frozen && correction.id !== null) endCorrection();
  if (!view.frozen && prompt.frame) clearPrompt();
  renderFrozen();
});
ui.confirm.addEventListener("click", () => sendPrompt(false));
ui.cancel.addEventListener("click", () => {
  clearPrompt();
  setTool(prompt.tool);
});
ui.statsBtn.addEventListener("click", showStats);

let resetArmed = null;
function disarmReset() {
  clearTimeout(resetArmed);
  resetArmed = null;
  ui.reset.classList.remove("armed");
  ui.reset.textContent = "Reset all";
}
ui.reset.addEventListener("click", async () => {
  if (!resetArmed) {  // two clicks: a reset forgets every object
    ui.reset.classList.add("armed");
    ui.reset.textContent = "Click again to reset";
    resetArmed = setTimeout(disarmReset, 4000);
    return;
  }
  disarmReset();
  endCorrection();
  try {
    const reply = await command({ cmd: "reset" }, view.selected);
    if (reply.ok) toast(multiStream() ? `every object of ${view.selected} forgotten` : "every object forgotten", "ok");
    else toast(reply.error || "reset failed", "error");
  } catch (err) {
    reportUnreachable(err);
  }
});

window.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) {
    if (event.key === "Enter" && event.target === ui.objId) sendPrompt(false);
    return;
  }
  const correcting = correction.id !== null;
  const keys = correcting
    ? { Enter: endCorrection, Escape: endCorrection, n: toggleCorrectionSign, f: () => ui.freeze.click() }
    : { b: () => setTool("box"), p: () => setTool("points"), g: () => setTool("polygon"),
        c: () => startCorrection(Number(ui.objId.value)), f: () => ui.freeze.click(),
        Escape: () => ui.cancel.click(), Enter: () => sendPrompt(false) };
  if (!correcting && multiStream() && /^[1-9]$/.test(event.key)) {  // 1..9: the nth stream, large
    const name = [...view.streams.keys()][Number(event.key) - 1];
    if (name) keys[event.key] = () => selectStream(name);
  }
  const fn = keys[event.key];
  if (fn) {
    event.preventDefault();
    fn();
  }
});
window.addEventListener("resize", () => {
  if (view.shown) drawTags(view.shown);
  drawPrompt();
});

// ---- token dialog -----------------------------------------------------------------------------------
const dialog = $("token-dialog");
onTokenRefused((reason) => {
  view.streamState = "refused";
  view.socketOpen = true;  // show "token refused", not "reconnecting"
  renderState(reason);
  $("token-why").textContent = currentToken()
    ? "The view refused this token. Enter the token the service printed at start-up (or view.token)."
    : "This view needs its access token (printed by the service at start-up, or view.token).";
  dialog.hidden = false;
  $("token-input").focus();
});
$("token-ok").addEventListener("click", () => {
  setToken($("token-input").value.trim());
  dialog.hidden = true;
  view.streamState = "connecting";
  view.socketOpen = false;
  start();
});
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();  // nothing is submitted anywhere: the token stays in this tab
  $("token-ok").click();
});

setTool("box");
renderState();
start();
