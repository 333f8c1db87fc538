"""ROS 2's conventions over Cyclone DDS, without rclpy: topic names, QoS profiles, typed writers and readers.

- A ROS 2 topic `/camera/image_raw` is the DDS topic `rt/camera/image_raw` (`dds_topic`).
- Types are dds_types' `pkg::msg::dds_::Name_` classes, CDR-encoded.
- QoS: images, masks and detections use ROS 2's sensor-data profile (best effort, keep last 5, volatile);
  the command topics use ROS 2's default profile (reliable, keep last 10, volatile), what `ros2 topic pub`
  offers, so a command is not lost. The writers and readers also carry ROS 2 (Iron and later)'s
  `typehash=RIHS01_...;` user data, computed by rosbags from the message definition.
- The domain is `ros2.domain_id` (ROS_DOMAIN_ID), 0..232 as in ROS 2. Discovery is Cyclone's own
  (multicast by default); CYCLONEDDS_URI configures it, e.g. for loopback-only unicast (docs/ros2.md).

Imported only when a ROS 2 topic is configured: `import cyclonedds` happens here and in dds_types.
"""

from __future__ import annotations

from typing import Any

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from edge_vos.ros2.config import check_domain, dds_topic
from edge_vos.ros2.dds_types import DDS_TYPES
from edge_vos.ros2.messages import typestore

SENSOR_DATA_DEPTH = 5  # rclcpp's rmw_qos_profile_sensor_data
DEFAULT_DEPTH = 10  # rclcpp's rmw_qos_profile_default


class DdsNode:
    """One DDS participant and the topics, writers and readers made on it (the owner's thread uses them;
    Cyclone's entities are thread-safe). `close()` deletes them all."""

    def __init__(self, domain_id: int) -> None:
        self.domain_id = check_domain(domain_id)
        self.store = typestore()
        self.participant: Any = DomainParticipant(domain_id)
        self._topics: dict[str, Any] = {}
        self._entities: list[Any] = []

    def _qos(self, typename: str, sensor_data: bool) -> Qos:
        typehash = self.store.hash_rihs01(typename)
        reliability = Policy.Reliability.BestEffort if sensor_data else Policy.Reliability.Reliable(duration(seconds=1))
        return Qos(reliability, Policy.History.KeepLast(SENSOR_DATA_DEPTH if sensor_data else DEFAULT_DEPTH),
                   Policy.Durability.Volatile, Policy.Userdata(f"typehash={typehash};".encode()))

    def _topic(self, name: str, typename: str) -> Any:
        key = dds_topic(name)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = Topic(self.participant, key, DDS_TYPES[typename])
        return topic

    def writer(self, name: str, typename: str, sensor_data: bool = True) -> Any:
        writer = DataWriter(self.participant, self._topic(name, typename), qos=self._qos(typename, sensor_data))
        self._entities.append(writer)
        return writer

    def reader(self, name: str, typename: str, sensor_data: bool = True) -> Any:
        reader = DataReader(self.participant, self._topic(name, typename), qos=self._qos(typename, sensor_data))
        self._entities.append(reader)
        return reader

    def close(self) -> None:
        """Deletes the participant and everything on it (Cyclone deletes children with their parent)."""
        self._entities.clear()
        self._topics.clear()
        self.participant = None


def take(reader: Any, timeout_s: float) -> Any | None:
    """The next sample, waiting at most `timeout_s` (0: only what has arrived); None when none came."""
    if timeout_s <= 0:  # Cyclone reads a zero timeout as "wait forever"
        samples = reader.take(N=1)
        return samples[0] if samples else None
    try:
        return reader.take_one(timeout=duration(seconds=timeout_s))
    except (TimeoutError, StopIteration):
        return None
