"""The run config: a service config plus what `edge-vos run` attaches to the service (the `view:` and
`ros2:` sections), with the checks between them made once, at start-up. Torch-free, like every config
module: reading configs/*.yaml loads no network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_vos.config import ConfigError
from edge_vos.ros2.config import Ros2Config
from edge_vos.service.config import ServiceConfig
from edge_vos.view.config import ViewConfig


@dataclass
class RunConfig(ServiceConfig):
    # The live web page (edge_vos/view, docs/view.md); off unless `view.listen` is set (`run --view`).
    view: ViewConfig = field(default_factory=ViewConfig)
    # The live ROS 2 bridge over DDS (edge_vos/ros2, docs/ros2.md); off unless `ros2.enabled`.
    ros2: Ros2Config = field(default_factory=Ros2Config)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.view.enabled and not self.publish.preview:
            raise ConfigError("publish.preview", "must be true when view.listen is set (the page shows the "
                                                 "preview frames; `run --view` turns it on)")
        if len(self.stream_configs) > 1 and (self.ros2.enabled or self.publish.rosbag):
            raise ConfigError("ros2.enabled" if self.ros2.enabled else "publish.rosbag",
                              "serves one stream; with several streams run `edge-vos ros2-bridge --topic masks/<id>` "
                              "(or `edge-vos subscribe --stream <id> --rosbag DIR`) per stream")
        if self.view.enabled and self.security.curve and not self.view.client_secret_key:
            raise ConfigError("view.client_secret_key", "is required with security.curve: the view is a ZeroMQ "
                                                        "client of the service (and must be on its allow-list)")
