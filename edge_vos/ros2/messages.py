"""ROS 2 messages as `rosbags` builds and serialises them: the one description of every message edge-vos
reads or writes (bags and DDS alike).

- `typestore()`: ROS 2 Humble's standard messages plus vision_msgs (4.x, Humble and later), registered
  from its .msg text, since vision_msgs is not one of rosbags' bundled packages.
- Frames in: sensor_msgs/Image (`IMAGE_ENCODINGS`) and sensor_msgs/CompressedImage (JPEG, PNG) -> RGB.
- Masks out: the label map as sensor_msgs/Image `mono8` (value = object id) and the objects of a mask
  message's header as vision_msgs/Detection2DArray, both stamped with the frame's source stamp.

Every input problem is an `ImageError` naming it (encoding, size, data length); nothing here touches
files or sockets.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from edge_vos.service.source_base import SourceStamp

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
DETECTIONS = "vision_msgs/msg/Detection2DArray"
STRING = "std_msgs/msg/String"
FRAME_TYPES = (IMAGE, COMPRESSED_IMAGE)
# sensor_msgs/Image encodings a frame may come in (sensor_msgs/image_encodings.hpp names): channels, and
# the OpenCV conversion to RGB (None: already RGB).
IMAGE_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
}
# The largest frame accepted from a message: a corrupt or hostile header cannot make us allocate more.
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 4320

# vision_msgs 4.x (ROS 2 Humble and later), verbatim field lists of its .msg files (comments dropped).
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


class ImageError(ValueError):
    """A frame message that cannot be made into an RGB image; the message names the problem."""


def typestore() -> Any:
    """A fresh rosbags type store: ROS 2 Humble's messages plus vision_msgs (each user holds its own)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


# ---- stamps --------------------------------------------------------------------------------------


def stamp_of(header: Any) -> SourceStamp:
    """A std_msgs/Header's stamp and frame id."""
    return SourceStamp(int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec), str(header.frame_id))


def header_message(store: Any, stamp: SourceStamp) -> Any:
    types = store.types
    sec, nanosec = divmod(int(stamp.stamp_ns), 1_000_000_000)
    return types["std_msgs/msg/Header"](types["builtin_interfaces/msg/Time"](sec, nanosec), stamp.frame_id)


def mask_stamp(header: Mapping[str, Any], default_frame_id: str) -> SourceStamp:
    """The stamp a mask message's masks go out with: the source's own (`source_stamp_ns`, `frame_id`) when it
    gave one, else the capture time on the service's clock and `default_frame_id`."""
    stamp_ns = header.get("source_stamp_ns")
    if not isinstance(stamp_ns, int):
        stamp_ns = int(header["t_capture_unix_ns"])
    frame_id = header.get("frame_id")
    return SourceStamp(stamp_ns, frame_id if isinstance(frame_id, str) else default_frame_id)


# ---- frames in -----------------------------------------------------------------------------------


def frame_from_message(msg: Any) -> np.ndarray:
    """RGB uint8 [H,W,3] from a sensor_msgs/Image or CompressedImage (rosbags or DDS object alike)."""
    if hasattr(msg, "encoding"):
        return frame_from_image(msg)
    return frame_from_compressed(msg)


def _check_size(width: int, height: int) -> None:
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise ImageError(f"image is {width}x{height}; accepted are sides 1..{MAX_SIDE} and at most "
                         f"{MAX_PIXELS} pixels")


def frame_from_image(msg: Any) -> np.ndarray:
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise ImageError(f"sensor_msgs/Image encoding {encoding!r} is not supported; "
                         f"supported: {', '.join(IMAGE_ENCODINGS)}")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height)
    channels, conversion = IMAGE_ENCODINGS[encoding]
    if step < width * channels:
        raise ImageError(f"step {step} is less than width {width} x {channels} bytes per pixel ({encoding})")
    data = msg.data
    buffer = np.frombuffer(bytes(data), np.uint8) if isinstance(data, list) else np.asarray(data, np.uint8)
    if buffer.size < step * height:
        raise ImageError(f"image data is {buffer.size} bytes; {width}x{height} {encoding} with step {step} "
                         f"needs {step * height}")
    rows = buffer[: step * height].reshape(height, step)[:, : width * channels]
    pixels = rows.reshape(height, width, channels)
    if conversion is None:
        return pixels.copy()  # writable, and not a view that keeps the whole message alive
    return cv2.cvtColor(pixels, conversion)


def frame_from_compressed(msg: Any) -> np.ndarray:
    """A JPEG or PNG CompressedImage; the size is read from the file's header and checked before decoding."""
    from PIL import Image

    data = bytes(msg.data) if isinstance(msg.data, list) else np.asarray(msg.data, np.uint8).tobytes()
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind, (width, height) = probe.format, probe.size
    except Exception as exc:  # PIL raises many types (unidentified, truncated, decompression bomb)
        raise ImageError(f"CompressedImage (format {str(msg.format)!r}) holds no readable image: {exc}") from None
    if kind not in ("JPEG", "PNG"):
        raise ImageError(f"CompressedImage holds a {kind}; supported are JPEG and PNG")
    _check_size(width, height)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"CompressedImage: the {kind} ({width}x{height}) is corrupt")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# ---- messages out --------------------------------------------------------------------------------


def image_message(store: Any, pixels: np.ndarray, encoding: str, stamp: SourceStamp) -> Any:
    """sensor_msgs/Image of a uint8 [H,W] (mono8) or [H,W,C] array in `encoding`, rows unpadded."""
    if encoding not in IMAGE_ENCODINGS or pixels.dtype != np.uint8:
        raise ValueError(f"cannot write a {pixels.dtype} array as {encoding!r}")
    channels = IMAGE_ENCODINGS[encoding][0]
    height, width = pixels.shape[:2]
    if (pixels.ndim == 2 and channels != 1) or (pixels.ndim == 3 and pixels.shape[2] != channels):
        raise ValueError(f"a {list(pixels.shape)} array is not {encoding}")
    data = np.ascontiguousarray(pixels).reshape(-1)
    return store.types[IMAGE](header_message(store, stamp), height, width, encoding, 0, width * channels, data)


def mask_message(store: Any, labels: np.ndarray, stamp: SourceStamp) -> Any:
    """The label map as sensor_msgs/Image mono8: pixel value = object id, 0 = background."""
    return image_message(store, labels, "mono8", stamp)


def detections_message(store: Any, objects: Sequence[Mapping[str, Any]], stamp: SourceStamp) -> Any:
    """vision_msgs/Detection2DArray of a mask message's `objects` (docs/protocol.md): one Detection2D per
    object with `id` = the object id, the box (centre and size, pixels) and one hypothesis whose `class_id`
    is the object id too (edge-vos tracks instances, not classes) and whose score is the object's score.
    Objects tracked but not visible in the frame (area 0) are left out."""
    types = store.types
    header = header_message(store, stamp)
    detections = []
    for obj in objects:
        if int(obj["area"]) <= 0:
            continue
        x, y, w, h = (float(v) for v in obj["bbox"])
        center = types["vision_msgs/msg/Pose2D"](types["vision_msgs/msg/Point2D"](x + w / 2, y + h / 2), 0.0)
        box = types["vision_msgs/msg/BoundingBox2D"](center, w, h)
        pose = types["geometry_msgs/msg/PoseWithCovariance"](
            types["geometry_msgs/msg/Pose"](types["geometry_msgs/msg/Point"](0.0, 0.0, 0.0),
                                            types["geometry_msgs/msg/Quaternion"](0.0, 0.0, 0.0, 1.0)),
            np.zeros(36, np.float64))
        hypothesis = types["vision_msgs/msg/ObjectHypothesisWithPose"](
            types["vision_msgs/msg/ObjectHypothesis"](str(obj["id"]), float(obj["score"])), pose)
        detections.append(types["vision_msgs/msg/Detection2D"](header, [hypothesis], box, str(obj["id"])))
    return types[DETECTIONS](header, detections)


def string_message(store: Any, text: str) -> Any:
    return store.types[STRING](text)
