// The frame stream: a WebSocket on /api/stream carrying one binary message per frame,
//   u32 header length | header JSON | u32 JPEG length | JPEG (may be empty) | label map PNG
// and text messages (each stream's state, pong). The page tells the view what it shows (`watch`: every frame
// of the stream shown large; `thumbs`: a picture a second of the others on a wide screen, none on a phone),
// so it is sent only what it shows. Per stream only the newest frame waits while one is decoded; an ack after
// each frame is the view's flow control. While the picture is frozen, frames update the panels only.

import { Refused, api, currentToken } from "./api.js";
import { paint } from "./drawing.js";
import { renderFrozen, renderObjects, renderState } from "./panels.js";
import { multiStream, ui, view } from "./state.js";
import { paintThumb, renderTiles, thumbsWanted } from "./tiles.js";

let socket = null;
let retryMs = 500;
const pending = new Map();  // per stream, its newest undecoded frame while a decode runs (older ones dropped)
let decoding = false;
let pingTimer = null;
let polling = false;
let chooseStream = () => {};

// What the page does when the stream it shows must change (the first one known, or one that appeared).
export function onStreamsChanged(handler) {
  chooseStream = handler;
}

// Every stream's state from /api/state's `streams` (`all`: the whole list, in the service's order) or from a
// state message.
export function noteStreams(states, all = false) {
  let added = false;
  for (const s of states) {
    if (!s.stream) continue;
    added = added || !view.streams.has(s.stream);
    view.streams.set(s.stream, s);
  }
  if (all) {  // the service's order (the view may have learnt it after it first heard of the streams)
    const named = new Set(states.map((s) => s.stream));
    const rest = [...view.streams].filter(([name]) => !named.has(name));
    const ordered = [...states.filter((s) => s.stream).map((s) => [s.stream, s]), ...rest];
    view.streams.clear();
    for (const [name, s] of ordered) view.streams.set(name, s);
  }
  if (added) {
    chooseStream();
    renderTiles();
    sendWatch();
  }
  return added;
}

// Asks for the streams' state (which checks the token), then opens the stream; retries with back-off.
export async function start() {
  try {
    const state = await api(stateUrl());
    noteStreams(state.streams || [], true);
    if (!view.selected || view.selected === state.stream) applyState(state);
    view.streamState = state.state;
    connect();
    if (!polling) {
      polling = true;
      setTimeout(pollState, 2000);
    }
  } catch (err) {
    if (err instanceof Refused) return;
    view.socketOpen = false;
    renderState(String(err.message || err));
    setTimeout(start, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  }
}

export const stateUrl = () => (view.selected && multiStream()
  ? `/api/state?stream=${encodeURIComponent(view.selected)}` : "/api/state");

// /api/state's answer for the stream shown large: its name, and how long the service keeps its frames.
export function applyState(state) {
  if (state.stream) ui.stream.textContent = state.stream;
  view.recentFrames = state.recent_frames || null;
  view.history = state.history || null;
}

// The shown stream's recent-frame range (it matters while frozen) and every stream's state and rate (the
// stream bar), asked every few seconds and when another stream is shown.
export async function refreshState() {
  try {
    const state = await api(stateUrl());
    noteStreams(state.streams || [], true);
    renderTiles();
    if (!view.selected || state.stream === view.selected) applyState(state);
    renderFrozen();
  } catch (err) {
    if (!(err instanceof Refused)) console.debug("state not refreshed:", err);
  }
}

async function pollState() {
  await refreshState();
  setTimeout(pollState, view.frozen ? 2000 : multiStream() ? 5000 : 15000);
}

// Tells the view which streams this page shows (nothing before the first stream is known: the view then
// sends the first stream, as to any single-camera page).
export function sendWatch() {
  if (!socket || socket.readyState !== WebSocket.OPEN || !view.selected) return;
  const thumbs = multiStream() && thumbsWanted() ? [...view.streams.keys()].filter((s) => s !== view.selected) : [];
  socket.send(JSON.stringify({ type: "watch", watch: [view.selected], thumbs }));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = currentToken();
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}/api/stream${query}`);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    retryMs = 500;
    view.socketOpen = true;
    sendWatch();
    renderState();
    ping();
    clearInterval(pingTimer);
    pingTimer = setInterval(ping, 2000);
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onText(event.data);
    else {
      socket.send('{"type":"ack"}');  // the view sends the next frame only after this (flow control)
      onFrameMessage(event.data);
    }
  };
  socket.onclose = (event) => {
    view.socketOpen = false;
    clearInterval(pingTimer);
    if (event.code === 1001 && view.streamState === "ended") {
      renderState();
      return;  // the service finished; nothing to reconnect to
    }
    renderState(event.reason || "");
    setTimeout(start, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  };
}

function ping() {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping", t: Date.now() }));
}

function onText(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (err) {
    return;
  }
  if (msg.type === "state") {
    noteStreams([msg]);
    renderTiles();
    if (msg.stream && view.selected && msg.stream !== view.selected) return;  // another stream's: its tile
    view.streamState = msg.state;
    renderState(msg.detail || "");
    if (msg.stream) ui.stream.textContent = msg.stream;
  } else if (msg.type === "pong") {
    const now = Date.now();
    view.pings.push({ rtt: now - msg.t, offset: msg.server_ms - (msg.t + now) / 2 });
    if (view.pings.length > 8) view.pings.shift();
    view.clockOffset = view.pings.reduce((a, b) => (b.rtt < a.rtt ? b : a)).offset;
  }
}

function onFrameMessage(buffer) {
  let frame;
  try {
    frame = unpack(buffer);
  } catch (err) {
    console.warn("frame skipped:", err);
    return;
  }
  pending.set(frame.header.stream, frame);
  if (!decoding) decodeNext();
}

async function decodeNext() {
  decoding = true;
  try {
    while (pending.size) {
      const [stream, frame] = pending.entries().next().value;
      pending.delete(stream);
      try {
        if (!view.selected || stream === view.selected) await showFrame(frame);
        else await paintThumb(frame);
      } catch (err) {
        console.warn("frame skipped:", err);
      }
    }
  } finally {
    decoding = false;
  }
}

function unpack(buffer) {
  const data = new DataView(buffer);
  const n = data.getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const m = data.getUint32(4 + n);
  const jpeg = new Uint8Array(buffer, 8 + n, m);
  const png = new Uint8Array(buffer, 8 + n + m);
  return { header, jpeg, png };
}

async function showFrame(frame) {
  const { header, jpeg, png } = frame;
  view.latest = header;
  view.streamState = "streaming";  // a frame arrived: whatever was said before, the stream runs
  renderObjects(header.objects);
  if (multiStream()) paintThumb(frame).catch((err) => console.warn("tile not painted:", err));  // at most 1/s
  if (view.frozen) {
    renderState();
    return;
  }
  const [image, labels] = await Promise.all([
    jpeg.length ? createImageBitmap(new Blob([jpeg], { type: "image/jpeg" })) : Promise.resolve(null),
    createImageBitmap(new Blob([png], { type: "image/png" }), { colorSpaceConversion: "none", premultiplyAlpha: "none" }),
  ]);
  if (view.frozen || (view.selected && header.stream !== view.selected)) {  // frozen, or another stream chosen
    labels.close();
    if (image) image.close();
    return;
  }
  if (image) {
    if (view.image) view.image.close();
    view.image = image;
  }
  paint(header, labels);
  labels.close();
  const now = performance.now();
  view.painted.push(now);
  while (view.painted.length > 1 && now - view.painted[0] > 3000) view.painted.shift();
  const latency = Date.now() + view.clockOffset - header.view.t_capture_ms;
  ui.latency.textContent = `${Math.max(0, Math.round(latency))} ms`;
  // The stream's rate (as the view receives it) and, when this screen keeps up with less, what it shows.
  const span = (view.painted[view.painted.length - 1] - view.painted[0]) / 1000;
  const shown = view.painted.length > 2 && span > 0 ? (view.painted.length - 1) / span : null;
  const stream = header.view.fps || shown;
  ui.fps.textContent = stream ? stream.toFixed(1) : "–";
  if (stream && shown !== null && shown < 0.8 * stream) ui.fps.textContent += ` (${shown.toFixed(1)} shown)`;
  ui.fps.title = `frames per second published by the service${shown !== null ? `; ${shown.toFixed(1)} painted here` : ""}`;
  renderState();
}
