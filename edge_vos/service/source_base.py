"""What every frame reader shares, kept apart from `sources.py` so that readers living in other packages
(edge_vos/ros2: rosbag2 and DDS topics) can use it without importing the reader registry that opens them.
"""

from __future__ import annotations

from dataclasses import dataclass


class SourceError(RuntimeError):
    """The source cannot be opened or was lost; the capture thread reconnects."""


@dataclass(frozen=True)
class SourceStamp:
    """The time and coordinate frame a source itself gives a frame (a ROS 2 message's header), carried
    into the mask message's header (`source_stamp_ns`, `frame_id`) so masks line up with the images."""

    stamp_ns: int  # nanoseconds since the Unix epoch (header.stamp: sec * 1e9 + nanosec)
    frame_id: str
