"""Control commands: untrusted JSON bytes -> validated, typed commands, and prompts -> masks.

Everything arriving on the control socket is hostile until proven otherwise: this module checks types,
ranges, sizes and ids and raises `CommandError(field, message)` naming the offending field; it never
evaluates or unpickles anything. Masks given as PNG or RLE are decoded here (with size limits checked
before decoding); a box or clicks need the frame's pixels, so they stay a validated `Prompt`
(edge_vos.prompt, which owns the prompt rules) until the inference thread turns them into a mask.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from edge_vos.labels import MAX_OBJECT_ID
from edge_vos.prompt import DEFAULT_METHOD, METHODS, Prompt, PromptError, make_prompt
from edge_vos.wire.protocol import ProtocolError, decode_png, decode_rle

COMMANDS = ("add", "remove", "reset", "stats", "config", "ping")
MASK_FIELDS = ("mask", "rle", "polygon")  # an object's pixels, taken as is unless refined
PROMPT_FIELDS = ("box", "points")  # where the object is; a method makes the mask
ADD_FIELDS = {"id", *MASK_FIELDS, *PROMPT_FIELDS, "labels", "method", "refine", "frame", "resize", "correct"}
MAX_REQ_CHARS = 64


class CommandError(ValueError):
    """An invalid command; `field` names the offending JSON field (empty for the whole message). `req` is the
    request's id when it could be read (the control thread echoes it; nothing else handles request ids)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        self.req: Any = None
        super().__init__(f"{field}: {message}" if field else message)

    def to_reply(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"ok": False, "error": str(self)}
        if self.field:
            reply["field"] = self.field
        return reply


@dataclass(frozen=True)
class Limits:
    """What the control thread needs to decode a command: the stream's current frame size (a polygon is drawn
    at it, a PNG or RLE may not decode to more pixels than it allows) and the size limits. Whether a command
    fits the frame and the object limit it applies to is decided once, on the inference thread (PromptBook)."""

    frame_hw: tuple[int, int] | None  # None until the first frame arrived
    max_polygon_points: int = 4096
    resize_tolerance: float = 0.02


@dataclass
class AddObject:
    """Exactly one of `mask` (taken as is) and `prompt` (made into a mask by `method` on the frame). With
    `correct`, the prompt's clicks correct a tracked object's mask on a recent frame (`frame` None: the latest
    frame tracked), starting from that mask."""

    name: ClassVar[str] = "add"  # the protocol's command name (metrics, logs)

    obj_id: int
    mask: np.ndarray | None = None  # bool [H,W] at frame size: a mask, rle or polygon taken as is
    prompt: Prompt | None = None  # box / points / coarse mask to refine
    method: str = DEFAULT_METHOD
    frame: int | None = None  # capture seq of a recent frame; None = the next frame (the latest, correcting)
    correct: bool = False


@dataclass
class RemoveObject:
    name: ClassVar[str] = "remove"

    obj_id: int


@dataclass
class Reset:
    name: ClassVar[str] = "reset"


@dataclass
class Query:
    """Answered by the control thread itself: stats, config, ping."""

    what: str

    @property
    def name(self) -> str:
        return self.what


Command = AddObject | RemoveObject | Reset | Query


@dataclass(frozen=True)
class Request:
    """A valid request: its command and the client's request id (None: none given)."""

    command: Command
    req: Any = None


@dataclass
class PendingCommand:
    """A command on its way from the control thread to the inference thread, which answers it by `token`;
    `cancelled` is set when its reply timed out. The request id stays with the control thread."""

    token: int
    command: Command
    cancelled: threading.Event


def parse_request(raw: bytes, limits: Limits) -> Request:
    """Parses one request body; raises CommandError (with `req` set when the id was readable) for anything
    that is not a valid request."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("", "request is not UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer of > 4300 digits
        raise CommandError("", f"request is not valid JSON: {_short(str(exc), 120)}") from None
    if not isinstance(data, dict):
        raise CommandError("", f"request must be a JSON object, got {type(data).__name__}")
    req = data.get("req")
    if req is not None and not valid_req(req):
        raise CommandError("req", f"must be an integer or a string of at most {MAX_REQ_CHARS} characters")
    try:
        return Request(_command(data, limits), req)
    except CommandError as exc:
        exc.req = req
        raise


def _command(data: dict[str, Any], limits: Limits) -> Command:
    cmd = data.get("cmd")
    if not isinstance(cmd, str):
        raise CommandError("cmd", f"required, one of {list(COMMANDS)}")
    if cmd not in COMMANDS:
        raise CommandError("cmd", f"unknown command {_short(cmd)!r}; expected one of {list(COMMANDS)}")
    _known(data, {"add": ADD_FIELDS, "remove": {"id"}}.get(cmd, set()))
    if cmd == "remove":
        return RemoveObject(_object_id(data))
    if cmd == "reset":
        return Reset()
    if cmd in ("stats", "config", "ping"):
        return Query(cmd)
    return _parse_add(data, limits)


def valid_req(req: Any) -> bool:
    """A request id the reply may echo: an integer or a short string (never a 4000-digit number)."""
    if isinstance(req, bool):
        return False
    if isinstance(req, int):
        return abs(req) < 10**MAX_REQ_CHARS
    return isinstance(req, str) and len(req) <= MAX_REQ_CHARS


def _short(text: str, limit: int = 40) -> str:
    """Client-supplied text quoted in an error or a log line, cut to a bounded length."""
    return text if len(text) <= limit else text[:limit] + "..."


def _known(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed - {"cmd", "req"})
    if unknown:
        names = [_short(name) for name in unknown[:5]]
        raise CommandError(_short(unknown[0]), f"unknown field(s) {names} for command {data['cmd']!r}")


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
        raise CommandError("id", f"must be in 1..{MAX_OBJECT_ID}, got {_short(str(obj_id))}")
    return obj_id


def _parse_add(data: dict[str, Any], limits: Limits) -> AddObject:
    obj_id = _object_id(data)
    masks = [k for k in MASK_FIELDS if k in data]
    prompts = [k for k in PROMPT_FIELDS if k in data]
    if len(masks) > 1:
        raise CommandError(masks[1], f"give at most one of mask, rle, polygon (got {masks})")
    if "labels" in data and "points" not in data:
        raise CommandError("labels", "labels were given without points")
    if data.get("correct", False) is not False:
        return _parse_correction(data, obj_id, limits)
    if not masks and not prompts:
        raise CommandError("mask", "give a mask, rle, polygon, box or points (with labels)")
    frame = None
    if data.get("frame", "next") != "next":
        frame = _int(data, "frame")
        if frame < 0:
            raise CommandError("frame", f"must be a frame sequence number >= 0 or \"next\", got {_short(str(frame))}")
    resize = data.get("resize", False)
    if not isinstance(resize, bool):
        raise CommandError("resize", "must be true or false")
    refine = data.get("refine", False)
    if not isinstance(refine, bool):
        raise CommandError("refine", "must be true or false")
    if refine and not masks:
        raise CommandError("refine", "refines a mask, rle or polygon; none was given")
    method = _method(data, bool(prompts) or refine)
    if limits.frame_hw is None:
        raise CommandError("", "no frame has arrived yet; retry when the stream is running")
    h, w = limits.frame_hw
    mask = _mask_field(data, masks[0], (h, w), limits, resize) if masks else None
    if not prompts and not refine:
        return AddObject(obj_id, mask=mask, frame=frame)
    try:
        prompt = make_prompt((h, w), box=data.get("box"), points=data.get("points"), labels=data.get("labels"),
                             mask=mask)
    except PromptError as exc:
        field = {"mask": masks[0] if masks else "mask", "": "box"}.get(exc.field, exc.field)
        raise CommandError(field, exc.message) from None
    return AddObject(obj_id, prompt=prompt, method=method, frame=frame)


def _parse_correction(data: dict[str, Any], obj_id: int, limits: Limits) -> AddObject:
    """`"correct": true`: clicks (and optionally a box) on a tracked object's error; its current mask on the
    frame is the coarse mask they refine, supplied by the inference thread when it applies the command."""
    if data["correct"] is not True:
        raise CommandError("correct", "must be true or false")
    for given in sorted(k for k in (*MASK_FIELDS, "refine", "resize") if k in data):
        raise CommandError(given, "a correction starts from the object's current mask: give points (and labels), "
                                  "not a mask, rle, polygon, refine or resize")
    if "points" not in data:
        raise CommandError("points", "a correction needs clicks: points with labels (1 on a missed part of the "
                                     "object, 0 on a wrongly painted part)")
    frame = None if data.get("frame") is None else _int(data, "frame")
    if frame is not None and frame < 0:
        raise CommandError("frame", f"must be a frame sequence number >= 0, got {_short(str(frame))}")
    method = _method(data, True)
    if limits.frame_hw is None:
        raise CommandError("", "no frame has arrived yet; retry when the stream is running")
    try:
        prompt = make_prompt(limits.frame_hw, box=data.get("box"), points=data["points"], labels=data.get("labels"),
                             mask_follows=True)
    except PromptError as exc:
        raise CommandError(exc.field or "points", exc.message) from None
    return AddObject(obj_id, prompt=prompt, method=method, frame=frame, correct=True)


def _method(data: dict[str, Any], applies: bool) -> str:
    if "method" not in data:
        return DEFAULT_METHOD
    if not applies:
        raise CommandError("method", "applies to box and points prompts and to \"refine\": true; a mask, rle or "
                                     "polygon alone is taken as is")
    method = data["method"]
    if not isinstance(method, str) or method not in METHODS:
        raise CommandError("method", f"must be one of {list(METHODS)}, got {str(method)[:40]!r}")
    return method


def _mask_field(data: dict[str, Any], kind: str, frame_hw: tuple[int, int], limits: Limits, resize: bool
                ) -> np.ndarray:
    """The bool [H,W] mask of a mask, rle or polygon field at the frame's size."""
    h, w = frame_hw
    if kind == "polygon":
        return _polygon(data["polygon"], h, w, limits.max_polygon_points)
    if kind == "mask":
        mask = _png_mask(data["mask"], h, w, limits.resize_tolerance if resize else 0.0)
    else:
        mask = _rle_mask(data["rle"], h, w, limits.resize_tolerance if resize else 0.0)
    mask = fit_mask(mask, (h, w), resize, limits.resize_tolerance, field=kind)
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
        raise CommandError("rle.size", f"{_short(str(rw))}x{_short(str(rh))} does not fit the {w}x{h} frame")
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
