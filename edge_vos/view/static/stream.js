// The frame stream: a WebSocket on /api/stream carrying one binary message per frame,
//   u32 header length | header JSON | u32 JPEG length | JPEG (may be empty) | label map PNG
// and text messages (the stream's state, pong). Only the newest frame waits while one is decoded; an ack
// after each frame is the view's flow control. While the picture is frozen, frames update the panels only.

import { Refused, api, currentToken } from "./api.js";
import { paint } from "./drawing.js";
import { pollState, renderObjects, renderState } from "./panels.js";
import { ui, view } from "./state.js";

let socket = null;
let retryMs = 500;
let pending = null;  // newest undecoded frame while a decode is running (older ones are dropped)
let decoding = false;
let pingTimer = null;
let polling = false;

// Asks for the stream's state (which checks the token), then opens the stream; retries with back-off.
export async function start() {
  try {
    const state = await api("/api/state");
    view.streamState = state.state;
    if (state.stream) ui.stream.textContent = state.stream;
    view.recentFrames = state.recent_frames || null;
    view.history = state.history || null;
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

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = currentToken();
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}/api/stream${query}`);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    retryMs = 500;
    view.socketOpen = true;
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
  pending = buffer;
  if (!decoding) decodeNext();
}

async function decodeNext() {
  decoding = true;
  try {
    while (pending) {
      const buffer = pending;
      pending = null;
      await showFrame(buffer);
    }
  } catch (err) {
    console.warn("frame skipped:", err);
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

async function showFrame(buffer) {
  const { header, jpeg, png } = unpack(buffer);
  view.latest = header;
  view.streamState = "streaming";  // a frame arrived: whatever was said before, the stream runs
  renderObjects(header.objects);
  if (view.frozen) {
    renderState();
    return;
  }
  const [image, labels] = await Promise.all([
    jpeg.length ? createImageBitmap(new Blob([jpeg], { type: "image/jpeg" })) : Promise.resolve(null),
    createImageBitmap(new Blob([png], { type: "image/png" }), { colorSpaceConversion: "none", premultiplyAlpha: "none" }),
  ]);
  if (view.frozen) return;  // frozen while decoding: keep the picture the user froze
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
