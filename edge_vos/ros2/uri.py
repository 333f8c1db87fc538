"""Which ROS 2 reader a `rosbag2:` or `ros2:` source URI names (`open_source`: the program opens the source
with it, falling back to service.sources.open_reader for every other kind).

    rosbag2:PATH[?topic=/camera/image_raw]          a recorded topic (bag folder or .mcap file)
    ros2:/camera/image_raw[?domain=N&type=image|compressed]   a live topic over DDS

Parameters are checked here, once, with ConfigError naming `source.uri`. The readers' packages (rosbags,
cyclonedds: the `ros2` extra) are imported only now, so nothing ROS-related loads for other sources.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from edge_vos.config import ConfigError
from edge_vos.ros2.config import require
from edge_vos.service.config import SourceConfig
from edge_vos.service.sources import FrameReader, open_reader, source_kind

if TYPE_CHECKING:
    from edge_vos.ros2.bag_source import BagReader
    from edge_vos.ros2.topic_source import TopicReader

FIELD = "source.uri"
TOPIC_TYPES = ("image", "compressed")


def _split(rest: str, known: set[str]) -> tuple[str, dict[str, str]]:
    target, _, query = rest.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(FIELD, f"unknown parameter(s) {unknown}; known: {sorted(known)}")
    if not target:
        raise ConfigError(FIELD, "names no bag or topic")
    return target, params


def open_source(config: SourceConfig) -> FrameReader:
    """The reader `config.uri` names, ROS 2's kinds included."""
    uri = config.uri.strip()
    kind = source_kind(uri)
    if kind in ("rosbag2", "ros2"):
        return open_ros2_reader(kind, uri[len(kind) + 1:], config)
    return open_reader(config)


def open_ros2_reader(kind: str, rest: str, config: SourceConfig) -> BagReader | TopicReader:
    if kind == "rosbag2":
        path, params = _split(rest, {"topic"})
        require(("rosbags",), FIELD)
        from edge_vos.ros2.bag_source import BagReader

        return BagReader(Path(path).expanduser(), params.get("topic", ""))
    topic, params = _split(rest, {"domain", "type"})
    require(("cyclonedds", "rosbags"), FIELD)
    from edge_vos.ros2.config import check_domain, check_topic
    from edge_vos.ros2.topic_source import TopicReader

    kind_of_image = params.get("type", "compressed" if topic.endswith("/compressed") else "image")
    if kind_of_image not in TOPIC_TYPES:
        raise ConfigError(FIELD, f"type must be one of {list(TOPIC_TYPES)}, got {kind_of_image!r}")
    raw_domain = params.get("domain", os.environ.get("ROS_DOMAIN_ID", "0") or "0")
    try:
        domain = int(raw_domain)
    except ValueError:
        raise ConfigError(FIELD, f"domain must be an integer, got {raw_domain!r}") from None
    try:
        check_domain(domain)
        check_topic(topic)
    except ValueError as exc:
        raise ConfigError(FIELD, str(exc)) from None
    return TopicReader(topic, domain, kind_of_image == "compressed", config.read_timeout_s)
