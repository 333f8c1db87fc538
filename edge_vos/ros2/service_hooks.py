"""What the service itself runs for ROS 2, when configured: the `publish.rosbag` recording (fed by the
publisher thread with every published mask) and the `ros2:` bridge (a client of the service's sockets,
started once they are bound). The service holds one `ServiceRos2`, or None when neither is configured,
in which case nothing of edge_vos/ros2 (nor rosbags, nor cyclonedds) is imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_vos.config import ConfigError
from edge_vos.ros2.config import Ros2Config, require
from edge_vos.service.config import ServiceConfig


class ServiceRos2:
    """The service's `PublishHook` for ROS 2 (service/pipeline.PublishHook), attached by the program."""

    def __init__(self, config: ServiceConfig, ros2: Ros2Config) -> None:
        self.config = config
        self.ros2 = ros2
        self.recorder: Any = None
        self.bridge: Any = None
        if config.publish.rosbag:
            require(("rosbags",), "publish.rosbag")
            from edge_vos.ros2.recorder import ServiceRecorder

            self.recorder = ServiceRecorder(config.publish.rosbag, ros2.namespace, ros2.frame_id,
                                            config.publish.rosbag_frames)
        if ros2.enabled:
            require(("cyclonedds", "rosbags"), "ros2.enabled")
            if config.security.curve:
                raise ConfigError("ros2.enabled", "the in-service bridge has no CURVE client key; with "
                                                  "security.curve run `edge-vos ros2-bridge --server-key ... "
                                                  "--client-key ...` beside the service instead")

    def start(self, masks_endpoint: str, control_endpoint: str) -> None:
        """Opens the recording and starts the bridge (before the first frame is captured)."""
        if self.recorder is not None:
            try:
                self.recorder.open()
            except Exception as exc:
                raise ConfigError("publish.rosbag", f"cannot create {self.config.publish.rosbag}: {exc}") from None
        if self.ros2.enabled:
            from edge_vos.ros2.bridge import Ros2Bridge

            self.bridge = Ros2Bridge(self.ros2, masks_endpoint, control_endpoint,
                                     masks_topic=self.config.publish.topic)
            self.bridge.start()

    def on_published(self, header: dict[str, Any], labels: np.ndarray, frame: np.ndarray) -> None:
        """Called by the publisher thread after each mask message went out."""
        if self.recorder is not None:
            self.recorder.record(header, labels, frame)

    def stop(self) -> None:
        """After the publisher has drained: every published mask is in the bag."""
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        if self.recorder is not None:
            self.recorder.close()
