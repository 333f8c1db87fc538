"""What the view refuses before any handler runs: foreign Hosts, missing or wrong tokens, cross-origin
commands and streams, and connections beyond the cap (docs/view.md, "Security").

Pure functions of a request, plus `ConnectionCap`, which wraps aiohttp's protocol factory so that the cap
counts connections from the moment they are accepted.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from edge_vos.view.config import is_loopback

log = logging.getLogger(__name__)

# The page loads only its own files; the frames arrive as blobs decoded in the page.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}


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
        if not hmac.compare_digest(given.encode(), token.encode()):
            return 401, "missing or wrong token (Authorization: Bearer TOKEN, or ?token=TOKEN)"
    if request.method not in ("GET", "HEAD") or request.path == "/api/stream":
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return 403, "cross-origin requests are refused"
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            return 403, f"cross-origin requests are refused (Origin {origin[:80]!r})"
    return None


def loopback_host(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":")[0]
    return is_loopback(host)


class _Refuse(asyncio.Protocol):
    """Answers a connection beyond the cap with 503 and closes it, without parsing anything."""

    BODY = b'{"ok": false, "error": "too many connections"}'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(self.BODY), self.BODY))
        transport.close()


class _Counted(asyncio.Protocol):
    """Forwards a connection to aiohttp's handler and reports when it ends."""

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


class ConnectionCap:
    """At most `limit` connections at once, counted from accept (aiohttp registers a connection a loop
    iteration later, so its own list lets a burst through); the rest get a 503 and are closed at once.
    Used from the event loop thread only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0

    def factory(self, web_server: web.Server) -> Callable[[], asyncio.Protocol]:
        def lost() -> None:
            self.open -= 1

        def make() -> asyncio.Protocol:
            if self.open >= self.limit:
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                    log.warning("view: %d connections refused so far (view.max_connections = %d)",
                                self.refused, self.limit)
                return _Refuse()
            self.open += 1
            return _Counted(web_server(), lost)

        return make
