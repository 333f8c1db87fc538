"""Hostile HTTP and WebSocket clients of the web view, on raw sockets (127.0.0.1 only), and the inputs they
send: malformed HTTP messages, hypothesis strategies for Origin and Authorization values and command bodies.
Shared by tests/test_view_hostile.py and tools/hostile_view.py (which runs them at scale and counts)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from .service_support import service_config

LOOPBACK = "127.0.0.1"
VIEW_SCENE = "synthetic:seed=1&frames=40&size=120x160&objects=2&distractors=1"

# Messages aiohttp's parser refuses (or frames it cannot decode), each answered 400 before any handler runs.
_POST = b"POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\n"
MALFORMED: dict[str, bytes] = {
    "bad Content-Length": _POST + b"Content-Length: abc\r\n\r\n{}",
    "two Content-Lengths": _POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "Content-Length and chunked": _POST + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    "bad chunk size": _POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    + b"\r\n",
    "header line too long": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"a" * 10000 + b"\r\n\r\n",
    "request line too long": b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bad method": b"G\x00T / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "bad version": b"GET / HTTP/9.x\r\nHost: 127.0.0.1\r\n\r\n",
    "NUL in a header": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
    "brotli body": _POST + b"Content-Encoding: br\r\nContent-Length: 4\r\n\r\n\x00\x01\x02\x03",
    "zstd body": _POST + b"Content-Encoding: zstd\r\nContent-Length: 4\r\n\r\n\x00\x01\x02\x03",
    "bad gzip body": _POST + b"Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
    "TLS hello": bytes.fromhex("160301002e0100002a0303") + b"\x00" * 40,
}

# Values that broke the checks before (issue #24), then anything hypothesis finds.
BAD_ORIGINS = ["http://[", "http://[::1", "http://[::1]:x", "http://a:b:c", "\x00", "http://\udcff"]
BAD_AUTHORIZATIONS = ["Bearer \xff\xfe", "Bearer \udcff\udcfe", "Bearer \ud800", "Bearer s3cret-token-for-tesé",
                      "Bearer " + "x" * 5000]
_line = st.text(st.characters(exclude_characters="\r\n"), max_size=60)  # one header line: no CR, LF
origins = st.sampled_from(BAD_ORIGINS) | _line.map(lambda t: "http://" + t) | _line
authorizations = (st.sampled_from(BAD_AUTHORIZATIONS) | _line.map(lambda t: "Bearer " + t)
                  | st.binary(max_size=60).map(lambda b: "Bearer " + b.replace(b"\r", b"").replace(b"\n", b"")
                                               .decode("latin-1")))


def view_config(scene: str = VIEW_SCENE, **view: Any) -> Any:
    """A service on a looping synthetic scene at 20 fps with previews, its view on a free loopback port."""
    from edge_vos.run_config import RunConfig

    return service_config(RunConfig, source={"uri": scene, "pace": "realtime", "fps": 20.0, "loop": True},
                          publish={"preview": True}, control={"history": 64},
                          view={"listen": f"{LOOPBACK}:0", "send_timeout_s": 2.0, "stats_every_s": 0.2, **view})


@dataclass
class Reply:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, data: bytes, timeout_s: float = 5.0, source: str = LOOPBACK) -> Reply:
    """Sends `data` on a fresh connection from `source` (any 127.x.y.z is loopback too) and reads one
    answer (to the end of its body, or until the server closes)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s, source_address=(source, 0)) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server answered and closed before it read everything
            pass
        received = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            received += chunk
            if _complete(received):
                break
    return _parse(received)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _parse(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return Reply(None)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(lines[0].split()[1]), headers, body)


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout_s: float = 10.0, source: str = LOOPBACK) -> Reply:
    """One request whose header values go out byte for byte as `wire` makes them (a broken or hostile
    client's bytes, not a well-behaved client's encoding)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{port}", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return exchange(port, b"".join(wire(line) + b"\r\n" for line in lines) + b"\r\n" + body, timeout_s, source)


def wire(text: str) -> bytes:
    """Characters below 256 as one byte each (latin-1, as http.client sends them), escaped bytes (lone
    surrogates U+DC80..U+DCFF) as the byte they stand for, anything else as UTF-8 (lone surrogates too)."""
    out = bytearray()
    for ch in text:
        code = ord(ch)
        if code < 256:
            out.append(code)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(code - 0xDC00)
        else:
            out += ch.encode("utf-8", "surrogatepass")
    return bytes(out)


def ws_handshake(port: int, rcvbuf: int = 4096, path: str = "/api/stream") -> socket.socket:
    """A WebSocket client on a raw socket with a tiny receive buffer, past the handshake (status line
    checked); it reads nothing more unless told to."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((LOOPBACK, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # byte by byte: what follows the head is the first frame
        byte = sock.recv(1)
        if not byte:
            break
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"WebSocket handshake refused: {head[:40]!r}")
    return sock


def ws_text_frame(text: str) -> bytes:
    """A client's text frame (masked, with a zero mask) of under 64 KiB."""
    payload = text.encode()
    size = bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + len(payload).to_bytes(2, "big")
    return b"\x81" + size + b"\x00\x00\x00\x00" + payload


def ws_texts(sock: socket.socket, until: Callable[[str], bool], timeout_s: float = 30) -> list[str]:
    """The server's text messages until one satisfies `until` (binary ones skipped; servers never mask)."""
    texts: list[str] = []
    buffer = b""
    deadline = time.monotonic() + timeout_s
    sock.settimeout(timeout_s)
    while time.monotonic() < deadline:
        buffer += sock.recv(1 << 16)
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length >= 126:
                start = 4 if length == 126 else 10
                length = int.from_bytes(buffer[2:start], "big")
            if len(buffer) < start + length:
                break
            payload, buffer = buffer[start : start + length], buffer[start + length :]
            if opcode == 1:
                texts.append(payload.decode())
                if until(texts[-1]):
                    return texts
    raise AssertionError(f"no such message within {timeout_s} s: {texts[-5:]}")


class LogTally(logging.Handler):
    """Counts what a run logs: lines per level, tracebacks, and lines at ERROR or above."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def count(self, level: int, prefix: str = "") -> int:
        return sum(r.levelno == level and r.getMessage().startswith(prefix) for r in self.records)

    @property
    def tracebacks(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.exc_info or r.stack_info]

    @property
    def errors(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= logging.ERROR]

    def clear(self) -> None:
        self.records.clear()
