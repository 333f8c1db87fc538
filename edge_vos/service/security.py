"""CURVE encryption and the client allow-list for the service's sockets (the server half; a client makes its
socket a CURVE client with edge_vos.wire.curve).

Keys are the files `zmq.auth.create_certificates` writes (Z85 text, never pickles). With an allow-list
folder a `zmq.auth.ThreadAuthenticator` (its own thread and socket, on the service's own context)
admits only the clients whose public key files are in it; without one, anyone who knows the server's
public key can connect, which is logged as a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edge_vos.config import ConfigError

if TYPE_CHECKING:  # the config imports the tracker package (torch), needed here for a type only
    from edge_vos.service.config import SecurityConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes


def load_server_keys(config: SecurityConfig) -> ServerKeys | None:
    """The server's CURVE key pair, or None when CURVE is off; ConfigError for unusable files."""
    if not config.curve:
        return None
    if not zmq.has("curve"):
        raise ConfigError("security.curve", "this libzmq was built without CURVE")
    path = Path(config.server_secret_key)
    if not path.is_file():
        raise ConfigError("security.server_secret_key", f"file not found: {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise ConfigError("security.server_secret_key", f"not a ZeroMQ certificate: {exc}") from None
    if not secret:
        raise ConfigError("security.server_secret_key", f"{path} holds no secret key (use the .key_secret file)")
    if config.allowed_clients_dir and not Path(config.allowed_clients_dir).is_dir():
        raise ConfigError("security.allowed_clients_dir", f"folder not found: {config.allowed_clients_dir}")
    return ServerKeys(public, secret)


def start_authenticator(context: zmq.Context, config: SecurityConfig) -> ThreadAuthenticator | None:
    """Starts the allow-list authenticator for `context` (before any socket binds), or returns None."""
    if not config.curve:
        return None
    if not config.allowed_clients_dir:
        log.warning("CURVE without allowed_clients_dir: any client knowing the server's public key may connect")
        return None
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(config.allowed_clients_dir))
    log.info("CURVE allow-list: %s", config.allowed_clients_dir)
    return auth


def make_server_socket(socket: zmq.Socket, keys: ServerKeys | None) -> None:
    """Turns `socket` into a CURVE server (before bind) when keys are given."""
    if keys is None:
        return
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True

