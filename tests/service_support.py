"""Helpers shared by the service tests: configs on free loopback ports, a running service, notify sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from edge_vos.client import MaskResult, Subscriber
from edge_vos.config import from_dict
from edge_vos.service.config import ServiceConfig
from edge_vos.service.notify import Notifier
from edge_vos.service.pipeline import Service

from .fakes import FakeTracker

H, W = 120, 160
WAIT = {"wait_for_subscriber_s": 5}  # hold frame 0 until the test's subscriber is connected


def frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, H, W, 3), dtype=np.uint8)


def first_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[10:40, 20:60] = 1
    return mask


def service_config(config_class: type[ServiceConfig] = ServiceConfig, **sections: Any) -> ServiceConfig:
    """A test service config (a RunConfig with `config_class=RunConfig`, for a `view:` section)."""
    data: dict[str, Any] = {
        "source": {"uri": "synthetic:", "pace": "fastest", "reconnect_initial_s": 0.05, "reconnect_max_s": 0.1},
        "publish": {"endpoint": "tcp://127.0.0.1:*"},
        "control": {"endpoint": "tcp://127.0.0.1:*", "reply_timeout_s": 2},
        "pipeline": {"status_every_s": 0.5},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return from_dict(config_class, data)


@contextmanager
def running(config: ServiceConfig, reader: Any, tracker: Any = None,
            notifier: Notifier | None = None) -> Iterator[Service]:
    tracker = tracker or FakeTracker()
    service = Service(config, tracker_factory=lambda _: tracker, reader=reader, notifier=notifier)
    service.start()
    service.tracker = tracker  # type: ignore[attr-defined]
    try:
        yield service
    finally:
        t0 = time.monotonic()
        service.stop(timeout=3)
        assert time.monotonic() - t0 < 5
        assert not service.worker.is_alive() and not service.publisher.is_alive()


def masks(sub: Subscriber, n: int, timeout_s: float = 10) -> list[MaskResult]:
    out: list[MaskResult] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        message = sub.recv(timeout_s=1)
        if isinstance(message, MaskResult):
            out.append(message)
    return out


def wait_for(predicate: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def notify_socket(watchdog_usec: int = 0) -> tuple[socket.socket, dict[str, str]]:
    """An abstract-namespace datagram socket standing in for systemd's notify socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@edge-vos-test-{time.monotonic_ns()}"
    sock.bind(b"\0" + name[1:].encode())
    env = {"NOTIFY_SOCKET": name}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return sock, env


def drain(sock: socket.socket, duration_s: float = 0.2) -> list[str]:
    out = []
    deadline = time.monotonic() + duration_s
    sock.settimeout(0.02)
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            continue
    return out
