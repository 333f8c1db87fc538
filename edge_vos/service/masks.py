"""The pixels of an `add` command: a PNG, a COCO RLE or a polygon decoded into a bool mask at the frame's size
(sizes checked before anything is decoded), and the mask size policy (`fit_mask`, docs/protocol.md) that the
first-frame `prompt.mask` shares. Every problem is a CommandError naming the field."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import cv2
import numpy as np

from edge_vos.service.errors import CommandError, short
from edge_vos.wire.protocol import ProtocolError, decode_png, decode_rle


def mask_field(data: dict[str, Any], kind: str, frame_hw: tuple[int, int], max_polygon_points: int,
               resize_tolerance: float, resize: bool) -> np.ndarray:
    """The bool [H,W] mask of a mask, rle or polygon field at the frame's size."""
    h, w = frame_hw
    if kind == "polygon":
        return _polygon(data["polygon"], h, w, max_polygon_points)
    if kind == "mask":
        mask = _png_mask(data["mask"], h, w, resize_tolerance if resize else 0.0)
    else:
        mask = _rle_mask(data["rle"], h, w, resize_tolerance if resize else 0.0)
    mask = fit_mask(mask, (h, w), resize, resize_tolerance, field=kind)
    if not mask.any():
        raise CommandError(kind, "the mask is empty")
    return mask.astype(bool)


def _max_pixels(h: int, w: int, tolerance: float) -> int:
    return int(np.ceil(h * (1 + tolerance)) * np.ceil(w * (1 + tolerance)))


def _png_mask(value: Any, h: int, w: int, tolerance: float) -> np.ndarray:
    if not isinstance(value, str):
        raise CommandError("mask", "must be a base64 string of a PNG")
    if len(value) > 4 * (h * w + 1024):
        raise CommandError("mask", f"is {len(value)} characters, too large for a {w}x{h} frame")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError("mask", "is not valid base64") from None
    try:
        return decode_png(data, max_pixels=_max_pixels(h, w, tolerance)) != 0
    except ProtocolError as exc:
        raise CommandError("mask", str(exc)) from None


def _rle_mask(value: Any, h: int, w: int, tolerance: float) -> np.ndarray:
    if not isinstance(value, dict) or set(value) - {"size", "counts"} or "size" not in value or "counts" not in value:
        raise CommandError("rle", "must be {\"size\": [height, width], \"counts\": string or list}")
    size = value["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool)
                                                                 for s in size)):
        raise CommandError("rle.size", "must be [height, width] integers")
    rh, rw = size
    if rh <= 0 or rw <= 0 or rh * rw > _max_pixels(h, w, tolerance):
        raise CommandError("rle.size", f"{short(str(rw))}x{short(str(rh))} does not fit the {w}x{h} frame")
    counts = value["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise CommandError("rle.counts", "a list of counts must hold non-negative integers")
        if len(counts) > rh * rw + 1:
            raise CommandError("rle.counts", "has more runs than pixels")
    elif isinstance(counts, str):
        if len(counts) > 8 * rh * rw + 16 or not counts.isascii():
            raise CommandError("rle.counts", "is not a COCO compressed RLE string")
    else:
        raise CommandError("rle.counts", "must be a string (compressed) or a list of integers")
    try:
        mask = decode_rle({"size": [rh, rw], "counts": counts})
    except ProtocolError as exc:
        raise CommandError("rle.counts", str(exc)) from None
    except Exception as exc:  # pycocotools reports corrupt counts in several ways
        raise CommandError("rle.counts", f"cannot decode: {exc}") from None
    if mask.shape != (rh, rw):
        raise CommandError("rle.counts", f"decodes to {mask.shape[1]}x{mask.shape[0]}, not {rw}x{rh}")
    return mask


def fit_mask(
    mask: np.ndarray, frame_hw: tuple[int, int], resize: bool, tolerance: float, field: str = "mask",
    resize_hint: str = 'send "resize": true',
) -> np.ndarray:
    """Returns `mask` at the frame's size, or raises CommandError naming both sizes.

    Policy (docs/protocol.md): sizes must match exactly unless `resize` is asked for; then a mask whose
    sides each differ by at most `tolerance` (a fraction, default 2%) is resized nearest-neighbour, so an
    853-wide mask for an 854-wide frame is accepted and a mask for another camera is still refused.
    """
    h, w = frame_hw
    mh, mw = mask.shape[:2]
    if (mh, mw) == (h, w):
        return mask
    sizes = f"the mask is {mw}x{mh} but the frame is {w}x{h}"
    if not resize:
        raise CommandError(field, f"{sizes} ({resize_hint} to resize masks within {tolerance:.0%})")
    if abs(mh - h) > tolerance * h or abs(mw - w) > tolerance * w:
        raise CommandError(field, f"{sizes}: differs by more than the {tolerance:.0%} resize tolerance")
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(mask.dtype)


def _number_list(value: Any, field: str) -> list[float]:
    if not isinstance(value, list):
        raise CommandError(field, "must be a list of finite numbers")
    numbers = [_finite(v) for v in value]
    if any(v is None for v in numbers):
        raise CommandError(field, "must be a list of finite numbers")
    return numbers  # type: ignore[return-value]


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None (not a number, NaN, infinite, or an integer beyond float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _polygon(value: Any, h: int, w: int, max_points: int) -> np.ndarray:
    if not isinstance(value, list) or not 3 <= len(value) <= max_points:
        raise CommandError("polygon", f"must be a list of 3..{max_points} [x, y] points")
    points = []
    for i, point in enumerate(value):
        xy = _number_list(point, f"polygon[{i}]")
        if len(xy) != 2:
            raise CommandError(f"polygon[{i}]", "must be [x, y]")
        if not (-w <= xy[0] <= 2 * w and -h <= xy[1] <= 2 * h):
            raise CommandError(f"polygon[{i}]", f"{xy} is far outside the {w}x{h} frame")
        points.append(xy)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(np.array(points)).astype(np.int32)], 1)
    if not mask.any():
        raise CommandError("polygon", "covers no pixel of the frame")
    return mask.astype(bool)
