"""The capture thread and the frame buffers between it and the inference thread.

`CaptureThread` drives any reader (sources.FrameReader): stamps `time.monotonic_ns()` right after the
grab (and keeps the stamp a ROS 2 message brought), paces files like a camera when asked (a recording
with its own times by them), reconnects with back-off when the source is lost, and hands
frames to a buffer. Two buffers: `LatestFrame` (live/realtime: keeps only the newest frame, counts the
ones it skipped) and `FrameQueue` (fastest: bounded, the grabber waits, nothing is dropped). A buffer rings
its `doorbell` (an Event shared by every stream's buffer) when a frame arrives or the source ends, so one
inference thread can wait for whichever stream is ready first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edge_vos.service.config import SourceConfig
from edge_vos.service.source_base import SourceStamp
from edge_vos.service.sources import FrameReader, SourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    seq: int  # capture sequence number, from 0, never repeated; gaps = frames skipped
    t_capture_ns: int  # time.monotonic_ns() right after the grab
    t_capture_unix_ns: int  # time.time_ns() at the same moment (for consumers on other hosts)
    image: np.ndarray  # RGB uint8 [H,W,3]
    source: SourceStamp | None = None  # the time and frame id the source gave it (ROS 2 headers)


# ---- buffers -------------------------------------------------------------------------------------


class LatestFrame:
    """Keeps only the newest frame: a slow consumer always gets the most recent one; overwritten frames
    are counted as skipped. Never hands out the same frame twice."""

    def __init__(self, doorbell: threading.Event | None = None) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.skipped = 0
        self.doorbell = doorbell or threading.Event()

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        with self._cond:
            if self._frame is not None:
                self.skipped += 1
            self._frame = frame
            self._cond.notify()
        self.doorbell.set()
        return True

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.doorbell.set()

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._closed and self._frame is None

    def depth(self) -> int:
        return int(self._frame is not None)


class FrameQueue:
    """Bounded FIFO: the grabber waits when it is full (files in `fastest` mode), so nothing is dropped
    and memory stays bounded."""

    def __init__(self, maxsize: int, doorbell: threading.Event | None = None) -> None:
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize)
        self._closed = threading.Event()
        self.skipped = 0
        self.doorbell = doorbell or threading.Event()

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                self._queue.put(frame, timeout=0.05)
                self.doorbell.set()
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> Frame | None:
        try:
            return self._queue.get(timeout=0 if self._closed.is_set() else timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._closed.set()
        self.doorbell.set()

    @property
    def ended(self) -> bool:
        return self._closed.is_set() and self._queue.empty()

    def depth(self) -> int:
        return self._queue.qsize()


FrameBuffer = LatestFrame | FrameQueue


# ---- capture thread ------------------------------------------------------------------------------


class CaptureThread(threading.Thread):
    """Owns the reader: open, grab, stamp, pace, hand over; reconnect with back-off when lost.

    `state` is one of connecting, streaming, reconnecting, ended, failed; `on_state(state, detail)` is
    called on every change (logs, systemd STATUS, metrics, the status topic).
    """

    def __init__(
        self,
        reader: FrameReader,
        buffer: FrameBuffer,
        config: SourceConfig,
        pace: str,
        stop: threading.Event,
        on_state: Callable[[str, str], None] | None = None,
        on_frame: Callable[[], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_unreadable: Callable[[int], None] | None = None,
        stream: str = "",
    ) -> None:
        super().__init__(name=f"capture-{stream}" if stream else "capture", daemon=True)
        self.stream = stream  # named in log lines when several streams run
        self.reader, self.buffer, self.config, self.pace, self.stop_event = reader, buffer, config, pace, stop
        self._on_state, self._on_frame, self._on_reconnect = on_state, on_frame, on_reconnect
        self._on_unreadable = on_unreadable
        self._unreadable_seen = 0
        self.state = "connecting"
        self.frames = 0
        self.reconnects = 0
        self.last_activity = time.monotonic()  # heartbeat for the watchdog: this loop is not stuck

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self.state or detail:
            self.state = state
            (log.warning if state in ("reconnecting", "failed") else log.info)(
                "%ssource %s%s", f"{self.stream}: " if self.stream else "", state, f": {detail}" if detail else "",
                extra={"fields": {"source": state, "reconnects": self.reconnects,
                                  **({"stream": self.stream} if self.stream else {})}},
            )
            if self._on_state is not None:
                self._on_state(state, detail)

    def run(self) -> None:
        delay = self.config.reconnect_initial_s
        failures = 0  # reconnects in a row that did not deliver a frame
        try:
            while not self.stop_event.is_set():
                self.last_activity = time.monotonic()
                try:
                    self.reader.open()
                except (SourceError, OSError, cv2.error) as exc:
                    problem = str(exc)
                else:
                    frames_before = self.frames
                    outcome = self._stream()
                    self.reader.close()
                    if self.frames > frames_before:  # it delivered: the back-off starts over
                        failures, delay = 0, self.config.reconnect_initial_s
                    if outcome == "ended":
                        self._set_state("ended", "end of source")
                        return
                    if outcome != "lost":
                        continue
                    problem = "source lost"
                failures += 1
                if self.config.reconnect_attempts and failures > self.config.reconnect_attempts:
                    self._set_state("failed", f"gave up after {failures - 1} reconnects: {problem}")
                    return
                self._backoff(f"{problem}; retrying in {delay:.2g} s", delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
        except Exception as exc:  # a bug in a reader: report, never kill the process silently
            log.exception("capture thread failed")
            self._set_state("failed", repr(exc))
        finally:
            self.reader.close()
            self.buffer.close()

    def _backoff(self, detail: str, delay: float) -> None:
        self.reconnects += 1
        if self._on_reconnect is not None:
            self._on_reconnect()
        self._set_state("reconnecting", detail)
        deadline = time.monotonic() + delay
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            self.last_activity = time.monotonic()
            self.stop_event.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    def _stream(self) -> str:
        """Reads until stop ("stopped"), the end ("ended") or a failure ("lost")."""
        realtime = self.pace == "realtime" and not self.reader.live
        fps = self.reader.nominal_fps() or self.config.fps
        recorded_time = getattr(self.reader, "next_time_ns", None)  # a recording paced by its own times
        t0 = time.monotonic()
        anchor: tuple[float, int] | None = None  # (monotonic s, recorded ns) of the first frame since a rewind
        last_ns = 0
        n = 0
        since_rewind = -1
        while not self.stop_event.is_set():
            if realtime:  # behave like a camera: frame n is "grabbed" at t0 + n / fps (or its recorded time)
                due = t0 + n / fps
                next_ns = recorded_time() if recorded_time is not None else None
                if next_ns is not None:
                    if anchor is None or next_ns < last_ns:  # the first frame, or the recording started over
                        anchor = (time.monotonic(), next_ns)
                    last_ns = next_ns
                    due = anchor[0] + (next_ns - anchor[1]) / 1e9
                while (wait := due - time.monotonic()) > 0:  # in slices: a recording may pause for minutes
                    if self.stop_event.wait(min(wait, 0.5)):
                        return "stopped"
                    self.last_activity = time.monotonic()
            try:
                image = self.reader.read()
            except (SourceError, OSError, cv2.error) as exc:
                log.warning("source read failed: %s", exc)
                return "lost"
            finally:
                self._count_unreadable()
            self.last_activity = time.monotonic()
            if image is None:
                if not self.config.loop:
                    return "ended"
                if n == since_rewind:  # restarted and still nothing: do not spin, back off instead
                    log.warning("source yields no frames after a restart")
                    return "lost"
                since_rewind = n
                rewind = getattr(self.reader, "rewind", None)
                if rewind is not None:
                    rewind()
                else:
                    self.reader.close()
                    self.reader.open()
                continue
            frame = Frame(self.frames, time.monotonic_ns(), time.time_ns(), image, getattr(self.reader, "stamp", None))
            if self.state != "streaming":  # announced with the first frame, not when the open succeeded
                self._set_state("streaming", self.reader.description)
            self.frames += 1
            n += 1
            if not self.buffer.put(frame, self.stop_event):
                return "stopped"
            if self._on_frame is not None:
                self._on_frame()
        return "stopped"

    def _count_unreadable(self) -> None:
        unreadable = getattr(self.reader, "unreadable", 0)
        if unreadable > self._unreadable_seen:
            if self._on_unreadable is not None:
                self._on_unreadable(unreadable - self._unreadable_seen)
            self._unreadable_seen = unreadable
