"""The view's subscriber: a thread that owns a SUB socket on everything the service publishes (masks,
previews, status of every stream; pyzmq's rule: one socket, one thread).

`Feed` routes each message to its stream by the header's `stream` (whatever the topic: `masks` or
`masks/<id>`), and each stream (`streams.StreamFeed`) pairs its mask messages with their previews and hands
on only its newest frame: a callback that overwrites one slot per stream, so nothing queues behind a slow
browser. Only the public protocol is used (edge_vos.wire), so the same code serves the page inside the
service (`edge-vos run --view`) and on another machine (`edge-vos view`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from edge_vos.ratelog import RateLimitedLog
from edge_vos.view.frames import LiveFrame as LiveFrame
from edge_vos.view.frames import pack_frame as pack_frame
from edge_vos.view.frames import unpack_frame as unpack_frame
from edge_vos.view.streams import PREVIEW_WAIT_S, STATES, Clock, FeedCounters, StreamFeed
from edge_vos.wire.curve import make_client_socket
from edge_vos.wire.protocol import ProtocolError, loads_header, validate_mask_header

log = logging.getLogger(__name__)

__all__ = ["NO_KEYS", "STATES", "ClientKeys", "Feed", "FeedCounters", "LiveFrame", "pack_frame", "unpack_frame"]

IDLE_POLL_S = 0.5
# Streams the view follows at most; a publisher naming more is ignored beyond them (each costs a slot).
MAX_STREAMS = 64
MAX_STREAM_ID = 128  # characters


@dataclass(frozen=True)
class ClientKeys:
    """CURVE key files for the view's sockets (empty: plain TCP)."""

    server_public_key: str = ""
    client_secret_key: str = ""


NO_KEYS = ClientKeys()


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


class Feed(threading.Thread):
    """SUB socket on the service's streams -> each stream's newest LiveFrame (`on_frame`) and its state
    changes (`on_state`, a state dict naming its `stream`)."""

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
        self.clock = Clock(same_host(self.endpoint))
        self.counters = FeedCounters()  # over every stream
        self.error: BaseException | None = None
        self._streams: dict[str, StreamFeed] = {}  # the feed thread's; others read `streams`
        self.streams: tuple[StreamFeed, ...] = ()  # in the order the service first named them; replaced whole
        self._waiting = self._placeholder("connecting", f"waiting for frames from {self.endpoint}")
        self._ignored = RateLimitedLog(log, "view: ignored", level=logging.WARNING)

    # ---- what other threads read ---------------------------------------------------------------------

    @property
    def snapshot(self) -> dict[str, Any]:
        """The first stream's state (the only one's for a single camera); before any, the feed's own."""
        streams = self.streams
        return streams[0].snapshot if streams else self._waiting

    def snapshots(self) -> list[dict[str, Any]]:
        return [stream.snapshot for stream in self.streams]

    def stream(self, stream_id: str) -> StreamFeed | None:
        return next((s for s in self.streams if s.id == stream_id), None)

    # ---- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        sock = self.context.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 64 * 4)
            make_client_socket(sock, self.keys.server_public_key or None, self.keys.client_secret_key or None)
            sock.setsockopt(zmq.SUBSCRIBE, b"")  # masks, previews and status of every stream, whatever the topics
            sock.connect(self.endpoint)
            log.info("view: subscribed to %s", self.endpoint)
            while not self.stop_event.is_set():
                # Short waits only while a mask waits for its preview; otherwise wake for messages (and
                # twice a second to notice a stalled stream), so an idle view costs next to nothing.
                waiting = any(s.waiting_for_preview for s in self._streams.values())
                if sock.poll(int((PREVIEW_WAIT_S if waiting else IDLE_POLL_S) * 1000)):
                    self._receive(sock.recv_multipart())
                    # Everything queued is handled before anything is shown: only the newest frame matters.
                    while True:
                        try:
                            self._receive(sock.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                for stream in self._streams.values():
                    stream.flush_if_stale()
                    stream.update_state()
        except zmq.ContextTerminated:  # the view is stopping
            pass
        except BaseException as exc:  # reported by the server's state; the view keeps serving the page
            self.error = exc
            log.exception("view: the feed stopped")
            self._fail(f"view feed failed: {exc}")
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
            if kind not in ("mask", "preview", "status"):
                return  # a kind this view does not know (clients ignore what they do not know)
            if kind == "mask":
                validate_mask_header(header)
            stream = self._stream_for(header.get("stream"))
            if stream is None:
                return
            if kind == "mask":
                stream.on_mask(header, parts[2])
            elif kind == "preview":
                stream.on_preview(header, parts[2])
            else:
                stream.on_status(header)
        except (ProtocolError, ValueError, KeyError, TypeError) as exc:
            self.counters.invalid += 1
            self._ignored.log("a message that does not follow the protocol (%d so far): %s", self.counters.invalid,
                              str(exc)[:200])

    def _stream_for(self, stream_id: Any) -> StreamFeed | None:
        stream = self._streams.get(stream_id) if isinstance(stream_id, str) else None
        if stream is not None:
            return stream
        if not isinstance(stream_id, str) or not 0 < len(stream_id) <= MAX_STREAM_ID:
            raise ProtocolError(f"the header's stream must be a name of 1..{MAX_STREAM_ID} characters, "
                                f"got {str(stream_id)[:40]!r}")
        if len(self._streams) >= MAX_STREAMS:
            self._ignored.log("stream %r: the view follows at most %d streams", stream_id[:40], MAX_STREAMS)
            return None
        stream = StreamFeed(stream_id, self.endpoint, self.clock, self.counters, self.on_frame, self.on_state)
        self._streams[stream_id] = stream
        self.streams = (*self.streams, stream)
        log.info("view: stream %r on %s", stream_id, self.endpoint)
        self.on_state(stream.snapshot)
        return stream

    def _fail(self, detail: str) -> None:
        if not self._streams:
            self._waiting = self._placeholder("ended", detail)
            self.on_state(self._waiting)
        for stream in self._streams.values():
            stream.set_state("ended", detail)

    def _placeholder(self, state: str, detail: str) -> dict[str, Any]:
        """The state before any stream was named: no frame yet."""
        return {"state": state, "detail": detail, "endpoint": self.endpoint, "stream": None, "seq": None,
                "capture_seq": None, "frame_size": None, "objects": [], "fps": 0.0, "latency_ms": 0.0,
                "preview": False, "gaps": 0}
