"""What the view refuses before any handler runs: foreign Hosts, missing or wrong tokens, cross-origin
commands and streams, malformed HTTP messages, connections beyond the cap, and connections whose peer stops
taking what is written to it (docs/view.md, "Security").

Pure functions of a request; `JsonErrorHandler`, aiohttp's connection handler answering malformed messages
with JSON and one rate-limited log line; and `ConnectionCap`, which wraps that handler so that the cap
counts connections from the moment they are accepted and every write has a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edge_vos.ratelog import RateLimitedLog
from edge_vos.view.config import is_loopback

log = logging.getLogger(__name__)

# The page loads only its own files; the frames arrive as blobs decoded in the page.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
NO_CACHE = {"Cache-Control": "no-cache, no-store"}
ERROR_MESSAGE = web.ResponseKey("error", str)  # a refused request's message, kept on its response for the log line


def error_response(status: int, message: str) -> web.Response:
    """Every HTTP error of the view: `{"ok": false, "error": ...}` (docs/view.md, "HTTP API"); the message
    also stays on the response (`response[ERROR_MESSAGE]`) for the log line."""
    response = web.json_response({"ok": False, "error": message}, status=status,
                                 headers={**NO_CACHE, **SECURITY_HEADERS})
    response[ERROR_MESSAGE] = message
    return response


def one_line(text: object, limit: int = 200) -> str:
    """A client-chosen text fit for one log line: whitespace collapsed, shortened."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def refusal(request: web.Request, token: str) -> tuple[int, str] | None:
    """(status, message) when the request must be refused: a Host that is not this server's (DNS
    rebinding) on a tokenless view, a missing or wrong token on the API, a cross-origin command or stream."""
    if not token and not loopback_host(request.host):
        return 403, f"Host {request.host[:80]!r} is not a loopback name; this view serves loopback only"
    if request.path.startswith("/api/") and token:
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        # Header values arrive as UTF-8 with undecodable bytes escaped to lone surrogates: compare bytes.
        if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")):
            return 401, "missing or wrong token (Authorization: Bearer TOKEN, or ?token=TOKEN)"
    if request.method not in ("GET", "HEAD") or request.path == "/api/stream":
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-origin requests are refused"
        origin = request.headers.get("Origin")
        if origin is not None and origin_host(origin) != request.host.lower():
            return 403, f"cross-origin requests are refused (Origin {origin[:80]!r})"
    return None


def origin_host(origin: str) -> str | None:
    """The `host[:port]` of an Origin header, lower-cased; None when it is no URL (`http://[`)."""
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:
        return None


def loopback_host(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return is_loopback(host)


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's handler of one connection, answering what never reaches the application (a malformed
    request line, header or body framing, a handler that failed) with a JSON error like every other answer,
    logged as one rate-limited line: WARNING for a malformed message, ERROR with the traceback for a
    failure of the view itself (a bug: no input is meant to cause one)."""

    def __init__(self, manager: web.Server, *, refusals: RateLimitedLog, failures: RateLimitedLog,
                 **options: Any) -> None:
        super().__init__(manager, **options)
        self.refusals, self.failures = refusals, failures

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            self.failures.log("%s %r from %s failed", request.method, request.path[:80], request.remote,
                              exc_info=exc)
            text = "internal error of the view"
        else:
            text = one_line(message or exc or "bad request")
            self.refusals.log("%d from %s: malformed request: %s", status, request.remote, text)
        if request.writer.output_size > 0:  # part of a response went out: the connection is broken
            raise ConnectionError("the response had begun; no error can be sent")
        response = error_response(status, text)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError):
            return  # a body that does not decode, met again while aiohttp drains it after the 400 (logged)
        self.failures.log("%s", one_line(args[0] % args[1:] if len(args) > 1 else args[0]), exc_info=exc)


def _refuse(transport: asyncio.BaseTransport, why: str) -> None:
    """503 and close, without parsing anything."""
    assert isinstance(transport, asyncio.Transport)
    body = json.dumps({"ok": False, "error": why}).encode()
    transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    transport.close()


class _Refuse(asyncio.Protocol):
    """A connection beyond the cap."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _refuse(transport, "too many connections")


class _Counted(asyncio.Protocol):
    """Forwards a connection to aiohttp's handler once the cap admits its address, reports when it ends, and
    remembers since when what was written to it waits unsent (for `ConnectionCap.enforce_write_deadline`)."""

    def __init__(self, inner: asyncio.Protocol, cap: ConnectionCap) -> None:
        self.inner, self.cap = inner, cap
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.admitted = False
        self.unsent = 0  # bytes waiting in the transport at the last look
        self.stalled_since: float | None = None  # since when none of them left

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.peer = transport, _peer(transport)
        self.admitted = self.cap.admit(self)
        if self.admitted:
            self.inner.connection_made(transport)
        else:
            _refuse(transport, "too many connections from this address")

    def connection_lost(self, exc: Exception | None) -> None:
        self.cap.release(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def stalled_for(self, now: float) -> float:
        """Seconds during which bytes waited in the transport and none left it (the peer reads nothing)."""
        if self.transport is None:
            return 0.0
        unsent = self.transport.get_write_buffer_size()
        if unsent == 0:
            self.stalled_since = None
        elif self.stalled_since is None or unsent < self.unsent:
            self.stalled_since = now
        self.unsent = unsent
        return 0.0 if self.stalled_since is None else now - self.stalled_since


class ConnectionCap:
    """At most `limit` connections at once, counted from accept (aiohttp registers a connection a loop
    iteration later, so its own list lets a burst through), and at most `per_client` from one address (so
    one client cannot take every slot); the rest get a 503 and are closed at once. Used from the event
    loop thread only."""

    def __init__(self, limit: int, per_client: int, refusals: RateLimitedLog) -> None:
        self.limit, self.per_client, self.refusals = limit, per_client, refusals
        self.live: set[_Counted] = set()
        self.by_client: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.aborted = 0  # connections cut because their peer read nothing within the write deadline

    @property
    def open(self) -> int:
        return len(self.live)

    def factory(self, make_handler: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            if self.open >= self.limit:
                self.refused += 1
                self.refusals.log("503: connection beyond view.max_connections (%d); %d refused so far",
                                  self.limit, self.refused)
                return _Refuse()
            connection = _Counted(make_handler(), self)
            self.live.add(connection)
            return connection

        return make

    def admit(self, connection: _Counted) -> bool:
        if self.by_client[connection.peer] >= self.per_client:
            self.refused += 1
            self.refusals.log("503: connection from %s beyond view.max_connections_per_client (%d); %d refused "
                              "so far", connection.peer, self.per_client, self.refused)
            return False
        self.by_client[connection.peer] += 1
        return True

    def release(self, connection: _Counted) -> None:
        self.live.discard(connection)
        if connection.admitted:
            self.by_client[connection.peer] -= 1
            if self.by_client[connection.peer] <= 0:
                del self.by_client[connection.peer]

    async def enforce_write_deadline(self, timeout_s: float) -> None:
        """Aborts every connection whose peer has taken none of the bytes written to it for `timeout_s`: a
        client that pipelines requests and never reads the answers, a viewer that stopped reading, a
        closed connection whose last bytes cannot leave. Runs until cancelled."""
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 4))
            now = asyncio.get_running_loop().time()
            for connection in list(self.live):
                if connection.stalled_for(now) > timeout_s and connection.transport is not None:
                    self.aborted += 1
                    self.refusals.log("connection from %s aborted: it read nothing for %.0f s (view.send_timeout_s)",
                                      connection.peer, timeout_s)
                    with contextlib.suppress(Exception):
                        connection.transport.abort()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"
