"""The WebSocket viewers of one view: the newest frame, and one sender per viewer that sends it when the
viewer can take it (docs/view.md, "HTTP API" for the messages).

Flow control: a viewer acknowledges every frame (`{"type": "ack"}`) and is sent a new one only while
fewer than MAX_IN_FLIGHT are unacknowledged, so what waits in socket buffers on the way is bounded
whatever the kernel's buffers: a slow viewer sees the present with fewer frames, never the past with all
of them; one that acknowledges nothing for `send_timeout_s` is disconnected. Used from the event loop
thread only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from edge_vos.view.feed import LiveFrame

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096  # viewers only send acknowledgements and pings
MAX_TEXT_BACKLOG = 8  # state and pong messages kept per viewer; older ones are dropped
MAX_IN_FLIGHT = 2


@dataclass(eq=False)  # identity semantics: viewers live in a set
class Viewer:
    ws: web.WebSocketResponse
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
        viewer = Viewer(ws, joined_at_frame=self.frames_in)
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
        for viewer in list(self.connected):
            await viewer.ws.close(code=1001, message=b"the view is stopping")

    def _on_message(self, viewer: Viewer, text: str) -> None:
        """`{"type": "ack"}` per frame; `{"type": "ping", "t": <their clock, ms>}` for the latency figure's
        clock offset; anything else is ignored."""
        try:
            message = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "ack":
            if viewer.unacked:
                viewer.unacked.popleft()
                viewer.wake.set()
        elif message.get("type") == "ping" and isinstance(message.get("t"), (int, float)):
            viewer.texts.append(json.dumps({"type": "pong", "t": message["t"], "server_ms": time.time() * 1000}))
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
                    log.info("view: a viewer acknowledged no frame for %.0f s; disconnected", timeout)
                    await ws.close(code=1008, message=b"too slow")
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
                log.info("view: a viewer's socket took nothing for %.0f s; disconnected", timeout)
                await ws.close(code=1008, message=b"too slow")
                return
            except (ConnectionError, RuntimeError):  # the peer went away mid-send
                return
