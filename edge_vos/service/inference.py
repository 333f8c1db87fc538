"""The inference thread: the only user of the tracker. Per frame: take it from the frame buffer, apply the
commands waiting in the command queue (through the PromptBook), step the tracker with the frame's prompt,
hand the result to the result sink, publish numbers for `stats` and the metrics. A frame that goes to the
tracker's memory is encoded into it only after its result was handed on (`write_deferred_memory`), so a
memory frame does not delay its own mask.

It is handed everything it uses (frame buffer, command queue, result sink, prompts and their reply
callback, metrics, stop event) and knows nothing of sockets or of the Service. It ends when the source
ends, at `max_frames`, on stop, or after `max_consecutive_errors` tracker failures in a row; `on_done`
then runs in this thread.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_vos.service.capture import Frame, FrameBuffer
from edge_vos.service.commands import PendingCommand
from edge_vos.service.config import PipelineConfig
from edge_vos.service.metrics import ServiceMetrics
from edge_vos.service.prompts import FramePrompt, PromptBook, StartupError, TrackerLike
from edge_vos.service.publisher import Outcome
from edge_vos.tracker import TrackerInputError

log = logging.getLogger(__name__)

# Hands a result on; False when the service is stopping and the result was not taken.
ResultSink = Callable[[Outcome], bool]


@dataclass(frozen=True)
class Snapshot:
    """Numbers the inference thread publishes for `stats` (replaced whole, read without locks)."""

    frames: int = 0
    fps: float = 0.0
    objects: list[int] = field(default_factory=list)  # tracked, and being prompted on the current frame
    frame_hw: tuple[int, int] | None = None
    recent: tuple[int, int] | None = None  # capture_seq range of the frames kept for `add` on a past frame
    step_ms_p50: float = 0.0


class InferenceWorker(threading.Thread):
    def __init__(
        self,
        tracker: TrackerLike,
        prompts: PromptBook,
        frames: FrameBuffer,
        commands: queue.Queue[PendingCommand] | None,
        results: ResultSink,
        metrics: ServiceMetrics,
        config: PipelineConfig,
        stop: threading.Event,
        on_progress: Callable[[], None] = lambda: None,
        on_done: Callable[[], None] = lambda: None,
        before_first_frame: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="inference", daemon=True)
        self.tracker, self.prompts, self.frames_in, self.commands = tracker, prompts, frames, commands
        self.results, self.metrics, self.config, self.stop_event = results, metrics, config, stop
        self.on_progress, self.on_done, self.before_first_frame = on_progress, on_done, before_first_frame
        self.snapshot = Snapshot()
        self.error: BaseException | None = None
        self.reached_max_frames = False
        self.frames = 0
        self.last_processed = time.monotonic()  # the watchdog's evidence that frames are being processed
        self._step_ms: collections.deque[float] = collections.deque(maxlen=50)
        self._times: collections.deque[float] = collections.deque(maxlen=30)
        self._last_write_ms = 0.0  # the deferred memory write after the previous result, for its header

    def run(self) -> None:
        if self.config.torch_threads:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        try:
            self.before_first_frame()
            self._loop()
        except BaseException as exc:
            self.error = exc
            log.error("inference stopped: %s", exc)
        finally:
            self.prompts.cancel_waiting("the service stopped before the next frame")
            self.on_done()

    def _loop(self) -> None:
        errors = 0
        while not self.stop_event.is_set():
            self._apply_commands()
            self.on_progress()
            frame = self.frames_in.get(timeout=0.1)
            if frame is None:
                if self.frames_in.ended:
                    if not self.stop_event.is_set():
                        log.info("source ended after %d processed frames", self.frames)
                    return
                continue
            self.metrics.queue_depth.labels("frames").set(self.frames_in.depth())
            self.prompts.remember(frame)
            self._apply_commands()  # commands that came while we waited apply to this frame
            try:
                outcome = self._step(frame)
            except StartupError:
                raise
            except Exception as exc:
                errors += 1
                self.metrics.frames_dropped.labels("tracker_error").inc()
                log.exception("tracker failed on frame %d (%d in a row)", frame.seq, errors)
                if errors >= self.config.max_consecutive_errors:
                    raise RuntimeError(f"tracker failed {errors} times in a row: {exc}") from exc
                continue
            self.frames += 1
            self.last_processed = time.monotonic()
            self.on_progress()
            if not self.results(outcome):
                return
            try:
                self._write_memory()
                errors = 0
            except Exception as exc:  # the mask is out; the memory misses this frame
                errors += 1
                log.exception("memory write of frame %d failed (%d tracker errors in a row)", frame.seq, errors)
                if errors >= self.config.max_consecutive_errors:
                    raise RuntimeError(f"tracker failed {errors} times in a row: {exc}") from exc
            if self.config.max_frames and self.frames >= self.config.max_frames:
                log.info("processed %d frames (max_frames)", self.frames)
                self.reached_max_frames = True
                return

    def _write_memory(self) -> None:
        """The deferred memory write of the frame just handed on (after the publisher has its mask)."""
        ms = self.tracker.write_deferred_memory()
        self._last_write_ms = ms
        if ms:
            self.metrics.stage_latency.labels("value_encode").observe(ms / 1000)

    def _apply_commands(self) -> None:
        if self.commands is None:
            return
        while True:
            try:
                pending = self.commands.get_nowait()
            except queue.Empty:
                break
            self.prompts.apply(pending)
        self._show_objects(list(self.tracker.object_ids) + self.prompts.waiting_objects())

    def _show_objects(self, objects: list[int]) -> None:
        """`stats` shows objects as soon as they are tracked or being prompted, not a frame later."""
        objects = list(dict.fromkeys(objects))
        if objects != self.snapshot.objects:
            self.snapshot = replace(self.snapshot, objects=objects)

    # ---- one frame -------------------------------------------------------------------------------

    def _step(self, frame: Frame) -> Outcome:
        h, w = frame.image.shape[:2]
        prompt = self.prompts.for_frame(frame)
        self._show_objects(list(self.tracker.object_ids) + (prompt.objects or []))
        t0 = time.perf_counter()
        result = self._track(frame, prompt)
        step_ms = (time.perf_counter() - t0) * 1000
        self.prompts.tracked(frame, result.labels)  # what a correction on this frame starts from
        m = self.metrics
        m.frames_processed.inc()
        m.stage_latency.labels("step").observe(step_ms / 1000)
        timings = dict(result.timings_ms or {})
        for stage, ms in timings.items():
            if stage != "total":
                m.stage_latency.labels(stage).observe(ms / 1000)
        ids = list(result.object_ids)
        m.objects.set(len(ids))
        self._times.append(time.monotonic())
        self._step_ms.append(step_ms)
        fps = (len(self._times) - 1) / (self._times[-1] - self._times[0]) if len(self._times) > 1 else 0.0
        m.fps.set(fps)
        self.snapshot = Snapshot(frames=self.frames + 1, fps=fps, objects=ids, frame_hw=(h, w),
                                 recent=self.prompts.recent, step_ms_p50=float(np.median(self._step_ms)))
        timings["step"] = step_ms
        # Work done between the previous result and this frame's step: the previous frame's memory write.
        timings["previous_memory_write"] = self._last_write_ms
        timings["queued"] = (time.monotonic_ns() - frame.t_capture_ns) / 1e6 - step_ms
        return Outcome(frame, int(result.frame_index), result.labels, ids, result.probabilities, timings,
                       time.monotonic_ns())

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
