"""Control commands: untrusted JSON bytes -> validated, typed commands, and prompts -> masks.

Everything arriving on the control socket is hostile until proven otherwise: this module checks types,
ranges, sizes and ids and raises `CommandError(field, message)` naming the offending field; it never
evaluates or unpickles anything. Masks given as PNG or RLE are decoded here (with size limits checked
before decoding); a box needs the frame's pixels (GrabCut), so it stays a box until the inference thread
applies it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge_vos.labels import MAX_OBJECT_ID
from edge_vos.service.protocol import ProtocolError, decode_png, decode_rle

COMMANDS = ("add", "remove", "reset", "stats", "config", "ping")


class CommandError(ValueError):
    """An invalid command; `field` names the offending JSON field (empty for the whole message)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def to_reply(self, req: Any = None) -> dict[str, Any]:
        reply: dict[str, Any] = {"ok": False, "error": str(self)}
        if self.field:
            reply["field"] = self.field
        if req is not None:
            reply["req"] = req
        return reply


@dataclass(frozen=True)
class Limits:
    """What the current stream allows: the frame size masks must match, and command size limits."""

    frame_hw: tuple[int, int] | None  # None until the first frame arrived
    max_objects: int = 8
    max_polygon_points: int = 4096
    resize_tolerance: float = 0.02


@dataclass
class AddObject:
    obj_id: int
    mask: np.ndarray | None = None  # bool [H,W] at frame size (mask or polygon)
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 (exclusive), GrabCut makes the mask
    frame: int | None = None  # capture seq of a recent frame; None = the next frame
    req: Any = None


@dataclass
class RemoveObject:
    obj_id: int
    req: Any = None


@dataclass
class Reset:
    req: Any = None


@dataclass
class Query:
    """Answered by the control thread itself: stats, config, ping."""

    what: str
    req: Any = None


Command = AddObject | RemoveObject | Reset | Query


def parse_command(raw: bytes, limits: Limits) -> Command:
    """Parses one request body; raises CommandError for anything that is not a valid command."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("", "request is not UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CommandError("", f"request is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("", f"request must be a JSON object, got {type(data).__name__}")
    req = data.get("req")
    if req is not None and not (isinstance(req, (int, str)) and not isinstance(req, bool) and len(str(req)) <= 64):
        raise CommandError("req", "must be an integer or a string of at most 64 characters")
    cmd = data.get("cmd")
    if not isinstance(cmd, str):
        raise CommandError("cmd", f"required, one of {list(COMMANDS)}")
    if cmd not in COMMANDS:
        raise CommandError("cmd", f"unknown command {cmd[:40]!r}; expected one of {list(COMMANDS)}")
    _known(data, {"add": {"id", "mask", "rle", "box", "polygon", "frame", "resize"}, "remove": {"id"}}.get(cmd, set()))
    if cmd == "remove":
        return RemoveObject(_object_id(data), req)
    if cmd == "reset":
        return Reset(req)
    if cmd in ("stats", "config", "ping"):
        return Query(cmd, req)
    return _parse_add(data, limits, req)


def _known(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed - {"cmd", "req"})
    if unknown:
        raise CommandError(unknown[0], f"unknown field(s) {unknown[:5]} for command {data['cmd']!r}")


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CommandError(name, f"must be an integer, got {type(value).__name__}")
    return value


def _object_id(data: dict[str, Any]) -> int:
    if "id" not in data:
        raise CommandError("id", f"required (object id 1..{MAX_OBJECT_ID})")
    obj_id = _int(data, "id")
    if not 1 <= obj_id <= MAX_OBJECT_ID:
        raise CommandError("id", f"must be in 1..{MAX_OBJECT_ID}, got {obj_id}")
    return obj_id


def _parse_add(data: dict[str, Any], limits: Limits, req: Any) -> AddObject:
    obj_id = _object_id(data)
    given = [k for k in ("mask", "rle", "box", "polygon") if k in data]
    if len(given) != 1:
        raise CommandError("mask", f"give exactly one of mask, rle, box, polygon (got {given or 'none'})")
    frame = None
    if data.get("frame", "next") != "next":
        frame = _int(data, "frame")
        if frame < 0:
            raise CommandError("frame", f"must be a frame sequence number >= 0 or \"next\", got {frame}")
    resize = data.get("resize", False)
    if not isinstance(resize, bool):
        raise CommandError("resize", "must be true or false")
    if limits.frame_hw is None:
        raise CommandError("", "no frame has arrived yet; retry when the stream is running")
    h, w = limits.frame_hw
    kind = given[0]
    if kind == "box":
        return AddObject(obj_id, box=_box(data["box"], h, w), frame=frame, req=req)
    if kind == "polygon":
        return AddObject(obj_id, mask=_polygon(data["polygon"], h, w, limits.max_polygon_points), frame=frame, req=req)
    if kind == "mask":
        mask = _png_mask(data["mask"], h, w, limits.resize_tolerance if resize else 0.0)
    else:
        mask = _rle_mask(data["rle"], h, w, limits.resize_tolerance if resize else 0.0)
    mask = fit_mask(mask, (h, w), resize, limits.resize_tolerance, field=kind)
    if not mask.any():
        raise CommandError(kind, "the mask is empty")
    return AddObject(obj_id, mask=mask.astype(bool), frame=frame, req=req)


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
        raise CommandError("rle.size", f"{rw}x{rh} does not fit the {w}x{h} frame")
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
    mask: np.ndarray, frame_hw: tuple[int, int], resize: bool, tolerance: float, field: str = "mask"
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
        raise CommandError(field, f"{sizes} (send \"resize\": true to resize masks within {tolerance:.0%})")
    if abs(mh - h) > tolerance * h or abs(mw - w) > tolerance * w:
        raise CommandError(field, f"{sizes}: differs by more than the {tolerance:.0%} resize tolerance")
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(mask.dtype)


def _number_list(value: Any, field: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value
    ):
        raise CommandError(field, "must be a list of finite numbers")
    return [float(v) for v in value]


def _box(value: Any, h: int, w: int) -> tuple[int, int, int, int]:
    nums = _number_list(value, "box")
    if len(nums) != 4:
        raise CommandError("box", "must be [x0, y0, x1, y1] in pixels")
    x0, y0, x1, y1 = (int(round(v)) for v in nums)
    x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1))
    y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1))
    if x1 - x0 < 4 or y1 - y0 < 4:
        raise CommandError("box", f"must cover at least 4x4 pixels inside the {w}x{h} frame, got {nums}")
    return x0, y0, x1, y1


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


def grabcut_mask(
    image_rgb: np.ndarray, box: tuple[int, int, int, int], iterations: int = 3, max_side: int = 320
) -> np.ndarray:
    """Foreground inside `box` by OpenCV GrabCut (bool [H,W]); the box's inscribed ellipse when GrabCut
    finds nothing (flat regions), so a box prompt always yields an object.

    GrabCut runs on the box plus a margin, downscaled so its long side is at most `max_side`: its cost
    then stays bounded (tens of ms) whatever the camera resolution, since it runs between two frames.
    """
    x0, y0, x1, y1 = box
    h, w = image_rgb.shape[:2]
    margin = max(4, (x1 - x0) // 4, (y1 - y0) // 4)
    cx0, cy0, cx1, cy1 = max(0, x0 - margin), max(0, y0 - margin), min(w, x1 + margin), min(h, y1 + margin)
    crop = image_rgb[cy0:cy1, cx0:cx1]
    scale = min(1.0, max_side / max(crop.shape[:2]))
    small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else crop
    sh, sw = small.shape[:2]
    rx0, ry0 = int((x0 - cx0) * scale), int((y0 - cy0) * scale)
    rx1 = min(sw, max(rx0 + 2, int(np.ceil((x1 - cx0) * scale))))
    ry1 = min(sh, max(ry0 + 2, int(np.ceil((y1 - cy0) * scale))))
    # GrabCut needs some background outside the rectangle.
    rx0, ry0, rx1, ry1 = max(rx0, 1), max(ry0, 1), min(rx1, sw - 1), min(ry1, sh - 1)
    fg = np.zeros((h, w), bool)
    if rx1 - rx0 >= 2 and ry1 - ry0 >= 2:
        mask = np.zeros((sh, sw), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2BGR), mask,
                        (rx0, ry0, rx1 - rx0, ry1 - ry0), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
            small_fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
            full = cv2.resize(small_fg, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_NEAREST)
            fg[cy0:cy1, cx0:cx1] = full.astype(bool)
            inside = np.zeros((h, w), bool)
            inside[y0:y1, x0:x1] = True
            fg &= inside
        except cv2.error:
            pass
    if not fg.any():
        ellipse = np.zeros((h, w), np.uint8)
        center = ((x0 + x1) // 2, (y0 + y1) // 2)
        cv2.ellipse(ellipse, center, (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2)), 0, 0, 360, 1, -1)
        fg = ellipse.astype(bool)
    return fg
