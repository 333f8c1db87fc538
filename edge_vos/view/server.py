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
import contextlib
import importlib.resources
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
from aiohttp import web

from edge_vos.config import ConfigError
from edge_vos.ratelog import RateLimitedLog
from edge_vos.view.commands import Busy, CommandWorker
from edge_vos.view.config import ListenAddress, ViewConfig, is_loopback
from edge_vos.view.feed import NO_KEYS, ClientKeys, Feed
from edge_vos.view.frames import LiveFrame
from edge_vos.view.guard import (
    ERROR_MESSAGE,
    NO_CACHE,
    SECURITY_HEADERS,
    ConnectionCap,
    JsonErrorHandler,
    error_response,
    one_line,
    refusal,
)
from edge_vos.view.streams import StreamFeed
from edge_vos.view.viewers import Viewers

log = logging.getLogger(__name__)

STATIC_FILES = {"index.html": "text/html", "style.css": "text/css", **{f"{module}.js": "text/javascript" for module in (
    "app", "api", "colours", "correct", "drawing", "panels", "prompt", "state", "stream", "tiles")}}


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=NO_CACHE)


_error = error_response


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
        # Every refusal is one WARNING line, every failure of the view one ERROR line, both rate-limited
        # (clients choose how many there are). Event loop thread only, like the two below.
        self.refusals = RateLimitedLog(log, "view: refused", level=logging.WARNING)
        self.failures = RateLimitedLog(log, "view: internal error", level=logging.ERROR)
        self.viewers = Viewers(config.max_viewers, config.send_timeout_s, self.first_stream)
        self.connections = ConnectionCap(config.max_connections, config.max_connections_per_client, self.refusals)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._static = _load_static()
        self._command_slots: asyncio.Semaphore | None = None

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
                loop.call_soon_threadsafe(self.viewers.publish, frame)

    def _state_from_feed(self, state: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.viewers.broadcast_state, state)

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
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {"access_log": None, "keepalive_timeout": self.config.idle_timeout_s,
                                   "max_line_size": 8190, "max_field_size": 8190}
        runner = web.AppRunner(app, handle_signals=False, **options)
        await runner.setup()
        web_server, sock = runner.server, self._sock
        assert web_server is not None and sock is not None

        def handler() -> JsonErrorHandler:  # aiohttp's connection handler, answering malformed requests in JSON
            return JsonErrorHandler(web_server, loop=loop, refusals=self.refusals, failures=self.failures,
                                    **options)

        # A deep accept queue: a flood of connections is accepted and refused quickly instead of waiting in
        # the kernel for SYN retries.
        server = await loop.create_server(self.connections.factory(handler), sock=sock, backlog=1024)
        deadline = asyncio.ensure_future(self.connections.enforce_write_deadline(self.config.send_timeout_s))
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            deadline.cancel()
            await self.viewers.close_all()
            await runner.cleanup()

    # ---- security --------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        problem = refusal(request, self.token)
        if problem is not None:
            response: web.StreamResponse = _error(*problem)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # 404, 405, 413 ...: JSON like every other answer
                if exc.status < 400:
                    raise
                response = _error(exc.status, exc.reason or exc.text or "error")
        if response.status >= 400:
            self.refusals.log("%d %s %r from %s: %s", response.status, request.method, request.path[:80],
                              request.remote, one_line(response.get(ERROR_MESSAGE, response.reason)))
        if not response.prepared:
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

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
        name = request.query.get("stream")
        if name is not None and self.feed.stream(name) is None:
            known = [s.id for s in self.feed.streams]
            return _error(404, f"unknown stream {name[:64]!r}; streams: {known}")
        return _json(self.state(name))

    def state(self, stream: str | None = None) -> dict[str, Any]:
        """What GET /api/state answers (docs/view.md): `stream`'s state (the first stream's when None), the
        list of every stream's, and the service's stats for it."""
        feed = self.feed
        chosen = feed.stream(stream if stream is not None else self.first_stream() or "")
        state = dict(chosen.snapshot if chosen is not None else feed.snapshot)
        stats = None
        if self.commands is not None:
            # With several streams the service's stats are asked per stream (without one they are its totals).
            key = state["stream"] if len(feed.streams) > 1 else None
            self.commands.want_stats(key)  # answered from the last poll; the next one refreshes it
            stats = self.commands.stats_by_stream.get(key)
        state.update({
            "streams": self._streams(),
            "control": self.commands is not None,
            "service_reachable": self.commands.reachable if self.commands is not None else None,
            "recent_frames": stats.get("recent_frames") if stats else None,
            "history": (self.commands.history or None) if self.commands is not None else None,
            "service_fps": stats.get("fps") if stats else None,
            "viewers": len(self.viewers.connected),
            "token_required": bool(self.token),
        })
        return state

    def _streams(self) -> list[dict[str, Any]]:
        """Every stream's state, in the service's order."""
        return [stream.snapshot for stream in self._ordered()]

    def first_stream(self) -> str | None:
        """The stream a page or a viewer that names none is shown (the only one, with a single camera)."""
        ordered = self._ordered()
        return ordered[0].id if ordered else None

    def _ordered(self) -> list[StreamFeed]:
        """The feed's streams in the service's order (its `streams` command) when it gave one, else in the
        order they were first heard of."""
        streams = list(self.feed.streams)
        order = self.commands.stream_order if self.commands is not None else None
        if order:
            rank = {name: i for i, name in enumerate(order)}
            streams.sort(key=lambda s: rank.get(s.id, len(rank)))
        return streams

    async def _command(self, request: web.Request) -> web.Response:
        if self.commands is None:
            return _error(503, "this view has no control endpoint: commands are disabled")
        if request.content_length is not None and request.content_length > self.config.max_body_bytes:
            return _error(413, f"body of {request.content_length} bytes is larger than view.max_body_bytes "
                               f"({self.config.max_body_bytes})")
        try:
            body = await asyncio.wait_for(request.read(), self.config.send_timeout_s)
        except asyncio.TimeoutError:
            return _error(408, f"the body did not arrive within {self.config.send_timeout_s:.0f} s")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than view.max_body_bytes ({self.config.max_body_bytes})")
        except web.RequestPayloadError as exc:  # a body its Content-Encoding or chunks do not decode
            return _error(400, f"the body cannot be read: {one_line(exc.__cause__ or exc)}")
        except ConnectionError:  # the client left halfway through its body; nobody reads this answer
            return _error(400, "the connection closed before the body arrived")
        try:
            command = json.loads(body)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, an integer of 4,300+ digits
            return _error(400, f"body is not valid JSON: {exc}"[:300])
        if not isinstance(command, dict):
            return _error(400, f"body must be one JSON object (a command), got {type(command).__name__}")
        slots = self._command_slots  # taken once the body is in: a slow body holds no slot
        assert slots is not None
        if slots.locked():
            return _error(503, f"busy: {self.config.command_queue} commands are already waiting")
        async with slots:
            try:
                future = self.commands.submit(command)
            except Busy as exc:
                return _error(503, f"busy: {exc}")
            reply = await asyncio.wrap_future(future)
        return _json(reply)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if self.viewers.full:
            return _error(503, f"{self.config.max_viewers} viewers are already connected (view.max_viewers)")
        if self.commands is not None:
            self.commands.want_stats()  # how long the service keeps frames, for the page's freeze
        return await self.viewers.serve(request, self._streams() or [self.feed.snapshot])


def _load_static() -> dict[str, bytes]:
    folder = importlib.resources.files("edge_vos.view").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_FILES}
