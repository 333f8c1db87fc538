"""Two cameras on the wire, written for the web view's tests (issue #22): one XPUB socket publishing
`masks/<id>`, `preview/<id>` and `status/<id>` for two streams of different sizes (or the single-camera topics
`masks`, `preview`, `status`), and a control ROUTER answering as a multi-stream service does: `stream` is
required while two run and must name one, `streams` lists them, `stats` per stream (and the totals without
one), `config`, `ping`, `add` (a mask PNG, a box, clicks or a polygon become that object's mask on that stream from the
next frame on), `add` with `"correct": true` (the clicked disk added to or cut from the mask, the mask answered
as uncompressed RLE), `remove`, `reset`. Every command is recorded. The objects do not move; the pictures do.

It is not the service: tests that use it test the view's side of the wire (and say so)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import zmq

from edge_vos.wire.protocol import (
    PROTOCOL_VERSION,
    decode_png,
    dumps_header,
    encode_jpeg,
    encode_labels,
    encode_rle_counts,
)

HISTORY = 64
CLICK_RADIUS = 12


@dataclass
class FakeStream:
    id: str
    width: int
    height: int
    colour: tuple[int, int, int]
    seq: int = 0
    objects: dict[int, np.ndarray] = field(default_factory=dict)  # id -> bool mask
    recent: list[int] = field(default_factory=list)  # capture_seq of the frames "kept"
    pending: dict[int, np.ndarray] = field(default_factory=dict)  # adds for the next frame

    def picture(self) -> np.ndarray:
        """A plain colour with a white square that moves, so the pixels change from frame to frame."""
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[:] = self.colour
        x = (self.seq * 4) % max(1, self.width - 20)
        image[10:30, x : x + 20] = 255
        return image

    def labels(self) -> np.ndarray:
        labels = np.zeros((self.height, self.width), np.uint8)
        for obj_id, mask in sorted(self.objects.items()):
            labels[mask] = obj_id
        return labels


class TwoStreams(threading.Thread):
    """The fake service: one thread owns both sockets; frames at `fps` per stream."""

    def __init__(self, streams: tuple[tuple[str, int, int], ...] = (("front", 320, 180), ("back", 240, 160)),
                 fps: float = 10.0, topic_suffix: bool = True) -> None:
        super().__init__(name="two-streams", daemon=True)
        colours = ((40, 90, 160), (150, 70, 40), (60, 140, 60), (120, 60, 140))
        self.streams = {name: FakeStream(name, w, h, colours[i % 4]) for i, (name, w, h) in enumerate(streams)}
        self.fps, self.topic_suffix = fps, topic_suffix
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.control = self.context.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.masks_endpoint = f"tcp://127.0.0.1:{self.pub.bind_to_random_port('tcp://127.0.0.1')}"
        self.control_endpoint = f"tcp://127.0.0.1:{self.control.bind_to_random_port('tcp://127.0.0.1')}"
        self.commands: list[dict[str, Any]] = []  # every command received, as sent
        self.paused: set[str] = set()  # streams that publish nothing meanwhile (a camera that died)
        self.stop_event = threading.Event()
        self.started_at = time.monotonic()

    def __enter__(self) -> TwoStreams:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.join(5)
        self.pub.close(linger=0)
        self.control.close(linger=0)
        self.context.term()

    def asked(self, **fields: Any) -> bool:
        """Whether a command with these fields (and no `stream` unless named) was received."""
        fields.setdefault("stream", None)
        return any(all(c.get(k) == v for k, v in fields.items()) for c in list(self.commands))

    def topic(self, kind: str, stream: str) -> bytes:
        return (f"{kind}/{stream}" if self.topic_suffix else kind).encode()

    # ---- the thread -------------------------------------------------------------------------------

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pub, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        next_frame = time.monotonic()
        while not self.stop_event.is_set():
            for sock, _ in poller.poll(max(0, int((next_frame - time.monotonic()) * 1000))):
                if sock is self.pub:
                    if self.pub.recv()[:1] == b"\x01":  # a subscriber joined: tell it every stream's state
                        for stream in self.streams.values():
                            self._status(stream, "streaming")
                else:
                    envelope = self.control.recv_multipart()
                    reply = self._answer(envelope[-1])
                    self.control.send_multipart([*envelope[:-1], json.dumps(reply).encode()])
            if time.monotonic() >= next_frame:
                next_frame = max(next_frame + 1 / self.fps, time.monotonic())  # late: no burst to catch up
                for stream in self.streams.values():
                    if stream.id not in self.paused:
                        self._publish(stream)

    def _status(self, stream: FakeStream, state: str) -> None:
        header = {"v": PROTOCOL_VERSION, "kind": "status", "stream": stream.id, "state": state, "detail": "",
                  "last_seq": stream.seq - 1 if stream.seq else None, "t_publish_ns": time.monotonic_ns()}
        self.pub.send_multipart([self.topic("status", stream.id), dumps_header(header), b""])

    def _publish(self, stream: FakeStream) -> None:
        seq = stream.seq
        stream.objects.update(stream.pending)
        stream.pending.clear()
        labels = stream.labels()
        objects = []
        for obj_id in sorted(stream.objects):
            ys, xs = np.nonzero(labels == obj_id)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()) + 1,
                    int(ys.max() - ys.min()) + 1] if len(xs) else [0, 0, 0, 0]
            objects.append({"id": obj_id, "area": len(xs), "bbox": bbox, "score": 0.9 if len(xs) else 0.0})
        now = time.monotonic_ns()
        header = {"v": PROTOCOL_VERSION, "kind": "mask", "stream": stream.id, "seq": seq, "frame": seq,
                  "capture_seq": seq, "t_capture_ns": now, "t_capture_unix_ns": time.time_ns(), "t_inferred_ns": now,
                  "t_publish_ns": now, "width": stream.width, "height": stream.height, "encoding": "png",
                  "objects": objects, "timings_ms": {"total": 1.0}}
        self.pub.send_multipart([self.topic("masks", stream.id), dumps_header(header), encode_labels(labels, "png")])
        jpeg, w, h = encode_jpeg(stream.picture(), 75)
        preview = {"v": PROTOCOL_VERSION, "kind": "preview", "stream": stream.id, "seq": seq, "capture_seq": seq,
                   "t_capture_ns": now, "width": w, "height": h, "encoding": "jpeg"}
        self.pub.send_multipart([self.topic("preview", stream.id), dumps_header(preview), jpeg])
        stream.recent = [*stream.recent, seq][-HISTORY:]
        stream.seq += 1

    # ---- the control channel ------------------------------------------------------------------------

    def _answer(self, body: bytes) -> dict[str, Any]:
        try:
            command = json.loads(body)
        except ValueError:
            return {"ok": False, "error": "not JSON"}
        self.commands.append(command)
        reply = self._apply(command)
        if "req" in command:
            reply["req"] = command["req"]
        return reply

    def _apply(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd = command.get("cmd")
        if cmd == "ping":
            return {"ok": True, "pong": True}
        if cmd == "config":
            return {"ok": True, "config": {"control": {"history": HISTORY}}}
        if cmd == "streams":
            return {"ok": True, "streams": [{"id": s.id, "width": s.width, "height": s.height,
                                             "state": "streaming"} for s in self.streams.values()]}
        name = command.get("stream")
        if name is None and cmd == "stats" and len(self.streams) > 1:
            return {"ok": True, "stats": {"frames_processed": sum(s.seq for s in self.streams.values()),
                                          "streams": {s.id: self._stats(s) for s in self.streams.values()}}}
        if name is None and len(self.streams) > 1:
            return {"ok": False, "error": f"stream: {len(self.streams)} streams run ({', '.join(self.streams)}); "
                                          "name one", "field": "stream"}
        stream = self.streams.get(name) if name is not None else next(iter(self.streams.values()))
        if stream is None:
            return {"ok": False, "error": f"stream: unknown stream {name!r}", "field": "stream"}
        if cmd == "stats":
            return {"ok": True, "stats": self._stats(stream)}
        if cmd == "reset":
            stream.objects.clear()
            return {"ok": True}
        if cmd == "remove":
            if command.get("id") not in stream.objects:
                return {"ok": False, "error": f"id: unknown object id {command.get('id')}", "field": "id"}
            del stream.objects[command["id"]]
            return {"ok": True, "id": command["id"], "objects": sorted(stream.objects)}
        if cmd == "add":
            return self._add(stream, command)
        return {"ok": False, "error": f"cmd: unknown command {cmd!r}", "field": "cmd"}

    def _stats(self, stream: FakeStream) -> dict[str, Any]:
        return {"frames_processed": stream.seq, "fps": self.fps, "step_ms_p50": 1.0, "objects": sorted(stream.objects),
                "recent_frames": [stream.recent[0], stream.recent[-1]] if stream.recent else None,
                "source": {"state": "streaming", "reconnects": 0, "skipped": 0}, "dropped": {}, "subscribers": 1,
                "uptime_s": time.monotonic() - self.started_at}

    def _add(self, stream: FakeStream, command: dict[str, Any]) -> dict[str, Any]:
        obj_id, frame = command.get("id"), command.get("frame", "next")
        if not isinstance(obj_id, int) or not 1 <= obj_id <= 254:
            return {"ok": False, "error": "id: must be 1..254", "field": "id"}
        if frame != "next" and frame not in stream.recent:
            return {"ok": False, "error": f"frame: frame {frame} is not kept", "field": "frame"}
        h, w = stream.height, stream.width
        points, labels = command.get("points") or [], command.get("labels") or []
        if command.get("correct"):
            if obj_id not in stream.objects:
                return {"ok": False, "error": f"id: object {obj_id} is not tracked", "field": "id"}
            mask = stream.objects[obj_id].copy()
            for (x, y), label in zip(points, labels, strict=True):
                disk = cv2.circle(np.zeros((h, w), np.uint8), (int(x), int(y)), CLICK_RADIUS, 1, -1).astype(bool)
                mask = mask | disk if label else mask & ~disk
            stream.objects[obj_id] = mask
            return {"ok": True, "id": obj_id, "frame": stream.recent[-1] if frame == "next" else frame,
                    "area": int(mask.sum()), "corrected": True,
                    "rle": {"size": [h, w], "counts": encode_rle_counts(mask)}}
        mask = np.zeros((h, w), np.uint8)
        if command.get("mask"):
            mask = (decode_png(base64.b64decode(command["mask"]), h * w) > 0).astype(np.uint8)
        elif command.get("box"):
            x0, y0, x1, y1 = (int(v) for v in command["box"])
            mask[min(y0, y1) : max(y0, y1), min(x0, x1) : max(x0, x1)] = 1
        elif command.get("polygon"):
            cv2.fillPoly(mask, [np.round(np.asarray(command["polygon"])).astype(np.int32)], 1)
        for (x, y), label in zip(points, labels, strict=True):
            if label and not command.get("box"):
                cv2.circle(mask, (int(x), int(y)), CLICK_RADIUS, 1, -1)
        if not mask.any():
            return {"ok": False, "error": "nothing to add", "field": "box"}
        stream.pending[obj_id] = mask.astype(bool)
        return {"ok": True, "id": obj_id, "frame": stream.recent[-1] if frame == "next" else frame,
                "area": int(mask.sum())}
