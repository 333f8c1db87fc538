// edge-vos live view. Plain JS, no build step, no third-party code (docs/view.md).
//
// Frames arrive on a WebSocket (/api/stream) as one binary message each:
//   u32 header length | header JSON | u32 JPEG length | JPEG (may be empty) | label map PNG
// The page draws the JPEG, colours the label map (one colour per object id, with outlines), and lets the
// user prompt objects on the frame they see: the add command names that frame's capture_seq, which the
// service keeps among its recent frames. Commands go to POST /api/command exactly as on the control socket.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const FILL_ALPHA = 105;  // mask interior opacity (0..255); outlines are opaque
  const BASE_COLOURS = ["#ff4d4d", "#3ddc84", "#4da3ff", "#ffc233", "#c77dff", "#2ee6d6", "#ff7ab6", "#a3e635",
                        "#ff9f43", "#7e8cff"];

  // ---- colours ------------------------------------------------------------------------------------
  function hslToRgb(h, s, l) {
    const k = (n) => (n + h / 30) % 12;
    const a = s * Math.min(l, 1 - l);
    const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
    return [Math.round(255 * f(0)), Math.round(255 * f(8)), Math.round(255 * f(4))];
  }
  const PALETTE = new Uint8Array(256 * 3);
  for (let id = 1; id < 256; id++) {
    let rgb;
    if (id <= BASE_COLOURS.length) {
      const hex = BASE_COLOURS[id - 1];
      rgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    } else {
      rgb = hslToRgb((id * 137.508) % 360, 0.75, 0.6);  // golden angle: neighbours differ
    }
    PALETTE.set(rgb, id * 3);
  }
  const colour = (id) => `rgb(${PALETTE[id * 3]}, ${PALETTE[id * 3 + 1]}, ${PALETTE[id * 3 + 2]})`;

  // ---- token and API ------------------------------------------------------------------------------
  const TOKEN_KEY = "edge-vos-view-token";
  const params = new URLSearchParams(location.search);
  let token = params.get("token") || sessionStorage.getItem(TOKEN_KEY) || "";
  if (params.has("token")) {  // keep it out of the address bar, history and screenshots
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname);
  }

  class Refused extends Error {}

  async function api(path, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { headers, cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data;
    try {
      data = await response.json();
    } catch (err) {
      data = { ok: false, error: `HTTP ${response.status}` };
    }
    if (response.status === 401) {
      askToken(data.error || "wrong token");
      throw new Refused(data.error || "wrong token");
    }
    if (!response.ok && data.ok === undefined) data.ok = false;
    return data;
  }

  const command = (cmd) => api("/api/command", cmd);

  // ---- page state -----------------------------------------------------------------------------------
  const ui = {
    box: $("frame-box"), canvas: $("frame"), svg: $("draw"), placeholder: $("placeholder"),
    badge: $("frozen-badge"), state: $("state"), stream: $("stream-name"), fps: $("m-fps"),
    latency: $("m-latency"), frameNo: $("m-frame"), size: $("m-size"), objects: $("objects"),
    objCount: $("obj-count"), objId: $("obj-id"), confirm: $("confirm"), cancel: $("cancel"),
    freeze: $("freeze"), hint: $("hint"), sign: $("point-sign"), reset: $("reset"),
    statsBtn: $("stats-refresh"), stats: $("stats"), statsRaw: $("stats-raw"), toasts: $("toasts"),
  };
  const ctx = ui.canvas.getContext("2d");
  const labelCanvas = document.createElement("canvas");  // the decoded label map (ids in the red channel)
  const labelCtx = labelCanvas.getContext("2d", { willReadFrequently: true });
  const overlayCanvas = document.createElement("canvas");  // the coloured masks at label map size
  const overlayCtx = overlayCanvas.getContext("2d");
  let overlayImage = null;

  const view = {
    shown: null,          // header of the frame on screen
    latest: null,         // header of the newest frame received (differs from shown while frozen)
    image: null,          // ImageBitmap of the last preview (kept when a frame comes without one)
    frozen: false,
    autoFrozen: false,    // frozen by starting a prompt; thawed when the prompt is sent or cleared
    painted: [],          // paint times for the fps figure
    clockOffset: 0,       // server clock - page clock (ms), from pings with the smallest round trip
    pings: [],
    recentFrames: null,   // [first, last] capture_seq the service still keeps
    history: null,        // how many recent frames the service keeps (control.history)
    streamState: "connecting",
    socketOpen: false,
  };

  // ---- WebSocket ------------------------------------------------------------------------------------
  let socket = null;
  let retryMs = 500;
  let pending = null;  // newest undecoded frame while a decode is running (older ones are dropped)
  let decoding = false;
  let pingTimer = null;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
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

  // ---- drawing ----------------------------------------------------------------------------------------
  function paint(header, labels) {
    const w = header.width;
    const h = header.height;
    const image = view.image;
    const cw = image ? image.width : w;
    const ch = image ? image.height : h;
    if (ui.canvas.width !== cw || ui.canvas.height !== ch) {
      ui.canvas.width = cw;
      ui.canvas.height = ch;
    }
    if (!view.shown || view.shown.width !== w || view.shown.height !== h) {
      ui.svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
      ui.box.style.aspectRatio = `${w} / ${h}`;
      ui.size.textContent = `${w}×${h}`;
    }
    if (image) ctx.drawImage(image, 0, 0, cw, ch);
    else {
      ctx.fillStyle = "#111";
      ctx.fillRect(0, 0, cw, ch);
    }
    colourise(labels, w, h);
    ctx.imageSmoothingEnabled = w > cw;  // smooth when shrinking a large label map, crisp when enlarging
    ctx.drawImage(overlayCanvas, 0, 0, cw, ch);
    view.shown = header;
    ui.placeholder.hidden = true;
    ui.frameNo.textContent = String(header.capture_seq);
    drawTags(header);
  }

  function colourise(labels, w, h) {
    if (labelCanvas.width !== w || labelCanvas.height !== h) {
      labelCanvas.width = overlayCanvas.width = w;
      labelCanvas.height = overlayCanvas.height = h;
      overlayImage = overlayCtx.createImageData(w, h);
    }
    labelCtx.clearRect(0, 0, w, h);
    labelCtx.drawImage(labels, 0, 0);
    const ids = labelCtx.getImageData(0, 0, w, h).data;
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

  function svgEl(name, attrs, parent) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (parent) parent.appendChild(el);
    return el;
  }

  function pxScale() {  // frame pixels per screen pixel, so strokes and text keep their on-screen size
    const shown = view.shown;
    const rect = ui.svg.getBoundingClientRect();
    return shown && rect.width ? shown.width / rect.width : 1;
  }

  let tagLayer = svgEl("g", { class: "tags" }, ui.svg);
  const promptLayer = svgEl("g", { class: "prompt" }, ui.svg);

  function drawTags(header) {
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

  // ---- objects and state panels ----------------------------------------------------------------------
  // Rows are updated in place (a row is replaced only when its object comes or goes), so a Remove button
  // never changes under the pointer while scores and areas move.
  const objectRows = new Map();
  let lastObjectsKey = "";
  function renderObjects(objects) {
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
      row.meta.textContent = o.area ? `score ${o.score.toFixed(2)} · ${o.area} px` : "not visible";
    }
    suggestId(objects);
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
    const rm = document.createElement("button");
    rm.type = "button";
    rm.className = "remove";
    rm.textContent = "Remove";
    rm.title = `stop tracking object ${objId}`;
    rm.addEventListener("click", () => removeObject(objId, rm));
    li.append(sw, text, rm);
    return { li, meta };
  }

  let idTouched = false;
  ui.objId.addEventListener("input", () => { idTouched = true; });
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

  function renderState(detail) {
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

  function renderFrozen() {
    ui.box.classList.toggle("frozen", view.frozen);
    ui.freeze.setAttribute("aria-pressed", String(view.frozen));
    ui.badge.hidden = !view.frozen || !view.shown;
    if (!view.frozen || !view.shown) return;
    const frozen = prompt.frame || view.shown;
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
  function framesLeft(header) {
    if (!view.latest) return null;
    if (view.history) return view.history - 1 - (view.latest.frame - header.frame);
    const r = view.recentFrames;
    if (!r) return null;
    return header.capture_seq >= r[0] ? 0 : -1;
  }

  async function pollState() {
    try {
      const state = await api("/api/state");
      view.recentFrames = state.recent_frames || null;
      view.history = state.history || null;
      if (state.stream) ui.stream.textContent = state.stream;
      renderFrozen();
    } catch (err) {
      if (err instanceof Refused) return;
    } finally {
      setTimeout(pollState, view.frozen ? 2000 : 15000);  // the recent-frame range matters while frozen
    }
  }

  // ---- toasts -----------------------------------------------------------------------------------------
  function toast(text, kind = "info", action = null) {
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

  // ---- prompting ---------------------------------------------------------------------------------------
  const prompt = { tool: "box", box: null, previousBox: null, points: [], labels: [], polygon: [], closed: false,
                   frame: null, drag: null };
  let nextSign = 1;

  function setTool(tool) {
    clearPrompt();
    prompt.tool = tool;
    for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("on", b.dataset.tool === tool);
    ui.sign.hidden = tool !== "points";
    ui.hint.textContent = {
      box: "Drag a box around an object, then press Track.",
      points: "Click on the object (positive), shift-click the background (negative), then press Track.",
      polygon: "Click the outline's corners; double-click or click the first corner to close, then press Track.",
    }[tool];
  }

  function framePoint(event) {  // pointer position in frame pixels
    const shown = view.shown;
    const rect = ui.svg.getBoundingClientRect();
    if (!shown || !rect.width) return null;
    const x = ((event.clientX - rect.left) / rect.width) * shown.width;
    const y = ((event.clientY - rect.top) / rect.height) * shown.height;
    // Pixel (i, j) spans [i, i+1): keep clicks inside the frame (x < width, y < height).
    return [Math.max(0, Math.min(shown.width - 0.1, x)), Math.max(0, Math.min(shown.height - 0.1, y))];
  }

  function beginPrompt() {
    if (prompt.frame === null) {
      prompt.frame = view.shown;
      if (!view.frozen) {
        view.frozen = true;
        view.autoFrozen = true;
      }
      renderFrozen();
    }
  }

  function hasPrompt() {
    if (prompt.tool === "box") return !!prompt.box;
    if (prompt.tool === "points") return prompt.labels.includes(1);
    return prompt.polygon.length >= 3;
  }

  function clearPrompt() {
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

  function drawPrompt() {
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

  ui.svg.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !view.shown) return;
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
    const p = framePoint(event);
    if (!p) return;
    if (prompt.tool === "box" && prompt.drag) {
      prompt.drag = null;
      const [x0, y0, x1, y1] = prompt.box;
      prompt.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)].map(Math.round);
      if (prompt.box[2] - prompt.box[0] < 4 || prompt.box[3] - prompt.box[1] < 4) {
        if (prompt.previousBox) {  // a click on a drawn box: a point that refines it (shift: background)
          prompt.box = prompt.previousBox;
          prompt.points.push(p.map((v) => Math.round(v * 10) / 10));
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
      const label = event.shiftKey ? 1 - nextSign : nextSign;
      prompt.points.push(p.map((v) => Math.round(v * 10) / 10));
      prompt.labels.push(label);
      drawPrompt();
    } else if (prompt.tool === "polygon" && !prompt.closed) {
      const first = prompt.polygon[0];
      const near = first && Math.hypot(first[0] - p[0], first[1] - p[1]) < 8 * pxScale();
      const last = prompt.polygon[prompt.polygon.length - 1];
      const repeated = last && Math.hypot(last[0] - p[0], last[1] - p[1]) < 2 * pxScale();  // a double-click's clicks
      if (near && prompt.polygon.length >= 3) prompt.closed = true;
      else if (!repeated) prompt.polygon.push(p.map((v) => Math.round(v * 10) / 10));
      drawPrompt();
    }
  });

  ui.svg.addEventListener("dblclick", (event) => {
    if (prompt.tool === "polygon" && prompt.polygon.length >= 3) {
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

  async function sendPrompt(onLiveFrame = false) {
    if (!hasPrompt()) return;
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
      const reply = await command(cmd);
      if (reply.ok) {
        toast(`object ${reply.id} added on frame ${reply.frame} (${reply.area} px)`, "ok");
        idTouched = false;
        clearPrompt();
        ui.hint.textContent = "Tracking. Prompt another object, or correct one by reusing its id.";
      } else if (reply.field === "frame") {
        toast(`${reply.error}. The service keeps only its most recent frames.`, "error",
              { label: "Track on live frame", run: () => sendPrompt(true) });
      } else {
        toast(reply.error || "the command failed", "error");
      }
    } catch (err) {
      if (!(err instanceof Refused)) toast(`cannot reach the view: ${err.message}`, "error");
    } finally {
      drawPrompt();
    }
  }

  async function removeObject(id, button) {
    button.disabled = true;
    try {
      const reply = await command({ cmd: "remove", id });
      if (reply.ok) toast(`object ${id} removed`, "ok");
      else toast(reply.error || "remove failed", "error");
    } catch (err) {
      if (!(err instanceof Refused)) toast(`cannot reach the view: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  let resetArmed = null;
  ui.reset.addEventListener("click", async () => {
    if (!resetArmed) {  // two clicks: a reset forgets every object
      ui.reset.classList.add("armed");
      ui.reset.textContent = "Click again to reset";
      resetArmed = setTimeout(disarmReset, 4000);
      return;
    }
    disarmReset();
    try {
      const reply = await command({ cmd: "reset" });
      if (reply.ok) toast("every object forgotten", "ok");
      else toast(reply.error || "reset failed", "error");
    } catch (err) {
      if (!(err instanceof Refused)) toast(`cannot reach the view: ${err.message}`, "error");
    }
  });
  function disarmReset() {
    clearTimeout(resetArmed);
    resetArmed = null;
    ui.reset.classList.remove("armed");
    ui.reset.textContent = "Reset all";
  }

  async function showStats() {
    try {
      const reply = await command({ cmd: "stats" });
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
      if (!(err instanceof Refused)) toast(`cannot reach the view: ${err.message}`, "error");
    }
  }

  // ---- controls -------------------------------------------------------------------------------------
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  ui.sign.addEventListener("click", () => {
    nextSign = 1 - nextSign;
    ui.sign.dataset.sign = String(nextSign);
    ui.sign.textContent = nextSign ? "+ positive" : "− negative";
  });
  ui.freeze.addEventListener("click", () => {
    view.frozen = !view.frozen;
    view.autoFrozen = false;
    if (!view.frozen && prompt.frame) clearPrompt();
    renderFrozen();
  });
  ui.confirm.addEventListener("click", () => sendPrompt(false));
  ui.cancel.addEventListener("click", () => {
    clearPrompt();
    setTool(prompt.tool);
  });
  ui.statsBtn.addEventListener("click", showStats);
  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) {
      if (event.key === "Enter" && event.target === ui.objId) sendPrompt(false);
      return;
    }
    const keys = { b: () => setTool("box"), p: () => setTool("points"), g: () => setTool("polygon"),
                   f: () => ui.freeze.click(), Escape: () => ui.cancel.click(), Enter: () => sendPrompt(false) };
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
  function askToken(reason) {
    view.streamState = "refused";
    view.socketOpen = true;  // show "token refused", not "reconnecting"
    renderState(reason);
    $("token-why").textContent = token
      ? "The view refused this token. Enter the token the service printed at start-up (or view.token)."
      : "This view needs its access token (printed by the service at start-up, or view.token).";
    dialog.hidden = false;
    $("token-input").focus();
  }
  $("token-ok").addEventListener("click", () => {
    token = $("token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    dialog.hidden = true;
    view.streamState = "connecting";
    view.socketOpen = false;
    start();
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();  // nothing is submitted anywhere: the token stays in this tab
    $("token-ok").click();
  });

  // ---- start ----------------------------------------------------------------------------------------
  let polling = false;
  async function start() {
    try {
      const state = await api("/api/state");  // checks the token before opening the stream
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

  setTool("box");
  renderState();
  start();
})();
