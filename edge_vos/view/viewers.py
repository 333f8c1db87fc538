"""The WebSocket viewers of one view: the newest frame, and one sender per viewer that sends it when the
viewer can take it (docs/view.md, "HTTP API" for the messages).

Flow control: a viewer acknowledges every frame (`{"type": "ack"}`) and is sent a new one only while
fewer than MAX_IN_FLIGHT are unacknowledged, so what waits in socket buffers on the way is bounded
whatever the kernel's buffers: a slow viewer sees the present with fewer frames, never the past with all
of them; one that acknowledges nothing for `send_timeout_s`, or whose socket takes nothing that long, is
disconnected: its closing handshake gets CLOSE_TIMEOUT_S, then the connection is cut, and its slot is free at
once either way. Used from the event loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from edge_vos.ratelog import RateLimitedLog
from edge_vos.view.feed import LiveFrame

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096  # viewers only send acknowledgements and pings
MAX_TEXT_BACKLOG = 8  # state and pong messages kept per viewer; older ones are dropped
MAX_IN_FLIGHT = 2
CLOSE_TIMEOUT_S = 2.0  # a viewer's closing handshake; a peer that reads nothing never completes it


@dataclass(eq=False)  # identity semantics: viewers live in a set
class Viewer:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    texts: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=MAX_TEXT_BACKLOG))
    last_frame: LiveFrame | None = None
    unacked: collections.deque[float] = field(default_factory=collections.deque)  # send times of frames in flight
    sent: int = 0
    joined_at_frame: int = 0


class Viewers:
    def __init__(self, max_viewers: int, send_timeout_s: float) -> None:
        self.max_viewers, self.send_timeout_s = max_viewers, send_timeout_s
        self.connected: set[Viewer] = set()
        self.latest: LiveFrame | None = None
        self.frames_in = 0  # frames handed over by the feed (each viewer gets the newest when it can)
        self.dropped = 0  # viewers disconnected for being too slow
        self._drops = RateLimitedLog(log, "view: viewer disconnected")  # viewers choose how many there are

    @property
    def full(self) -> bool:
        return len(self.connected) >= self.max_viewers

    def publish(self, frame: LiveFrame) -> None:
        """A new frame replaces the previous one; each sender picks up the newest when its viewer can."""
        self.latest = frame
        self.frames_in += 1
        for viewer in self.connected:
            viewer.wake.set()

    def broadcast(self, text: str) -> None:
        for viewer in self.connected:
            viewer.texts.append(text)
            viewer.wake.set()

    async def serve(self, request: web.Request, hello: str) -> web.WebSocketResponse:
        """Runs one viewer's connection until it closes; `hello` is its first message (the state)."""
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_MESSAGE, heartbeat=20.0, writer_limit=64 * 1024)
        await ws.prepare(request)
        viewer = Viewer(ws, request.transport, joined_at_frame=self.frames_in)
        viewer.texts.append(hello)
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
            log.debug("view: viewer left after %d frames (%d skipped while it was busy)", viewer.sent,
                      self.frames_in - viewer.joined_at_frame - viewer.sent)
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
        clock offset; anything else is ignored."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "ack":
            if viewer.unacked:
                viewer.unacked.popleft()
                viewer.wake.set()
        elif message.get("type") == "ping" and (t := _finite(message.get("t"))) is not None:
            viewer.texts.append(json.dumps({"type": "pong", "t": t, "server_ms": time.time() * 1000}))
            viewer.wake.set()

    async def _send_loop(self, viewer: Viewer) -> None:
        ws = viewer.ws
        timeout = self.send_timeout_s
        while not ws.closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(viewer.wake.wait(), min(1.0, timeout))
            viewer.wake.clear()
            try:
                if viewer.unacked and time.monotonic() - viewer.unacked[0] > timeout:
                    await self._drop(viewer, "it acknowledged no frame")
                    return
                while viewer.texts:
                    await asyncio.wait_for(ws.send_str(viewer.texts.popleft()), timeout)
                frame = self.latest
                if frame is not None and frame is not viewer.last_frame and len(viewer.unacked) < MAX_IN_FLIGHT:
                    viewer.last_frame = frame
                    viewer.unacked.append(time.monotonic())
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
