"""`ros2:/camera/image_raw`: frames from a live ROS 2 image topic, received over DDS (no rclpy).

sensor_msgs/Image (messages.IMAGE_ENCODINGS) by default; sensor_msgs/CompressedImage (JPEG, PNG) with
`?type=compressed` or a topic ending in `/compressed` (image_transport's name). `?domain=N` picks the ROS 2
domain (default: $ROS_DOMAIN_ID, else 0). The reader subscribes with the sensor-data QoS (best effort, keep
last 5), which matches camera drivers' best-effort and reliable publishers alike. A live source: no frame
for `source.read_timeout_s` is a lost source (the capture thread reconnects with back-off); a message that
cannot be decoded is skipped, counted and logged; each frame keeps its header's stamp and frame_id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edge_vos.ros2.dds import DdsNode, take
from edge_vos.ros2.messages import COMPRESSED_IMAGE, IMAGE, frame_from_message, stamp_of
from edge_vos.service.source_base import SourceError, SourceStamp

log = logging.getLogger(__name__)


class TopicReader:
    """Frames of one ROS 2 image topic as they arrive."""

    live = True

    def __init__(self, topic: str, domain_id: int, compressed: bool, read_timeout_s: float) -> None:
        self.topic, self.domain_id, self.read_timeout_s = topic, domain_id, read_timeout_s
        self.msgtype = COMPRESSED_IMAGE if compressed else IMAGE
        self.description = f"ROS 2 topic {topic} ({self.msgtype}, domain {domain_id})"
        self.unreadable = 0
        self.stamp: SourceStamp | None = None
        self._node: DdsNode | None = None
        self._reader: Any = None

    def open(self) -> None:
        self.close()
        try:
            self._node = DdsNode(self.domain_id)
            self._reader = self._node.reader(self.topic, self.msgtype, sensor_data=True)
        except Exception as exc:  # cyclonedds raises DDSException for a domain it cannot join
            self.close()
            raise SourceError(f"cannot subscribe to {self.description}: {exc}") from None

    def read(self) -> np.ndarray | None:
        if self._reader is None:
            raise SourceError("not open")
        deadline = time.monotonic() + self.read_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            sample = take(self._reader, min(left, 0.5))
            if sample is None:
                continue
            try:
                image = frame_from_message(sample)
            except Exception as exc:  # ImageError, or anything a malformed message provokes in the decoders
                self.unreadable += 1
                if self.unreadable <= 3 or self.unreadable % 100 == 0:  # input-driven: rate-limited
                    log.warning("%s: skipping a message: %s (%d skipped so far)", self.description, exc,
                                self.unreadable)
                continue
            self.stamp = stamp_of(sample.header)
            return image
        raise SourceError(f"no message on {self.description} for {self.read_timeout_s:g} s")

    def close(self) -> None:
        if self._node is not None:
            self._node.close()
        self._node, self._reader = None, None

    def nominal_fps(self) -> float | None:
        return None

    def initial_mask(self) -> np.ndarray | None:
        return None
