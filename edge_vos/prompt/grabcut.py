"""Prompt -> mask by OpenCV GrabCut (`method: grabcut`): no model, no training, a colour model per prompt.

How each part of a prompt constrains GrabCut (its GC_INIT_WITH_MASK mode):
- the region of interest is "probably object": the box, outside which everything is background; without
  a box, a padded box around the positive clicks and the coarse mask, a guess, so the rest of the frame
  is only "probably background";
- a coarse mask, when given, is "probably object" and the rest of the region "probably background";
- clicks are small disks of certain object (label 1) or certain background (label 0).
GrabCut runs on the region plus a margin, downscaled so its long side is at most `max_side`: its cost
stays bounded (tens of ms) whatever the camera resolution. When it finds nothing (flat regions) the
result falls back to the box's inscribed ellipse, the coarse mask, or disks at the positive clicks, so a
valid prompt always yields an object.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_vos.prompt.spec import Prompt

# Without a box, the region around the positive clicks is padded by this share of the frame's long side
# (a click says where the object is, not how large it is).
POINTS_ONLY_PAD = 0.15


def region_of_interest(prompt: Prompt) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) where the object is looked for: the box, else around the clicks and coarse mask."""
    if prompt.box is not None:
        return prompt.box
    h, w = prompt.frame_hw
    xs: list[float] = []
    ys: list[float] = []
    pad = 0.0
    if prompt.mask is not None:
        mys, mxs = np.nonzero(prompt.mask)
        xs += [float(mxs.min()), float(mxs.max()) + 1]
        ys += [float(mys.min()), float(mys.max()) + 1]
        pad = 0.1 * max(xs[1] - xs[0], ys[1] - ys[0])
    positives = prompt.positives
    if len(positives):
        xs += [float(positives[:, 0].min()), float(positives[:, 0].max()) + 1]
        ys += [float(positives[:, 1].min()), float(positives[:, 1].max()) + 1]
        if prompt.mask is None:
            pad = max(POINTS_ONLY_PAD * max(h, w), 0.25 * max(max(xs) - min(xs), max(ys) - min(ys)))
    x0, x1 = max(0, int(min(xs) - pad)), min(w, int(np.ceil(max(xs) + pad)))
    y0, y1 = max(0, int(min(ys) - pad)), min(h, int(np.ceil(max(ys) + pad)))
    return x0, y0, x1, y1


def grabcut_segment(image_rgb: np.ndarray, prompt: Prompt, iterations: int = 3, max_side: int = 320) -> np.ndarray:
    """The object's mask (bool [H, W]) by GrabCut under the prompt's constraints (module docstring)."""
    h, w = image_rgb.shape[:2]
    x0, y0, x1, y1 = region_of_interest(prompt)
    if prompt.box is not None:
        margin = max(4, (x1 - x0) // 4, (y1 - y0) // 4)
        cx0, cy0, cx1, cy1 = max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)
    else:
        cx0, cy0, cx1, cy1 = 0, 0, w, h
    crop = image_rgb[cy0:cy1, cx0:cx1]
    scale = min(1.0, max_side / max(crop.shape[:2]))
    small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else crop
    sh, sw = small.shape[:2]

    def to_small(x: float, y: float) -> tuple[int, int]:
        return int((x - cx0) * scale), int((y - cy0) * scale)

    rx0, ry0 = to_small(x0, y0)
    rx1 = min(sw, max(rx0 + 2, int(np.ceil((x1 - cx0) * scale))))
    ry1 = min(sh, max(ry0 + 2, int(np.ceil((y1 - cy0) * scale))))
    # GrabCut needs some background: keep a one-pixel frame of the crop outside the region.
    rx0, ry0, rx1, ry1 = max(rx0, 1), max(ry0, 1), min(rx1, sw - 1), min(ry1, sh - 1)
    init = np.full((sh, sw), cv2.GC_BGD if prompt.box is not None else cv2.GC_PR_BGD, np.uint8)
    init[ry0:ry1, rx0:rx1] = cv2.GC_PR_FGD
    if prompt.mask is not None:
        coarse = cv2.resize(prompt.mask[cy0:cy1, cx0:cx1].astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST)
        region = init == cv2.GC_PR_FGD
        init[region & (coarse == 0)] = cv2.GC_PR_BGD
    radius = max(2, round(0.01 * max(sh, sw)))
    for (px, py), label in zip(prompt.points, prompt.labels, strict=True):
        cv2.circle(init, to_small(px, py), radius, int(cv2.GC_FGD if label == 1 else cv2.GC_BGD), -1)
    fg = np.zeros((h, w), bool)
    if rx1 - rx0 >= 2 and ry1 - ry0 >= 2:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2BGR), init, None, bgd, fgd,
                        iterations, cv2.GC_INIT_WITH_MASK)
            small_fg = ((init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)).astype(np.uint8)
            fg[cy0:cy1, cx0:cx1] = cv2.resize(small_fg, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_NEAREST) > 0
        except cv2.error:  # e.g. no background or no foreground sample left
            pass
    return fg if fg.any() else _fallback(prompt, (x0, y0, x1, y1))


def _fallback(prompt: Prompt, roi: tuple[int, int, int, int]) -> np.ndarray:
    h, w = prompt.frame_hw
    if prompt.box is None and prompt.mask is not None:
        return prompt.mask.copy()
    out = np.zeros((h, w), np.uint8)
    if prompt.box is None:
        radius = max(2, round(0.02 * max(h, w)))
        for i in np.flatnonzero(prompt.labels == 1):
            cv2.circle(out, prompt.pixel(int(i)), radius, 1, -1)
        return out.astype(bool)
    x0, y0, x1, y1 = roi
    center = ((x0 + x1) // 2, (y0 + y1) // 2)
    cv2.ellipse(out, center, (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2)), 0, 0, 360, 1, -1)
    return out.astype(bool)
