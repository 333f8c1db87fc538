"""`edge-vos view`: the live web view of a service running elsewhere (a laptop next to a headless Jetson).

    edge-vos view --masks tcp://jetson:5555 --control tcp://jetson:5556             # http://127.0.0.1:8080/
    edge-vos view --masks tcp://jetson:5555 --listen 0.0.0.0:8080 --token-file tok  # for other machines

Uses only the public ZeroMQ protocol; does not import torch. Exit status 0 after SIGINT/SIGTERM, 2 for
bad options or an address that cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--masks", default="tcp://127.0.0.1:5555", help="the service's publish endpoint")
    parser.add_argument("--control", default="tcp://127.0.0.1:5556",
                        help="the service's control endpoint ('none': a view without commands)")
    parser.add_argument("--listen", default="127.0.0.1:8080",
                        help="HOST:PORT to serve the page on (PORT alone = loopback); beyond loopback a token "
                             "is required (generated and logged when not given)")
    parser.add_argument("--token", default="", help="the token (prefer --token-file: command lines are visible)")
    parser.add_argument("--token-file", default="", help="a file holding the token")
    parser.add_argument("--server-key", default="", help="CURVE: the service's public key file")
    parser.add_argument("--client-key", default="", help="CURVE: this client's secret key file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other ViewConfig field (docs/view.md), value parsed as YAML (repeatable)")


def main(args: argparse.Namespace) -> int:
    import yaml

    from edge_vos.config import ConfigError, from_dict
    from edge_vos.view.config import ViewConfig
    from edge_vos.view.feed import ClientKeys
    from edge_vos.view.server import ViewServer

    fields = {"listen": args.listen, "token": args.token, "token_file": args.token_file,
              "server_public_key": args.server_key, "client_secret_key": args.client_key}
    try:
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
            fields[key.strip()] = yaml.safe_load(value) if value else ""
        config = from_dict(ViewConfig, fields, "view")
        if config.client_secret_key and not config.server_public_key:
            raise ConfigError("--server-key", "CURVE needs the service's public key file too")
        control = "" if args.control.lower() in ("", "none", "off") else args.control
        view = ViewServer(config, args.masks, control, ClientKeys(config.server_public_key, config.client_secret_key))
        view.start()
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    except ValueError as exc:  # unusable CURVE key files
        log.error("cannot start: %s", exc)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        view.stop()
    log.info("view stopped")
    return 0
