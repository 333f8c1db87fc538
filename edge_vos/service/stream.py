"""One camera of the service: its reader and capture thread, its frame buffer, its tracker (a state on the
shared engines) and prompts, and the numbers `stats` reports for it.

The capture thread is the stream's own (newest-frame-wins or a bounded queue, reconnecting on its own); the
tracker and the PromptBook are used only by the service's one inference thread, which calls `step` and
`write_memory` for whichever stream it serves. Nothing here knows of sockets or of the other streams.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_vos.service.capture import CaptureThread, Frame, FrameQueue, LatestFrame
from edge_vos.service.config import PipelineConfig, StreamConfig
from edge_vos.service.metrics import DROP_REASONS, StreamMetrics
from edge_vos.service.prompts import FramePrompt, PromptBook, StartupError, TrackerLike
from edge_vos.service.publisher import Outcome
from edge_vos.service.sources import FrameReader
from edge_vos.tracker import TrackerInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """Numbers the inference thread publishes for `stats` (replaced whole, read without locks)."""

    frames: int = 0
    fps: float = 0.0
    objects: list[int] = field(default_factory=list)  # tracked, and being prompted on the current frame
    frame_hw: tuple[int, int] | None = None
    recent: tuple[int, int] | None = None  # capture_seq range of the frames kept for `add` on a past frame
    step_ms_p50: float = 0.0


class Stream:
    """A camera's pipeline up to the publisher. `stop` ends its capture thread (the service's stop sets it)."""

    def __init__(self, config: StreamConfig, reader: FrameReader, tracker: TrackerLike, prompts: PromptBook,
                 pace: str, pipeline: PipelineConfig, metrics: StreamMetrics, doorbell: threading.Event,
                 on_state: Callable[[Stream, str, str], None]) -> None:
        self.id, self.config, self.reader, self.tracker, self.prompts = config.id, config, reader, tracker, prompts
        self.pace, self.pipeline, self.metrics = pace, pipeline, metrics
        self.stop = threading.Event()
        self.buffer: LatestFrame | FrameQueue = (
            LatestFrame(doorbell) if pace == "realtime" else FrameQueue(pipeline.frame_queue, doorbell))
        self.capture = CaptureThread(
            reader, self.buffer, config.source, pace, self.stop, on_state=lambda s, d: on_state(self, s, d),
            on_frame=self._on_captured, on_reconnect=metrics.reconnects.inc,
            on_unreadable=metrics.dropped["unreadable"].inc, stream=config.id,
        )
        self.snapshot = Snapshot()
        self.frames = 0
        self.errors = 0  # tracker failures in a row
        self.done = False  # no more frames will be served: its source ended, or max_frames
        self.end_reason = ""
        self.final_sent = False  # its final status went out (it ended while other streams went on)
        self.last_processed = time.monotonic()  # the watchdog's evidence that frames are being processed
        self._step_ms: collections.deque[float] = collections.deque(maxlen=50)
        self._times: collections.deque[float] = collections.deque(maxlen=30)
        self._last_write_ms = 0.0  # the deferred memory write after the previous result, for its header
        self._skipped_counted = 0

    def _on_captured(self) -> None:
        self.metrics.frames_captured.inc()
        skipped = self.buffer.skipped
        if skipped > self._skipped_counted:
            self.metrics.dropped["capture_skipped"].inc(skipped - self._skipped_counted)
            self._skipped_counted = skipped

    # ---- on the inference thread -----------------------------------------------------------------

    def next_frame(self) -> Frame | None:
        """The stream's waiting frame, at once, or None (none ready; `done` once its source has ended)."""
        if self.done:
            return None
        frame = self.buffer.get(timeout=0)
        if frame is None and self.buffer.ended:
            self.finish("end of source")
        return frame

    def finish(self, reason: str) -> None:
        if not self.done:
            self.done, self.end_reason = True, reason
            self.stop.set()
            if reason == "end of source":
                log.info("%s: source ended after %d processed frames", self.id, self.frames)
            else:
                log.info("%s: processed %d frames (%s)", self.id, self.frames, reason)

    def show_objects(self, prompted: list[int]) -> None:
        """`stats` shows objects as soon as they are tracked or being prompted, not a frame later."""
        objects = list(dict.fromkeys(list(self.tracker.object_ids) + prompted))
        if objects != self.snapshot.objects:
            self.snapshot = replace(self.snapshot, objects=objects)

    def step(self, frame: Frame) -> Outcome:
        h, w = frame.image.shape[:2]
        prompt = self.prompts.for_frame(frame)
        self.show_objects(prompt.objects or [])
        t0 = time.perf_counter()
        result = self._track(frame, prompt)
        step_ms = (time.perf_counter() - t0) * 1000
        self.prompts.tracked(frame, result.labels)  # what a correction on this frame starts from
        m = self.metrics
        m.frames_processed.inc()
        m.stage("step").observe(step_ms / 1000)
        timings = dict(result.timings_ms or {})
        for stage, ms in timings.items():
            if stage != "total":
                m.stage(stage).observe(ms / 1000)
        ids = list(result.object_ids)
        m.objects.set(len(ids))
        self.frames += 1
        self.last_processed = time.monotonic()
        self._times.append(self.last_processed)
        self._step_ms.append(step_ms)
        fps = (len(self._times) - 1) / (self._times[-1] - self._times[0]) if len(self._times) > 1 else 0.0
        m.fps.set(fps)
        self.snapshot = Snapshot(frames=self.frames, fps=fps, objects=ids, frame_hw=(h, w),
                                 recent=self.prompts.recent, step_ms_p50=float(np.median(self._step_ms)))
        timings["step"] = step_ms
        # Work done between the previous result and this frame's step: the previous frame's memory write.
        timings["previous_memory_write"] = self._last_write_ms
        timings["queued"] = (time.monotonic_ns() - frame.t_capture_ns) / 1e6 - step_ms
        return Outcome(frame, int(result.frame_index), result.labels, ids, result.probabilities, timings,
                       time.monotonic_ns(), stream=self.id)

    def _track(self, frame: Frame, prompt: FramePrompt) -> Any:
        """tracker.step with the frame's prompt; a prompt the tracker refuses as input (TrackerInputError,
        e.g. too many objects) is answered as refused and the frame is tracked without it. Any other error
        is the tracker's failure, not the prompt's, and propagates."""
        if prompt.labels is None:
            return self.tracker.step(frame.image, defer_memory_write=True)
        try:
            result = self.tracker.step(frame.image, mask=prompt.labels, objects=prompt.objects, defer_memory_write=True)
        except TrackerInputError as exc:
            if prompt.initial:  # the operator's prompt.mask (e.g. more objects than max_objects)
                raise StartupError(f"prompt.mask: the tracker refused it: {exc}") from None
            log.error("prompt on frame %d refused: %s", frame.seq, exc)
            self.prompts.refuse(prompt, str(exc))
            return self.tracker.step(frame.image, defer_memory_write=True)
        except Exception as exc:  # the tracker failed, not the prompt: its commands are told, then it counts
            self.prompts.refuse(prompt, f"the tracker failed on frame {frame.seq}: {exc}")
            raise
        self.prompts.answer(prompt, frame.seq)
        return result

    def write_memory(self) -> None:
        """The deferred memory write of the frame just handed on (after the publisher has its mask)."""
        ms = self.tracker.write_deferred_memory()
        self._last_write_ms = ms
        if ms:
            self.metrics.stage("value_encode").observe(ms / 1000)

    # ---- read by other threads -------------------------------------------------------------------

    def healthy(self, now: float, interval: float) -> bool:
        """For the watchdog: frames processed lately, or the capture thread busy reconnecting a lost source
        (a hung grabber or tracker stops the pings), or the stream is over."""
        if self.done:
            return True
        capture = self.capture
        reconnecting = (capture.is_alive() and capture.state in ("connecting", "reconnecting")
                        and now - capture.last_activity < interval)
        return now - self.last_processed < interval or reconnecting

    def state(self) -> str:
        return self.capture.state

    def stats(self) -> dict[str, Any]:
        """The stream's part of `stats` (docs/protocol.md)."""
        snap = self.snapshot
        m = self.metrics
        return {
            "stream": self.id,
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
        }

    def summary(self) -> dict[str, Any]:
        """The stream in the `streams` reply: id, state, size, objects, rate (no source address: it may
        carry credentials)."""
        snap = self.snapshot
        return {"id": self.id, "state": self.capture.state, "frame_size": list(snap.frame_hw[::-1]) if snap.frame_hw
                else None, "objects": snap.objects, "fps": round(snap.fps, 2), "frames_processed": snap.frames,
                "max_objects": self.config.tracker.max_objects}


def service_stats(streams: list[Stream], shared: dict[str, Any], results: int, single: bool) -> dict[str, Any]:
    """`stats`: one stream's numbers (`single`, or the service runs one stream: then with `streams` too, as a
    one-camera service has always answered), or the totals and `streams`, each stream's numbers by id."""

    def one(s: Stream) -> dict[str, Any]:
        return {**s.stats(), **shared, "queues": {"frames": s.buffer.depth(), "results": results}}

    if single:
        return one(streams[0])
    per_stream = {s.id: one(s) for s in streams}
    if len(streams) == 1:
        return {**per_stream[streams[0].id], "streams": per_stream}
    return {**shared, "frames_processed": sum(s["frames_processed"] for s in per_stream.values()),
            "frames_published": sum(s["frames_published"] for s in per_stream.values()),
            "fps": round(sum(s["fps"] for s in per_stream.values()), 2), "queues": {"results": results},
            "streams": per_stream}
