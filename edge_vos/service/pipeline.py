"""The service: capture -> inference -> publish threads, the control thread, and their lifecycle.

Threads and what each owns:
- capture (sources.CaptureThread): the reader; hands frames to a LatestFrame (realtime) or FrameQueue
  (fastest) buffer.
- inference (InferenceWorker): the tracker and the ring of recent frames; applies commands between frames.
- publisher (publisher.Publisher): the XPUB socket; encodes and sends.
- control (control.ControlServer): the ROUTER socket; validates and answers commands.
Every queue between them is bounded. `Service.start()` fails fast (bad source, missing weights, ports in
use); `stop()` stops all threads within a few seconds. The tracker is only used through `step`,
`add_prompt`, `remove_object`, `reset` and `object_ids`: numpy in, numpy out.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zmq

from edge_vos.config import ConfigError, to_dict
from edge_vos.prompt import PromptError
from edge_vos.prompt.methods import PromptMasks
from edge_vos.service.commands import AddObject, CommandError, Limits, RemoveObject, Reset, fit_mask
from edge_vos.service.config import ServiceConfig
from edge_vos.service.control import ControlServer, PendingCommand
from edge_vos.service.metrics import ServiceMetrics
from edge_vos.service.notify import Notifier
from edge_vos.service.publisher import Outcome, Publisher, StatusEvent
from edge_vos.service.security import load_server_keys, start_authenticator
from edge_vos.service.sources import CaptureThread, Frame, FrameQueue, FrameReader, LatestFrame, open_reader

log = logging.getLogger(__name__)


class TrackerLike(Protocol):
    """What the service needs of edge_vos.tracker.Tracker (tests drive the service with a fake)."""

    @property
    def object_ids(self) -> list[int]: ...

    def step(self, image: np.ndarray, mask: np.ndarray | None = None, objects: list[int] | None = None) -> Any: ...

    def add_prompt(self, image: np.ndarray, mask: np.ndarray, objects: list[int] | None = None) -> None: ...

    def remove_object(self, obj_id: int) -> None: ...

    def reset(self) -> None: ...


def build_tracker(config: ServiceConfig) -> TrackerLike:
    """The configured Tracker (`model.weights: random`, a seeded untrained network, is the model's to build).
    Missing weights raise FileNotFoundError."""
    from edge_vos.tracker import Tracker

    return Tracker(config.tracker)


def load_prompt_mask(path: str | Path) -> np.ndarray:
    """A palette or greyscale PNG label map (pixel value = object id)."""
    from edge_vos.data.davis import read_mask

    path = Path(path)
    if not path.is_file():
        raise ConfigError("prompt.mask", f"file not found: {path}")
    try:
        return read_mask(path)
    except (ValueError, OSError) as exc:
        raise ConfigError("prompt.mask", str(exc)) from None


class StartupError(RuntimeError):
    """A configuration problem that shows only once frames arrive (e.g. the prompt mask's size)."""


@dataclass
class _Snapshot:
    """Numbers the inference thread publishes for `stats` (replaced whole, read without locks)."""

    frames: int = 0
    fps: float = 0.0
    objects: list[int] = field(default_factory=list)
    frame_hw: tuple[int, int] | None = None
    last_capture_seq: int = -1
    history: tuple[int, int] | None = None
    step_ms_p50: float = 0.0
    latency_ms_p50: float = 0.0


class InferenceWorker(threading.Thread):
    """Owns the tracker: takes the next frame, applies waiting commands, steps, hands the result on."""

    def __init__(self, service: Service, tracker: TrackerLike, initial_mask: np.ndarray | None) -> None:
        super().__init__(name="inference", daemon=True)
        self.service = service
        self.tracker = tracker
        self.config = service.config
        self.initial_mask = initial_mask
        self.history: collections.deque[Frame] = collections.deque(maxlen=self.config.control.history)
        self.snapshot = _Snapshot()
        self.error: BaseException | None = None
        self.frames = 0
        self.last_processed = time.monotonic()
        self._next_adds: list[PendingCommand] = []
        self._step_ms: collections.deque[float] = collections.deque(maxlen=50)
        self._times: collections.deque[float] = collections.deque(maxlen=30)

    def run(self) -> None:
        svc = self.service
        if self.config.pipeline.torch_threads:
            import torch

            torch.set_num_threads(self.config.pipeline.torch_threads)
        errors = 0
        try:
            wait_s = self.config.publish.wait_for_subscriber_s
            if wait_s and not svc.publisher.subscribed.wait(wait_s):
                log.warning("no subscriber after %.1f s; starting anyway", wait_s)
            while not svc.stop_event.is_set():
                self._apply_commands()
                svc.heartbeat()
                frame = svc.buffer.get(timeout=0.1)
                if frame is None:
                    if svc.buffer.ended:
                        if not svc.stop_event.is_set():
                            log.info("source ended after %d processed frames", self.frames)
                        break
                    continue
                svc.metrics.queue_depth.labels("frames").set(svc.buffer.depth())
                self.history.append(frame)
                self._apply_commands()  # commands that came while we waited apply to this frame
                try:
                    outcome = self._step(frame)
                    errors = 0
                except StartupError:
                    raise
                except Exception as exc:
                    errors += 1
                    svc.metrics.frames_dropped.labels("tracker_error").inc()
                    log.exception("tracker failed on frame %d (%d in a row)", frame.seq, errors)
                    if errors >= self.config.pipeline.max_consecutive_errors:
                        raise RuntimeError(f"tracker failed {errors} times in a row: {exc}") from exc
                    continue
                self.frames += 1
                self.last_processed = time.monotonic()
                svc.heartbeat()
                if not svc.publisher.submit(outcome, wait=svc.pace == "fastest", stop=svc.stop_event):
                    break
                if self.config.pipeline.max_frames and self.frames >= self.config.pipeline.max_frames:
                    log.info("processed %d frames (max_frames)", self.frames)
                    break
        except BaseException as exc:
            self.error = exc
            log.error("inference stopped: %s", exc)
        finally:
            for pending in self._next_adds:
                svc.control_reply(pending.token, {"ok": False, "error": "the service stopped before the next frame"})
            self._next_adds.clear()
            svc.inference_done()

    # ---- one frame -------------------------------------------------------------------------------

    def _step(self, frame: Frame) -> Outcome:
        svc = self.service
        h, w = frame.image.shape[:2]
        mask, objects, applied = self._prompt_for(frame)
        t0 = time.perf_counter()
        try:
            result = self.tracker.step(frame.image, mask=mask, objects=objects)
        except ValueError as exc:
            if mask is None:
                raise
            # The prompt was refused (e.g. too many objects): answer its commands, track the frame anyway.
            log.error("prompt on frame %d refused: %s", frame.seq, exc)
            for pending, _ in applied:
                svc.control_reply(pending.token, {"ok": False, "error": str(exc), "req": pending.command.req})
            applied = []
            result = self.tracker.step(frame.image)
        step_ms = (time.perf_counter() - t0) * 1000
        for pending, area in applied:
            cmd = pending.command
            svc.control_reply(pending.token, {"ok": True, "id": cmd.obj_id, "frame": frame.seq, "area": area,
                                              "req": cmd.req})
        m = svc.metrics
        m.frames_processed.inc()
        m.stage_latency.labels("step").observe(step_ms / 1000)
        for stage, ms in getattr(result, "timings_ms", {}).items():
            if stage != "total":
                m.stage_latency.labels(stage).observe(ms / 1000)
        ids = list(result.object_ids)
        m.objects.set(len(ids))
        now = time.monotonic()
        self._times.append(now)
        self._step_ms.append(step_ms)
        fps = (len(self._times) - 1) / (self._times[-1] - self._times[0]) if len(self._times) > 1 else 0.0
        m.fps.set(fps)
        self.snapshot = _Snapshot(
            frames=self.frames + 1, fps=fps, objects=ids, frame_hw=(h, w), last_capture_seq=frame.seq,
            history=(self.history[0].seq, self.history[-1].seq), step_ms_p50=float(np.median(self._step_ms)),
        )
        timings = dict(getattr(result, "timings_ms", {}) or {})
        timings["step"] = step_ms
        timings["queued"] = (time.monotonic_ns() - frame.t_capture_ns) / 1e6 - step_ms
        return Outcome(frame, int(result.frame_index), result.labels, ids, result.probabilities, timings,
                       time.monotonic_ns())

    def _prompt_for(self, frame: Frame) -> tuple[np.ndarray | None, list[int] | None, list[tuple[Any, int]]]:
        """The label map and ids to prompt on this frame: the initial prompt, then waiting add commands
        (a later command wins where masks overlap)."""
        h, w = frame.image.shape[:2]
        label: np.ndarray | None = None
        objects: list[int] = []
        if self.initial_mask is not None:
            try:
                label = fit_mask(self.initial_mask, (h, w), self.config.prompt.resize,
                                 self.config.prompt.resize_tolerance, field="prompt.mask").astype(np.uint8)
            except CommandError as exc:  # the operator's prompt cannot apply: stop, do not track nothing
                raise StartupError(str(exc)) from None
            objects = [int(v) for v in np.unique(label) if v != 0]
            self.initial_mask = None
            log.info("initial prompt: objects %s", objects)
        applied = []
        for pending in self._next_adds:
            cmd = pending.command
            assert isinstance(cmd, AddObject)
            if pending.cancelled.is_set():  # its reply already timed out: the client was told it was not applied
                continue
            try:
                mask = self._object_mask(cmd, frame)
            except CommandError as exc:
                self.service.control_reply(pending.token, exc.to_reply(cmd.req))
                continue
            if label is None:
                label = np.zeros((h, w), np.uint8)
            label[mask] = cmd.obj_id
            if cmd.obj_id not in objects:
                objects.append(cmd.obj_id)
            applied.append((pending, int(mask.sum())))
        self._next_adds = []
        if label is not None:
            present = set(np.unique(label).tolist())
            # An object painted over entirely by a later one has nothing left to prompt with.
            for pending, _ in [a for a in applied if a[0].command.obj_id not in present]:
                self.service.control_reply(pending.token, {"ok": False, "error": "mask entirely covered by a later "
                                                           "object's mask", "req": pending.command.req})
            applied = [a for a in applied if a[0].command.obj_id in present]
            objects = [o for o in objects if o in present]
        return (label if objects else None), (objects or None), applied

    def _object_mask(self, cmd: AddObject, frame: Frame) -> np.ndarray:
        h, w = frame.image.shape[:2]
        if cmd.prompt is not None:
            if cmd.prompt.frame_hw != (h, w):
                ph, pw = cmd.prompt.frame_hw
                raise CommandError("box" if cmd.prompt.box is not None else "points",
                                   f"the prompt was given for a {pw}x{ph} frame but the frame is {w}x{h}")
            try:
                mask = self.service.prompt_masks(frame.image, cmd.prompt, cmd.method)
            except PromptError as exc:
                raise CommandError(exc.field, exc.message) from None
            if not mask.any():
                raise CommandError("box" if cmd.prompt.box is not None else "points",
                                   f"method {cmd.method} found no object for this prompt; add a click on the "
                                   "object or try another method")
            return mask
        assert cmd.mask is not None
        if cmd.mask.shape != (h, w):
            raise CommandError("mask", f"the mask is {cmd.mask.shape[1]}x{cmd.mask.shape[0]} but the frame is {w}x{h}")
        return cmd.mask

    # ---- commands --------------------------------------------------------------------------------

    def _apply_commands(self) -> None:
        svc = self.service
        while True:
            try:
                pending = svc.control.commands.get_nowait() if svc.control is not None else None
            except queue.Empty:
                return
            if pending is None:
                return
            if pending.cancelled.is_set():
                continue
            try:
                reply = self._apply(pending)
            except CommandError as exc:
                reply = exc.to_reply(getattr(pending.command, "req", None))
            except (ValueError, KeyError) as exc:
                reply = {"ok": False, "error": str(exc), "req": getattr(pending.command, "req", None)}
            except Exception as exc:  # nothing a client sends may kill the inference thread
                log.exception("command failed")
                reply = {"ok": False, "error": f"internal error: {exc!r}", "req": getattr(pending.command, "req", None)}
            if reply is not None:
                svc.control_reply(pending.token, reply)

    def _apply(self, pending: PendingCommand) -> dict[str, Any] | None:
        cmd = pending.command
        tracked = list(self.tracker.object_ids)
        if isinstance(cmd, Reset):
            self.tracker.reset()
            for waiting in self._next_adds:
                self.service.control_reply(waiting.token, {"ok": False, "error": "cancelled by reset",
                                                           "req": waiting.command.req})
            self._next_adds = []
            self.service.metrics.objects.set(0)
            return {"ok": True, "req": cmd.req}
        if isinstance(cmd, RemoveObject):
            if cmd.obj_id not in tracked:
                raise CommandError("id", f"unknown object id {cmd.obj_id}; tracking {tracked}")
            self.tracker.remove_object(cmd.obj_id)
            return {"ok": True, "id": cmd.obj_id, "objects": list(self.tracker.object_ids), "req": cmd.req}
        assert isinstance(cmd, AddObject)
        waiting_new = {p.command.obj_id for p in self._next_adds} - set(tracked)
        if cmd.obj_id not in tracked and cmd.obj_id not in waiting_new:
            if len(tracked) + len(waiting_new) + 1 > self.config.tracker.max_objects:
                raise CommandError("id", f"cannot track more than {self.config.tracker.max_objects} objects "
                                         f"(tracking {tracked}, waiting to add {sorted(waiting_new)})")
        if cmd.frame is None:
            self._next_adds.append(pending)  # applied with the next frame; replied after its step
            return None
        frame = next((f for f in self.history if f.seq == cmd.frame), None)
        if frame is None:
            span = f"{self.history[0].seq}..{self.history[-1].seq}" if self.history else "none yet"
            raise CommandError("frame", f"frame {cmd.frame} is not among the recent frames ({span})")
        mask = self._object_mask(cmd, frame)
        label = mask.astype(np.uint8) * np.uint8(cmd.obj_id)
        self.tracker.add_prompt(frame.image, label, [cmd.obj_id])
        return {"ok": True, "id": cmd.obj_id, "frame": frame.seq, "area": int(mask.sum()), "req": cmd.req}


class Service:
    """One stream: build with a config, `start()`, then `wait()` or `stop()`.

    `tracker_factory` and `reader` let tests inject a fake tracker or a failing source; by default the
    configured Tracker and the reader for `source.uri` are used.
    """

    def __init__(
        self,
        config: ServiceConfig,
        tracker_factory: Callable[[ServiceConfig], TrackerLike] | None = None,
        reader: FrameReader | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.tracker_factory = tracker_factory or build_tracker
        self.reader = reader
        self.notifier = notifier or Notifier()
        self.prompt_masks = PromptMasks(config.prompt.weights or None)
        self.metrics = ServiceMetrics()
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.context: zmq.Context | None = None
        self.publisher: Publisher
        self.control: ControlServer | None = None
        self.capture: CaptureThread
        self.worker: InferenceWorker
        self.buffer: LatestFrame | FrameQueue
        self.pace = "fastest"
        self.started_at = time.monotonic()
        self._authenticator: Any = None
        self.view: Any = None  # edge_vos.view.server.ViewServer when view.listen is set
        self._ready = False
        self._last_status = 0.0
        self._status_lock = threading.Lock()
        self.exit_error: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Opens everything or raises (ConfigError, FileNotFoundError, zmq.ZMQError) with nothing left running."""
        cfg = self.config
        try:
            self._start(cfg)
        except BaseException:
            self.stop()
            raise

    def _start(self, cfg: ServiceConfig) -> None:
        reader = self.reader or open_reader(cfg.source)
        self.reader = reader
        self.pace = cfg.source.pace if cfg.source.pace != "auto" else (
            "realtime" if reader.live or cfg.source.uri.startswith("synthetic:") else "fastest")
        initial_mask = None
        if cfg.prompt.mask:
            initial_mask = load_prompt_mask(cfg.prompt.mask)
        elif cfg.prompt.use_source_mask:
            initial_mask = reader.initial_mask()
        keys = load_server_keys(cfg.security)
        tracker = self.tracker_factory(cfg)
        # The prompt network is loaded here, once, not on the first prompt: a prompt then costs one crop's
        # inference on the inference thread (bounded whatever the frame size), never a model load.
        if not self.prompt_masks.load() and cfg.prompt.weights:
            raise FileNotFoundError(f"prompt.weights: {self.prompt_masks.load_error}")
        self.metrics.set_build_info(**_versions(), stream=cfg.stream_id, weights=cfg.tracker.model.weights or "default")
        self.buffer = LatestFrame() if self.pace == "realtime" else FrameQueue(cfg.pipeline.frame_queue)

        # Built before the sockets, started last: the control thread's stats read them from the first request.
        self.worker = InferenceWorker(self, tracker, initial_mask)
        self.capture = CaptureThread(
            reader, self.buffer, cfg.source, self.pace, self.stop_event,
            on_state=self._on_source_state, on_frame=self._on_captured, on_reconnect=self.metrics.reconnects.inc,
        )
        self.context = zmq.Context()
        self._authenticator = start_authenticator(self.context, cfg.security)
        self.publisher = Publisher(self.context, cfg.publish, cfg.stream_id, keys, self.metrics,
                                   cfg.pipeline.result_queue, on_published=self._on_published)
        self.publisher.start()
        self._wait_bound(self.publisher, "publish.endpoint")
        if cfg.control.endpoint:
            self.control = ControlServer(self.context, cfg.control, keys, self.metrics, self._limits, self._query,
                                         self.stop_event)
            self.control.start()
            self._wait_bound(self.control, "control.endpoint")
        if cfg.view.enabled:  # the web page: a client of the two sockets just bound, like any other
            from edge_vos.view.server import ViewServer

            self.view = ViewServer.for_service(cfg.view, self.publisher.last_endpoint,
                                               self.control.last_endpoint if self.control else "",
                                               cfg.security.server_secret_key if cfg.security.curve else "")
            self.view.start()
        if cfg.metrics.enabled:
            try:
                self.metrics.serve(cfg.metrics.address, cfg.metrics.port)
            except OSError as exc:
                raise ConfigError("metrics.port", f"cannot serve on {cfg.metrics.address}:{cfg.metrics.port}: "
                                                  f"{exc}") from None
        self.started_at = time.monotonic()
        self.worker.start()
        self.capture.start()
        log.info("service %s: %s, pace %s, %s -> %s", cfg.stream_id, reader.description, self.pace,
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
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.done.wait(0.2)  # short waits keep the main thread responsive to signals
            self._periodic_status()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stops every thread (each within `timeout`), flushing what the publisher holds."""
        self.notifier.stopping()
        self.stop_event.set()
        if self.view is not None:
            self.view.stop()
        deadline = time.monotonic() + timeout
        for name in ("capture", "worker"):
            thread = getattr(self, name, None)
            if thread is not None and thread.is_alive():
                thread.join(max(0.1, deadline - time.monotonic()))
                if thread.is_alive():
                    log.error("%s thread did not stop within %.1f s", thread.name, timeout)
        publisher = getattr(self, "publisher", None)
        if publisher is not None and publisher.is_alive():
            publisher.finish()
            publisher.join(max(0.1, deadline - time.monotonic()))
            if publisher.is_alive():
                publisher.abort.set()
                publisher.join(1.0)
        if self.control is not None and self.control.is_alive():
            self.control.join(max(0.1, deadline - time.monotonic()))
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        self.metrics.close()
        if self.context is not None:
            self.context.term() if not self._alive_sockets() else self.context.destroy(linger=0)
            self.context = None
        self.notifier.close()

    def _alive_sockets(self) -> bool:
        return any(t is not None and t.is_alive() for t in (getattr(self, "publisher", None), self.control))

    # ---- callbacks from the threads --------------------------------------------------------------

    def inference_done(self) -> None:
        """The inference thread ended (source end, max_frames, stop, error): let the publisher drain."""
        error = self.worker.error
        if error is not None:
            self.exit_error = str(error)
        if getattr(self, "publisher", None) is not None:
            self.publisher.finish()
        self.done.set()

    def control_reply(self, token: int, body: dict[str, Any]) -> None:
        if body.get("req") is None:
            body.pop("req", None)
        if self.control is not None:
            self.control.reply(token, body)

    def heartbeat(self) -> None:
        """Called by the inference thread every loop: WATCHDOG=1 only while frames are being processed, or
        while the capture thread is alive and busy reconnecting a lost source (a hung inference or capture
        thread stops the pings and systemd restarts the service)."""
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        now = time.monotonic()
        processing = now - self.worker.last_processed < interval
        capture = getattr(self, "capture", None)
        reconnecting = (capture is not None and capture.state in ("connecting", "reconnecting")
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
        publisher = getattr(self, "publisher", None)
        if publisher is not None:
            publisher.submit_status(StatusEvent(state, detail))
        if state == "failed":
            self.exit_error = f"source failed: {detail}"

    def _on_published(self, outcome: Outcome, header: dict[str, Any]) -> None:
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
        snap = self.worker.snapshot if getattr(self, "worker", None) else _Snapshot()
        capture = getattr(self, "capture", None)
        skipped = self.buffer.skipped if hasattr(self, "buffer") else 0
        text = (f"{snap.frames} frames, {snap.fps:.1f} fps, {len(snap.objects)} objects, "
                f"source {capture.state if capture else '?'}, skipped {skipped}")
        fields = {"frames": snap.frames, "fps": round(snap.fps, 2), "objects": snap.objects,
                  "source": capture.state if capture else None, "skipped": skipped,
                  "step_ms_p50": round(snap.step_ms_p50, 1)}
        log.info("%s", text, extra={"fields": fields})  # `--log-json` writes the fields as JSON
        self.notifier.status(text)
        self.metrics.update_gpu_memory()

    # ---- queries from the control thread ---------------------------------------------------------

    def _limits(self) -> Limits:
        snap = self.worker.snapshot
        return Limits(snap.frame_hw, self.config.tracker.max_objects, self.config.control.max_polygon_points,
                      self.config.prompt.resize_tolerance)

    def _query(self, what: str) -> dict[str, Any]:
        if what == "ping":
            return {"pong": True}
        if what == "config":
            return {"config": to_dict(self.config)}
        return {"stats": self.stats()}

    def stats(self) -> dict[str, Any]:
        snap = self.worker.snapshot
        m = self.metrics
        return {
            "stream": self.config.stream_id,
            "uptime_s": round(time.monotonic() - self.started_at, 2),
            "pace": self.pace,
            "source": {"state": self.capture.state, "frames": self.capture.frames,
                       "reconnects": self.capture.reconnects, "skipped": self.buffer.skipped},
            "frames_processed": snap.frames,
            "frames_published": int(m.value("frames_published_total")),
            "dropped": {r: int(m.value("frames_dropped_total", {"reason": r}))
                        for r in ("capture_skipped", "result_queue_full", "tracker_error")},
            "fps": round(snap.fps, 2),
            "step_ms_p50": round(snap.step_ms_p50, 2),
            "objects": snap.objects,
            "frame_size": list(snap.frame_hw[::-1]) if snap.frame_hw else None,
            "recent_frames": list(snap.history) if snap.history else None,
            "queues": {"frames": self.buffer.depth(), "results": self.publisher.queue.qsize()},
            "subscribers": self.publisher.subscriptions,
        }


def _versions() -> dict[str, str]:
    import edge_vos

    return {"edge_vos": getattr(edge_vos, "__version__", "0"), "zmq": zmq.zmq_version()}
