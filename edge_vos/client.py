"""Clients of a running edge-vos service: a mask subscriber and a command client.

    with Subscriber("tcp://127.0.0.1:5555") as sub:
        for result in sub:                       # decoded MaskResult objects
            print(result.seq, result.object_ids, result.labels.shape)

    with CommandClient("tcp://127.0.0.1:5556") as ctl:      # stream="front": one camera of several
        ctl.add_box(3, (40, 30, 120, 110))       # the service makes the mask inside the box
        ctl.add_prompt(4, points=[(60, 80), (90, 80)], labels=[1, 0])   # clicks: object, background
        fixed = ctl.correct(4, points=[(70, 95)], labels=[0])   # object 4 painted too far: a negative click
        mask = correction_mask(fixed)                           # its corrected mask on that frame
        print(ctl.stats())

Only pyzmq, numpy, Pillow and pycocotools are imported (no torch). Every socket belongs to the object
that made it; use one object per thread. Nothing received is unpickled.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge_vos.wire.curve import make_client_socket
from edge_vos.wire.protocol import (
    ProtocolError,
    decode_labels,
    decode_rle,
    encode_rle,
    loads_header,
    stream_topic,
    validate_mask_header,
)

log = logging.getLogger(__name__)


class ServiceUnavailable(TimeoutError):
    """The service did not answer after every retry."""


class CommandFailed(RuntimeError):
    """The service answered with ok = false; `reply` holds its answer (error, field)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        super().__init__(reply.get("error", "command failed"))


@dataclass
class MaskResult:
    header: dict[str, Any]
    labels: np.ndarray  # uint8 [H,W], value = object id
    received_ns: int  # time.monotonic_ns() at receipt

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    @property
    def object_ids(self) -> list[int]:
        return [int(o["id"]) for o in self.header["objects"]]

    @property
    def latency_ms(self) -> float:
        """Capture-to-receipt latency; meaningful on the service's host (monotonic clocks)."""
        return (self.received_ns - int(self.header["t_capture_ns"])) / 1e6


@dataclass
class Preview:
    header: dict[str, Any]
    image: np.ndarray  # RGB uint8


@dataclass
class Status:
    header: dict[str, Any]


Message = MaskResult | Preview | Status


def decode_message(parts: Sequence[bytes]) -> Message:
    """One multipart message of the service (docs/protocol.md) -> a decoded object."""
    if len(parts) != 3:
        raise ProtocolError(f"expected 3 frames [topic, header, payload], got {len(parts)}")
    header = loads_header(parts[1])
    kind = header.get("kind")
    if kind == "mask":
        validate_mask_header(header)
        return MaskResult(header, decode_labels(header, parts[2]), time.monotonic_ns())
    if kind == "preview":
        import cv2

        image = cv2.imdecode(np.frombuffer(parts[2], np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ProtocolError("preview is not a decodable JPEG")
        return Preview(header, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if kind == "status":
        return Status(header)
    raise ProtocolError(f"unknown message kind {kind!r}")


class Subscriber:
    """SUB socket on the service's mask stream.

    `stream`: one camera of a service that runs several (subscribes to `masks/<stream>` and the like, and
    drops the messages of a stream whose id merely starts with it); None: every stream.
    latest_only=True drains whatever is queued on every receive and returns the newest message, so a
    slow consumer sees the present instead of a growing backlog (ZeroMQ's CONFLATE cannot do this for
    multipart messages). Gaps are visible in `seq` (per stream; `gaps` counts them all).
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        topics: Sequence[str] = ("masks",),
        *,
        latest_only: bool = False,
        timeout_s: float | None = 10.0,
        hwm: int = 16,
        server_public_key: str | Path | None = None,
        client_secret_key: str | Path | None = None,
        context: zmq.Context | None = None,
        stream: str | None = None,
    ) -> None:
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.stream = stream
        if stream is not None:
            topics = [stream_topic(topic, stream) for topic in topics]
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        make_client_socket(self.socket, server_public_key, client_secret_key)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.socket.connect(endpoint)
        self.latest_only = latest_only
        self.timeout_s = timeout_s
        self.gaps = 0
        self._last_seq: dict[str, int] = {}  # per stream

    def recv(self, timeout_s: float | None = -1.0) -> Message | None:
        """The next message, or None after `timeout_s` (default: the subscriber's timeout; None = forever)."""
        timeout = self.timeout_s if timeout_s == -1.0 else timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.socket.poll(None if left is None else int(left * 1000)):
                return None
            parts = self.socket.recv_multipart()
            if self.latest_only:
                while True:
                    try:
                        parts = self.socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            message = decode_message(parts)
            stream = str(message.header.get("stream", ""))
            if self.stream is None or stream == self.stream:
                break
        if isinstance(message, MaskResult):
            last = self._last_seq.get(stream)
            if last is not None and message.seq > last + 1:
                self.gaps += message.seq - last - 1
            self._last_seq[stream] = message.seq
        return message

    def __iter__(self) -> Iterator[MaskResult]:
        """Mask results until the timeout passes without one."""
        while True:
            message = self.recv()
            if message is None:
                return
            if isinstance(message, MaskResult):
                yield message

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CommandClient:
    """JSON commands with a timeout and retries ("Lazy Pirate": a REQ socket that is thrown away and
    reconnected when a reply does not come, so a restarted service never leaves the client stuck).
    `stream`: the camera every command is for (required by a service that runs several); None: none named."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5556",
        *,
        timeout_s: float = 3.0,
        retries: int = 3,
        server_public_key: str | Path | None = None,
        client_secret_key: str | Path | None = None,
        context: zmq.Context | None = None,
        stream: str | None = None,
    ) -> None:
        self.endpoint, self.timeout_s, self.retries, self.stream = endpoint, timeout_s, retries, stream
        self._keys = (server_public_key, client_secret_key)
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._req_ids = itertools.count(1)
        self.socket = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        make_client_socket(sock, *self._keys)
        sock.connect(self.endpoint)
        return sock

    def request(self, command: dict[str, Any], *, check: bool = True) -> dict[str, Any]:
        """Sends a command, returns the reply; raises CommandFailed (check=True and ok false) or
        ServiceUnavailable (no reply after every retry). Do not retry non-idempotent commands blindly:
        an add that timed out may have been applied; the request id `req` lets you match replies."""
        command = {**command}
        command.setdefault("req", next(self._req_ids))
        if self.stream is not None:
            command.setdefault("stream", self.stream)
        body = json.dumps(command).encode()
        for attempt in range(self.retries + 1):
            self.socket.send(body)
            if self.socket.poll(int(self.timeout_s * 1000)):
                reply = json.loads(self.socket.recv())
                if check and not reply.get("ok"):
                    raise CommandFailed(reply)
                return reply
            log.warning("no reply from %s within %.1f s (attempt %d/%d)", self.endpoint, self.timeout_s,
                        attempt + 1, self.retries + 1)
            self.socket.close(linger=0)  # a REQ socket that lost its reply is stuck: replace it
            self.socket = self._connect()
        raise ServiceUnavailable(f"{self.endpoint} did not answer {command.get('cmd')!r} after "
                                 f"{self.retries + 1} tries")

    def send_raw(self, body: bytes) -> dict[str, Any]:
        """Sends arbitrary bytes (tests of hostile input); returns the parsed reply."""
        self.socket.send(body)
        if not self.socket.poll(int(self.timeout_s * 1000)):
            self.socket.close(linger=0)
            self.socket = self._connect()
            raise ServiceUnavailable("no reply")
        return json.loads(self.socket.recv())

    # ---- helpers ---------------------------------------------------------------------------------

    def add_mask(self, obj_id: int, mask: np.ndarray, *, frame: int | None = None, encoding: str = "png",
                 resize: bool = False) -> dict[str, Any]:
        """Adds (or re-prompts) object `obj_id` from a binary mask [H,W] at the frame's size."""
        command: dict[str, Any] = {"cmd": "add", "id": obj_id, "resize": resize}
        if frame is not None:
            command["frame"] = frame
        binary = (np.asarray(mask) != 0).astype(np.uint8)
        if encoding == "rle":
            rle = encode_rle(binary, [1])[0]
            command["rle"] = {"size": rle["size"], "counts": rle["counts"]}
        else:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(binary, mode="L").save(buf, format="PNG")
            command["mask"] = base64.b64encode(buf.getvalue()).decode("ascii")
        return self.request(command)

    def add_box(self, obj_id: int, box: Sequence[float], *, method: str | None = None, frame: int | None = None
                ) -> dict[str, Any]:
        """Adds object `obj_id` from a box [x0, y0, x1, y1]; the service makes the mask (`method`)."""
        return self.add_prompt(obj_id, box=box, method=method, frame=frame)

    def add_prompt(self, obj_id: int, *, box: Sequence[float] | None = None,
                   points: Sequence[Sequence[float]] | None = None, labels: Sequence[int] | None = None,
                   method: str | None = None, frame: int | None = None, correct: bool = False) -> dict[str, Any]:
        """Adds object `obj_id` from a box and/or clicks (`points` [[x, y], ...], `labels` 1 object /
        0 background, one per point); the service makes the mask by `method` (its default when None).
        `correct`: the clicks fix tracked object `obj_id`'s mask on that frame instead (`correct()`)."""
        command: dict[str, Any] = {"cmd": "add", "id": obj_id}
        if correct:
            command["correct"] = True
        if box is not None:
            command["box"] = [float(v) for v in box]
        if points is not None:
            command["points"] = [[float(x), float(y)] for x, y in points]
        if labels is not None:
            command["labels"] = [int(v) for v in labels]
        if method is not None:
            command["method"] = method
        if frame is not None:
            command["frame"] = frame
        return self.request(command)

    def correct(self, obj_id: int, points: Sequence[Sequence[float]], labels: Sequence[int], *,
                frame: int | None = None, box: Sequence[float] | None = None, method: str | None = None
                ) -> dict[str, Any]:
        """Corrects tracked object `obj_id` on a recent frame (`frame`: its capture_seq; None: the latest frame
        tracked) with clicks on its error: 1 on a missed part, 0 on a wrongly painted part. The service starts
        from the object's mask on that frame and tracks on from the corrected one; the reply's `rle` is that
        mask (`correction_mask(reply)`)."""
        return self.add_prompt(obj_id, box=box, points=points, labels=labels, method=method, frame=frame,
                               correct=True)

    def add_polygon(self, obj_id: int, points: Sequence[Sequence[float]], *, frame: int | None = None
                    ) -> dict[str, Any]:
        return self.request({"cmd": "add", "id": obj_id, "polygon": [[float(x), float(y)] for x, y in points],
                             **({"frame": frame} if frame is not None else {})})

    def remove(self, obj_id: int) -> dict[str, Any]:
        return self.request({"cmd": "remove", "id": obj_id})

    def reset(self) -> dict[str, Any]:
        return self.request({"cmd": "reset"})

    def stats(self) -> dict[str, Any]:
        """The stream's numbers (this client's stream, or the only one), or the service's with `streams`."""
        return self.request({"cmd": "stats"})["stats"]

    def streams(self) -> list[dict[str, Any]]:
        """Every stream the service runs: id, state, frame_size, objects, fps, frames_processed, max_objects."""
        return list(self.request({"cmd": "streams"})["streams"])

    def config(self) -> dict[str, Any]:
        return self.request({"cmd": "config"})["config"]

    def ping(self) -> bool:
        return bool(self.request({"cmd": "ping"}).get("pong"))

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._own_context:
            self.context.term()

    def __enter__(self) -> CommandClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def correction_mask(reply: dict[str, Any]) -> np.ndarray:
    """The corrected mask [H,W] bool a correction's reply carries (`CommandClient.correct`)."""
    if "rle" not in reply:
        raise ProtocolError("the reply carries no corrected mask (not a correction's reply?)")
    return decode_rle(reply["rle"])
