"""What a viewer receives: one frame of one stream as a binary WebSocket message (docs/view.md, "HTTP API").

`LiveFrame` is built by the feed thread and sent by the server's; its packet is made on first use, once for
all the viewers of its stream, so a stream nobody watches costs nothing to pack.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from edge_vos.wire.protocol import decode_labels, encode_labels

# The mask header's fields a viewer receives (plus the view's own `view` object and `"type": "frame"`).
FRAME_FIELDS = ("stream", "seq", "frame", "capture_seq", "width", "height", "objects", "timings_ms")


class LiveFrame:
    """One frame of stream `stream` as viewers receive it. `packet` (the binary WebSocket message) is built
    on first use, by the server's thread and once for all viewers."""

    def __init__(self, seq: int, header: dict[str, Any], jpeg: bytes, labels: bytes | Callable[[], bytes],
                 stream: str = "") -> None:
        self.seq, self.header, self.jpeg = seq, header, jpeg
        self.stream = stream or str(header.get("stream", ""))
        self._labels = labels  # the label map PNG, or how to make it (re-encoding raw or RLE payloads)
        self._packet: bytes | None = None

    @property
    def packet(self) -> bytes:
        if self._packet is None:
            labels = self._labels if isinstance(self._labels, bytes) else self._labels()
            self._packet = pack_frame(self.header, self.jpeg, labels)
        return self._packet


def pack_frame(header: dict[str, Any], jpeg: bytes, labels_png: bytes) -> bytes:
    """u32 header length | header JSON | u32 JPEG length | JPEG (may be empty) | label map PNG."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((struct.pack(">I", len(head)), head, struct.pack(">I", len(jpeg)), jpeg, labels_png))


def unpack_frame(packet: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """Inverse of pack_frame (tests and Python viewers)."""
    (n,) = struct.unpack_from(">I", packet, 0)
    header = json.loads(packet[4 : 4 + n])
    (m,) = struct.unpack_from(">I", packet, 4 + n)
    start = 8 + n
    return header, packet[start : start + m], packet[start + m :]


def labels_as_png(header: dict[str, Any], payload: bytes) -> bytes:
    """A raw or RLE label map as the PNG browsers decode natively."""
    return encode_labels(decode_labels(header, payload), "png")
