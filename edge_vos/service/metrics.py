"""Prometheus metrics of one service instance, in its own registry (no process-global state).

Everything about one camera carries a `stream` label (its id; `StreamMetrics` holds the series of one
stream); what the streams share (the result queue, subscribers, commands, the shared threads) has none, or an
empty `stream` (which Prometheus treats as no label).

Counters end in `_total`, latencies are histograms (the Python client computes no quantiles; Prometheus
does with histogram_quantile), gauges hold queue depths, objects, the source state and GPU memory. The
HTTP endpoint starts only when `metrics.enabled`; the registry always exists so `stats` can read it.
The standard process, platform and garbage-collector collectors (prometheus_client's own: resident
memory, CPU seconds, open files, ...) are registered in the same registry, and `thread_alive{thread}`
says whether each of the service's threads runs (a dead control thread is visible at once).
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

log = logging.getLogger(__name__)

# Seconds; spans a fast GPU (a few ms) to a loaded CPU at 480p (seconds).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10)
DROP_REASONS = ("capture_skipped", "result_queue_full", "tracker_error", "unreadable")
THREADS = ("capture", "inference", "publisher", "control")
PREFIX = "edge_vos_"


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        s = ["stream"]
        self.frames_captured = Counter(PREFIX + "frames_captured", "Frames read from the source", s, registry=r)
        self.frames_processed = Counter(PREFIX + "frames_processed", "Frames the tracker processed", s, registry=r)
        self.frames_published = Counter(PREFIX + "frames_published", "Mask messages published", s, registry=r)
        self.frames_dropped = Counter(
            PREFIX + "frames_dropped", "Frames dropped, by reason", ["reason", "stream"], registry=r
        )
        self.reconnects = Counter(PREFIX + "source_reconnects", "Source reconnect attempts", s, registry=r)
        self.commands = Counter(PREFIX + "commands", "Control requests, by command (the protocol's name, "
                                "'invalid' when refused by validation) and result", ["cmd", "result"], registry=r)
        self.replies_undelivered = Counter(
            PREFIX + "control_replies_undelivered", "Replies that could not be delivered, by reason",
            ["reason"], registry=r,
        )
        for reason in ("client_gone", "not_read"):
            self.replies_undelivered.labels(reason)
        self.stage_latency = Histogram(
            PREFIX + "stage_latency_seconds", "Per-stage latency", ["stage", "stream"], buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.capture_to_publish = Histogram(
            PREFIX + "capture_to_publish_seconds", "From grab to the mask leaving the publisher", s,
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.fps = Gauge(PREFIX + "fps", "Processed frames per second (recent)", s, registry=r)
        self.queue_depth = Gauge(PREFIX + "queue_depth", "Items waiting in a queue", ["queue", "stream"], registry=r)
        self.objects = Gauge(PREFIX + "objects", "Objects being tracked", s, registry=r)
        self.source_connected = Gauge(PREFIX + "source_connected", "1 while the source delivers frames", s,
                                      registry=r)
        self.subscribers = Gauge(PREFIX + "subscribers", "Connected subscriber sockets", registry=r)
        self.thread_alive = Gauge(PREFIX + "thread_alive", "1 while the thread runs", ["thread", "stream"],
                                  registry=r)
        self.gpu_memory = Gauge(PREFIX + "gpu_memory_bytes", "GPU memory allocated by torch", ["kind"], registry=r)
        self.build_info = Info(PREFIX + "build", "Versions", registry=r)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)  # stateless collectors of this process; safe in several registries
        self._server: Any = None

    def for_stream(self, stream: str) -> StreamMetrics:
        """The series of one stream (created now, so every one is exported from the start)."""
        return StreamMetrics(self, stream)

    def watch_thread(self, name: str, alive: Callable[[], bool], stream: str = "") -> None:
        """`thread_alive{thread=name,stream=stream}` reads `alive()` at every scrape."""
        self.thread_alive.labels(name, stream).set_function(lambda: 1.0 if alive() else 0.0)

    def set_build_info(self, **values: str) -> None:
        self.build_info.info({"python": platform.python_version(), **{k: str(v) for k, v in values.items()}})

    def serve(self, address: str, port: int) -> None:
        """Starts the /metrics HTTP endpoint (a daemon thread owned by prometheus-client)."""
        self._server = start_http_server(port, addr=address, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", address, port)

    def close(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=2)
            self._server = None

    def update_gpu_memory(self) -> None:
        """torch.cuda.mem_get_info works on Jetson's integrated GPU too (NVML does not)."""
        try:
            import torch

            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info()
                self.gpu_memory.labels("allocated").set(torch.cuda.memory_allocated())
                self.gpu_memory.labels("used_device").set(total - free)
        except Exception as exc:  # metrics must never break the service
            log.debug("GPU memory unavailable: %s", exc)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The sum of the samples `name` whose labels include `labels` (all streams unless `stream` is given)."""
        wanted = (labels or {}).items()
        total = 0.0
        own = [m for m in vars(self).values() if isinstance(m, (Counter, Gauge, Histogram))]
        for metric in (family for m in own for family in m.collect()):  # not the process collectors: cheap
            for sample in metric.samples:
                if sample.name == PREFIX + name and wanted <= sample.labels.items():
                    total += float(sample.value)
        return total


class StreamMetrics:
    """The labelled series of one stream, bound once (the hot path does no label lookups)."""

    def __init__(self, metrics: ServiceMetrics, stream: str) -> None:
        self.stream = stream
        self.frames_captured = metrics.frames_captured.labels(stream)
        self.frames_processed = metrics.frames_processed.labels(stream)
        self.frames_published = metrics.frames_published.labels(stream)
        self.dropped = {reason: metrics.frames_dropped.labels(reason, stream) for reason in DROP_REASONS}
        self.reconnects = metrics.reconnects.labels(stream)
        self.capture_to_publish = metrics.capture_to_publish.labels(stream)
        self.fps = metrics.fps.labels(stream)
        self.objects = metrics.objects.labels(stream)
        self.source_connected = metrics.source_connected.labels(stream)
        self.frame_queue = metrics.queue_depth.labels("frames", stream)
        self._stage_latency = metrics.stage_latency
        self._metrics = metrics

    def stage(self, name: str) -> Any:
        """`stage_latency_seconds{stage=name,stream}`."""
        return self._stage_latency.labels(name, self.stream)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self._metrics.value(name, {**(labels or {}), "stream": self.stream})
