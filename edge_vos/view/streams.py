"""One stream as the view sees it: its newest mask message waiting for its preview JPEG, its frame rate,
its gaps and its state (streaming / reconnecting / ended). The feed thread keeps one `StreamFeed` per stream
the service publishes (the header's `stream` names it) and is the only thread that calls into it; other
threads read `snapshot`, which is replaced whole on every change."""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_vos.view.frames import FRAME_FIELDS, LiveFrame, labels_as_png

# Stream states shown by the page (docs/view.md). Source states of the service's `status` topic map onto
# them; "reconnecting" also covers a service that stopped sending (ZeroMQ reconnects by itself).
STATES = ("connecting", "streaming", "reconnecting", "ended")
_SOURCE_STATES = {"connecting": "connecting", "streaming": "streaming", "reconnecting": "reconnecting",
                  "ended": "ended", "failed": "ended"}
# No frame for this long (or for 4 frame intervals, whichever is longer) = the stream stalled.
MIN_STALL_S = 3.0
# A mask whose preview did not follow within this time is shown without a new image.
PREVIEW_WAIT_S = 0.05
# A stream that sent no preview for this long sends none: its masks are shown at once.
NO_PREVIEWS_S = 5.0


@dataclass
class Clock:
    """Capture-to-view age of a frame: monotonic clocks on one host, wall clocks across hosts."""

    local: bool

    def age_ms(self, header: dict[str, Any]) -> float:
        if self.local:
            return (time.monotonic_ns() - int(header["t_capture_ns"])) / 1e6
        return (time.time_ns() - int(header["t_capture_unix_ns"])) / 1e6


@dataclass
class FeedCounters:
    """Totals over every stream (the feed's), or one stream's."""

    frames: int = 0  # frames handed to viewers
    masks: int = 0
    previews: int = 0
    without_preview: int = 0
    gaps: int = 0  # mask messages lost between the service and the view (seq gaps)
    invalid: int = 0
    objects: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Pending:
    header: dict[str, Any]
    payload: bytes
    received_mono_ns: int
    age_ms: float


class StreamFeed:
    """One stream's newest frame (`on_frame`) and state changes (`on_state`, the new `snapshot`)."""

    def __init__(self, stream_id: str, source: str, clock: Clock, totals: FeedCounters,
                 on_frame: Callable[[LiveFrame], None], on_state: Callable[[dict[str, Any]], None]) -> None:
        self.id, self.source, self.clock, self.totals = stream_id, source, clock, totals
        self.on_frame, self.on_state = on_frame, on_state
        self.counters = FeedCounters()
        self._pending: _Pending | None = None
        self._arrivals: collections.deque[float] = collections.deque(maxlen=30)
        self._last_header: dict[str, Any] | None = None
        self._last_mask_s = 0.0
        self._status: tuple[str, str, float] | None = None  # (state, detail, when) from the status topic
        self._last_seq: int | None = None
        self._last_preview_s = 0.0
        self._age_ms = 0.0
        self.snapshot: dict[str, Any] = self._state_dict("connecting", f"waiting for frames from {source}")

    @property
    def waiting_for_preview(self) -> bool:
        return self._pending is not None

    # ---- messages (the feed thread) --------------------------------------------------------------

    def on_mask(self, header: dict[str, Any], payload: bytes) -> None:
        now = time.monotonic()
        self.counters.masks += 1
        self.totals.masks += 1
        seq = int(header["seq"])
        if self._last_seq is not None:
            if seq < self._last_seq:  # the service restarted: its numbering starts again
                self._arrivals.clear()
            elif seq > self._last_seq + 1:
                self.counters.gaps += seq - self._last_seq - 1
                self.totals.gaps += seq - self._last_seq - 1
        self._last_seq = seq
        self._arrivals.append(now)
        self._last_mask_s = now
        if self._pending is not None:  # its preview never came (previews off, every Nth frame, or lost)
            self._emit(self._pending, b"")
        self._pending = _Pending(header, payload, time.monotonic_ns(), self.clock.age_ms(header))
        if now - self._last_preview_s > NO_PREVIEWS_S:  # this stream sends no previews: do not wait for one
            self._emit(self._pending, b"")

    def on_preview(self, header: dict[str, Any], jpeg: bytes) -> None:
        self.counters.previews += 1
        self.totals.previews += 1
        self._last_preview_s = time.monotonic()
        pending = self._pending
        if pending is not None and header.get("seq") == pending.header["seq"] and jpeg[:2] == b"\xff\xd8":
            self._emit(pending, jpeg)

    def on_status(self, header: dict[str, Any]) -> None:
        self._status = (str(header.get("state", "")), str(header.get("detail", ""))[:200], time.monotonic())

    def flush_if_stale(self) -> None:
        pending = self._pending
        if pending is not None and time.monotonic_ns() - pending.received_mono_ns > PREVIEW_WAIT_S * 1e9:
            self._emit(pending, b"")

    def _emit(self, pending: _Pending, jpeg: bytes) -> None:
        self._pending = None
        header = pending.header
        labels_png: bytes | Callable[[], bytes] = pending.payload
        if header["encoding"] != "png":  # raw or RLE: browsers decode PNGs natively; re-encode once, if watched
            labels_png = functools.partial(labels_as_png, header, pending.payload)
        for counters in (self.counters, self.totals):
            counters.without_preview += not jpeg
            counters.frames += 1
            counters.objects = list(header["objects"])
        self._last_header = header
        self._age_ms = pending.age_ms
        view = {"age_ms": round(pending.age_ms, 1), "t_capture_ms": round(time.time() * 1000 - pending.age_ms, 1),
                "fps": round(self.fps(), 2), "preview": bool(jpeg), "gaps": self.counters.gaps}
        self.update_state()
        packet_header = {"type": "frame", **{k: header[k] for k in FRAME_FIELDS if k in header}, "view": view}
        self.on_frame(LiveFrame(int(header["seq"]), packet_header, jpeg, labels_png, self.id))

    # ---- state -----------------------------------------------------------------------------------

    def fps(self) -> float:
        a = self._arrivals
        return (len(a) - 1) / (a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else 0.0

    def _stall_s(self) -> float:
        a = self._arrivals
        interval = (a[-1] - a[0]) / (len(a) - 1) if len(a) > 1 else 0.0
        return max(MIN_STALL_S, 4 * interval)

    def update_state(self) -> None:
        now = time.monotonic()
        status = self._status
        status_newer = status is not None and status[2] >= self._last_mask_s
        if status is not None and status_newer and status[0] in _SOURCE_STATES and status[0] != "streaming":
            state, detail = _SOURCE_STATES[status[0]], f"source {status[0]}" + (f": {status[1]}" if status[1] else "")
        elif not self._last_mask_s:
            state, detail = "connecting", f"waiting for frames from {self.source}"
        elif now - self._last_mask_s > self._stall_s():
            state, detail = "reconnecting", f"no frames from the service for {now - self._last_mask_s:.0f} s"
        else:
            state, detail = "streaming", ""
        self.set_state(state, detail)

    def set_state(self, state: str, detail: str) -> None:
        old = self.snapshot
        new = self._state_dict(state, detail)
        self.snapshot = new
        if old["state"] != state or old["detail"] != detail:
            self.on_state(new)

    def _state_dict(self, state: str, detail: str) -> dict[str, Any]:
        h = self._last_header
        return {
            "state": state, "detail": detail, "endpoint": self.source,
            "stream": self.id,
            "seq": h["seq"] if h else None,
            "capture_seq": h["capture_seq"] if h else None,
            "frame_size": [h["width"], h["height"]] if h else None,
            "objects": list(h["objects"]) if h else [],
            "fps": round(self.fps(), 2),
            "latency_ms": round(self._age_ms, 1),
            "preview": self.counters.previews > 0,
            "gaps": self.counters.gaps,
        }
