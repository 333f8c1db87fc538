"""The publisher thread: owns the XPUB socket, encodes results and publishes them, for every stream.

Results arrive on a bounded queue from the inference thread; encoding (PNG, RLE, JPEG previews) happens
here so it overlaps the next frame's inference. Each stream has its own topics (`masks/<id>`,
`preview/<id>`, `status/<id>`: `wire.protocol.stream_topic`) and its own `seq`. XPUB behaves like PUB for
subscribers (never blocks; a subscriber whose queue reaches the high-water mark loses new messages) and
additionally tells us when a subscriber arrives, so `wait_for_subscriber_s` can hold frame 0 until someone
listens, and so a new subscriber of a status topic is sent the current state of each stream it covers at
once (a last-value cache: a state sent before its subscription arrived is not lost to it). A stream's final
status (`ended` or `failed`) travels in the result queue behind its last result, so it always follows the
last mask and names its `seq`. A socket monitor counts connected subscribers (connections, not topic
subscriptions).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
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
    stream_topic,
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
    stream: str = ""  # the stream's id ("" = the only stream)


@dataclass
class StatusEvent:
    state: str
    detail: str = ""
    stream: str = ""  # the stream's id ("" = every stream)


@dataclass
class _Finish:
    """Queue sentinel: publish what is queued, then the final statuses, then close."""

    statuses: list[StatusEvent] = field(default_factory=list)


class ResultQueue:
    """What the inference thread hands the publisher, in order: outcomes, a stream's final status, the finish
    sentinel. At most `maxsize` outcomes wait; `put(wait=False)` then drops the oldest outcome (never a
    status, which must follow its stream's last mask), `put(wait=True)` waits for room."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Any] = collections.deque()
        self._outcomes = 0
        self._cond = threading.Condition()

    def put(self, item: Any, wait: bool, stop: Callable[[], bool] = lambda: False) -> tuple[bool, int]:
        """(accepted, outcomes dropped to make room)."""
        dropped = 0
        with self._cond:
            while isinstance(item, Outcome) and self._outcomes >= self.maxsize:
                if not wait:
                    oldest = next(i for i in self._items if isinstance(i, Outcome))
                    self._items.remove(oldest)
                    self._outcomes -= 1
                    dropped += 1
                    continue
                if stop():
                    return False, dropped
                self._cond.wait(0.05)
            self._items.append(item)
            self._outcomes += isinstance(item, Outcome)
            self._cond.notify_all()
        return True, dropped

    def get(self, timeout: float) -> Any:
        """The oldest item, or None after `timeout`."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._outcomes -= isinstance(item, Outcome)
            self._cond.notify_all()
            return item

    def qsize(self) -> int:
        return self._outcomes


class Publisher(threading.Thread):
    def __init__(
        self,
        context: zmq.Context,
        config: PublishConfig,
        streams: Sequence[str],
        keys: ServerKeys | None,
        metrics: ServiceMetrics,
        queue_size: int,
        on_published: Callable[[Outcome, dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(name="publisher", daemon=True)
        self.context, self.config, self.keys, self.metrics = context, config, keys, metrics
        self.streams = list(streams)
        # (masks, preview, status) topics of each stream.
        self.topics = {s: tuple(stream_topic(t, s).encode() for t in (config.topic, config.preview_topic,
                                                                       config.status_topic)) for s in streams}
        self.queue = ResultQueue(queue_size)
        # Source state changes travel apart so they never displace a frame's result.
        self.status_queue: queue.Queue[StatusEvent] = queue.Queue(16 * len(self.streams))
        self.on_published = on_published
        self.bound = threading.Event()
        self.subscribed = threading.Event()
        self.error: BaseException | None = None
        self.abort = threading.Event()  # stop now, without draining
        self.finishing = False  # finish() was called: ending is expected
        self.seqs = dict.fromkeys(self.streams, 0)  # the next mask's seq, per stream
        self.subscribers = 0  # connected subscriber sockets
        self.dropped = 0
        self.last_endpoint = ""
        self._connections: set[int] = set()
        self._last_status: dict[str, StatusEvent] = {}  # per stream

    @property
    def seq(self) -> int:
        """Mask messages published, all streams together."""
        return sum(self.seqs.values())

    # ---- called from other threads ---------------------------------------------------------------

    def submit_status(self, event: StatusEvent) -> None:
        """Queues a status message; when 16 per stream are waiting the oldest is dropped (they are also logged)."""
        while True:
            try:
                self.status_queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.status_queue.get_nowait()
                except queue.Empty:
                    pass

    def submit(self, item: Outcome | StatusEvent, wait: bool, stop: threading.Event) -> bool:
        """Queues a result, or a stream's final status (after its last result). wait=True (fastest): blocks
        while full until `stop`. wait=False (realtime): a full queue loses its oldest result, so the newest
        frame always goes out."""
        accepted, dropped = self.queue.put(item, wait, lambda: stop.is_set() or self.abort.is_set())
        for _ in range(dropped):
            self.dropped += 1
            self.metrics.frames_dropped.labels("result_queue_full", item.stream).inc()
        return accepted

    def finish(self, final_statuses: Sequence[StatusEvent] = ()) -> None:
        """Asks the thread to publish what is queued, then `final_statuses`, and stop (the inference thread
        has ended, so nothing is queued after this)."""
        self.finishing = True
        self.queue.put(_Finish(list(final_statuses)), wait=False)

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
                item = self.queue.get(timeout=0.05)
                if item is None:
                    continue
                if isinstance(item, _Finish):
                    self._send_status(sock)
                    for status in item.statuses:
                        self._send_status_message(sock, status)
                    break
                if isinstance(item, StatusEvent):  # a stream's final status, after its last mask
                    self._send_status(sock)
                    self._send_status_message(sock, item)
                    continue
                self.metrics.queue_depth.labels("results", "").set(self.queue.qsize())
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
        for stream in [event.stream] if event.stream else self.streams:
            self._last_status[stream] = StatusEvent(event.state, event.detail, stream)
            self._resend_status(sock, stream)

    def _resend_status(self, sock: zmq.Socket, stream: str) -> None:
        """Sends a stream's current state; `last_seq` is its last mask published before this very message."""
        event = self._last_status.get(stream)
        if event is None:
            return
        seq = self.seqs[stream]
        header = {"v": PROTOCOL_VERSION, "kind": "status", "stream": stream, "state": event.state,
                  "detail": event.detail, "last_seq": seq - 1 if seq else None, "t_publish_ns": time.monotonic_ns()}
        try:
            sock.send_multipart([self.topics[stream][2], dumps_header(header), b""])
        except zmq.ZMQError as exc:
            log.debug("status not sent: %s", exc)

    def _read_subscriptions(self, sock: zmq.Socket) -> None:
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscribed.set()
                for stream, (_, _, status_topic) in self.topics.items():
                    if status_topic.startswith(msg[1:]):  # a new status subscriber: tell it the current state
                        self._resend_status(sock, stream)

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
        stream = item.stream or self.streams[0]
        masks_topic, preview_topic, _ = self.topics[stream]
        seq = self.seqs[stream]
        t0 = time.perf_counter()
        payload = encode_labels(item.labels, cfg.encoding, item.object_ids)
        objects = [o.to_json() for o in object_infos(item.labels, item.object_ids, item.probabilities)]
        h, w = item.labels.shape
        header: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "kind": "mask",
            "stream": stream,
            "seq": seq,
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
        sock.send_multipart([masks_topic, dumps_header(header), payload], copy=len(payload) < 65536)
        latency_s = (time.monotonic_ns() - item.frame.t_capture_ns) / 1e9
        self.metrics.frames_published.labels(stream).inc()
        self.metrics.capture_to_publish.labels(stream).observe(latency_s)
        self.metrics.stage_latency.labels("encode", stream).observe(encode_ms / 1000)
        if cfg.preview and seq % cfg.preview_every == 0:
            jpeg, pw, ph = encode_jpeg(item.frame.image, cfg.preview_quality, cfg.preview_max_side)
            preview = {"v": PROTOCOL_VERSION, "kind": "preview", "stream": stream, "seq": seq,
                       "capture_seq": item.frame.seq, "t_capture_ns": item.frame.t_capture_ns,
                       "width": pw, "height": ph, "encoding": "jpeg"}
            sock.send_multipart([preview_topic, dumps_header(preview), jpeg])
        self.seqs[stream] = seq + 1
        if self.on_published is not None:
            self.on_published(item, header)
