// One colour per object id: ten distinct ones, then the golden angle around the hue circle.

export const FILL_ALPHA = 105;  // mask interior opacity (0..255); outlines are opaque
const BASE_COLOURS = ["#ff4d4d", "#3ddc84", "#4da3ff", "#ffc233", "#c77dff", "#2ee6d6", "#ff7ab6", "#a3e635",
                      "#ff9f43", "#7e8cff"];

function hslToRgb(h, s, l) {
  const k = (n) => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n) => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
  return [Math.round(255 * f(0)), Math.round(255 * f(8)), Math.round(255 * f(4))];
}

export const PALETTE = new Uint8Array(256 * 3);
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

export const colour = (id) => `rgb(${PALETTE[id * 3]}, ${PALETTE[id * 3 + 1]}, ${PALETTE[id * 3 + 2]})`;
