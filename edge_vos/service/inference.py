"""The inference thread: the only user of the trackers, serving every stream in turn. Per frame: take the
next stream's frame (round robin over the streams with a frame ready, so a fast or busy stream cannot starve
another), apply the commands waiting in the command queue (each to its stream's PromptBook), step that
stream's tracker with the frame's prompt, hand the result to the result sink. A frame that goes to the
tracker's memory is encoded into it only after its result was handed on (`write_memory`), so a memory frame
does not delay its own mask.

It is handed everything it uses (the streams, the command queue, the result sink, the stop event) and knows
nothing of sockets or of the Service. It ends when every stream has ended (its source, or `max_frames` of
it), on stop, when a stream's source failed for good, or after `max_consecutive_errors` tracker failures in
a row on one stream; `on_done` then runs in this thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from edge_vos.service.capture import Frame
from edge_vos.service.commands import PendingCommand
from edge_vos.service.config import PipelineConfig
from edge_vos.service.prompts import StartupError
from edge_vos.service.publisher import Outcome, StatusEvent
from edge_vos.service.stream import Stream

log = logging.getLogger(__name__)

# Hands a result (or a stream's final status) on; False when the service is stopping and it was not taken.
ResultSink = Callable[[Outcome | StatusEvent], bool]


class InferenceWorker(threading.Thread):
    def __init__(
        self,
        streams: Sequence[Stream],
        doorbell: threading.Event,
        commands: queue.Queue[PendingCommand] | None,
        results: ResultSink,
        config: PipelineConfig,
        stop: threading.Event,
        on_progress: Callable[[], None] = lambda: None,
        on_done: Callable[[], None] = lambda: None,
        before_first_frame: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="inference", daemon=True)
        self.streams, self.doorbell, self.commands = list(streams), doorbell, commands
        self.by_id = {s.id: s for s in self.streams}
        self.results, self.config, self.stop_event = results, config, stop
        self.on_progress, self.on_done, self.before_first_frame = on_progress, on_done, before_first_frame
        self.error: BaseException | None = None
        self.source_failed: Stream | None = None  # a stream whose source gave up: the service stops
        self._turn = -1  # the stream served last

    @property
    def frames(self) -> int:
        """Frames processed, every stream together."""
        return sum(s.frames for s in self.streams)

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
            for stream in self.streams:
                stream.prompts.cancel_waiting("the service stopped before the next frame")
            self.on_done()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self._apply_commands()
            self.on_progress()
            picked = self._next()
            if picked is None:
                if self.source_failed is not None or all(s.done for s in self.streams):
                    return
                continue
            stream, frame = picked
            stream.metrics.frame_queue.set(stream.buffer.depth())
            stream.prompts.remember(frame)
            self._apply_commands()  # commands that came while we waited apply to this frame
            try:
                outcome = stream.step(frame)
            except StartupError:
                raise
            except Exception as exc:
                self._failed(stream, exc, f"tracker failed on frame {frame.seq}")
                continue
            self.on_progress()
            if not self.results(outcome):
                return
            try:
                stream.write_memory()
                stream.errors = 0
            except Exception as exc:  # the mask is out; the memory misses this frame
                self._failed(stream, exc, f"memory write of frame {frame.seq} failed")
            if self.config.max_frames and stream.frames >= self.config.max_frames:
                stream.finish("max_frames")
                self._ended(stream, StatusEvent("ended", f"max_frames ({self.config.max_frames}) reached"))

    def _failed(self, stream: Stream, exc: Exception, what: str) -> None:
        stream.errors += 1
        stream.metrics.dropped["tracker_error"].inc()
        log.exception("%s%s (%d tracker errors in a row)", f"stream {stream.id}: " if len(self.streams) > 1 else "",
                      what, stream.errors)
        if stream.errors >= self.config.max_consecutive_errors:
            raise RuntimeError(f"tracker failed {stream.errors} times in a row: {exc}") from exc

    def _next(self) -> tuple[Stream, Frame] | None:
        """The next stream after the one served last that has a frame ready, or None after waiting a little."""
        self.doorbell.clear()  # before looking: a frame that arrives meanwhile rings it again
        n = len(self.streams)
        for k in range(1, n + 1):
            stream = self.streams[(self._turn + k) % n]
            was_done = stream.done
            frame = stream.next_frame()
            if frame is not None:
                self._turn = (self._turn + k) % n
                return stream, frame
            if stream.done and not was_done:
                self._source_ended(stream)
        if self.source_failed is None and not all(s.done for s in self.streams):
            self.doorbell.wait(0.1)
        return None

    def _source_ended(self, stream: Stream) -> None:
        if stream.capture.state == "failed":  # gave up reconnecting (source.reconnect_attempts): stop all
            self.source_failed = stream
            return
        self._ended(stream, StatusEvent("ended", "end of source"))

    def _ended(self, stream: Stream, status: StatusEvent) -> None:
        """A stream ended while others go on: its final status follows its last mask at once. The last
        stream's end is the service's: the final statuses of those left go out together (on_done)."""
        if not all(s.done for s in self.streams):
            stream.final_sent = self.results(StatusEvent(status.state, status.detail, stream.id))

    def _apply_commands(self) -> None:
        if self.commands is None:
            return
        while True:
            try:
                pending = self.commands.get_nowait()
            except queue.Empty:
                break
            stream = self.by_id.get(pending.stream) or self.streams[0]
            stream.prompts.apply(pending)
        for stream in self.streams:
            stream.show_objects(stream.prompts.waiting_objects())


__all__ = ["InferenceWorker", "ResultSink"]
