"""The WebSocket viewers of one view: each stream's newest frame, and one sender per viewer that sends it the
frames of the streams it watches when it can take them (docs/view.md, "HTTP API" for the messages).

What a viewer receives is what it shows: every frame (as it can take them) of the streams it `watch`es, at
most one a second of the streams it wants `thumbs` of, nothing of the others; their states come as small text
messages. A viewer that says nothing watches the first stream, as a single-camera page always did, so a
page showing one camera of four is sent one camera's bytes.

Flow control: a viewer acknowledges every frame (`{"type": "ack"}`) and is sent a new one only while
fewer than MAX_IN_FLIGHT per stream it receives are unacknowledged, so what waits in socket buffers on the
way is bounded whatever the kernel's buffers: a slow viewer sees the present with fewer frames, never the
past with all of them; one that acknowledges nothing for `send_timeout_s`, or whose socket takes nothing
that long, is disconnected: its closing handshake gets CLOSE_TIMEOUT_S, then the connection is cut, and its
slot is free at once either way. Used from the event loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from edge_vos.ratelog import RateLimitedLog
from edge_vos.view.frames import LiveFrame

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096  # viewers only send acknowledgements, pings and what they watch
MAX_TEXT_BACKLOG = 8  # pong messages kept per viewer; older ones are dropped (states are kept per stream)
MAX_IN_FLIGHT = 2  # per stream a viewer receives
CLOSE_TIMEOUT_S = 2.0  # a viewer's closing handshake; a peer that reads nothing never completes it
THUMB_INTERVAL_S = 1.0  # a stream a viewer wants thumbnails of is sent at most one frame this often
MAX_WATCHED = 64  # stream names one viewer may list
MAX_NAME = 128  # characters of a stream name


@dataclass(eq=False)  # identity semantics: viewers live in a set
class Viewer:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    texts: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=MAX_TEXT_BACKLOG))
    states: dict[str | None, str] = field(default_factory=dict)  # the newest state text per stream, unsent
    watch: tuple[str, ...] | None = None  # every frame of these; None: of the first stream
    thumbs: tuple[str, ...] = ()  # one frame per THUMB_INTERVAL_S of these
    last_sent: dict[str, LiveFrame] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)
    unacked: collections.deque[float] = field(default_factory=collections.deque)  # send times of frames in flight
    sent: int = 0


def stream_names(value: Any) -> tuple[str, ...] | None:
    """A viewer's list of streams as names, or None when it is not one (not a list, too long, not names): the
    viewer's choice is then left as it was."""
    if not isinstance(value, list) or len(value) > MAX_WATCHED:
        return None
    if not all(isinstance(name, str) and 0 < len(name) <= MAX_NAME for name in value):
        return None
    return tuple(dict.fromkeys(value))


def query_names(value: str) -> list[str] | None:
    """`a,b` of a query parameter as a list (None: longer than any list of names)."""
    if len(value) > MAX_WATCHED * (MAX_NAME + 1):
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


class Viewers:
    def __init__(self, max_viewers: int, send_timeout_s: float,
                 first_stream: Callable[[], str | None] = lambda: None) -> None:
        self.max_viewers, self.send_timeout_s, self.first_stream = max_viewers, send_timeout_s, first_stream
        self.connected: set[Viewer] = set()
        self.latest: dict[str, LiveFrame] = {}  # each stream's newest frame
        self.frames_in = 0  # frames handed over by the feed (each viewer gets the newest when it can)
        self.dropped = 0  # viewers disconnected for being too slow
        self._drops = RateLimitedLog(log, "view: viewer disconnected")  # viewers choose how many there are

    @property
    def full(self) -> bool:
        return len(self.connected) >= self.max_viewers

    def publish(self, frame: LiveFrame) -> None:
        """A new frame replaces its stream's previous one; each sender picks up the newest when its viewer can."""
        self.latest[frame.stream] = frame
        self.frames_in += 1
        for viewer in self.connected:
            if frame.stream in self._wanted(viewer):
                viewer.wake.set()

    def broadcast_state(self, state: Mapping[str, Any]) -> None:
        """A stream's new state to every viewer (replacing one of the same stream it has not been sent yet)."""
        text = json.dumps({"type": "state", **state})
        for viewer in self.connected:
            viewer.states[state.get("stream")] = text
            viewer.wake.set()

    async def serve(self, request: web.Request, hello: Iterable[Mapping[str, Any]]) -> web.WebSocketResponse:
        """Runs one viewer's connection until it closes; `hello` are its first messages (each stream's
        state). `?watch=a,b&thumbs=c` chooses its streams from the start, as a `watch` message would."""
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_MESSAGE, heartbeat=20.0, writer_limit=64 * 1024)
        await ws.prepare(request)
        viewer = Viewer(ws, request.transport)
        watch, thumbs = request.query.get("watch"), request.query.get("thumbs")
        if watch is not None or thumbs is not None:
            self._choose(viewer, query_names(watch or ""), query_names(thumbs or ""))
        for state in hello:
            viewer.states[state.get("stream")] = json.dumps({"type": "state", **state})
        viewer.wake.set()
        self.connected.add(viewer)
        sender = asyncio.ensure_future(self._send_loop(viewer))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_message(viewer, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.connected.discard(viewer)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            log.debug("view: viewer left after %d frames", viewer.sent)
        return ws

    async def close_all(self) -> None:
        await asyncio.gather(*(self._close(viewer, 1001, b"the view is stopping") for viewer in list(self.connected)))

    async def _drop(self, viewer: Viewer, why: str) -> None:
        self.dropped += 1
        self._drops.log("%s for %.0f s", why, self.send_timeout_s)
        await self._close(viewer, 1008, b"too slow")

    async def _close(self, viewer: Viewer, code: int, message: bytes) -> None:
        """Frees the viewer's slot at once; the closing handshake gets CLOSE_TIMEOUT_S, then the connection is
        cut (a peer that reads nothing would hold `ws.close()` forever)."""
        self.connected.discard(viewer)
        try:
            await asyncio.wait_for(viewer.ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            if viewer.transport is not None:
                viewer.transport.abort()

    def _on_message(self, viewer: Viewer, text: str) -> None:
        """`{"type": "ack"}` per frame; `{"type": "ping", "t": <their clock, ms>}` for the latency figure's
        clock offset; `{"type": "watch", "watch": [...], "thumbs": [...]}` what it receives; anything else
        (and a watch message that is not one) is ignored."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "ack":
            if viewer.unacked:
                viewer.unacked.popleft()
                viewer.wake.set()
        elif kind == "ping" and (t := _finite(message.get("t"))) is not None:
            viewer.texts.append(json.dumps({"type": "pong", "t": t, "server_ms": time.time() * 1000}))
            viewer.wake.set()
        elif kind == "watch":
            self._choose(viewer, message.get("watch", []), message.get("thumbs", []))

    def _choose(self, viewer: Viewer, watch: Any, thumbs: Any) -> None:
        full, small = stream_names(watch), stream_names(thumbs)
        if full is None or small is None:
            return
        viewer.watch, viewer.thumbs = full, tuple(name for name in small if name not in full)
        viewer.wake.set()

    def _wanted(self, viewer: Viewer) -> tuple[str, ...]:
        if viewer.watch is None:
            first = self.first_stream()
            return (first,) if first is not None else ()
        return viewer.watch + viewer.thumbs

    def _next_frame(self, viewer: Viewer, now: float) -> LiveFrame | None:
        """The newest unsent frame of the stream the viewer was sent least recently (thumbnails when due)."""
        best: LiveFrame | None = None
        for name in self._wanted(viewer):
            frame = self.latest.get(name)
            if frame is None or frame is viewer.last_sent.get(name):
                continue
            sent_at = viewer.sent_at.get(name, 0.0)
            if name in viewer.thumbs and now - sent_at < THUMB_INTERVAL_S:
                continue
            if best is None or sent_at < viewer.sent_at.get(best.stream, 0.0):
                best = frame
        return best

    async def _send_loop(self, viewer: Viewer) -> None:
        ws = viewer.ws
        timeout = self.send_timeout_s
        while not ws.closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(viewer.wake.wait(), min(THUMB_INTERVAL_S, timeout))
            viewer.wake.clear()
            try:
                if viewer.unacked and time.monotonic() - viewer.unacked[0] > timeout:
                    await self._drop(viewer, "it acknowledged no frame")
                    return
                while viewer.states:
                    state = viewer.states.pop(next(iter(viewer.states)))
                    await asyncio.wait_for(ws.send_str(state), timeout)
                while viewer.texts:
                    await asyncio.wait_for(ws.send_str(viewer.texts.popleft()), timeout)
                in_flight = MAX_IN_FLIGHT * max(1, sum(name in self.latest for name in self._wanted(viewer)))
                while len(viewer.unacked) < in_flight:
                    now = time.monotonic()
                    frame = self._next_frame(viewer, now)
                    if frame is None:
                        break
                    viewer.last_sent[frame.stream] = frame
                    viewer.sent_at[frame.stream] = now
                    viewer.unacked.append(now)
                    await asyncio.wait_for(ws.send_bytes(frame.packet), timeout)
                    viewer.sent += 1
            except asyncio.TimeoutError:
                await self._drop(viewer, "its socket took nothing")
                return
            except (ConnectionError, RuntimeError):  # the peer went away mid-send
                return


def _finite(value: object) -> float | int | None:
    """A ping's `t` as it may be echoed: a finite number (JSON has no NaN or Infinity), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:  # an integer beyond any float
        return None
