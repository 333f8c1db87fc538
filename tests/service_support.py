"""Helpers shared by the service tests and tools/hostile_service.py: configs on free loopback ports, a running
service, notify sockets, a pipelining control client, a cheap tracker config, unusable weights files."""

from __future__ import annotations

import collections
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge_vos.client import MaskResult, Subscriber
from edge_vos.config import from_dict
from edge_vos.service.config import ServiceConfig
from edge_vos.service.notify import Notifier
from edge_vos.service.pipeline import Service

from .fakes import FakeTracker

H, W = 120, 160
ROOT = Path(__file__).resolve().parents[1]
# A real tracker that costs little on a shared machine (an untrained stcn-r18-lite at a 64-pixel working size):
# for tests of `edge-vos run` as a process, which are about the service, not the model.
CHEAP_TRACKER = {"model": {"arch": "stcn-r18-lite", "weights": "random"}, "resolution": 64, "device": "cpu",
                 "readout": {"kind": "stcn"}, "memory": {"capacity": 3, "max_pinned": 1}}
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
    """The service of `config` (with what the program attaches: the view, ROS 2, for a RunConfig) running."""
    from edge_vos.program import Program, RunConfig

    tracker = tracker or FakeTracker()
    options: dict[str, Any] = {"tracker_factory": lambda _: tracker, "reader": reader, "notifier": notifier}
    program = Program(config, **options) if isinstance(config, RunConfig) else None
    service = program.service if program is not None else Service(config, **options)
    (program or service).start()
    service.tracker = tracker  # type: ignore[attr-defined]
    if program is not None:  # the view the program attached, where the view's tests look for it
        service.view = program.view  # type: ignore[attr-defined]
    try:
        yield service
    finally:
        t0 = time.monotonic()
        (program or service).stop(timeout=3)
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


def wait_until(condition: Any, what: str, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """The first truthy value `condition()` returns; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


def wait_for(predicate: Any, timeout_s: float = 10) -> None:
    wait_until(predicate, "condition", timeout_s, interval=0.02)


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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_ready(sock: socket.socket, alive: Any, timeout_s: float = 180) -> float:
    """Seconds until READY=1 reaches the notify socket `sock`; RuntimeError when `alive()` turns false first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not alive():
            raise RuntimeError("the service exited before READY=1")
        if any("READY=1" in m for m in drain(sock, 0.05)):
            return time.monotonic() - t0
    raise RuntimeError("no READY=1")


class Dealer:
    """A DEALER client with an empty delimiter, like REQ, but free to pipeline requests."""

    def __init__(self, endpoint: str, rcvhwm: int = 1000) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.connect(endpoint)

    def send(self, body: bytes) -> None:
        self.socket.send_multipart([b"", body])

    def recv(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        return json.loads(self.socket.recv_multipart()[-1])

    def request(self, body: dict[str, Any], timeout_s: float = 5) -> dict[str, Any] | None:
        self.send(json.dumps(body).encode())
        return self.recv(timeout_s)

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class _Evil:
    """Pickled into a checkpoint: must be refused unread, never run."""

    def __reduce__(self) -> Any:
        return (print, ("this must never run",))


def bad_weights(folder: Path) -> dict[str, tuple[Path, str]]:
    """Unusable weights files written into `folder`: name -> (file, the problem its error must name)."""
    import torch
    from safetensors.torch import save_file

    good = (ROOT / "edge_vos" / "weights" / "default.safetensors").read_bytes()
    files = {
        "truncated.safetensors": (good[:4096], "not a readable safetensors file"),
        "garbage.safetensors": (np.random.default_rng(0).bytes(5000), "not a readable safetensors file"),
        "bad-header.safetensors": ((64).to_bytes(8, "little") + b"{not json" + b" " * 64,
                                   "not a readable safetensors file"),
        "empty.safetensors": (b"", "the file is empty"),
        "garbage.pth": (np.random.default_rng(1).bytes(3000), "not a tensor-only checkpoint"),
    }
    out = {}
    for name, (data, problem) in files.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, problem)
    pickled = folder / "pickled.pth"
    torch.save({"key_proj.weight": torch.zeros(2), "hook": _Evil()}, pickled)
    out["pickled.pth"] = (pickled, "not a tensor-only checkpoint")
    truncated = folder / "truncated.pth"
    torch.save(collections.OrderedDict(a=torch.zeros(64)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    out["truncated.pth"] = (truncated, "not a readable torch checkpoint")
    mismatched = folder / "other-network.safetensors"
    save_file({"not.a.stcn.weight": torch.zeros(3)}, str(mismatched))
    out["other-network.safetensors"] = (mismatched, "key_encoder")
    return out
