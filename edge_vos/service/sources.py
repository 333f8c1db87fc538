"""Frame sources: one `FrameReader` per kind of source (OpenCV camera/file/URL/GStreamer, a folder of
images, a synthetic scene) and `open_reader`, which picks the reader `source.uri` names. Readers return
RGB frames and raise SourceError when the source is lost; capture.CaptureThread drives them.
"""

from __future__ import annotations

import bisect
import logging
import os
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl

import cv2
import numpy as np

from edge_vos.config import ConfigError
from edge_vos.service.config import SourceConfig
from edge_vos.service.source_base import SourceError as SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class FrameReader(Protocol):
    """A source of RGB frames. Readers whose frames carry their own time (ROS 2 messages, edge_vos/ros2)
    also have `stamp` (a `SourceStamp` for the frame `read()` returned last, or None) and `next_time_ns()`
    (the recorded time of the next frame, None at the end), by which the capture thread paces a
    recording in `realtime` instead of by `fps`."""

    live: bool  # a camera or stream: frames come at their own pace and cannot be replayed
    description: str
    unreadable: int  # frames the reader skipped because they could not be decoded (counted, warned)

    def open(self) -> None: ...

    def read(self) -> np.ndarray | None:
        """Next RGB frame; None at the end of a file; raises SourceError when the source is lost."""
        ...

    def close(self) -> None: ...

    def nominal_fps(self) -> float | None: ...

    def initial_mask(self) -> np.ndarray | None:
        """A first-frame label map the source itself provides (synthetic scenes), else None."""
        ...


# ---- readers -------------------------------------------------------------------------------------


class SyntheticReader:
    """A procedurally rendered scene with its own first-frame mask (edge_vos.data.synthetic): the bundled
    default source, since no third-party video may ship with the project.

    URI: `synthetic:` or `synthetic:seed=0&frames=60&size=240x432&objects=2&distractors=1`. Looping plays
    the clip forwards then backwards, so motion stays continuous.
    """

    live = False
    unreadable = 0

    def __init__(self, params: dict[str, str]) -> None:
        known = {"seed", "frames", "size", "objects", "distractors"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError("source.uri", f"unknown synthetic parameter(s) {unknown}; known: {sorted(known)}")
        try:
            self.seed = int(params.get("seed", 0))
            self.num_frames = int(params.get("frames", 60))
            h, w = (int(v) for v in params.get("size", "240x432").lower().split("x"))
            self.size = (h, w)
            self.num_objects = int(params.get("objects", 2))
            self.num_distractors = int(params.get("distractors", 1))
        except ValueError:
            raise ConfigError("source.uri", "synthetic parameters: seed, frames, objects, distractors are "
                                            "integers; size is HEIGHTxWIDTH") from None
        if self.num_frames < 2 or not 32 <= min(self.size) <= max(self.size) <= 4096:
            raise ConfigError("source.uri", "synthetic scene needs frames >= 2 and sides in 32..4096")
        if not 1 <= self.num_objects <= 16:
            raise ConfigError("source.uri", "synthetic scene needs 1..16 objects")
        self.description = (
            f"synthetic scene seed {self.seed}, {self.num_frames} frames {self.size[1]}x{self.size[0]}, "
            f"{self.num_objects} objects"
        )
        self._scene: tuple[np.ndarray, np.ndarray] | None = None  # frames, labels: rendered once
        self._index = 0
        self._direction = 1

    def _render(self) -> tuple[np.ndarray, np.ndarray]:
        if self._scene is None:
            from edge_vos.data.synthetic import generate_sequence

            self._scene = generate_sequence(
                self.seed, self.num_frames, self.size, self.num_objects, self.num_distractors
            )
        return self._scene

    def open(self) -> None:
        self._render()
        self._index, self._direction = 0, 1

    def read(self) -> np.ndarray | None:
        frames, _ = self._render()
        if self._index < 0 or self._index >= len(frames):
            return None
        frame = frames[self._index]
        self._index += self._direction
        return frame

    def rewind(self) -> None:
        """Continue backwards from the end (ping-pong) instead of jumping to frame 0."""
        frames, _ = self._render()
        if self._direction == 1:
            self._direction, self._index = -1, len(frames) - 2
        else:
            self._direction, self._index = 1, 1

    def close(self) -> None:
        pass

    def nominal_fps(self) -> float | None:
        return None

    def initial_mask(self) -> np.ndarray | None:
        _, labels = self._render()
        return labels[0]


class FolderReader:
    """Images of a folder in name order (JPEG/PNG/BMP), e.g. a DAVIS JPEGImages sequence.

    The folder may change while it is read (a recorder adding files, someone deleting them): every
    (re)open rescans it and resumes after the last file read, a file removed since the scan is skipped by
    rescanning, files that arrived after the last one are read before the stream ends, and a file that
    cannot be decoded is skipped with a warning and counted (`unreadable`). `rewind()` starts again from
    the first file (`source.loop`).
    """

    live = False

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.files = self._scan()
        except SourceError as exc:
            raise ConfigError("source.uri", str(exc)) from None
        if not self.files:
            raise ConfigError("source.uri", f"folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        self.description = f"folder {path} ({len(self.files)} images)"
        self.unreadable = 0
        self._index = 0
        self._last: str | None = None  # name of the last file read (or skipped): where to resume

    def _scan(self) -> list[Path]:
        try:
            return sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise SourceError(f"cannot list folder {self.path}: {exc}") from None

    def _resume(self) -> bool:
        """Rescans and positions after the last file read; False when nothing is left."""
        self.files = self._scan()
        names = [p.name for p in self.files]
        self._index = 0 if self._last is None else bisect.bisect_right(names, self._last)
        return self._index < len(self.files)

    def open(self) -> None:
        self._resume()

    def rewind(self) -> None:
        self._last = None
        self._resume()

    def read(self) -> np.ndarray | None:
        while True:
            if self._index >= len(self.files) and not self._resume():  # files may have arrived meanwhile
                return None
            path = self.files[self._index]
            self._index += 1
            self._last = path.name
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            if not path.exists():  # removed since the scan: look again, continue after it
                before = len(self.files)
                self._resume()
                log.info("folder %s changed while reading (%d -> %d images); continuing after %s",
                         self.path, before, len(self.files), path.name)
                continue
            self.unreadable += 1
            log.warning("skipping unreadable image %s (%d skipped so far)", path, self.unreadable)

    def close(self) -> None:
        pass

    def nominal_fps(self) -> float | None:
        return None

    def initial_mask(self) -> np.ndarray | None:
        return None


class OpenCVReader:
    """cv2.VideoCapture over a camera index, a device path, a file, a URL or a GStreamer pipeline."""

    unreadable = 0

    def __init__(self, target: int | str, api: int, live: bool, description: str, config: SourceConfig,
                 camera: bool = False) -> None:
        self.target, self.api, self.live, self.description = target, api, live, description
        self.config = config
        self.camera = camera  # a camera: `source.camera` settings apply
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None

    def open(self) -> None:
        params: list[int] = []
        if self.api == cv2.CAP_FFMPEG:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.config.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.config.read_timeout_s * 1000),
            ]
        cap = cv2.VideoCapture(self.target, self.api, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.description}")
        if self.live and self.api == cv2.CAP_V4L2:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # only V4L2 honours it
        if self.camera and self.config.camera.requested:
            self._ask_camera(cap)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and 0 < fps < 1000 else None
        self._cap = cap

    def _ask_camera(self, cap: cv2.VideoCapture) -> None:
        """Asks for `source.camera`'s format, size and rate (in the order V4L2 drivers need: the format
        decides which sizes exist, the size which rates), then logs what the camera delivers."""
        cam = self.config.camera
        if cam.pixel_format:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cam.pixel_format))
        if cam.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cam.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cam.height)
        if cam.fps:
            cap.set(cv2.CAP_PROP_FPS, cam.fps)
        got_w, got_h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = float(cap.get(cv2.CAP_PROP_FPS))
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        got_format = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") or "?"
        asked = [f"{cam.width}x{cam.height}" if cam.width else "", f"{cam.fps:g} fps" if cam.fps else "",
                 cam.pixel_format]
        differs = ((cam.width and (got_w, got_h) != (cam.width, cam.height))
                   or (cam.fps and abs(got_fps - cam.fps) > 0.5)
                   or (cam.pixel_format and got_format != cam.pixel_format))
        (log.warning if differs else log.info)(
            "%s delivers %dx%d %s at %g fps (asked for %s)", self.description, got_w, got_h, got_format, got_fps,
            ", ".join(a for a in asked if a))

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError("not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            if self.live:
                raise SourceError(f"{self.description}: no frame (lost or timed out)")
            return None  # end of file
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def nominal_fps(self) -> float | None:
        return self._fps

    def initial_mask(self) -> np.ndarray | None:
        return None


def has_gstreamer() -> bool:
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


def source_kind(uri: str) -> str:
    """What `source.uri` names: synthetic, rosbag2 (a recorded ROS 2 topic), ros2 (a live ROS 2 topic over
    DDS), camera (an index), v4l2 (/dev/videoN), stream (a URL), gstreamer (a pipeline), folder, file, or
    unknown."""
    uri = uri.strip()
    for scheme in ("synthetic", "rosbag2", "ros2"):
        if uri.startswith(scheme + ":"):
            return scheme
    if uri.isdigit():
        return "camera"
    if uri.startswith("/dev/video"):
        return "v4l2"
    if uri.lower().startswith(URL_SCHEMES):
        return "stream"
    if "!" in uri:
        return "gstreamer"
    path = Path(uri).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    return "unknown"


def is_recording(uri: str) -> bool:
    """True when `uri` names a video file, an image folder or a rosbag2 on disk (not a camera, stream or scene)."""
    return source_kind(uri) in ("file", "folder", "rosbag2")


def open_reader(config: SourceConfig) -> FrameReader:
    """The reader for `config.uri`; ConfigError for a URI that cannot name any source."""
    uri = config.uri.strip()
    kind = source_kind(uri)
    if kind == "synthetic":
        query = uri[len("synthetic:"):].lstrip("?")
        return SyntheticReader(dict(parse_qsl(query, keep_blank_values=True)) if query else {})
    if kind in ("rosbag2", "ros2"):  # readers of edge_vos/ros2, above the service: the program opens them
        raise ConfigError("source.uri", f"a {kind}: source is opened by `edge-vos run` (edge_vos/ros2, "
                                        "docs/ros2.md), not by the service alone")
    if config.camera.requested and kind not in ("camera", "v4l2"):
        log.warning("source.camera settings apply to cameras (an index or /dev/videoN); ignored for a %s", kind)
    if kind == "camera":
        return OpenCVReader(int(uri), cv2.CAP_ANY, True, f"camera {uri}", config, camera=True)
    if kind == "v4l2":
        return OpenCVReader(uri, cv2.CAP_V4L2, True, f"camera {uri}", config, camera=True)
    if kind == "stream":
        if uri.lower().startswith("rtsp"):
            # FFmpeg reads this variable at open; TCP avoids UDP's silent losses on lossy links.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        return OpenCVReader(uri, cv2.CAP_FFMPEG, True, f"stream {_redact(uri)}", config)
    if kind == "gstreamer":
        if not has_gstreamer():
            raise ConfigError("source.uri", "a GStreamer pipeline needs OpenCV built with GStreamer (JetPack's "
                                            "OpenCV has it; PyPI's wheels do not)")
        return OpenCVReader(uri, cv2.CAP_GSTREAMER, True, "GStreamer pipeline", config)
    path = Path(uri).expanduser()
    if kind == "folder":
        return FolderReader(path)
    if kind == "file":
        return OpenCVReader(str(path), cv2.CAP_FFMPEG, False, f"file {path}", config)
    raise ConfigError("source.uri", f"{uri!r} is not a file, folder, camera index, /dev/videoN, URL, "
                                    "GStreamer pipeline or synthetic: scene")


def _redact(uri: str) -> str:
    """Hides credentials in rtsp://user:password@host URLs before they reach logs."""
    return re.sub(r"//[^/@]*@", "//***@", uri)
