"""Control commands: untrusted JSON bytes -> validated, typed commands, and prompts -> masks.

Everything arriving on the control socket is hostile until proven otherwise: this module checks types,
ranges, sizes, ids and the stream a command names, and raises `CommandError(field, message)` naming the
offending field; it never evaluates or unpickles anything. Masks given as PNG, RLE or a polygon are decoded
by service/masks.py (with size limits checked before decoding); a box or clicks need the frame's pixels, so
they stay a validated `Prompt` (edge_vos.prompt, which owns the prompt rules) until the inference thread
turns them into a mask.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edge_vos.labels import MAX_OBJECT_ID
from edge_vos.prompt import DEFAULT_METHOD, METHODS, Prompt, PromptError, make_prompt
from edge_vos.service.errors import CommandError as CommandError
from edge_vos.service.errors import short as _short
from edge_vos.service.masks import fit_mask as fit_mask
from edge_vos.service.masks import mask_field

COMMANDS = ("add", "remove", "reset", "stats", "streams", "config", "ping")
# Commands that change one stream's tracking: they name their `stream` when several run.
STREAM_COMMANDS = ("add", "remove", "reset")
QUERIES = ("stats", "streams", "config", "ping")
MASK_FIELDS = ("mask", "rle", "polygon")  # an object's pixels, taken as is unless refined
PROMPT_FIELDS = ("box", "points")  # where the object is; a method makes the mask
ADD_FIELDS = {"id", *MASK_FIELDS, *PROMPT_FIELDS, "labels", "method", "refine", "frame", "resize", "correct"}
MAX_REQ_CHARS = 64


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
    """Answered by the control thread itself: stats, streams, config, ping."""

    what: str

    @property
    def name(self) -> str:
        return self.what


Command = AddObject | RemoveObject | Reset | Query


@dataclass(frozen=True)
class Request:
    """A valid request: its command, the client's request id (None: none given) and the stream it is for
    (None: not named, for a query about the whole service)."""

    command: Command
    req: Any = None
    stream: str | None = None


@dataclass
class PendingCommand:
    """A command on its way from the control thread to the inference thread, which answers it by `token`;
    `cancelled` is set when its reply timed out. The request id stays with the control thread."""

    token: int
    command: Command
    cancelled: threading.Event
    stream: str = ""


def parse_request(raw: bytes, limits: Limits | Callable[[str | None], Limits], streams: Sequence[str] = ()
                  ) -> Request:
    """Parses one request body; raises CommandError (with `req` set when the id was readable) for anything
    that is not a valid request. `streams`: the ids the service runs (a command naming another is refused;
    with one stream, a command that names none is for it); `limits`: those of the command's stream."""
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
        cmd = _command_name(data)
        stream = _stream(data, cmd, streams)
        return Request(_command(data, cmd, limits if isinstance(limits, Limits) else limits(stream)), req, stream)
    except CommandError as exc:
        exc.req = req
        raise


def _command_name(data: dict[str, Any]) -> str:
    cmd = data.get("cmd")
    if not isinstance(cmd, str):
        raise CommandError("cmd", f"required, one of {list(COMMANDS)}")
    if cmd not in COMMANDS:
        raise CommandError("cmd", f"unknown command {_short(cmd)!r}; expected one of {list(COMMANDS)}")
    return cmd


def _stream(data: dict[str, Any], cmd: str, streams: Sequence[str]) -> str | None:
    """The stream a request is for: the one it names, the only one running, or None (a query about all)."""
    if "stream" not in data:
        if len(streams) == 1:
            return streams[0]
        if cmd in STREAM_COMMANDS and streams:
            raise CommandError("stream", f"required when several streams run; one of {list(streams)}")
        return None
    stream = data["stream"]
    if not isinstance(stream, str):
        raise CommandError("stream", f"must be a string, one of {list(streams)}")
    if stream not in streams:
        raise CommandError("stream", f"unknown stream {_short(stream)!r}; streams: {list(streams)}")
    return stream


def _command(data: dict[str, Any], cmd: str, limits: Limits) -> Command:
    _known(data, {"add": ADD_FIELDS, "remove": {"id"}}.get(cmd, set()))
    if cmd == "remove":
        return RemoveObject(_object_id(data))
    if cmd == "reset":
        return Reset()
    if cmd in QUERIES:
        return Query(cmd)
    return _parse_add(data, limits)


def valid_req(req: Any) -> bool:
    """A request id the reply may echo: an integer or a short string (never a 4000-digit number)."""
    if isinstance(req, bool):
        return False
    if isinstance(req, int):
        return abs(req) < 10**MAX_REQ_CHARS
    return isinstance(req, str) and len(req) <= MAX_REQ_CHARS


def _known(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed - {"cmd", "req", "stream"})
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
    mask = mask_field(data, masks[0], (h, w), limits.max_polygon_points, limits.resize_tolerance,
                      resize) if masks else None
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
