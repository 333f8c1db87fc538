"""The publisher thread: owns the XPUB socket, encodes results and publishes them.

Results arrive on a bounded queue from the inference thread; encoding (PNG, RLE, JPEG previews) happens
here so it overlaps the next frame's inference. XPUB behaves like PUB for subscribers (never blocks;
a subscriber whose queue reaches the high-water mark loses new messages) and additionally tells us when
a subscriber arrives, so `wait_for_subscriber_s` can hold frame 0 until someone listens, and so a new
subscriber of the status topic is sent the current state at once (a last-value cache: a state sent
before its subscription arrived is not lost to it). The stream's final status (`ended` or `failed`)
travels in the result queue behind the last result, so it always follows the last mask and names its
`seq`. A socket monitor counts connected subscribers (connections, not topic subscriptions).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from edge_vos.service.capture import Frame
from edge_vos.service.config import PublishConfig
from edge_vos.service.metrics import ServiceMetrics
from edge_vos.service.security import ServerKeys, make_server_socket
from edge_vos.wire.protocol import (
    PROTOCOL_VERSION,
    dumps_header,
    encode_jpeg,
    encode_labels,
    object_infos,
)

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What the inference thread hands to the publisher for one frame."""

    frame: Frame
    frame_index: int
    labels: np.ndarray  # uint8 [H,W]
    object_ids: list[int]
    probabilities: np.ndarray  # float32 [O,H,W]
    timings_ms: dict[str, float] = field(default_factory=dict)
    t_inferred_ns: int = 0


@dataclass
class StatusEvent:
    state: str
    detail: str = ""


@dataclass
class _Finish:
    """Queue sentinel: publish what is queued, then the final status (if any), then close."""

    status: StatusEvent | None = None


class Publisher(threading.Thread):
    def __init__(
        self,
        context: zmq.Context,
        config: PublishConfig,
        stream_id: str,
        keys: ServerKeys | None,
        metrics: ServiceMetrics,
        queue_size: int,
        on_published: Callable[[Outcome, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(name="publisher", daemon=True)
        self.context, self.config, self.stream_id, self.keys, self.metrics = context, config, stream_id, keys, metrics
        self.queue: queue.Queue[Any] = queue.Queue(queue_size)
        # Source state changes travel apart so they never displace a frame's result.
        self.status_queue: queue.Queue[StatusEvent] = queue.Queue(16)
        self.on_published = on_published
        self.bound = threading.Event()
        self.subscribed = threading.Event()
        self.error: BaseException | None = None
        self.abort = threading.Event()  # stop now, without draining
        self.finishing = False  # finish() was called: ending is expected
        self.seq = 0
        self.subscribers = 0  # connected subscriber sockets
        self.dropped = 0
        self.last_endpoint = ""
        self._connections: set[int] = set()
        self._last_status: StatusEvent | None = None

    # ---- called from other threads ---------------------------------------------------------------

    def submit_status(self, event: StatusEvent) -> None:
        """Queues a status message; when 16 are waiting the oldest is dropped (they are also logged)."""
        while True:
            try:
                self.status_queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.status_queue.get_nowait()
                except queue.Empty:
                    pass

    def submit(self, item: Outcome, wait: bool, stop: threading.Event) -> bool:
        """Queues an item. wait=True (fastest): blocks while full until `stop`. wait=False (realtime): a full
        queue loses its oldest result, so the newest frame always goes out."""
        if wait:
            while not stop.is_set() and not self.abort.is_set():
                try:
                    self.queue.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False
        while True:
            try:
                self.queue.put_nowait(item)
                return True
            except queue.Full:
                try:
                    old = self.queue.get_nowait()
                    if isinstance(old, Outcome):
                        self.dropped += 1
                        self.metrics.frames_dropped.labels("result_queue_full").inc()
                except queue.Empty:
                    pass

    def finish(self, final_status: StatusEvent | None = None) -> None:
        """Asks the thread to publish what is queued, then `final_status`, and stop (the inference thread
        has ended, so nothing is queued after this)."""
        self.finishing = True
        deadline = time.monotonic() + 2.0
        while not self.abort.is_set() and self.is_alive() and time.monotonic() < deadline:
            try:
                self.queue.put(_Finish(final_status), timeout=0.1)
                return
            except queue.Full:
                continue

    # ---- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # never silent: the service's supervisor sees `error` and stops
            self.error = exc
            log.critical("publisher thread died: %r", exc, exc_info=True)
            raise

    def _run(self) -> None:
        sock = None
        monitor = None
        try:
            sock = self.context.socket(zmq.XPUB)
            sock.setsockopt(zmq.SNDHWM, self.config.hwm)
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, so each new subscriber gets the state
            sock.setsockopt(zmq.LINGER, int(self.config.linger_s * 1000))
            make_server_socket(sock, self.keys)
            monitor = sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
            sock.bind(self.config.endpoint)
            self.last_endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException as exc:  # reported to the starter, which fails start-up with it
            self.error = exc
            self.bound.set()
            if monitor is not None:
                monitor.close(linger=0)
            if sock is not None:
                sock.close(linger=0)
            return
        self.bound.set()
        log.info("publishing %s on %s (encoding %s)", self.config.topic, self.last_endpoint, self.config.encoding)
        try:
            while not self.abort.is_set():
                self._count_connections(monitor)
                self._read_subscriptions(sock)
                self._send_status(sock)
                try:
                    item = self.queue.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, _Finish):
                    self._send_status(sock)
                    if item.status is not None:
                        self._send_status_message(sock, item.status)
                    break
                self.metrics.queue_depth.labels("results").set(self.queue.qsize())
                try:
                    self._publish(sock, item)
                except zmq.ZMQError as exc:
                    log.error("publish failed: %s", exc)
                except Exception:
                    log.exception("cannot publish an item; skipped")
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close()

    def _send_status(self, sock: zmq.Socket) -> None:
        while True:
            try:
                event = self.status_queue.get_nowait()
            except queue.Empty:
                return
            self._send_status_message(sock, event)

    def _send_status_message(self, sock: zmq.Socket, event: StatusEvent) -> None:
        self._last_status = event
        self._resend_status(sock)

    def _resend_status(self, sock: zmq.Socket) -> None:
        """Sends the current state; `last_seq` is the last mask published before this very message."""
        event = self._last_status
        if event is None:
            return
        header = {"v": PROTOCOL_VERSION, "kind": "status", "stream": self.stream_id, "state": event.state,
                  "detail": event.detail, "last_seq": self.seq - 1 if self.seq else None,
                  "t_publish_ns": time.monotonic_ns()}
        try:
            sock.send_multipart([self.config.status_topic.encode(), dumps_header(header), b""])
        except zmq.ZMQError as exc:
            log.debug("status not sent: %s", exc)

    def _read_subscriptions(self, sock: zmq.Socket) -> None:
        status_topic = self.config.status_topic.encode()
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscribed.set()
                if status_topic.startswith(msg[1:]):  # a new status subscriber: tell it the current state
                    self._resend_status(sock)

    def _count_connections(self, monitor: zmq.Socket) -> None:
        while monitor.poll(0):
            event = recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._connections.add(int(event["value"]))
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connections.discard(int(event["value"]))
            self.subscribers = len(self._connections)
            self.metrics.subscribers.set(self.subscribers)

    def _publish(self, sock: zmq.Socket, item: Outcome) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        payload = encode_labels(item.labels, cfg.encoding, item.object_ids)
        objects = [o.to_json() for o in object_infos(item.labels, item.object_ids, item.probabilities)]
        h, w = item.labels.shape
        header: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "kind": "mask",
            "stream": self.stream_id,
            "seq": self.seq,
            "frame": item.frame_index,
            "capture_seq": item.frame.seq,
            "t_capture_ns": item.frame.t_capture_ns,
            "t_capture_unix_ns": item.frame.t_capture_unix_ns,
            "t_inferred_ns": item.t_inferred_ns,
            "width": w,
            "height": h,
            "encoding": cfg.encoding,
            "objects": objects,
            "timings_ms": {k: round(v, 2) for k, v in item.timings_ms.items()},
        }
        if item.frame.source is not None:  # optional fields: the stamp and frame a ROS 2 source gave the frame
            header["source_stamp_ns"] = item.frame.source.stamp_ns
            header["frame_id"] = item.frame.source.frame_id
        encode_ms = (time.perf_counter() - t0) * 1000
        header["timings_ms"]["encode"] = round(encode_ms, 2)
        header["t_publish_ns"] = time.monotonic_ns()
        sock.send_multipart([cfg.topic.encode(), dumps_header(header), payload], copy=len(payload) < 65536)
        latency_s = (time.monotonic_ns() - item.frame.t_capture_ns) / 1e9
        self.metrics.frames_published.inc()
        self.metrics.capture_to_publish.observe(latency_s)
        self.metrics.stage_latency.labels("encode").observe(encode_ms / 1000)
        if cfg.preview and self.seq % cfg.preview_every == 0:
            jpeg, pw, ph = encode_jpeg(item.frame.image, cfg.preview_quality, cfg.preview_max_side)
            preview = {"v": PROTOCOL_VERSION, "kind": "preview", "stream": self.stream_id, "seq": self.seq,
                       "capture_seq": item.frame.seq, "t_capture_ns": item.frame.t_capture_ns,
                       "width": pw, "height": ph, "encoding": "jpeg"}
            sock.send_multipart([cfg.preview_topic.encode(), dumps_header(preview), jpeg])
        self.seq += 1
        if self.on_published is not None:
            self.on_published(item, header)
