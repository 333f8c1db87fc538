"""Typed configuration of the live web view (`view:` in a run config, edge_vos/program.py, or `edge-vos view`
options).

Validated once at start-up like every other section: a bad value raises `ConfigError` naming the field.
Importing this module imports nothing heavy (`edge-vos view` must not pull in torch).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from edge_vos.config import SECRET, ConfigError, positive

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.url_host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, field: str = "listen") -> ListenAddress:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` (loopback), or `HOST` (port 8080)."""
    text = value.strip()
    if not text:
        raise ConfigError(field, "must not be empty")
    host, port_text = DEFAULT_HOST, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(field, f"unclosed '[' in {value!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ConfigError(field, f"expected [HOST]:PORT, got {value!r}")
        port_text = rest[1:]
    elif text.isdigit():
        port_text = text
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        host = host or DEFAULT_HOST
    elif ":" in text:  # a bare IPv6 address
        host = text
    else:
        host = text
    if not port_text:
        port = DEFAULT_PORT
    elif port_text.isdigit() and 0 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ConfigError(field, f"port must be 0..65535, got {port_text!r} in {value!r}")
    if not host or any(c in host for c in "/ \t?#@"):
        raise ConfigError(field, f"not a host name or address: {host!r}")
    return ListenAddress(host, port)


@dataclass
class ViewConfig:
    # HOST:PORT the web page and its API listen on; empty = no view. `8080` or `:8080` = 127.0.0.1:8080.
    # Any address other than loopback needs a token (a random one is generated and logged when `token` and
    # `token_file` are empty).
    listen: str = ""
    # Shared secret checked on every API call and on the stream (`Authorization: Bearer ...` or
    # `?token=...`); on loopback it is optional. `token_file`: read it from a file instead (systemd
    # LoadCredential=), so it does not appear on a command line.
    token: str = field(default="", metadata=SECRET)
    token_file: str = ""
    # Most TCP connections served at once (more are answered 503 and closed), of them most from one client
    # address (so one client cannot take every slot; clients behind one proxy or tunnel share an address),
    # and most live viewers.
    max_connections: int = 64
    max_connections_per_client: int = 16
    max_viewers: int = 8
    # Largest POST /api/command body (a mask as base64 PNG); larger bodies are refused with 413.
    max_body_bytes: int = 4 * 1024 * 1024
    # A viewer whose socket accepts nothing for this long is disconnected (frames are dropped for it
    # meanwhile, never queued); a request body must arrive within it too.
    send_timeout_s: float = 10.0
    # Idle keep-alive connections (and connections that never send a request) are closed after this.
    idle_timeout_s: float = 15.0
    # How long a command may wait for the service's reply (adds are answered after the frame they apply to).
    command_timeout_s: float = 10.0
    # Commands waiting for the service at once; more are answered "busy" (503).
    command_queue: int = 4
    # The service's `stats` (recent frames, fps) are asked for when /api/state is, at most this often.
    stats_every_s: float = 2.0
    # CURVE, when the service's sockets use it: the service's public key file and this client's secret key
    # file (the service fills in its own public key for `run --view`).
    server_public_key: str = ""
    client_secret_key: str = ""

    def __post_init__(self) -> None:
        if self.listen:
            parse_listen(self.listen)
        if self.token and self.token_file:
            raise ConfigError("token", "give token or token_file, not both")
        if self.token and (len(self.token) < 8 or not self.token.isprintable() or " " in self.token):
            raise ConfigError("token", "must be at least 8 printable characters without spaces")
        if self.token_file and not Path(self.token_file).is_file():
            raise ConfigError("token_file", f"file not found: {self.token_file}")
        positive("max_connections", self.max_connections)
        positive("max_connections_per_client", self.max_connections_per_client)
        positive("max_viewers", self.max_viewers)
        positive("max_body_bytes", self.max_body_bytes)
        positive("send_timeout_s", self.send_timeout_s)
        positive("idle_timeout_s", self.idle_timeout_s)
        positive("command_timeout_s", self.command_timeout_s)
        positive("command_queue", self.command_queue)
        positive("stats_every_s", self.stats_every_s)
        if self.server_public_key and not self.client_secret_key:
            raise ConfigError("client_secret_key", "CURVE needs this client's secret key file too")
        for name in ("server_public_key", "client_secret_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(name, f"file not found: {path}")

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def address(self) -> ListenAddress:
        return parse_listen(self.listen)

    def resolve_token(self) -> tuple[str, bool]:
        """The token to enforce ('' = none) and whether it was generated here (then it must be shown)."""
        if self.token_file:
            token = Path(self.token_file).read_text().strip()
            if len(token) < 8:
                raise ConfigError("view.token_file", f"{self.token_file} holds no token of 8+ characters")
            return token, False
        if self.token:
            return self.token, False
        if self.address.loopback:
            return "", False
        return secrets.token_urlsafe(18), True
