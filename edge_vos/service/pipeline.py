"""The service: wiring and lifecycle of its streams' threads (one camera, or several with `streams:`).

Threads and what each owns (each module holds one):
- capture, one per stream (capture.CaptureThread, in stream.Stream): the reader; hands frames to the
  stream's LatestFrame (realtime) or FrameQueue (fastest) buffer.
- inference (inference.InferenceWorker): every stream's tracker (one network and one set of runners shared,
  tracker.build_engines), served round robin; prompts and commands through each stream's prompts.PromptBook.
- publisher (publisher.Publisher): the XPUB socket; encodes and sends, on each stream's topics.
- control (control.ControlServer): the ROUTER socket; validates and answers requests.
`Service` builds all of them in `__init__` and connects them with bounded queues and callbacks; `start()`
binds the sockets and starts the threads; `stop()` stops them within a few seconds. It also answers
`stats` and `streams`, reports progress (logs, systemd STATUS, the watchdog over every stream) and decides
the exit: a thread that dies while the streams go on stops the service (so systemd restarts it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import zmq

from edge_vos.config import ConfigError, redacted_dict
from edge_vos.prompt.methods import PromptMasks
from edge_vos.service.commands import Limits
from edge_vos.service.config import ServiceConfig, StreamConfig
from edge_vos.service.control import ControlServer
from edge_vos.service.inference import InferenceWorker
from edge_vos.service.metrics import ServiceMetrics
from edge_vos.service.notify import Notifier
from edge_vos.service.prompts import PromptBook, StartupError, TrackerLike, load_prompt_mask
from edge_vos.service.publisher import Outcome, Publisher, StatusEvent
from edge_vos.service.security import load_server_keys, start_authenticator
from edge_vos.service.sources import FrameReader, open_reader
from edge_vos.service.stream import Stream, service_stats
from edge_vos.service.trackers import build_tracker as build_tracker
from edge_vos.service.trackers import shared_trackers

log = logging.getLogger(__name__)


class PublishHook(Protocol):
    """Something the program attaches to the service (the ROS 2 recording and bridge, edge_vos/ros2): started
    once the sockets are bound, told of every published mask by the publisher thread, stopped after the
    publisher has drained. The service knows only this shape, not what implements it."""

    def start(self, masks_endpoint: str, control_endpoint: str) -> None: ...

    def on_published(self, header: dict[str, Any], labels: np.ndarray, frame: np.ndarray) -> None: ...

    def stop(self) -> None: ...


class Service:
    """Its streams: build with a config, `start()`, then `wait()` or `stop()`.

    Everything slow or fallible that holds no OS resource (the readers, the prompt masks, CURVE keys, the
    network and the trackers) is built in `__init__`; `start()` only binds the sockets and starts the
    threads, which takes milliseconds. So a signal that arrives while a service is being built can end
    the process at once, and `start()` fails fast only for what needs the OS (ports in use).
    `tracker_factory` (called with each stream's config), `reader` (the only stream's) and `readers` (by
    stream id) let tests inject fake trackers or failing sources; by default the trackers share one set of
    engines (`shared_trackers`) and each stream reads its `source.uri`.
    """

    def __init__(
        self,
        config: ServiceConfig,
        tracker_factory: Callable[[StreamConfig], TrackerLike] | None = None,
        reader: FrameReader | None = None,
        notifier: Notifier | None = None,
        hooks: Sequence[PublishHook] = (),
        readers: Mapping[str, FrameReader] | None = None,
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

        configs = cfg.stream_configs
        ids = [s.id for s in configs]
        readers = dict(readers or {})
        if reader is not None:
            if len(configs) != 1:
                raise ValueError("`reader` is the only stream's; give `readers` by stream id")
            readers[ids[0]] = reader
        readers = {s.id: readers.get(s.id) or _per_stream(cfg, i, open_reader, s.source) for i, s in enumerate(configs)}
        self.keys = load_server_keys(cfg.security)
        make_tracker = tracker_factory or shared_trackers(cfg)
        trackers = {s.id: make_tracker(s) for s in configs}
        # The prompt network is loaded here, once, not on the first prompt: a prompt then costs one crop's
        # inference on the inference thread (bounded whatever the frame size), never a model load. The
        # streams share it (all prompts run on the inference thread).
        prompt_masks = PromptMasks(cfg.prompt.weights or None, threads=cfg.pipeline.torch_threads,
                                   box_weights=cfg.prompt.box_weights or None,
                                   correction_weights=cfg.prompt.correction_weights or None)
        named_files = {name: getattr(cfg.prompt, name) for name in ("weights", "box_weights", "correction_weights")}
        if not prompt_masks.load() and any(named_files.values()):
            error = str(prompt_masks.load_error)
            named = next((n for n, f in named_files.items() if n != "weights" and f and f in error), "weights")
            raise ConfigError(f"prompt.{named}", error)
        self.metrics.set_build_info(**_versions(), stream=",".join(ids), weights=cfg.tracker.model.weights or "default")
        self.context: zmq.Context | None = zmq.Context()
        self.publisher = Publisher(self.context, cfg.publish, ids, self.keys, self.metrics,
                                   cfg.pipeline.result_queue, on_published=self._on_published)
        self.control: ControlServer | None = None
        if cfg.control.endpoint:
            self.control = ControlServer(self.context, cfg.control, self.keys, self.metrics, self._limits,
                                         self._query, self.stop_event, ids)
        doorbell = threading.Event()
        self.streams: list[Stream] = []
        for s in configs:
            stream_reader = readers[s.id]
            initial_mask = None
            if s.prompt.mask:
                initial_mask = _per_stream(cfg, len(self.streams), load_prompt_mask, s.prompt.mask)
            elif s.prompt.use_source_mask:
                initial_mask = stream_reader.initial_mask()
            pace = s.source.pace if s.source.pace != "auto" else (
                "realtime" if stream_reader.live or s.source.uri.startswith("synthetic:") else "fastest")
            prompts = PromptBook(trackers[s.id], s.prompt, s.tracker.max_objects, cfg.control.history,
                                 self.control_reply, initial_mask, prompt_masks, stream_id=s.id)
            self.streams.append(Stream(s, stream_reader, trackers[s.id], prompts, pace, cfg.pipeline,
                                       self.metrics.for_stream(s.id), doorbell, self._on_source_state))
        self.by_id = {s.id: s for s in self.streams}
        self.worker = InferenceWorker(
            self.streams, doorbell, self.control.commands if self.control else None, self._submit, cfg.pipeline,
            self.stop_event, on_progress=self.heartbeat, on_done=self.inference_done,
            before_first_frame=self._wait_for_subscriber,
        )
        for stream in self.streams:
            self.metrics.watch_thread("capture", stream.capture.is_alive, stream.id)
        self.metrics.watch_thread("inference", self.worker.is_alive)
        self.metrics.watch_thread("publisher", self.publisher.is_alive)
        if self.control is not None:
            self.metrics.watch_thread("control", self.control.is_alive)

    @property
    def only(self) -> Stream:
        """The stream of a one-camera service (single-stream callers and tests)."""
        if len(self.streams) != 1:
            raise AttributeError(f"the service runs {len(self.streams)} streams; use service.by_id[...]")
        return self.streams[0]

    @property
    def capture(self) -> Any:
        return self.only.capture

    @property
    def buffer(self) -> Any:
        return self.only.buffer

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
        for stream in self.streams:
            stream.capture.start()
            log.info("stream %s: %s, pace %s", stream.id, stream.reader.description, stream.pace)
        log.info("service: %d stream(s) %s -> %s", len(self.streams), self.publisher.last_endpoint,
                 self.control.last_endpoint if self.control else "no control")

    def _wait_bound(self, thread: Publisher | ControlServer, field_name: str) -> None:
        if not thread.bound.wait(10):
            raise RuntimeError(f"{thread.name} thread did not start")
        if thread.error is not None:
            raise ConfigError(field_name, f"cannot bind: {thread.error}")

    def request_stop(self) -> None:
        """Safe from signal handlers: only sets events."""
        self.stop_event.set()
        for stream in self.streams:
            stream.stop.set()

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
        self.request_stop()
        deadline = time.monotonic() + timeout
        for thread in (*(s.capture for s in self.streams), self.worker):
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
        self.publisher.finish([self._final_status(s) for s in self.streams if not s.final_sent])
        self.done.set()

    def _final_status(self, stream: Stream) -> StatusEvent:
        """A stream's last status, sent after its last mask: why it ended."""
        if self.exit_error:
            return StatusEvent("failed", self.exit_error, stream.id)
        if stream.end_reason == "max_frames":
            return StatusEvent("ended", f"max_frames ({self.config.pipeline.max_frames}) reached", stream.id)
        if self.stop_event.is_set() or not stream.done:
            return StatusEvent("ended", "the service is stopping", stream.id)
        return StatusEvent("ended", "end of source", stream.id)

    def control_reply(self, token: int, body: dict[str, Any]) -> None:
        if self.control is not None:
            self.control.reply(token, body)

    def _submit(self, item: Outcome | StatusEvent) -> bool:
        """The inference thread's result sink: a fastest stream waits for room, a realtime one drops the
        oldest result."""
        stream = self.by_id.get(item.stream) or self.streams[0]
        return self.publisher.submit(item, wait=stream.pace == "fastest", stop=self.stop_event)

    def _wait_for_subscriber(self) -> None:
        wait_s = self.config.publish.wait_for_subscriber_s
        if wait_s and not self.publisher.subscribed.wait(wait_s):
            log.warning("no subscriber after %.1f s; starting anyway", wait_s)

    def heartbeat(self) -> None:
        """Called by the inference thread every loop: WATCHDOG=1 only while every stream is healthy (frames
        processed lately, or its capture thread alive and busy reconnecting a lost source, or it has ended):
        a hung inference or capture thread stops the pings and systemd restarts the service."""
        interval = self.notifier.watchdog_interval_s
        if interval is None or self.dead_thread():
            return
        now = time.monotonic()
        if all(stream.healthy(now, interval) for stream in self.streams):
            self.notifier.watchdog()

    def _on_source_state(self, stream: Stream, state: str, detail: str) -> None:
        stream.metrics.source_connected.set(1 if state == "streaming" else 0)
        prefix = f"{stream.id}: " if len(self.streams) > 1 else ""
        self.notifier.status(f"{prefix}source {state}" + (f": {detail}" if detail else ""))
        if state == "reconnecting" and not self._ready:
            self._ready = True  # startup is over; the service runs and reports the lost source
            self.notifier.ready(f"{prefix}source {state}")
        if state == "failed":
            self.exit_error = f"{prefix}source failed: {detail}"
        if state not in ("ended", "failed"):
            # Final states go out after the stream's last mask (`inference_done`), not ahead of it.
            self.publisher.submit_status(StatusEvent(state, detail, stream.id))

    def _on_published(self, outcome: Outcome, header: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_published(header, outcome.labels, outcome.frame.image)
        if not self._ready:
            self._ready = True
            self.notifier.ready(f"streaming {header['stream']}")
        self._periodic_status()

    def _periodic_status(self) -> None:
        now = time.monotonic()
        with self._status_lock:
            if now - self._last_status < self.config.pipeline.status_every_s:
                return
            self._last_status = now
        texts = []
        for stream in self.streams:
            snap = stream.snapshot
            state, skipped = stream.capture.state, stream.buffer.skipped
            prefix = f"{stream.id}: " if len(self.streams) > 1 else ""
            text = (f"{prefix}{snap.frames} frames, {snap.fps:.1f} fps, {len(snap.objects)} objects, "
                    f"source {state}, skipped {skipped}")
            fields = {"stream": stream.id, "frames": snap.frames, "fps": round(snap.fps, 2), "objects": snap.objects,
                      "source": state, "skipped": skipped, "step_ms_p50": round(snap.step_ms_p50, 1)}
            log.info("%s", text, extra={"fields": fields})  # `--log-json` writes the fields as JSON
            texts.append(text)
        self.notifier.status("; ".join(texts))
        self.metrics.update_gpu_memory()

    # ---- queries from the control thread ---------------------------------------------------------

    def _limits(self, stream_id: str | None) -> Limits:
        stream = self.by_id.get(stream_id or "")
        frame_hw = stream.snapshot.frame_hw if stream is not None else None
        return Limits(frame_hw, self.config.control.max_polygon_points, self.config.prompt.resize_tolerance)

    def _query(self, what: str, stream: str | None = None) -> dict[str, Any]:
        if what == "ping":
            return {"pong": True}
        if what == "config":
            return {"config": redacted_dict(self.config)}
        if what == "streams":
            return {"streams": [s.summary() for s in self.streams]}
        return {"stats": self.stats(stream)}

    def stats(self, stream: str | None = None) -> dict[str, Any]:
        """One stream's numbers (named, or the only one), or with several streams and none named the whole
        service's: totals and `streams`, each stream's numbers by id."""
        shared = {"uptime_s": round(time.monotonic() - self.started_at, 2), "subscribers": self.publisher.subscribers}
        selected = self.streams if stream is None else [self.by_id[stream]]
        return service_stats(selected, shared, self.publisher.queue.qsize(), single=stream is not None)


def _per_stream(config: ServiceConfig, index: int, make: Callable[[Any], Any], value: Any) -> Any:
    """`make(value)`, its ConfigError naming the field under `streams[index]` when the config has `streams:`."""
    try:
        return make(value)
    except ConfigError as exc:
        raise exc.under(f"streams[{index}]") if config.streams else exc from None


def _versions() -> dict[str, str]:
    import edge_vos

    return {"edge_vos": getattr(edge_vos, "__version__", "0"), "zmq": zmq.zmq_version()}
