"""The client half of CURVE: a ZeroMQ socket made a CURVE client of the service (the server half, keys and
the allow-list, is the service's own: edge_vos/service/security.py)."""

from __future__ import annotations

from pathlib import Path

import zmq
import zmq.auth


def make_client_socket(socket: zmq.Socket, server_public_key: str | Path | None,
                       client_secret_key: str | Path | None) -> None:
    """Turns `socket` into a CURVE client (before connect); both key files or neither."""
    if not server_public_key and not client_secret_key:
        return
    if not (server_public_key and client_secret_key):
        raise ValueError("CURVE needs both the server's public key file and the client's secret key file")
    server_public, _ = zmq.auth.load_certificate(server_public_key)
    client_public, client_secret = zmq.auth.load_certificate(client_secret_key)
    if not client_secret:
        raise ValueError(f"{client_secret_key} holds no secret key (use the .key_secret file)")
    socket.curve_serverkey = server_public
    socket.curve_publickey = client_public
    socket.curve_secretkey = client_secret
