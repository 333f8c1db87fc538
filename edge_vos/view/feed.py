"""The view's subscriber: a thread that owns a SUB socket on everything the service publishes (masks,
previews, status; pyzmq's rule: one socket, one thread).

`Feed` pairs each mask message with its preview JPEG and hands on only the newest frame: a callback that
overwrites a single slot, so nothing queues behind a slow browser. It also derives the stream's state
(streaming / reconnecting / ended) and frame rate. `LiveFrame` and `pack_frame` define what a viewer
receives (docs/view.md). Only the public protocol is used (edge_vos.client's wire format), so the same
code serves the page inside the service (`edge-vos run --view`) and on another machine (`edge-vos view`).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from edge_vos.wire.curve import make_client_socket
from edge_vos.wire.protocol import ProtocolError, decode_labels, encode_labels, loads_header, validate_mask_header

log = logging.getLogger(__name__)

# Stream states shown by the page (docs/view.md). Source states of the service's `status` topic map onto
# them; "reconnecting" also covers a service that stopped sending (ZeroMQ reconnects by itself).
STATES = ("connecting", "streaming", "reconnecting", "ended")
_SOURCE_STATES = {"connecting": "connecting", "streaming": "streaming", "reconnecting": "reconnecting",
                  "ended": "ended", "failed": "ended"}
# No frame for this long (or for 4 frame intervals, whichever is longer) = the stream stalled.
MIN_STALL_S = 3.0
# A mask whose preview did not follow within this time is shown without a new image.
PREVIEW_WAIT_S = 0.05
IDLE_POLL_S = 0.5


@dataclass(frozen=True)
class ClientKeys:
    """CURVE key files for the view's sockets (empty: plain TCP)."""

    server_public_key: str = ""
    client_secret_key: str = ""


NO_KEYS = ClientKeys()


class LiveFrame:
    """One frame as viewers receive it. `packet` (the binary WebSocket message, docs/view.md) is built on
    first use, by the server's thread and once for all viewers: with nobody watching it costs nothing."""

    def __init__(self, seq: int, header: dict[str, Any], jpeg: bytes, labels: bytes | Callable[[], bytes]) -> None:
        self.seq, self.header, self.jpeg = seq, header, jpeg
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


def same_host(endpoint: str) -> bool:
    """True when the endpoint is on this machine, so the service's monotonic timestamps are comparable."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "*", "::") or host.startswith("127.")


def connectable(endpoint: str) -> str:
    """A bound endpoint as a client can connect to it (`tcp://0.0.0.0:5555` -> `tcp://127.0.0.1:5555`)."""
    for wildcard, local in (("tcp://0.0.0.0:", "tcp://127.0.0.1:"), ("tcp://*:", "tcp://127.0.0.1:"),
                            ("tcp://[::]:", "tcp://[::1]:")):
        if endpoint.startswith(wildcard):
            return local + endpoint[len(wildcard) :]
    return endpoint


@dataclass
class _Pending:
    header: dict[str, Any]
    payload: bytes
    received_mono_ns: int
    age_ms: float


@dataclass
class _Clock:
    """Capture-to-view age of a frame: monotonic clocks on one host, wall clocks across hosts."""

    local: bool

    def age_ms(self, header: dict[str, Any]) -> float:
        if self.local:
            return (time.monotonic_ns() - int(header["t_capture_ns"])) / 1e6
        return (time.time_ns() - int(header["t_capture_unix_ns"])) / 1e6


@dataclass
class FeedCounters:
    frames: int = 0  # frames handed to viewers
    masks: int = 0
    previews: int = 0
    without_preview: int = 0
    gaps: int = 0  # mask messages lost between the service and the view (seq gaps)
    invalid: int = 0
    objects: list[dict[str, Any]] = field(default_factory=list)


class Feed(threading.Thread):
    """SUB socket on the service's stream -> the newest LiveFrame (`on_frame`) and state changes (`on_state`)."""

    def __init__(
        self,
        endpoint: str,
        on_frame: Callable[[LiveFrame], None],
        on_state: Callable[[dict[str, Any]], None],
        stop: threading.Event,
        keys: ClientKeys = NO_KEYS,
        context: zmq.Context | None = None,
    ) -> None:
        super().__init__(name="view-feed", daemon=True)
        self.endpoint = connectable(endpoint)
        self.on_frame, self.on_state, self.stop_event, self.keys = on_frame, on_state, stop, keys
        self.context = context or zmq.Context.instance()
        self.clock = _Clock(same_host(self.endpoint))
        self.counters = FeedCounters()
        self.error: BaseException | None = None
        self._pending: _Pending | None = None
        self._arrivals: collections.deque[float] = collections.deque(maxlen=30)
        self._last_header: dict[str, Any] | None = None
        self._last_mask_s = 0.0
        self._source: tuple[str, str, float] | None = None  # (state, detail, when) from the status topic
        self._last_seq: int | None = None
        self._last_preview_s = 0.0
        self._age_ms = 0.0
        self.snapshot: dict[str, Any] = self._state_dict("connecting", f"waiting for frames from {self.endpoint}")

    # ---- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        sock = self.context.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 64)
            make_client_socket(sock, self.keys.server_public_key or None, self.keys.client_secret_key or None)
            sock.setsockopt(zmq.SUBSCRIBE, b"")  # masks, previews and status, whatever their topic names
            sock.connect(self.endpoint)
            log.info("view: subscribed to %s", self.endpoint)
            while not self.stop_event.is_set():
                # Short waits only while a mask waits for its preview; otherwise wake for messages (and
                # twice a second to notice a stalled stream), so an idle view costs next to nothing.
                if sock.poll(int((PREVIEW_WAIT_S if self._pending is not None else IDLE_POLL_S) * 1000)):
                    self._receive(sock.recv_multipart())
                    # Everything queued is handled before anything is shown: only the newest frame matters.
                    while True:
                        try:
                            self._receive(sock.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                self._flush_pending_if_stale()
                self._update_state()
        except zmq.ContextTerminated:  # the view is stopping
            pass
        except BaseException as exc:  # reported by the server's state; the view keeps serving the page
            self.error = exc
            log.exception("view: the feed stopped")
            self._set_state("ended", f"view feed failed: {exc}")
        finally:
            sock.close(linger=0)

    def _receive(self, parts: list[bytes]) -> None:
        """Routes one message like `edge_vos.client.decode_message`, but leaves the payloads encoded: the
        view forwards the service's PNG and JPEG to browsers as they are."""
        try:
            if len(parts) != 3:
                raise ProtocolError(f"expected 3 frames, got {len(parts)}")
            header = loads_header(parts[1])
            kind = header.get("kind")
            if kind == "mask":
                validate_mask_header(header)
                self._on_mask(header, parts[2])
            elif kind == "preview":
                self._on_preview(header, parts[2])
            elif kind == "status":
                self._source = (str(header.get("state", "")), str(header.get("detail", ""))[:200], time.monotonic())
        except (ProtocolError, ValueError, KeyError, TypeError) as exc:
            self.counters.invalid += 1
            if self.counters.invalid <= 5 or self.counters.invalid % 1000 == 0:
                log.warning("view: ignored a message that does not follow the protocol (%d so far): %s",
                            self.counters.invalid, exc)

    def _on_mask(self, header: dict[str, Any], payload: bytes) -> None:
        now = time.monotonic()
        c = self.counters
        c.masks += 1
        seq = int(header["seq"])
        if self._last_seq is not None:
            if seq < self._last_seq:  # the service restarted: its numbering starts again
                self._arrivals.clear()
            elif seq > self._last_seq + 1:
                c.gaps += seq - self._last_seq - 1
        self._last_seq = seq
        self._arrivals.append(now)
        self._last_mask_s = now
        if self._pending is not None:  # its preview never came (previews off, every Nth frame, or lost)
            self._emit(self._pending, b"")
        self._pending = _Pending(header, payload, time.monotonic_ns(), self.clock.age_ms(header))
        if now - self._last_preview_s > 5.0:  # this service sends no previews: do not wait for one
            self._emit(self._pending, b"")

    def _on_preview(self, header: dict[str, Any], jpeg: bytes) -> None:
        self.counters.previews += 1
        self._last_preview_s = time.monotonic()
        pending = self._pending
        if pending is not None and header.get("seq") == pending.header["seq"] and jpeg[:2] == b"\xff\xd8":
            self._emit(pending, jpeg)

    def _flush_pending_if_stale(self) -> None:
        pending = self._pending
        if pending is not None and time.monotonic_ns() - pending.received_mono_ns > PREVIEW_WAIT_S * 1e9:
            self._emit(pending, b"")

    def _emit(self, pending: _Pending, jpeg: bytes) -> None:
        self._pending = None
        header = pending.header
        labels_png: bytes | Callable[[], bytes] = pending.payload
        if header["encoding"] != "png":  # raw or RLE: browsers decode PNGs natively; re-encode once, if watched
            labels_png = functools.partial(_to_png, header, pending.payload)
        if not jpeg:
            self.counters.without_preview += 1
        self.counters.frames += 1
        self.counters.objects = list(header["objects"])
        self._last_header = header
        self._age_ms = pending.age_ms
        fps = self.fps()
        view = {"age_ms": round(pending.age_ms, 1), "t_capture_ms": round(time.time() * 1000 - pending.age_ms, 1),
                "fps": round(fps, 2), "preview": bool(jpeg), "gaps": self.counters.gaps}
        self._update_state()
        packet_header = {"type": "frame", **{k: header[k] for k in _FRAME_FIELDS if k in header}, "view": view}
        self.on_frame(LiveFrame(int(header["seq"]), packet_header, jpeg, labels_png))

    # ---- state -----------------------------------------------------------------------------------

    def fps(self) -> float:
        a = self._arrivals
        return (len(a) - 1) / (a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else 0.0

    def _stall_s(self) -> float:
        a = self._arrivals
        interval = (a[-1] - a[0]) / (len(a) - 1) if len(a) > 1 else 0.0
        return max(MIN_STALL_S, 4 * interval)

    def _update_state(self) -> None:
        now = time.monotonic()
        source = self._source
        source_newer = source is not None and source[2] >= self._last_mask_s
        if source is not None and source_newer and source[0] in _SOURCE_STATES and source[0] != "streaming":
            state, detail = _SOURCE_STATES[source[0]], f"source {source[0]}" + (f": {source[1]}" if source[1] else "")
        elif not self._last_mask_s:
            state, detail = "connecting", f"waiting for frames from {self.endpoint}"
        elif now - self._last_mask_s > self._stall_s():
            state, detail = "reconnecting", f"no frames from the service for {now - self._last_mask_s:.0f} s"
        else:
            state, detail = "streaming", ""
        self._set_state(state, detail)

    def _set_state(self, state: str, detail: str) -> None:
        old = self.snapshot
        new = self._state_dict(state, detail)
        self.snapshot = new
        if old["state"] != state or old["detail"] != detail:
            self.on_state(new)

    def _state_dict(self, state: str, detail: str) -> dict[str, Any]:
        h = self._last_header
        return {
            "state": state, "detail": detail, "endpoint": self.endpoint,
            "stream": h["stream"] if h else None,
            "seq": h["seq"] if h else None,
            "capture_seq": h["capture_seq"] if h else None,
            "frame_size": [h["width"], h["height"]] if h else None,
            "objects": list(h["objects"]) if h else [],
            "fps": round(self.fps(), 2),
            "latency_ms": round(self._age_ms, 1),
            "preview": self.counters.previews > 0,
            "gaps": self.counters.gaps,
        }


def _to_png(header: dict[str, Any], payload: bytes) -> bytes:
    return encode_labels(decode_labels(header, payload), "png")


_FRAME_FIELDS = ("stream", "seq", "frame", "capture_seq", "width", "height", "objects", "timings_ms")
