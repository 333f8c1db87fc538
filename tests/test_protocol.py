"""Wire format: encodings round-trip, headers carry what docs/protocol.md promises, bad payloads fail clearly."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_vos.client import MaskResult, decode_message
from edge_vos.wire.protocol import (
    HEADER_FIELDS,
    OBJECT_FIELDS,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_labels,
    decode_png,
    dumps_header,
    encode_labels,
    loads_header,
    object_infos,
    validate_mask_header,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def _labels(h: int = 48, w: int = 64) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[5:20, 10:30] = 1
    labels[25:40, 35:60] = 3
    labels[30:35, 0:5] = 254
    return labels


@pytest.mark.parametrize("encoding", ["raw", "png", "rle"])
def test_encodings_round_trip(encoding: str) -> None:
    labels = _labels()
    payload = encode_labels(labels, encoding, [1, 3, 254])
    header = {"width": 64, "height": 48, "encoding": encoding}
    np.testing.assert_array_equal(decode_labels(header, payload), labels)


def test_rle_is_coco_compatible() -> None:
    from pycocotools import mask as mask_utils

    labels = _labels()
    items = json.loads(encode_labels(labels, "rle", [3]))
    assert items[0]["id"] == 3 and items[0]["size"] == [48, 64]
    decoded = mask_utils.decode({"size": items[0]["size"], "counts": items[0]["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), labels == 3)


def test_object_infos() -> None:
    labels = _labels()
    probs = np.stack([(labels == i) * 0.8 for i in (1, 3, 7)]).astype(np.float32)
    infos = object_infos(labels, [1, 3, 7], probs)
    assert infos[0].area == 15 * 20 and infos[0].bbox == (10, 5, 20, 15)
    assert infos[0].score == pytest.approx(0.8)
    assert infos[2].area == 0 and infos[2].bbox == (0, 0, 0, 0)  # tracked but not visible


def test_decode_rejects_wrong_sizes() -> None:
    labels = _labels()
    with pytest.raises(ProtocolError, match="raw payload"):
        decode_labels({"width": 65, "height": 48, "encoding": "raw"}, encode_labels(labels, "raw"))
    with pytest.raises(ProtocolError, match="PNG is"):
        decode_labels({"width": 64, "height": 47, "encoding": "png"}, encode_labels(labels, "png"))
    with pytest.raises(ProtocolError, match="not a readable PNG"):
        decode_png(b"\x89PNG garbage", 100)


def test_decode_png_refuses_huge_dimensions_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buf, format="PNG")  # compresses to a few kB
    with pytest.raises(ProtocolError, match="larger than"):
        decode_png(buf.getvalue(), max_pixels=640 * 480)


def test_header_validation_and_version() -> None:
    header = {"v": PROTOCOL_VERSION, "kind": "mask", "stream": "s", "seq": 0, "frame": 0, "capture_seq": 0,
              "t_capture_ns": 1, "t_capture_unix_ns": 2, "t_publish_ns": 3, "width": 64, "height": 48,
              "encoding": "png", "objects": [{"id": 1, "area": 2, "bbox": [0, 0, 1, 2], "score": 0.5}]}
    validate_mask_header(header)
    parts = [b"masks", dumps_header(header), encode_labels(_labels(), "png")]
    message = decode_message(parts)
    assert isinstance(message, MaskResult) and message.object_ids == [1]
    with pytest.raises(ProtocolError, match="lacks"):
        validate_mask_header({k: v for k, v in header.items() if k != "t_capture_ns"})
    with pytest.raises(ProtocolError, match="version"):
        loads_header(json.dumps({**header, "v": 99}).encode())
    with pytest.raises(ProtocolError, match="not JSON"):
        loads_header(b"\x80\x04pickle")
    with pytest.raises(ProtocolError, match="3 frames"):
        decode_message(parts[:2])


def test_protocol_document_lists_every_header_field() -> None:
    text = DOC.read_text()
    assert re.search(rf"Protocol version[^\n]*{PROTOCOL_VERSION}", text)
    for name in (*HEADER_FIELDS, *OBJECT_FIELDS):
        assert f"`{name}`" in text, f"docs/protocol.md does not document header field {name}"
