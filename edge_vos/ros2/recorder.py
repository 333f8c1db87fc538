"""Masks into a rosbag2 (MCAP): what `publish.rosbag` and `edge-vos subscribe --rosbag DIR` write.

Per mask message (docs/protocol.md) two messages, both stamped with the frame's source stamp and frame_id
(a ROS 2 source's own header; else the capture time and `ros2.frame_id`), the stamp also being the bag's
log time, so `ros2 bag play` and Foxglove line them up with the camera topic:
- NAMESPACE/masks: sensor_msgs/Image `mono8`, pixel value = object id (0 = background);
- NAMESPACE/detections: vision_msgs/Detection2DArray, one Detection2D per visible object (id, box, score);
- NAMESPACE/image (with `frames`, the service only): the tracked frame as sensor_msgs/Image rgb8, so one bag
  holds the images and their masks (for a camera that is not itself recorded).
The bag's metadata.yaml is rosbag2's version 9 (as written by `rosbags`); the message definitions, also
vision_msgs' (registered from its .msg text), are stored in the MCAP file, so readers need no ROS install.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_vos.ros2.config import DETECTIONS as DETECTIONS_TOPIC
from edge_vos.ros2.config import FRAMES as FRAMES_TOPIC
from edge_vos.ros2.config import MASKS as MASKS_TOPIC
from edge_vos.ros2.config import check_topic
from edge_vos.ros2.messages import (
    DETECTIONS,
    IMAGE,
    detections_message,
    image_message,
    mask_message,
    mask_stamp,
    typestore,
)

log = logging.getLogger(__name__)


class MaskBagWriter:
    """A new rosbag2 at `path` (which must not exist: a recording is never overwritten or appended to)."""

    def __init__(self, path: Path, namespace: str = "/edge_vos", default_frame_id: str = "camera",
                 frames: bool = False) -> None:
        if path.exists():
            raise FileExistsError(f"{path} already exists; a rosbag2 is written into a new folder")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent} is not a folder")
        self.path, self.default_frame_id = path, default_frame_id
        prefix = check_topic(namespace).rstrip("/")
        self.topics = (f"{prefix}/{MASKS_TOPIC}", f"{prefix}/{DETECTIONS_TOPIC}")
        self.frames_topic = f"{prefix}/{FRAMES_TOPIC}" if frames else ""
        self.store = typestore()
        self.written = 0
        self._writer: Any = None
        self._connections: tuple[Any, Any] | None = None
        self._frames: Any = None

    def open(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        masks = self._writer.add_connection(self.topics[0], IMAGE, typestore=self.store)
        detections = self._writer.add_connection(self.topics[1], DETECTIONS, typestore=self.store)
        self._connections = (masks, detections)
        if self.frames_topic:
            self._frames = self._writer.add_connection(self.frames_topic, IMAGE, typestore=self.store)

    def write(self, header: Mapping[str, Any], labels: np.ndarray, frame: np.ndarray | None = None) -> None:
        """One mask message: its label map and its objects (and its RGB frame, when recording frames), at the
        frame's stamp."""
        if self._writer is None or self._connections is None:
            raise RuntimeError("the bag is not open")
        stamp = mask_stamp(header, self.default_frame_id)
        if self._frames is not None and frame is not None:
            image = self.store.serialize_cdr(image_message(self.store, frame, "rgb8", stamp), IMAGE)
            self._writer.write(self._frames, stamp.stamp_ns, image)
        mask = self.store.serialize_cdr(mask_message(self.store, labels, stamp), IMAGE)
        detections = self.store.serialize_cdr(detections_message(self.store, header["objects"], stamp), DETECTIONS)
        self._writer.write(self._connections[0], stamp.stamp_ns, mask)
        self._writer.write(self._connections[1], stamp.stamp_ns, detections)
        self.written += 1

    def close(self) -> None:
        """Finishes the bag (the MCAP summary and metadata.yaml); the bag is readable only after this."""
        if self._writer is not None:
            self._writer.close()
            log.info("rosbag2 %s: %d masks on %s and %s", self.path, self.written, *self.topics)
        self._writer, self._connections = None, None

    def __enter__(self) -> MaskBagWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServiceRecorder:
    """`publish.rosbag`: the service's publisher thread hands it every published mask (`record`). A write
    that fails (disk full, folder removed) is logged once and ends the recording; the stream goes on."""

    def __init__(self, path: str, namespace: str, default_frame_id: str, frames: bool) -> None:
        from edge_vos.config import ConfigError

        try:
            self.writer = MaskBagWriter(Path(path).expanduser(), namespace, default_frame_id, frames)
        except (OSError, ValueError) as exc:
            raise ConfigError("publish.rosbag", str(exc)) from None
        self.failed: str | None = None

    def open(self) -> None:
        self.writer.open()

    def record(self, header: Mapping[str, Any], labels: np.ndarray, frame: np.ndarray) -> None:
        if self.failed is not None:
            return
        try:
            self.writer.write(header, labels, frame)
        except Exception as exc:  # never the publisher's problem: stop recording, say why once
            self.failed = repr(exc)
            log.error("rosbag2 recording %s stopped after %d masks: %s", self.writer.path, self.writer.written, exc)

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception as exc:
            log.error("rosbag2 recording %s could not be finished: %s", self.writer.path, exc)
