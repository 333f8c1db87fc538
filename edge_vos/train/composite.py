"""Geometry and copy-paste layers of training clips: camera paths, pasted objects, occluders, duplicates.

A clip is built in two steps (edge_vos.train.data): the base frames are warped along a camera path into
the square crop, then layers are drawn over them in order. A layer is one object cut from some source
frames by its label, moved along its own straight path (plus jitter) through the crop. Whatever a layer
covers is no longer visible, so every object mask beneath it loses those pixels; a layer that is itself a
tracked object fills its own mask slot. The masks therefore always describe what is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Shift = tuple[float, float]


def affine(
    center: tuple[float, float], scale: float, angle_deg: float, shear: float, out: int, shift: Shift
) -> np.ndarray:
    """2x3 matrix mapping source pixels to an out x out crop, `center` landing at the crop centre + shift."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * scale
    rot = rot @ np.array([[1.0, math.tan(math.radians(shear))], [0.0, 1.0]])
    t = np.array([out / 2 + shift[0], out / 2 + shift[1]]) - rot @ np.asarray(center, dtype=np.float64)
    return np.concatenate([rot, t[:, None]], axis=1).astype(np.float32)


def warp(img: np.ndarray, m: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(img, m, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def extent(mask: np.ndarray) -> float:
    """Larger side of the mask's bounding box in pixels (0 when empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0
    return float(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)


@dataclass(frozen=True)
class CameraMotion:
    """How the crop moves over a video clip: scale factor reached at the last frame, drift in crop pixels."""

    zoom: float = 1.0
    drift: Shift = (0.0, 0.0)


def camera_motion(
    rng: np.random.Generator, size: int, zoom_prob: float, zoom_max: float, drift_prob: float, drift_max: float
) -> CameraMotion:
    """Zoom in or out by up to `zoom_max` over the clip and/or drift by up to `drift_max` of the crop.

    The drift moves the content (the object leaves the crop partly or wholly when it is large enough).
    """
    zoom = math.exp(rng.uniform(-math.log(zoom_max), math.log(zoom_max))) if rng.random() < zoom_prob else 1.0
    drift: Shift = (0.0, 0.0)
    if rng.random() < drift_prob:
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.25, 1.0) * drift_max * size
        drift = (length * math.cos(angle), length * math.sin(angle))
    return CameraMotion(zoom, drift)


def video_camera(
    rng: np.random.Generator,
    center: tuple[float, float],
    scale: float,
    num_frames: int,
    size: int,
    motion: CameraMotion,
) -> list[np.ndarray]:
    """One affine per frame: a shared rotation/shear, the clip's zoom and drift, small per-frame jitter."""
    angle, shear = rng.uniform(-10, 10), rng.uniform(-5, 5)
    out = []
    for t in range(num_frames):
        f = t / max(1, num_frames - 1)
        s = scale * motion.zoom**f * rng.uniform(0.97, 1.03)
        shift = (
            motion.drift[0] * f + rng.uniform(-0.03, 0.03) * size,
            motion.drift[1] * f + rng.uniform(-0.03, 0.03) * size,
        )
        out.append(affine(center, s, angle + rng.uniform(-3, 3), shear, size, shift))
    return out


def static_camera(
    rng: np.random.Generator, center: tuple[float, float], scale: float, num_frames: int, size: int
) -> list[np.ndarray]:
    """Independent random affines per frame: a pseudo-video from one image (STCN's static stage)."""
    return [
        affine(
            center,
            scale * rng.uniform(0.9, 1.1),
            rng.uniform(-20, 20),
            rng.uniform(-10, 10),
            size,
            (rng.uniform(-0.1, 0.1) * size, rng.uniform(-0.1, 0.1) * size),
        )
        for _ in range(num_frames)
    ]


@dataclass(frozen=True)
class Layer:
    """An object cut from `raw` (one (image, labels) pair per clip frame) moving from `start` to `end`.

    `start`/`end` are the positions of its centroid relative to the crop centre at the first/last frame;
    `jitter` scales per-frame noise on scale, angle and position; `slot` is the mask slot it fills (None:
    an unlabelled occluder or look-alike).
    """

    raw: tuple[tuple[np.ndarray, np.ndarray], ...]
    obj_id: int
    center: tuple[float, float]
    scale: float
    angle: float
    start: Shift
    end: Shift
    jitter: float
    slot: int | None


def draw_layer(rng: np.random.Generator, layer: Layer, frames: np.ndarray, masks: np.ndarray, t: int) -> None:
    """Composites the layer over frames[t] (float32 [S,S,3]) and updates masks[t] ([O,S,S]) in place."""
    size = frames.shape[1]
    f = t / max(1, len(layer.raw) - 1)
    j = layer.jitter
    shift = (
        layer.start[0] + (layer.end[0] - layer.start[0]) * f + rng.uniform(-1, 1) * j * size,
        layer.start[1] + (layer.end[1] - layer.start[1]) * f + rng.uniform(-1, 1) * j * size,
    )
    m = affine(
        layer.center,
        layer.scale * rng.uniform(1 - j, 1 + j),
        layer.angle + rng.uniform(-100, 100) * j,
        0.0,
        size,
        shift,
    )
    img, labels = layer.raw[t]
    alpha = warp((labels == layer.obj_id).astype(np.float32), m, size)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
    fg = warp(img, m, size).astype(np.float32)
    frames[t] = frames[t] * (1 - alpha[..., None]) + fg * alpha[..., None]
    covered = alpha > 0.5
    masks[t][:, covered] = 0
    if layer.slot is not None:
        masks[t, layer.slot] = covered


def crossing_path(
    rng: np.random.Generator, first: np.ndarray, last: np.ndarray, own_extent: float, size: int
) -> tuple[Shift, Shift] | None:
    """Start/end of an occluder that passes in front of the object whose masks are `first` and `last`.

    It starts beside the object (centre distance about the two half-extents), crosses its position part-way
    through the clip and leaves on the other side; None when the object is not visible in the first frame.
    """
    c0 = centroid(first)
    if c0 is None:
        return None
    c1 = centroid(last) or c0
    reach = (extent(first) + own_extent) / 2 * rng.uniform(0.8, 1.2)
    a = rng.uniform(0, 2 * math.pi)
    d = (math.cos(a) * reach, math.sin(a) * reach)
    half = size / 2
    return (c0[0] - half + d[0], c0[1] - half + d[1]), (c1[0] - half - d[0], c1[1] - half - d[1])
