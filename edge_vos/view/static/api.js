// The view's HTTP API with its token: GET /api/state, POST /api/command (the control socket's commands and
// replies, unchanged). A 401 asks for the token (the handler app.js installs) and throws Refused.

import { multiStream } from "./state.js";

const TOKEN_KEY = "edge-vos-view-token";
const params = new URLSearchParams(location.search);
let token = params.get("token") || sessionStorage.getItem(TOKEN_KEY) || "";
if (params.has("token")) {  // keep it out of the address bar, history and screenshots
  sessionStorage.setItem(TOKEN_KEY, token);
  history.replaceState(null, "", location.pathname);
}

let askToken = () => {};

export class Refused extends Error {}

export const currentToken = () => token;

export function setToken(value) {
  token = value;
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function onTokenRefused(handler) {
  askToken = handler;
}

export async function api(path, body) {
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

// A command made on stream `stream` names it when the service runs several (with one it says nothing more
// than a single-camera service understands).
export const command = (cmd, stream = null) => api("/api/command", stream && multiStream() ? { ...cmd, stream } : cmd);
