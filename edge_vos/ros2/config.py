"""The `ros2:` section (the live bridge) and ROS 2's naming rules, which every ros2 module checks against.

Importing this module imports nothing ROS-related: the service config holds a `Ros2Config` whether or not
ROS 2 is used.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from edge_vos.config import ConfigError

MAX_DOMAIN_ID = 232  # the highest ROS 2 domain id with Cyclone DDS's default port mapping
# The bridge's topics, under `ros2.namespace` (docs/ros2.md).
MASKS, DETECTIONS, COMMAND, COMMAND_RESULT = "masks", "detections", "command", "command_result"
FRAMES = "image"  # the tracked frames, in a recording with `publish.rosbag_frames`
_NAME = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def require(packages: tuple[str, ...], field: str) -> None:
    """ConfigError naming `field` when a package of the `ros2` extra is not installed."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(field, f"needs {' and '.join(missing)}: pip install 'edge-vos[ros2]'")


def check_topic(name: str) -> str:
    """A valid ROS 2 topic name (absolute or relative: tokens of letters, digits and underscores separated by
    '/', none starting with a digit); ValueError naming what is wrong."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a ROS 2 topic name (like /camera/image_raw: tokens of letters, "
                         "digits and underscores separated by '/', none starting with a digit)")
    return name


def check_domain(domain_id: int) -> int:
    if not 0 <= domain_id <= MAX_DOMAIN_ID:
        raise ValueError(f"ROS 2 domain id must be in 0..{MAX_DOMAIN_ID}, got {domain_id}")
    return domain_id


def dds_topic(name: str) -> str:
    """The DDS topic a ROS 2 topic travels on: `rt/` + the name without its leading slash."""
    return "rt/" + check_topic(name).lstrip("/")


@dataclass
class Ros2Config:
    # Run the live ROS 2 bridge with the service: masks and detections published over DDS, commands taken
    # from a topic (docs/ros2.md). `edge-vos ros2-bridge` runs the same bridge beside a running service.
    enabled: bool = False
    # ROS 2 domain (ROS_DOMAIN_ID of the nodes that should see edge-vos).
    domain_id: int = 0
    # Topics: NAMESPACE/masks, /detections, /command, /command_result; also the topics of a recorded bag.
    namespace: str = "/edge_vos"
    # frame_id of masks whose source gives none (cameras, files); ROS 2 sources keep their own.
    frame_id: str = "camera"

    def __post_init__(self) -> None:
        try:
            check_domain(self.domain_id)
        except ValueError as exc:
            raise ConfigError("domain_id", str(exc)) from None
        if not self.namespace.startswith("/"):
            raise ConfigError("namespace", f"must be absolute (start with '/'), got {self.namespace!r}")
        try:
            check_topic(self.namespace)
        except ValueError as exc:
            raise ConfigError("namespace", str(exc)) from None

    def topic(self, name: str) -> str:
        return f"{self.namespace.rstrip('/')}/{name}"
