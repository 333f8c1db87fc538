"""The live web view: an aiohttp server (its own thread and event loop) serving the page, its JSON API and
a WebSocket of frames, fed by `feed.Feed` and steering the service through `feed.CommandWorker`.

    view = ViewServer(ViewConfig(listen="127.0.0.1:8080"), "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    view.start()          # binds, or raises ConfigError naming view.listen
    print(view.url)
    view.stop()

Routes (docs/view.md): `GET /` (the page), `GET /static/*`, `GET /api/state`, `POST /api/command`,
`GET /api/stream` (WebSocket). Nothing a browser or any other HTTP client does can hold up the service:
the view is an ordinary ZeroMQ subscriber (the publisher never waits for it), each viewer gets the newest
frame when its socket can take one and misses the rest, connections, viewers, bodies and waiting commands
are all capped, and every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import importlib.resources
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import zmq
from aiohttp import WSMsgType, web

from edge_vos.config import ConfigError
from edge_vos.view.config import ListenAddress, ViewConfig, is_loopback
from edge_vos.view.feed import NO_KEYS, Busy, ClientKeys, CommandWorker, Feed, LiveFrame

log = logging.getLogger(__name__)

STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
# The page loads only its own files; the frames arrive as blobs decoded in the page.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_WS_MESSAGE = 4096  # viewers only send pings
MAX_TEXT_BACKLOG = 8  # state and pong messages kept per viewer; older ones are dropped
# Frames sent to a viewer and not yet acknowledged by it ({"type": "ack"}): with at most this many in flight,
# what waits in socket buffers on the way is bounded whatever the kernel's buffers, so a slow viewer sees
# the present with fewer frames instead of the past with all of them.
MAX_IN_FLIGHT = 2


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _error(status: int, message: str) -> web.Response:
    return _json({"ok": False, "error": message}, status)


@dataclass(eq=False)  # identity semantics: viewers live in a set
class _Viewer:
    ws: web.WebSocketResponse
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    texts: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=MAX_TEXT_BACKLOG))
    last_frame: LiveFrame | None = None
    unacked: collections.deque[float] = field(default_factory=collections.deque)  # send times of frames in flight
    sent: int = 0
    joined_at_frame: int = 0


class _Refuse(asyncio.Protocol):
    """Answers a connection beyond `max_connections` with 503 and closes it, without parsing anything."""

    BODY = b'{"ok": false, "error": "too many connections"}'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(self.BODY), self.BODY))
        transport.close()


class _Counted(asyncio.Protocol):
    """Forwards a connection to aiohttp's handler and reports when it ends, so the connection cap counts
    connections from the moment they are accepted (aiohttp registers them a loop iteration later)."""

    def __init__(self, inner: asyncio.Protocol, on_lost: Callable[[], None]) -> None:
        self.inner, self.on_lost = inner, on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ViewServer:
    """The page, the API and the frame stream for one service. `start()` binds (raising ConfigError when the
    address is unusable) and starts three threads: HTTP (event loop), feed (SUB socket), commands (REQ)."""

    def __init__(self, config: ViewConfig, masks_endpoint: str, control_endpoint: str = "",
                 keys: ClientKeys = NO_KEYS, context: zmq.Context | None = None) -> None:
        if not config.enabled:
            raise ConfigError("view.listen", "is empty: the view is off")
        self.config = config
        self.address: ListenAddress = config.address
        self.masks_endpoint, self.control_endpoint, self.keys = masks_endpoint, control_endpoint, keys
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.token, self.token_generated = config.resolve_token()
        self.stop_event = threading.Event()
        self.feed = Feed(masks_endpoint, self._frame_from_feed, self._state_from_feed, self.stop_event, keys,
                         self.context)
        self.commands: CommandWorker | None = None
        if control_endpoint:
            self.commands = CommandWorker(control_endpoint, self.stop_event, timeout_s=config.command_timeout_s,
                                          queue_size=config.command_queue, stats_every_s=config.stats_every_s,
                                          keys=keys, context=self.context)
        self.port = self.address.port
        self.frames_in = 0  # frames the feed handed over (each viewer gets the newest of them)
        self.refused_connections = 0
        self.open_connections = 0  # accepted and not yet closed (the event loop thread's count)
        self._latest: LiveFrame | None = None
        self._viewers: set[_Viewer] = set()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._static = _load_static()
        self._command_slots: asyncio.Semaphore | None = None
        self._web_server: web.Server | None = None

    @classmethod
    def for_service(cls, config: ViewConfig, masks_endpoint: str, control_endpoint: str,
                    server_key_file: str = "") -> ViewServer:
        """The view inside `edge-vos run`: a client of the service's own sockets (CURVE with the service's
        key file as the server key unless view.server_public_key names another)."""
        keys = NO_KEYS
        if config.client_secret_key:
            keys = ClientKeys(config.server_public_key or server_key_file, config.client_secret_key)
        return cls(config, masks_endpoint, control_endpoint, keys)

    # ---- lifecycle (any thread) -------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = self.address.url_host if self.address.host not in ("0.0.0.0", "::") else socket.gethostname()
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._sock = self._bind()
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="view-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            self.stop()
            raise ConfigError("view.listen", f"the web view did not start: {self._error or 'timeout'}")
        self.feed.start()
        if self.commands is not None:
            self.commands.start()
        if self.token_generated:
            log.warning("view: listening on %s, beyond loopback, with a generated token; open %s?token=%s "
                        "(set view.token or view.token_file to choose one)", self.address, self.url, self.token)
        else:
            log.info("view: open %s%s", self.url, " (with ?token=...)" if self.token else "")

    def _bind(self) -> socket.socket:
        host, port = self.address.host, self.address.port
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as exc:
            raise ConfigError("view.listen", f"cannot listen on {self.address}: {exc}") from None
        if not is_loopback(host) and not self.token:
            sock.close()  # unreachable: resolve_token always gives one beyond loopback; kept as a guard
            raise ConfigError("view.token", "required to listen beyond loopback")
        return sock

    def stop(self, timeout: float = 5.0) -> None:
        """Closes every viewer and connection and stops the threads (each within `timeout`)."""
        self.stop_event.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        terminator = None
        if self._own_context:  # wakes the ZeroMQ threads from a blocking call (a command awaiting its reply)
            terminator = threading.Thread(target=self.context.term, name="view-zmq-term", daemon=True)
            terminator.start()
        for thread in (self._thread, self.feed, self.commands, terminator):
            if thread is not None and thread.is_alive():
                thread.join(timeout)
                if thread.is_alive():
                    log.error("view: %s thread did not stop within %.1f s", thread.name, timeout)
        if self._sock is not None:
            self._sock.close()

    # ---- from the feed thread --------------------------------------------------------------------

    def _frame_from_feed(self, frame: LiveFrame) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._publish, frame)

    def _state_from_feed(self, state: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._broadcast_text, json.dumps({"type": "state", **state}))

    # ---- the event loop thread -------------------------------------------------------------------

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = exc
            log.exception("view: the web server stopped")
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._command_slots = asyncio.Semaphore(self.config.command_queue)
        app = web.Application(middlewares=[self._guard], client_max_size=self.config.max_body_bytes)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/api/state", self._state)
        app.router.add_post("/api/command", self._command)
        app.router.add_get("/api/stream", self._stream)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=self.config.idle_timeout_s, max_line_size=8190,
                               max_field_size=8190)
        await runner.setup()
        web_server = runner.server
        assert web_server is not None
        self._web_server = web_server
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        # A deep accept queue: a flood of connections is accepted and refused quickly instead of waiting in
        # the kernel for SYN retries.
        server = await loop.create_server(self._protocol_factory(web_server), sock=self._sock, backlog=1024)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for viewer in list(self._viewers):
                await viewer.ws.close(code=1001, message=b"the view is stopping")
            await runner.cleanup()

    def _protocol_factory(self, web_server: web.Server) -> Callable[[], asyncio.Protocol]:
        def lost() -> None:
            self.open_connections -= 1

        def make() -> asyncio.Protocol:
            if self.open_connections >= self.config.max_connections:
                self.refused_connections += 1
                if self.refused_connections in (1, 10, 100) or self.refused_connections % 1000 == 0:
                    log.warning("view: %d connections refused so far (view.max_connections = %d)",
                                self.refused_connections, self.config.max_connections)
                return _Refuse()
            self.open_connections += 1
            return _Counted(web_server(), lost)

        return make

    def _publish(self, frame: LiveFrame) -> None:
        """A new frame replaces the previous one; each viewer's sender picks up the newest when it can."""
        self._latest = frame
        self.frames_in += 1
        for viewer in self._viewers:
            viewer.wake.set()

    def _broadcast_text(self, text: str) -> None:
        for viewer in self._viewers:
            viewer.texts.append(text)
            viewer.wake.set()

    # ---- security --------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        problem = self._check(request)
        if problem is not None:
            status, message = problem
            response: web.StreamResponse = _error(status, message)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # 404, 405, 413 ...: JSON like every other answer
                if exc.status < 400:
                    raise
                response = _error(exc.status, exc.reason or exc.text or "error")
        if not response.prepared:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    def _check(self, request: web.Request) -> tuple[int, str] | None:
        """(status, message) when the request must be refused: a Host that is not this server's (DNS
        rebinding) on a tokenless view, a missing or wrong token on the API, a cross-origin command or stream."""
        if not self.token and not _loopback_host(request.host):
            return 403, f"Host {request.host[:80]!r} is not a loopback name; this view serves loopback only"
        api = request.path.startswith("/api/")
        if api and self.token:
            given = request.query.get("token", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return 401, "missing or wrong token (Authorization: Bearer TOKEN, or ?token=TOKEN)"
        if request.method not in ("GET", "HEAD") or request.path == "/api/stream":
            if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
                return 403, "cross-origin requests are refused"
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
                return 403, f"cross-origin requests are refused (Origin {origin[:80]!r})"
        return None

    # ---- handlers --------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        return self._static_response("index.html")

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._static or name == "index.html":
            raise web.HTTPNotFound()
        return self._static_response(name)

    def _static_response(self, name: str) -> web.Response:
        return web.Response(body=self._static[name], content_type=STATIC_FILES[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _state(self, request: web.Request) -> web.Response:
        if self.commands is not None:
            self.commands.want_stats()  # answered from the last poll; the next one refreshes it
        return _json(self.state())

    def state(self) -> dict[str, Any]:
        """What GET /api/state answers (docs/view.md)."""
        state = dict(self.feed.snapshot)
        stats = self.commands.stats if self.commands is not None else None
        state.update({
            "control": self.commands is not None,
            "service_reachable": self.commands.reachable if self.commands is not None else None,
            "recent_frames": stats.get("recent_frames") if stats else None,
            "history": (self.commands.history or None) if self.commands is not None else None,
            "service_fps": stats.get("fps") if stats else None,
            "viewers": len(self._viewers),
            "token_required": bool(self.token),
        })
        return state

    async def _command(self, request: web.Request) -> web.Response:
        if self.commands is None:
            return _error(503, "this view has no control endpoint: commands are disabled")
        slots = self._command_slots
        assert slots is not None
        if slots.locked():
            return _error(503, f"busy: {self.config.command_queue} commands are already waiting")
        if request.content_length is not None and request.content_length > self.config.max_body_bytes:
            return _error(413, f"body of {request.content_length} bytes is larger than view.max_body_bytes "
                               f"({self.config.max_body_bytes})")
        async with slots:
            try:
                body = await asyncio.wait_for(request.read(), self.config.send_timeout_s)
            except asyncio.TimeoutError:
                return _error(408, f"the body did not arrive within {self.config.send_timeout_s:.0f} s")
            except web.HTTPRequestEntityTooLarge:
                return _error(413, f"body larger than view.max_body_bytes ({self.config.max_body_bytes})")
            try:
                command = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                return _error(400, f"body is not valid JSON: {exc}"[:300])
            if not isinstance(command, dict):
                return _error(400, f"body must be one JSON object (a command), got {type(command).__name__}")
            try:
                future = self.commands.submit(command)
            except Busy as exc:
                return _error(503, f"busy: {exc}")
            reply = await asyncio.wrap_future(future)
        return _json(reply)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if len(self._viewers) >= self.config.max_viewers:
            return _error(503, f"{self.config.max_viewers} viewers are already connected (view.max_viewers)")
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_WS_MESSAGE, heartbeat=20.0,
                                   writer_limit=64 * 1024)
        await ws.prepare(request)
        viewer = _Viewer(ws, joined_at_frame=self.frames_in)
        viewer.texts.append(json.dumps({"type": "state", **self.feed.snapshot}))
        viewer.wake.set()
        self._viewers.add(viewer)
        if self.commands is not None:
            self.commands.want_stats()  # how long the service keeps frames, for the page's freeze
        sender = asyncio.ensure_future(self._send_loop(viewer))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_viewer_message(viewer, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self._viewers.discard(viewer)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            dropped = self.frames_in - viewer.joined_at_frame - viewer.sent
            log.debug("view: viewer left after %d frames (%d skipped while it was busy)", viewer.sent, dropped)
        return ws

    def _on_viewer_message(self, viewer: _Viewer, text: str) -> None:
        """Viewers acknowledge each frame (`{"type": "ack"}`) and send `{"type": "ping", "t": <their clock,
        ms>}` to estimate the clock offset for the latency figure; anything else is ignored."""
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

    async def _send_loop(self, viewer: _Viewer) -> None:
        """Sends the newest frame whenever the viewer has acknowledged enough of the earlier ones: a slow
        viewer misses frames, and one that acknowledges nothing for `send_timeout_s` is disconnected."""
        ws = viewer.ws
        timeout = self.config.send_timeout_s
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
                frame = self._latest
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


def _loopback_host(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return is_loopback(host)


def _load_static() -> dict[str, bytes]:
    folder = importlib.resources.files("edge_vos.view").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}
