"""The service: wiring and lifecycle of one stream's threads.

Threads and what each owns (each module holds one):
- capture (sources.CaptureThread): the reader; hands frames to a LatestFrame (realtime) or FrameQueue
  (fastest) buffer.
- inference (inference.InferenceWorker): the tracker; prompts and commands through prompts.PromptBook.
- publisher (publisher.Publisher): the XPUB socket; encodes and sends.
- control (control.ControlServer): the ROUTER socket; validates and answers requests.
`Service` builds all of them in `__init__` and connects them with bounded queues and callbacks; `start()`
binds the sockets and starts the threads; `stop()` stops them within a few seconds. It also answers
`stats`, reports progress (logs, systemd STATUS, the watchdog) and decides the exit: a thread that dies
while the stream goes on stops the service (so systemd restarts it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import zmq

from edge_vos.config import ConfigError, redacted_dict
from edge_vos.prompt.methods import PromptMasks
from edge_vos.service.capture import CaptureThread, FrameQueue, LatestFrame
from edge_vos.service.commands import Limits
from edge_vos.service.config import ServiceConfig
from edge_vos.service.control import ControlServer
from edge_vos.service.inference import InferenceWorker
from edge_vos.service.metrics import DROP_REASONS, ServiceMetrics
from edge_vos.service.notify import Notifier
from edge_vos.service.prompts import PromptBook, StartupError, TrackerLike, load_prompt_mask
from edge_vos.service.publisher import Outcome, Publisher, StatusEvent
from edge_vos.service.security import load_server_keys, start_authenticator
from edge_vos.service.sources import FrameReader, open_reader

log = logging.getLogger(__name__)


def build_tracker(config: ServiceConfig) -> TrackerLike:
    """The configured Tracker (tracker.build_tracker); what cannot run here is a ConfigError naming the field
    under `tracker.`."""
    from edge_vos.tracker import build_tracker as build

    try:
        return build(config.tracker)
    except ConfigError as exc:
        raise exc.under("tracker") from None


class PublishHook(Protocol):
    """Something the program attaches to the service (the ROS 2 recording and bridge, edge_vos/ros2): started
    once the sockets are bound, told of every published mask by the publisher thread, stopped after the
    publisher has drained. The service knows only this shape, not what implements it."""

    def start(self, masks_endpoint: str, control_endpoint: str) -> None: ...

    def on_published(self, header: dict[str, Any], labels: np.ndarray, frame: np.ndarray) -> None: ...

    def stop(self) -> None: ...


class Service:
    """One stream: build with a config, `start()`, then `wait()` or `stop()`.

    Everything slow or fallible that holds no OS resource (the reader, the prompt mask, CURVE keys, the
    tracker and its weights) is built in `__init__`; `start()` only binds the sockets and starts the
    threads, which takes milliseconds. So a signal that arrives while a service is being built can end
    the process at once, and `start()` fails fast only for what needs the OS (ports in use).
    `tracker_factory` and `reader` let tests inject a fake tracker or a failing source; by default the
    configured Tracker and the reader for `source.uri` are used.
    """

    def __init__(
        self,
        config: ServiceConfig,
        tracker_factory: Callable[[ServiceConfig], TrackerLike] | None = None,
        reader: FrameReader | None = None,
        notifier: Notifier | None = None,
        hooks: Sequence[PublishHook] = (),
    ) -> None:
        self.config = cfg = config
        self.notifier = notifier or Notifier()
        self.metrics = ServiceMetrics()
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.exit_error: str | None = None
        self.startup_failed = False  # the error is the operator's configuration (exit status 2)
        self.started_at = time.monotonic()
        self.hooks = tuple(hooks)
        self._ready = False
        self._last_status = 0.0
        self._status_lock = threading.Lock()
        self._authenticator: Any = None

        self.reader = reader or open_reader(cfg.source)
        self.pace = cfg.source.pace if cfg.source.pace != "auto" else (
            "realtime" if self.reader.live or cfg.source.uri.startswith("synthetic:") else "fastest")
        initial_mask = None
        if cfg.prompt.mask:
            initial_mask = load_prompt_mask(cfg.prompt.mask)
        elif cfg.prompt.use_source_mask:
            initial_mask = self.reader.initial_mask()
        self.keys = load_server_keys(cfg.security)
        tracker = (tracker_factory or build_tracker)(cfg)
        # The prompt network is loaded here, once, not on the first prompt: a prompt then costs one crop's
        # inference on the inference thread (bounded whatever the frame size), never a model load.
        prompt_masks = PromptMasks(cfg.prompt.weights or None)
        if not prompt_masks.load() and cfg.prompt.weights:
            raise ConfigError("prompt.weights", str(prompt_masks.load_error))
        self.metrics.set_build_info(**_versions(), stream=cfg.stream_id, weights=cfg.tracker.model.weights or "default")
        self.buffer: LatestFrame | FrameQueue = (
            LatestFrame() if self.pace == "realtime" else FrameQueue(cfg.pipeline.frame_queue))
        self.capture = CaptureThread(
            self.reader, self.buffer, cfg.source, self.pace, self.stop_event,
            on_state=self._on_source_state, on_frame=self._on_captured, on_reconnect=self.metrics.reconnects.inc,
            on_unreadable=self.metrics.frames_dropped.labels("unreadable").inc,
        )
        self.context: zmq.Context | None = zmq.Context()
        self.publisher = Publisher(self.context, cfg.publish, cfg.stream_id, self.keys, self.metrics,
                                   cfg.pipeline.result_queue, on_published=self._on_published)
        self.control: ControlServer | None = None
        if cfg.control.endpoint:
            self.control = ControlServer(self.context, cfg.control, self.keys, self.metrics, self._limits,
                                         self._query, self.stop_event)
        self.prompts = PromptBook(tracker, cfg.prompt, cfg.tracker.max_objects, cfg.control.history,
                                  self.control_reply, initial_mask, prompt_masks)
        self.worker = InferenceWorker(
            tracker, self.prompts, self.buffer, self.control.commands if self.control else None,
            self._submit, self.metrics, cfg.pipeline, self.stop_event, on_progress=self.heartbeat,
            on_done=self.inference_done, before_first_frame=self._wait_for_subscriber,
        )
        self.metrics.watch_thread("capture", self.capture.is_alive)
        self.metrics.watch_thread("inference", self.worker.is_alive)
        self.metrics.watch_thread("publisher", self.publisher.is_alive)
        if self.control is not None:
            self.metrics.watch_thread("control", self.control.is_alive)

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Binds the sockets and starts the threads, or raises (ConfigError for a port in use) with nothing
        left running."""
        try:
            self._start(self.config)
        except BaseException:
            self.stop()
            raise

    def _start(self, cfg: ServiceConfig) -> None:
        if self.context is None or self.worker.is_alive():
            raise RuntimeError("a service starts once; build a new one to start again")
        self._authenticator = start_authenticator(self.context, cfg.security)
        self.publisher.start()
        self._wait_bound(self.publisher, "publish.endpoint")
        if self.control is not None:
            self.control.start()
            self._wait_bound(self.control, "control.endpoint")
        for hook in self.hooks:  # e.g. a bag opens, a bridge connects to the sockets just bound
            hook.start(self.publisher.last_endpoint, self.control.last_endpoint if self.control else "")
        if cfg.metrics.enabled:
            try:
                self.metrics.serve(cfg.metrics.address, cfg.metrics.port)
            except OSError as exc:
                raise ConfigError("metrics.port", f"cannot serve on {cfg.metrics.address}:{cfg.metrics.port}: "
                                                  f"{exc}") from None
        self.started_at = time.monotonic()
        self.worker.start()
        self.capture.start()
        log.info("service %s: %s, pace %s, %s -> %s", cfg.stream_id, self.reader.description, self.pace,
                 self.publisher.last_endpoint, self.control.last_endpoint if self.control else "no control")

    def _wait_bound(self, thread: Publisher | ControlServer, field_name: str) -> None:
        if not thread.bound.wait(10):
            raise RuntimeError(f"{thread.name} thread did not start")
        if thread.error is not None:
            raise ConfigError(field_name, f"cannot bind: {thread.error}")

    def request_stop(self) -> None:
        """Safe from signal handlers: only sets an event."""
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the stream is done (source ended, max_frames, error, or stop); True when done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done.is_set():
            if self.stop_event.is_set():
                break
            dead = self.dead_thread()
            if dead:
                self.exit_error = dead
                log.error("%s; stopping so that the service is restarted", dead)
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.done.wait(0.2)  # short waits keep the main thread responsive to signals
            self._periodic_status()
        return True

    def dead_thread(self) -> str | None:
        """Names a thread that ended although the stream goes on (a bug no request should reach)."""
        if self.stop_event.is_set() or self.done.is_set():
            return None
        publisher = self.publisher
        if publisher.bound.is_set() and not publisher.is_alive() and not publisher.finishing:
            return f"the publisher thread died: {publisher.error!r}"
        if self.control is not None and self.control.bound.is_set() and not self.control.is_alive():
            return f"the control thread died: {self.control.error!r}"
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stops every thread (each within `timeout`), flushing what the publisher holds."""
        self.notifier.stopping()
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in (self.capture, self.worker):
            if thread.is_alive():
                thread.join(max(0.1, deadline - time.monotonic()))
                if thread.is_alive():
                    log.error("%s thread did not stop within %.1f s", thread.name, timeout)
        publisher = self.publisher
        if publisher.is_alive():
            publisher.finish()
            publisher.join(max(0.1, deadline - time.monotonic()))
            if publisher.is_alive():
                publisher.abort.set()
                publisher.join(1.0)
        if self.control is not None and self.control.is_alive():
            self.control.join(max(0.1, deadline - time.monotonic()))
        for hook in self.hooks:
            hook.stop()
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        self.metrics.close()
        if self.context is not None:
            self.context.term() if not self._alive_sockets() else self.context.destroy(linger=0)
            self.context = None
        self.notifier.close()

    def _alive_sockets(self) -> bool:
        return any(t is not None and t.is_alive() for t in (self.publisher, self.control))

    # ---- callbacks from the threads --------------------------------------------------------------

    def inference_done(self) -> None:
        """The inference thread ended (source end, max_frames, stop, error): let the publisher drain."""
        error = self.worker.error
        if error is not None:
            self.exit_error = str(error)
            self.startup_failed = isinstance(error, StartupError)
        self.publisher.finish(self._final_status())
        self.done.set()

    def _final_status(self) -> StatusEvent:
        """The stream's last status, sent after its last mask: why it ended."""
        if self.exit_error:
            return StatusEvent("failed", self.exit_error)
        if self.worker.reached_max_frames:
            return StatusEvent("ended", f"max_frames ({self.config.pipeline.max_frames}) reached")
        if self.stop_event.is_set():
            return StatusEvent("ended", "the service is stopping")
        return StatusEvent("ended", "end of source")

    def control_reply(self, token: int, body: dict[str, Any]) -> None:
        if self.control is not None:
            self.control.reply(token, body)

    def _submit(self, outcome: Outcome) -> bool:
        """The inference thread's result sink: fastest waits for room, realtime drops the oldest result."""
        return self.publisher.submit(outcome, wait=self.pace == "fastest", stop=self.stop_event)

    def _wait_for_subscriber(self) -> None:
        wait_s = self.config.publish.wait_for_subscriber_s
        if wait_s and not self.publisher.subscribed.wait(wait_s):
            log.warning("no subscriber after %.1f s; starting anyway", wait_s)

    def heartbeat(self) -> None:
        """Called by the inference thread every loop: WATCHDOG=1 only while frames are being processed, or
        while the capture thread is alive and busy reconnecting a lost source (a hung inference or capture
        thread stops the pings and systemd restarts the service)."""
        interval = self.notifier.watchdog_interval_s
        if interval is None or self.dead_thread():
            return
        now = time.monotonic()
        processing = now - self.worker.last_processed < interval
        capture = self.capture
        reconnecting = (capture.is_alive() and capture.state in ("connecting", "reconnecting")
                        and now - capture.last_activity < interval)
        if processing or reconnecting:
            self.notifier.watchdog()

    def _on_captured(self) -> None:
        self.metrics.frames_captured.inc()
        skipped = self.buffer.skipped
        counted = self.metrics.value("frames_dropped_total", {"reason": "capture_skipped"})
        if skipped > counted:
            self.metrics.frames_dropped.labels("capture_skipped").inc(skipped - counted)

    def _on_source_state(self, state: str, detail: str) -> None:
        self.metrics.source_connected.set(1 if state == "streaming" else 0)
        self.notifier.status(f"source {state}" + (f": {detail}" if detail else ""))
        if state == "reconnecting" and not self._ready:
            self._ready = True  # startup is over; the service runs and reports the lost source
            self.notifier.ready(f"source {state}")
        if state == "failed":
            self.exit_error = f"source failed: {detail}"
        if state not in ("ended", "failed"):
            # Final states go out after the stream's last mask (`inference_done`), not ahead of it.
            self.publisher.submit_status(StatusEvent(state, detail))

    def _on_published(self, outcome: Outcome, header: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_published(header, outcome.labels, outcome.frame.image)
        if not self._ready:
            self._ready = True
            self.notifier.ready(f"streaming {self.config.stream_id}")
        self._periodic_status()

    def _periodic_status(self) -> None:
        now = time.monotonic()
        with self._status_lock:
            if now - self._last_status < self.config.pipeline.status_every_s:
                return
            self._last_status = now
        snap = self.worker.snapshot
        state = self.capture.state
        skipped = self.buffer.skipped
        text = (f"{snap.frames} frames, {snap.fps:.1f} fps, {len(snap.objects)} objects, "
                f"source {state}, skipped {skipped}")
        fields = {"frames": snap.frames, "fps": round(snap.fps, 2), "objects": snap.objects,
                  "source": state, "skipped": skipped,
                  "step_ms_p50": round(snap.step_ms_p50, 1)}
        log.info("%s", text, extra={"fields": fields})  # `--log-json` writes the fields as JSON
        self.notifier.status(text)
        self.metrics.update_gpu_memory()

    # ---- queries from the control thread ---------------------------------------------------------

    def _limits(self) -> Limits:
        snap = self.worker.snapshot
        return Limits(snap.frame_hw, self.config.control.max_polygon_points, self.config.prompt.resize_tolerance)

    def _query(self, what: str) -> dict[str, Any]:
        if what == "ping":
            return {"pong": True}
        if what == "config":
            return {"config": redacted_dict(self.config)}
        return {"stats": self.stats()}

    def stats(self) -> dict[str, Any]:
        snap = self.worker.snapshot
        m = self.metrics
        return {
            "stream": self.config.stream_id,
            "uptime_s": round(time.monotonic() - self.started_at, 2),
            "pace": self.pace,
            "source": {"state": self.capture.state, "frames": self.capture.frames,
                       "reconnects": self.capture.reconnects, "skipped": self.buffer.skipped,
                       "unreadable": int(m.value("frames_dropped_total", {"reason": "unreadable"}))},
            "frames_processed": snap.frames,
            "frames_published": int(m.value("frames_published_total")),
            "dropped": {r: int(m.value("frames_dropped_total", {"reason": r})) for r in DROP_REASONS},
            "fps": round(snap.fps, 2),
            "step_ms_p50": round(snap.step_ms_p50, 2),
            "objects": snap.objects,
            "frame_size": list(snap.frame_hw[::-1]) if snap.frame_hw else None,
            "recent_frames": list(snap.recent) if snap.recent else None,
            "queues": {"frames": self.buffer.depth(), "results": self.publisher.queue.qsize()},
            "subscribers": self.publisher.subscribers,
        }


def _versions() -> dict[str, str]:
    import edge_vos

    return {"edge_vos": getattr(edge_vos, "__version__", "0"), "zmq": zmq.zmq_version()}
