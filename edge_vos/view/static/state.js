// Shared state of the page: its elements, the streams and the one shown large, what is on screen, the prompt
// being drawn and the correction being made. Every other module reads and changes these objects; none keeps
// a second copy.

export const $ = (id) => document.getElementById(id);
export const SVG_NS = "http://www.w3.org/2000/svg";

export const ui = {
  box: $("frame-box"), canvas: $("frame"), svg: $("draw"), placeholder: $("placeholder"),
  badge: $("frozen-badge"), state: $("state"), stream: $("stream-name"), fps: $("m-fps"),
  latency: $("m-latency"), frameNo: $("m-frame"), size: $("m-size"), objects: $("objects"),
  objCount: $("obj-count"), objId: $("obj-id"), confirm: $("confirm"), cancel: $("cancel"),
  freeze: $("freeze"), hint: $("hint"), sign: $("point-sign"), reset: $("reset"),
  statsBtn: $("stats-refresh"), stats: $("stats"), statsRaw: $("stats-raw"), toasts: $("toasts"),
  promptTools: $("prompt-tools"), correctBar: $("correct-bar"), correctId: $("correct-id"),
  correctSign: $("correct-sign"), correctDone: $("correct-done"), streams: $("streams"),
};

export const view = {
  selected: null,       // the stream shown large (its name); null until the first stream is known
  streams: new Map(),   // every stream's newest state, in the service's order (name -> state message)
  shown: null,          // header of the frame on screen
  latest: null,         // header of the newest frame received (differs from shown while frozen)
  image: null,          // ImageBitmap of the last preview (kept when a frame comes without one)
  frozen: false,
  autoFrozen: false,    // frozen by starting a prompt or a correction; thawed when it is sent or cleared
  painted: [],          // paint times for the fps figure
  clockOffset: 0,       // server clock - page clock (ms), from pings with the smallest round trip
  pings: [],
  recentFrames: null,   // [first, last] capture_seq the service still keeps
  history: null,        // how many recent frames the service keeps (control.history)
  streamState: "connecting",
  socketOpen: false,
};

// The new object being prompted (box, clicks or polygon) on the frame `frame` (a header).
export const prompt = { tool: "box", box: null, previousBox: null, points: [], labels: [], polygon: [], closed: false,
                        frame: null, drag: null };

// The tracked object being corrected (`id`, null: none) on the frame `frame`, one click at a time.
export const correction = { id: null, frame: null, sign: 1, busy: false };

// More than one stream: commands then name theirs, and the stream bar is shown.
export const multiStream = () => view.streams.size > 1;
