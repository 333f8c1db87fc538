"""Typed configuration of the streaming service: one `ServiceConfig` tree, validated once at start-up.

The tracker section is the tracker's own `TrackerConfig`, so a service YAML and an `edge-vos eval` YAML
describe the network the same way. Everything else configures I/O: where frames come from, where masks
go, who may send commands, what is measured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_vos.config import ConfigError, from_dict, one_of, positive, to_dict
from edge_vos.tracker.config import TrackerConfig
from edge_vos.wire.protocol import ENCODINGS

PACES = ("auto", "realtime", "fastest")
# Pixel formats a camera can be asked for (V4L2 FOURCCs OpenCV decodes): MJPG is compressed (high
# resolutions at full rate over USB 2), YUYV/UYVY raw 4:2:2, NV12 raw 4:2:0, GREY monochrome.
PIXEL_FORMATS = ("MJPG", "YUYV", "UYVY", "NV12", "GREY")
# A stream id of `streams:` is a topic segment (`masks/<id>`) and a metrics label: letters, digits, `_.-`.
STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# What a `streams:` entry may set; its source, prompt and tracker are laid over the top-level sections.
STREAM_FIELDS = ("id", "source", "prompt", "tracker")
# Tracker fields every stream shares: one network and one set of runners (sessions, engines) serve them all.
SHARED_TRACKER_FIELDS = ("model", "device", "precision", "backend", "profile")


@dataclass
class CameraConfig:
    """What to ask of a camera (an index or /dev/videoN) when it opens; 0 or "" leaves the driver's default.
    Drivers pick the nearest mode they support: the log says what the camera actually delivers."""

    width: int = 0
    height: int = 0
    fps: float = 0.0
    pixel_format: str = ""

    def __post_init__(self) -> None:
        positive("width", self.width, allow_zero=True)
        positive("height", self.height, allow_zero=True)
        if bool(self.width) != bool(self.height):
            raise ConfigError("width" if not self.width else "height", "give width and height together")
        positive("fps", self.fps, allow_zero=True)
        if self.pixel_format:
            one_of("pixel_format", self.pixel_format, PIXEL_FORMATS)

    @property
    def requested(self) -> bool:
        return bool(self.width or self.fps or self.pixel_format)


@dataclass
class SourceConfig:
    # `synthetic:` (a rendered scene, the bundled default), a camera index or /dev/videoN, a video file,
    # an rtsp:// / http(s):// URL, a GStreamer pipeline (contains "!"), or a folder of images.
    uri: str = "synthetic:"
    # realtime: files and folders behave like a camera (paced, the newest frame wins, frames are skipped
    # when inference is slower); fastest: every frame is processed, nothing is dropped. auto: realtime for
    # live sources and synthetic scenes, fastest for files and folders.
    pace: str = "auto"
    # Frames per second for pacing folders and synthetic scenes, or files whose rate is unknown.
    fps: float = 15.0
    # Start a file, folder or synthetic scene again at its end instead of ending the stream.
    loop: bool = False
    # Reconnect back-off after a lost or unopenable source (doubles from initial to max).
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    # Give up after this many failed reconnects in a row (0 = never give up).
    reconnect_attempts: int = 0
    # FFmpeg network sources (RTSP/HTTP): open and read timeouts.
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    # Cameras (an index or /dev/videoN): resolution, frame rate and pixel format to ask for.
    camera: CameraConfig = field(default_factory=CameraConfig)

    def __post_init__(self) -> None:
        if not self.uri.strip():
            raise ConfigError("uri", "must not be empty")
        one_of("pace", self.pace, PACES)
        positive("fps", self.fps)
        positive("reconnect_initial_s", self.reconnect_initial_s)
        positive("reconnect_max_s", self.reconnect_max_s)
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ConfigError("reconnect_max_s", "must be >= reconnect_initial_s")
        positive("reconnect_attempts", self.reconnect_attempts, allow_zero=True)
        positive("open_timeout_s", self.open_timeout_s)
        positive("read_timeout_s", self.read_timeout_s)


@dataclass
class PromptConfig:
    # Palette/greyscale PNG label map (pixel value = object id) applied to the first frame.
    mask: str = ""
    # With no `mask`: use the first-frame mask a source provides (synthetic scenes do).
    use_source_mask: bool = True
    # A mask whose size differs from the frame's: false = refuse with an error naming both sizes;
    # true = nearest-neighbour resize when both sides differ by at most `resize_tolerance` (a fraction).
    resize: bool = False
    resize_tolerance: float = 0.02
    # Prompt network (safetensors) that makes masks from boxes and clicks (`method: learned`, the default);
    # empty = the bundled edge_vos/weights/prompt.safetensors. Loaded once at start-up.
    weights: str = ""
    # The network for a box alone (no clicks); empty = the bundled edge_vos/weights/prompt-box.safetensors
    # when `weights` is empty too, else `weights` answers every prompt.
    box_weights: str = ""
    # The network for clicks with a box or a mask (a fix of its answer, a correction); empty = the bundled
    # edge_vos/weights/prompt-correct.safetensors when `weights` is empty too, else `weights` answers them.
    # When it is its own file it also joins a box alone's last pass and corrects the click network's answer to
    # several clicks sent at once (edge_vos.prompt.segmenter: FINAL_PASS_PARTNERS, CHAIN_CLICKS).
    correction_weights: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.resize_tolerance <= 1:
            raise ConfigError("resize_tolerance", f"must be in 0..1, got {self.resize_tolerance}")


@dataclass
class PublishConfig:
    # ZeroMQ endpoint the mask PUB socket binds (tcp://127.0.0.1:PORT, ipc://PATH). Loopback by default.
    endpoint: str = "tcp://127.0.0.1:5555"
    topic: str = "masks"
    encoding: str = "png"
    # JPEG frames on `preview_topic` for UIs, every `preview_every` frames, long side at most
    # `preview_max_side` pixels (0 = as captured).
    preview: bool = False
    preview_topic: str = "preview"
    preview_every: int = 1
    preview_quality: int = 75
    preview_max_side: int = 640
    status_topic: str = "status"
    # Messages queued per subscriber before ZeroMQ drops new ones for it (bounds memory).
    hwm: int = 16
    # Hold the first frame until a subscriber is connected, at most this long (0 = do not wait). Useful with
    # `pace: fastest` so the subscriber sees frame 0.
    wait_for_subscriber_s: float = 0.0
    # Seconds close() waits to flush queued messages.
    linger_s: float = 1.0
    # Also record every published mask into a new rosbag2 (MCAP) at this folder: the label map as
    # sensor_msgs/Image mono8 and the objects as vision_msgs/Detection2DArray (docs/ros2.md). Empty = off.
    rosbag: str = ""
    # With `rosbag`: also record each tracked frame (sensor_msgs/Image rgb8, NAMESPACE/image), for sources
    # that are not themselves recorded (cameras). Raw frames: about 1 MB per 640x480 frame.
    rosbag_frames: bool = False

    def __post_init__(self) -> None:
        if not self.endpoint:
            raise ConfigError("endpoint", "must not be empty")
        one_of("encoding", self.encoding, ENCODINGS)
        for name in ("topic", "preview_topic", "status_topic"):
            if not getattr(self, name):
                raise ConfigError(name, "must not be empty")
        positive("preview_every", self.preview_every)
        if not 1 <= self.preview_quality <= 100:
            raise ConfigError("preview_quality", f"must be in 1..100, got {self.preview_quality}")
        positive("preview_max_side", self.preview_max_side, allow_zero=True)
        positive("hwm", self.hwm)
        positive("wait_for_subscriber_s", self.wait_for_subscriber_s, allow_zero=True)
        positive("linger_s", self.linger_s, allow_zero=True)
        if self.rosbag_frames and not self.rosbag:
            raise ConfigError("rosbag_frames", "records frames into publish.rosbag, which is not set")


@dataclass
class ControlConfig:
    # ROUTER endpoint for JSON commands; empty disables the control channel.
    endpoint: str = "tcp://127.0.0.1:5556"
    # Larger messages are refused by ZeroMQ itself (the peer is disconnected) before Python sees them.
    max_message_bytes: int = 8 * 1024 * 1024
    # Recent frames kept for prompts on a past frame ("frame": SEQ in an add command).
    history: int = 8
    # A command not applied by the inference thread within this time is answered with an error.
    reply_timeout_s: float = 5.0
    # Most commands waiting for the inference thread; more are refused with "busy".
    queue: int = 16
    # Largest polygon accepted (vertices).
    max_polygon_points: int = 4096

    def __post_init__(self) -> None:
        positive("max_message_bytes", self.max_message_bytes)
        positive("history", self.history)
        positive("reply_timeout_s", self.reply_timeout_s)
        positive("queue", self.queue)
        positive("max_polygon_points", self.max_polygon_points)


@dataclass
class SecurityConfig:
    # CURVE encryption of both sockets. Keys are files made by zmq.auth.create_certificates.
    curve: bool = False
    server_secret_key: str = ""
    # Folder of allowed clients' public key files (*.key). Empty with curve on: any client that knows the
    # server's public key may connect (logged as a warning).
    allowed_clients_dir: str = ""

    def __post_init__(self) -> None:
        if self.curve and not self.server_secret_key:
            raise ConfigError("server_secret_key", "is required when curve is true")


@dataclass
class MetricsConfig:
    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9108

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", f"must be in 0..65535, got {self.port}")


@dataclass
class PipelineConfig:
    # Capture -> inference queue for `pace: fastest` (realtime keeps only the newest frame).
    frame_queue: int = 2
    # Inference -> publisher queue. Full: realtime drops the oldest result, fastest waits.
    result_queue: int = 4
    # Stop after this many processed frames (0 = run until the source ends or a signal).
    max_frames: int = 0
    # Consecutive tracker failures after which the service stops with an error (systemd restarts it).
    max_consecutive_errors: int = 10
    # Progress log and systemd STATUS period.
    status_every_s: float = 10.0
    # Torch intra-op threads for the inference thread (0 = leave torch's default).
    torch_threads: int = 0

    def __post_init__(self) -> None:
        positive("frame_queue", self.frame_queue)
        positive("result_queue", self.result_queue)
        positive("max_frames", self.max_frames, allow_zero=True)
        positive("max_consecutive_errors", self.max_consecutive_errors)
        positive("status_every_s", self.status_every_s)
        positive("torch_threads", self.torch_threads, allow_zero=True)


@dataclass(frozen=True)
class StreamConfig:
    """One camera of the service, resolved once at start-up: a `streams:` entry's sections laid over the
    top-level `source`, `prompt` and `tracker` (or, without `streams:`, those sections and `stream_id`)."""

    id: str
    source: SourceConfig
    prompt: PromptConfig
    tracker: TrackerConfig


@dataclass
class ServiceConfig:
    # Names the stream in every header and topic when the service runs one camera (no `streams:`).
    stream_id: str = "cam0"
    # Several cameras in one service, one network for all: a list of {id, source, prompt, tracker}; each
    # entry's source/prompt/tracker are laid over the top-level sections (`source: URI` is short for
    # `source: {uri: URI}`); its tracker may change max_objects, memory, readout, prior and resolution, not
    # what the shared engines depend on (SHARED_TRACKER_FIELDS). Empty: one stream, `stream_id`.
    streams: list[dict[str, Any]] = field(default_factory=list)
    source: SourceConfig = field(default_factory=SourceConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self) -> None:
        if not self.stream_id or len(self.stream_id) > 64:
            raise ConfigError("stream_id", "must be 1..64 characters")
        same = self.control.endpoint == self.publish.endpoint and not self.publish.endpoint.endswith(":*")
        if self.control.endpoint and same:
            raise ConfigError("control.endpoint", "must differ from publish.endpoint")
        self._streams = self._resolve_streams()

    @property
    def stream_configs(self) -> list[StreamConfig]:
        """Every stream the service runs, in the order configured (at least one)."""
        return list(self._streams)

    @property
    def stream_ids(self) -> list[str]:
        return [s.id for s in self._streams]

    def _resolve_streams(self) -> list[StreamConfig]:
        if not self.streams:
            return [StreamConfig(self.stream_id, self.source, self.prompt, self.tracker)]
        resolved: list[StreamConfig] = []
        for i, entry in enumerate(self.streams):
            stream = self._resolve_stream(f"streams[{i}]", entry)
            if stream.id in (s.id for s in resolved):
                raise ConfigError(f"streams[{i}].id", f'duplicate "{stream.id}"')
            resolved.append(stream)
        return resolved

    def _resolve_stream(self, path: str, entry: Any) -> StreamConfig:
        if not isinstance(entry, Mapping):
            raise ConfigError(path, f"expected a mapping with {list(STREAM_FIELDS)}, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(STREAM_FIELDS))
        if unknown:
            raise ConfigError(path, f"unknown field(s) {unknown}; known: {list(STREAM_FIELDS)}")
        stream_id = entry.get("id")
        if not isinstance(stream_id, str) or not STREAM_ID.fullmatch(stream_id):
            raise ConfigError(f"{path}.id", f"required: 1..64 letters, digits, '_', '.' or '-' (it names the "
                                            f"stream's topics, masks/<id>), got {stream_id!r}")
        source = entry.get("source", {})
        if isinstance(source, str):
            source = {"uri": source}
        tracker_overrides = entry.get("tracker", {})
        tracker = _laid_over(TrackerConfig, self.tracker, tracker_overrides, f"{path}.tracker")
        for name in SHARED_TRACKER_FIELDS:
            if getattr(tracker, name) != getattr(self.tracker, name):
                raise ConfigError(f"{path}.tracker.{name}", "is shared by every stream (one network and one set "
                                                            "of engines serve them all): set it in the top-level "
                                                            "tracker section")
        return StreamConfig(stream_id, _laid_over(SourceConfig, self.source, source, f"{path}.source"),
                            _laid_over(PromptConfig, self.prompt, entry.get("prompt", {}), f"{path}.prompt"),
                            tracker)


def _laid_over(cls: type[Any], base: object, overrides: Any, path: str) -> Any:
    """A `cls` section: `overrides` (a mapping, nested ones merged key by key) over the section `base`."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(path, f"expected a mapping, got {type(overrides).__name__}")
    return from_dict(cls, _merged(to_dict(base), overrides), path)


def _merged(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out
