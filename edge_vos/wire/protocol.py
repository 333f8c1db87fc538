"""Wire format of the mask stream (docs/protocol.md): header and payload encodings, shared with clients.

A published message is multipart `[topic, header, payload]`: a short topic (subscribers filter on its
prefix), a UTF-8 JSON header, then one binary payload whose meaning the header's `encoding` gives. Nothing
here touches sockets or tensors; numpy label maps in, bytes out, and back. Decoding never unpickles: only
JSON, PNG, JPEG and COCO RLE are read from the network.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

PROTOCOL_VERSION = 3
ENCODINGS = ("raw", "png", "rle")
# Header fields every mask message carries (docs/protocol.md, "Mask messages").
HEADER_FIELDS = (
    "v", "kind", "stream", "seq", "frame", "capture_seq", "t_capture_ns", "t_capture_unix_ns", "t_publish_ns",
    "width", "height", "encoding", "objects",
)
OBJECT_FIELDS = ("id", "area", "bbox", "score")


def stream_topic(topic: str, stream: str) -> str:
    """The topic of one stream's messages: `masks/front` for topic `masks` (publish.topic) and stream `front`.
    A subscription to `masks` (a prefix) still receives every stream's masks."""
    return f"{topic}/{stream}"


class ProtocolError(ValueError):
    """A message that does not follow docs/protocol.md."""


@dataclass(frozen=True)
class ObjectInfo:
    id: int
    area: int  # pixels
    bbox: tuple[int, int, int, int]  # x, y, width, height (pixels, inclusive-exclusive)
    score: float  # mean probability of the object inside its mask (0 when the mask is empty)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "area": self.area, "bbox": list(self.bbox), "score": round(self.score, 4)}


def object_infos(labels: np.ndarray, object_ids: Sequence[int], probabilities: np.ndarray | None) -> list[ObjectInfo]:
    """Per-object area, bounding box and confidence from a label map and the tracker's probabilities."""
    counts = np.bincount(labels.ravel(), minlength=256)
    infos = []
    for row, obj_id in enumerate(object_ids):
        area = int(counts[obj_id])
        if area == 0:
            infos.append(ObjectInfo(int(obj_id), 0, (0, 0, 0, 0), 0.0))
            continue
        inside = labels == obj_id
        ys = np.flatnonzero(inside.any(axis=1))
        xs = np.flatnonzero(inside.any(axis=0))
        bbox = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
        score = float(probabilities[row][inside].mean()) if probabilities is not None and len(probabilities) else 1.0
        infos.append(ObjectInfo(int(obj_id), area, bbox, score))
    return infos


# ---- payload encodings ---------------------------------------------------------------------------


def encode_labels(labels: np.ndarray, encoding: str, object_ids: Sequence[int] = ()) -> bytes:
    """Encodes a uint8 label map [H,W]: raw bytes (row-major), a PNG (mode L), or per-object COCO RLE."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"expected a uint8 label map [H,W], got {labels.dtype} {list(labels.shape)}")
    if encoding == "raw":
        return np.ascontiguousarray(labels).tobytes()
    if encoding == "png":
        buf = io.BytesIO()
        Image.fromarray(labels, mode="L").save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    if encoding == "rle":
        return json.dumps(encode_rle(labels, object_ids), separators=(",", ":")).encode()
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {list(ENCODINGS)}")


def encode_rle(labels: np.ndarray, object_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO compressed RLE per object: [{"id", "size": [h, w], "counts": str}] (pycocotools layout)."""
    from pycocotools import mask as mask_utils

    if not len(object_ids):
        return []
    stack = np.asfortranarray(np.stack([labels == i for i in object_ids], axis=-1).astype(np.uint8))
    rles = mask_utils.encode(stack)
    return [
        {"id": int(i), "size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}
        for i, r in zip(object_ids, rles, strict=True)
    ]


def encode_rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a bool mask [H,W]: run lengths in column-major order, the first one
    background (0 when the first pixel is the object). What a correction's reply carries: a browser decodes
    it in a few lines, and `decode_rle` reads it back."""
    flat = np.asarray(mask, bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """One COCO RLE (compressed string counts or uncompressed list counts) -> bool mask [H,W]."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(int(c) for c in counts) != h * w:
            raise ProtocolError(f"RLE counts sum to {sum(counts)}, expected {h}x{w} = {h * w}")
        counts = mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    mask = mask_utils.decode({"size": [h, w], "counts": counts})
    return mask.astype(bool)


def decode_labels(header: dict[str, Any], payload: bytes) -> np.ndarray:
    """The label map [H,W] uint8 a mask message carries, checked against the header's size."""
    h, w = int(header["height"]), int(header["width"])
    encoding = header["encoding"]
    if encoding == "raw":
        if len(payload) != h * w:
            raise ProtocolError(f"raw payload is {len(payload)} bytes, expected {h}x{w} = {h * w}")
        return np.frombuffer(payload, np.uint8).reshape(h, w).copy()
    if encoding == "png":
        labels = decode_png(payload, max_pixels=h * w)
        if labels.shape != (h, w):
            raise ProtocolError(f"PNG is {labels.shape[1]}x{labels.shape[0]}, header says {w}x{h}")
        return labels
    if encoding == "rle":
        labels = np.zeros((h, w), np.uint8)
        for item in json.loads(payload):
            mask = decode_rle(item)
            if mask.shape != (h, w):
                raise ProtocolError(f"RLE of object {item.get('id')} is {mask.shape[1]}x{mask.shape[0]}, not {w}x{h}")
            labels[mask] = int(item["id"])
        return labels
    raise ProtocolError(f"unknown encoding {encoding!r}")


def decode_png(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG (palette or greyscale) -> uint8 [H,W]; refuses images larger than max_pixels before decoding
    them, so a small hostile file cannot expand into gigabytes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise ProtocolError(f"expected a PNG, got {img.format}")
            w, h = img.size
            if w * h > max_pixels:
                raise ProtocolError(f"PNG is {w}x{h}, larger than the {max_pixels}-pixel limit")
            if img.mode in ("P", "L"):
                return np.asarray(img, dtype=np.uint8).copy()
            if img.mode in ("1", "I", "I;16", "LA", "RGB", "RGBA"):
                # Binary or colour masks: non-zero first channel counts as foreground value.
                arr = np.asarray(img)
                if arr.ndim == 3:
                    arr = arr[..., 0]
                return (arr != 0).astype(np.uint8) if img.mode != "I;16" else arr.astype(np.uint8)
            raise ProtocolError(f"unsupported PNG mode {img.mode}")
    except ProtocolError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ProtocolError(f"not a readable PNG: {exc}") from None


def encode_jpeg(image_rgb: np.ndarray, quality: int, max_side: int = 0) -> tuple[bytes, int, int]:
    """JPEG for the preview topic, downscaled so the long side is at most max_side; returns (data, w, h)."""
    import cv2

    h, w = image_rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        image_rgb = cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes(), w, h


# ---- headers -------------------------------------------------------------------------------------


def dumps_header(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode()


def loads_header(data: bytes) -> dict[str, Any]:
    """Parses and checks a header; raises ProtocolError naming what is wrong."""
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {header.get('v')!r}, this client speaks {PROTOCOL_VERSION}")
    return header


def validate_mask_header(header: dict[str, Any]) -> None:
    """Raises ProtocolError unless `header` has every field docs/protocol.md lists, with the right types."""
    missing = [f for f in HEADER_FIELDS if f not in header]
    if missing:
        raise ProtocolError(f"header lacks {missing}")
    for name in ("seq", "frame", "capture_seq", "t_capture_ns", "t_capture_unix_ns", "t_publish_ns", "width", "height"):
        if not isinstance(header[name], int) or isinstance(header[name], bool):
            raise ProtocolError(f"header field {name} must be an integer")
    if header["encoding"] not in ENCODINGS:
        raise ProtocolError(f"unknown encoding {header['encoding']!r}")
    if not isinstance(header["objects"], list):
        raise ProtocolError("objects must be a list")
    for obj in header["objects"]:
        if not isinstance(obj, dict) or any(f not in obj for f in OBJECT_FIELDS):
            raise ProtocolError(f"object entry {obj!r} lacks one of {list(OBJECT_FIELDS)}")
        if not (isinstance(obj["bbox"], list) and len(obj["bbox"]) == 4):
            raise ProtocolError("object bbox must be [x, y, width, height]")
