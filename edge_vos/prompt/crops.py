"""Where the network looks: the crop window around a prompt, and frame <-> crop mapping.

The network always sees the object at a similar scale: a window around the box (or around the coarse
mask and the positive clicks) with `CONTEXT` of its size added, its aspect ratio limited to
`MAX_ASPECT`, resized to S x S. Clicks without a box or a mask are first looked at on the whole frame.
Training draws its crops with these same functions, so train and inference agree on what "a box" looks
like to the network. Pure numpy/OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np

Window = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels (may extend past the frame)

CONTEXT = 0.4  # the window adds this share of the box's width and height (half on each side)
MAX_ASPECT = 2.0  # longer side at most this times the shorter one (the shorter one grows)
MIN_SIDE = 16.0  # pixels


def box_window(box: Window, context: float = CONTEXT, max_aspect: float = MAX_ASPECT,
               min_side: float = MIN_SIDE) -> Window:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w = max(min_side, (x1 - x0) * (1 + context))
    h = max(min_side, (y1 - y0) * (1 + context))
    w, h = max(w, h / max_aspect), max(h, w / max_aspect)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def click_window(points: np.ndarray, frame_hw: tuple[int, int], share: float) -> Window:
    """A square of `share` of the frame's long side centred on the points' box (larger when they spread
    wider), for clicks the whole-frame look found nothing under."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    side = max(share * max(frame_hw), (x1 - x0) * (1 + CONTEXT), (y1 - y0) * (1 + CONTEXT), MIN_SIDE)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return float(cx - side / 2), float(cy - side / 2), float(cx + side / 2), float(cy + side / 2)


def frame_window(frame_hw: tuple[int, int]) -> Window:
    return 0.0, 0.0, float(frame_hw[1]), float(frame_hw[0])


def mask_box(mask: np.ndarray, points: np.ndarray | None = None) -> Window | None:
    """Bounding box (x0, y0, x1, y1) of a mask's pixels and the given points, or None if both are empty."""
    xs: list[float] = []
    ys: list[float] = []
    if mask is not None and mask.any():
        rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
        y_idx, x_idx = np.flatnonzero(rows), np.flatnonzero(cols)
        xs += [float(x_idx[0]), float(x_idx[-1] + 1)]
        ys += [float(y_idx[0]), float(y_idx[-1] + 1)]
    if points is not None and len(points):
        xs += [float(points[:, 0].min()), float(points[:, 0].max())]
        ys += [float(points[:, 1].min()), float(points[:, 1].max())]
    if not xs:
        return None
    return min(xs), min(ys), max(xs), max(ys)


def window_affine(window: Window, size: int) -> np.ndarray:
    """2x3 matrix mapping frame pixel coordinates into the size x size crop of `window`."""
    x0, y0, x1, y1 = window
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]], np.float64)


def to_crop(points: np.ndarray, window: Window, size: int) -> np.ndarray:
    """Frame (x, y) -> crop (x, y)."""
    m = window_affine(window, size)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return np.stack([pts[:, 0] * m[0, 0] + m[0, 2], pts[:, 1] * m[1, 1] + m[1, 2]], 1).astype(np.float32)


def crop_image(image: np.ndarray, window: Window, size: int, nearest: bool = False, edge: bool = False) -> np.ndarray:
    """The window of `image` (H,W[,C]) resized to size x size; outside the frame is zero, or with `edge`
    the nearest frame pixel (used for RGB: a network trained on black borders learns "black is
    background" and cuts dark objects).

    Downscaling uses area averaging when the window is much larger than the crop (no aliasing)."""
    m = window_affine(window, size)
    x0, y0, x1, y1 = window
    if not nearest and (x1 - x0) > 1.5 * size and (y1 - y0) > 1.5 * size:
        # Pre-shrink with INTER_AREA, then the exact affine from the shrunk image.
        f = min((x1 - x0) / size, (y1 - y0) / size) / 1.2
        small = cv2.resize(image, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA)
        gx, gy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        m = m @ np.array([[1 / gx, 0, 0], [0, 1 / gy, 0], [0, 0, 1]])
        image = small
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    border = cv2.BORDER_REPLICATE if edge else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, m, (size, size), flags=flags, borderMode=border, borderValue=0)


def paste_back(crop_values: np.ndarray, window: Window, frame_hw: tuple[int, int]) -> np.ndarray:
    """Crop values (float [S,S]) resampled onto the frame (float [H,W], 0 outside the window).

    Only the frame pixels the window covers are computed."""
    h, w = frame_hw
    size = crop_values.shape[0]
    x0, y0, x1, y1 = window
    fx0, fy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    fx1, fy1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    out = np.zeros((h, w), np.float32)
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    m = window_affine((x0 - fx0, y0 - fy0, x1 - fx0, y1 - fy0), size)  # frame sub-region -> crop
    region = cv2.warpAffine(crop_values.astype(np.float32), m, (fx1 - fx0, fy1 - fy0),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    out[fy0:fy1, fx0:fx1] = region
    return out


def box_map(box: Window, window: Window, size: int) -> np.ndarray:
    """1 inside the box (in crop pixels), 0 elsewhere: float32 [S,S]."""
    (bx0, by0), (bx1, by1) = to_crop(np.array([[box[0], box[1]], [box[2], box[3]]]), window, size)
    out = np.zeros((size, size), np.float32)
    xa, ya = max(0, int(round(bx0))), max(0, int(round(by0)))
    xb, yb = min(size, int(round(bx1))), min(size, int(round(by1)))
    out[ya:yb, xa:xb] = 1
    return out


def click_maps(points_crop: np.ndarray, labels: np.ndarray, size: int, radius: float) -> np.ndarray:
    """Positive and negative click disks float32 [2,S,S] for crop points [N,2] (x, y) and labels [N]."""
    out = np.zeros((2, size, size), np.uint8)
    r = max(1, int(round(radius)))
    for (x, y), label in zip(np.asarray(points_crop).reshape(-1, 2), np.asarray(labels).ravel(), strict=True):
        if -r <= x < size + r and -r <= y < size + r:
            cv2.circle(out[0 if label == 1 else 1], (int(x), int(y)), r, 1, -1)
    return out.astype(np.float32)
