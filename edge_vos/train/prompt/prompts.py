"""How an operator's prompts are imitated in training samples: the first clicks (deep inside the object,
sometimes a few more positives or negatives just outside it), boxes and windows moved a little, and coarse
masks a low-resolution pass, a rough polygon or a previous frame would give.

Every draw comes from the Generator the caller passes (train/prompt/data.py), so resumed runs repeat them.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_vos.prompt.crops import Window


def farthest_inside(region: np.ndarray) -> tuple[tuple[int, int], float, np.ndarray]:
    """(x, y) of the pixel farthest from the region's boundary (frame edge included), that distance and
    the distance map."""
    dist = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return (int(x), int(y)), float(dist[y, x]), dist


def jitter_box(box: Window, hw: tuple[int, int], rng: np.random.Generator) -> Window:
    x0, y0, x1, y1 = box
    if rng.random() < 0.25:
        return box
    share = rng.uniform(0.03, 0.15)
    bw, bh = x1 - x0, y1 - y0
    dx, dy = rng.uniform(-share, share, 2) * bw, rng.uniform(-share, share, 2) * bh
    h, w = hw
    nx0, nx1 = np.clip([x0 + dx[0], x1 + dx[1]], 0, w)
    ny0, ny1 = np.clip([y0 + dy[0], y1 + dy[1]], 0, h)
    if nx1 - nx0 < 4 or ny1 - ny0 < 4:
        return box
    return float(nx0), float(ny0), float(nx1), float(ny1)


def jitter_window(window: Window, rng: np.random.Generator) -> Window:
    x0, y0, x1, y1 = window
    w, h = x1 - x0, y1 - y0
    dx, dy = rng.uniform(-0.05, 0.05) * w, rng.uniform(-0.05, 0.05) * h
    return x0 + dx, y0 + dy, x1 + dx, y1 + dy


def degrade(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible coarse version of `mask`: what a low-resolution pass, a rough polygon or the previous
    frame's mask would give."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    out = mask.astype(np.uint8)
    r = rng.random()
    if r < 0.4:  # blocky / blobby: seen through a low resolution
        f = rng.uniform(1 / 16, 1 / 4) * max(1.0, 64 / side) if side > 16 else 1.0
        f = min(f, 1.0)
        small = cv2.resize(out.astype(np.float32), None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        out = (cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > rng.uniform(0.3, 0.7)).astype(np.uint8)
    elif r < 0.7:  # a hand-drawn polygon
        contours, _ = cv2.findContours(out, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out = np.zeros_like(out)
        for c in contours:
            eps = rng.uniform(0.01, 0.05) * cv2.arcLength(c, True)
            cv2.fillPoly(out, [cv2.approxPolyDP(c, eps, True)], 1)
    k = int(rng.integers(0, max(2, int(0.06 * side))))
    if k:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        out = cv2.dilate(out, kernel) if rng.random() < 0.5 else cv2.erode(out, kernel)
    if rng.random() < 0.3:  # a blob added or cut near the object
        cx, cy = float(rng.uniform(xs.min(), xs.max() + 1)), float(rng.uniform(ys.min(), ys.max() + 1))
        axes = (max(2, int(rng.uniform(0.1, 0.3) * side)), max(2, int(rng.uniform(0.1, 0.3) * side)))
        cv2.ellipse(out, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360,
                    int(rng.random() < 0.5), -1)
    if not out.any():
        out = mask.astype(np.uint8)
    return out.astype(bool)


def deep_pixel(dist: np.ndarray, min_depth: float, rng: np.random.Generator) -> tuple[int, int]:
    """(x, y) of a random pixel at least `min_depth` from the object's boundary (`dist`: its distance map)."""
    candidates = np.argwhere(dist >= min_depth)
    y, x = (int(v) for v in candidates[int(rng.integers(len(candidates)))])
    return x, y


def first_clicks(truth: np.ndarray, rng: np.random.Generator) -> tuple[list[tuple[float, float]], list[int]]:
    (x, y), depth, dist = farthest_inside(truth)
    if rng.random() < 0.5:
        x, y = deep_pixel(dist, 0.4 * depth, rng)
    points = [(x + 0.5, y + 0.5)]
    labels = [1]
    if rng.random() < 0.2:  # an operator's few clicks spread over the object (RITM's multi-point sampling)
        candidates = np.argwhere(dist >= 0.3 * depth)
        for _ in range(int(rng.integers(1, 3))):
            y, x = (int(v) for v in candidates[int(rng.integers(len(candidates)))])
            points.append((x + 0.5, y + 0.5))
            labels.append(1)
    if rng.random() < 0.3:  # a few negatives just outside the object
        ring = cv2.dilate(truth.astype(np.uint8), np.ones((31, 31), np.uint8)).astype(bool) & ~cv2.dilate(
            truth.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        candidates = np.argwhere(ring)
        for _ in range(int(rng.integers(1, 3)) if len(candidates) else 0):
            ny, nx = candidates[int(rng.integers(len(candidates)))]
            points.append((float(nx) + 0.5, float(ny) + 0.5))
            labels.append(0)
    return points, labels
