"""Boxes, and cutting an object's mask back to the pieces that fit its track.

When an object's mask falls apart into separate pieces (connected components), the extra pieces are
usually something else: a look-alike that touched the object and is now leaving with part of the mask,
or a speck on a look-alike next to it that would widen the object's window and pull the rest of the
look-alike in on the next frames. An object seldom splits in two by itself; when it does (an occluder
across it) its pieces stay inside where the object was, so those are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

# Pieces smaller than this fraction of the largest cannot be the main piece (a speck that happens to
# sit on the predicted centre).
_MAIN_MIN_SHARE = 0.25
# Dropped pieces are widened by this many pixels so their soft fringe goes with them.
_DROP_GROW_PX = 2


@dataclass(frozen=True)
class Box:
    """Pixel box on the working canvas, bounds inclusive (fractional once moved by a velocity)."""

    y0: float
    y1: float
    x0: float
    x1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0 + 1

    @property
    def width(self) -> float:
        return self.x1 - self.x0 + 1

    @property
    def center(self) -> tuple[float, float]:
        return (self.y0 + self.y1) / 2, (self.x0 + self.x1) / 2

    def shifted(self, dy: float, dx: float) -> Box:
        return Box(self.y0 + dy, self.y1 + dy, self.x0 + dx, self.x1 + dx)


def keep_track_pieces(
    plane: torch.Tensor, reference: Box, threshold: float, keep_inside: float, pad_px: float
) -> int:
    """Zeroes, in place, the pieces of `plane > threshold` that do not fit `reference`; returns how many.

    The main piece is the one nearest the reference box's centre among the large ones; any other piece
    is kept when at least `keep_inside` of it lies inside the reference box grown by `pad_px`.
    plane: [H,W] probabilities of one object.
    """
    full = (plane > threshold).cpu().numpy()
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    if rows.size == 0:
        return 0
    # Work on the mask's own box (grown by the fringe that goes with a dropped piece), not the canvas.
    h, w = full.shape
    top, left = max(0, rows[0] - _DROP_GROW_PX), max(0, cols[0] - _DROP_GROW_PX)
    bottom, right = min(h, rows[-1] + _DROP_GROW_PX + 1), min(w, cols[-1] + _DROP_GROW_PX + 1)
    mask = full[top:bottom, left:right].astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 2:  # background and at most one piece
        return 0
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    cy, cx = reference.center
    dist = np.hypot(centroids[1:, 1] + top - cy, centroids[1:, 0] + left - cx)
    dist[areas < _MAIN_MIN_SHARE * areas.max()] = np.inf
    main = int(np.argmin(dist))
    ch, cw = mask.shape
    y0, y1 = max(0, math.floor(reference.y0 - pad_px) - top), min(ch, math.ceil(reference.y1 + pad_px) + 1 - top)
    x0, x1 = max(0, math.floor(reference.x0 - pad_px) - left), min(cw, math.ceil(reference.x1 + pad_px) + 1 - left)
    inside = np.zeros(count, np.float64)
    if y0 < y1 and x0 < x1:
        inside = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=count).astype(np.float64)
    keep = inside[1:] >= keep_inside * areas
    keep[main] = True
    if keep.all():
        return 0
    lookup = np.zeros(count, np.uint8)  # label -> 1 for a dropped piece (a table: one pass over the crop)
    lookup[1:][~keep] = 1
    dropped = lookup[labels]
    size = 2 * _DROP_GROW_PX + 1
    dropped = cv2.dilate(dropped, np.ones((size, size), np.uint8)).astype(bool)
    lookup[1:][keep] = 2
    dropped &= lookup[labels] != 2
    plane[top:bottom, left:right][torch.from_numpy(dropped).to(plane.device)] = 0
    return int((~keep).sum())
