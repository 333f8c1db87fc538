"""`rosbag2:PATH?topic=/camera/image_raw`: frames from a recorded ROS 2 image topic.

A rosbag2 folder (metadata.yaml with MCAP or sqlite3 files) or a bare .mcap file, read with `rosbags`.
The topic holds sensor_msgs/Image (messages.IMAGE_ENCODINGS) or sensor_msgs/CompressedImage (JPEG, PNG);
`topic` may be left out when the bag has exactly one such topic. Each frame keeps its header's stamp and
frame_id (`stamp`), which the service carries into the mask headers. In `realtime` the capture thread
paces the frames by their recorded (log) times (`next_time_ns`), in `fastest` every frame is tracked.

The bag is opened and its topic checked when the reader is built, so a missing file, a corrupt bag, a
missing topic or a topic of another type is a start-up error naming it. A message that cannot be decoded
(an unsupported encoding, a truncated image, a huge size) is skipped, counted in `unreadable` and logged;
a bag that turns out to be corrupt while it is read ends the stream with an error naming the message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_vos.config import ConfigError
from edge_vos.ros2.messages import FRAME_TYPES, ImageError, frame_from_message, stamp_of, typestore
from edge_vos.service.source_base import SourceError, SourceStamp

log = logging.getLogger(__name__)

FIELD = "source.uri"


def _open_bag(path: Path) -> Any:
    """An open rosbags Reader; ConfigError naming the path and the problem."""
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise ConfigError(FIELD, f"rosbag2 {path} does not exist")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, OSError, KeyError, ... for unreadable bags
        raise ConfigError(FIELD, f"{path} is not a readable rosbag2 (MCAP or sqlite3): {exc}") from None
    return reader


class BagReader:
    """Frames of one image topic of a rosbag2, in recorded order."""

    live = False

    def __init__(self, path: Path, topic: str = "") -> None:
        self.path = path
        self.store = typestore()
        self.unreadable = 0
        self.stamp: SourceStamp | None = None
        bag = _open_bag(path)
        try:
            self.topic, self.msgtype, self.count = self._choose_topic(bag, topic)
        finally:
            bag.close()
        kind = "CompressedImage" if self.msgtype.endswith("CompressedImage") else "Image"
        self.description = f"rosbag2 {path} topic {self.topic} ({self.count} {kind} messages)"
        self._bag: Any = None
        self._messages: Iterator[tuple[Any, int, bytes]] | None = None
        self._next: tuple[Any, int, bytes] | None = None
        self._index = 0  # messages taken from the bag since the last (re)start

    def _choose_topic(self, bag: Any, topic: str) -> tuple[str, str, int]:
        images = {name: info for name, info in bag.topics.items() if info.msgtype in FRAME_TYPES}
        if not topic:
            if len(images) != 1:
                raise ConfigError(FIELD, f"rosbag2 {self.path}: name the image topic with ?topic=NAME; image "
                                         f"topics in the bag: {sorted(images) or 'none'}")
            topic = next(iter(images))
        info = bag.topics.get(topic)
        if info is None:
            listing = ", ".join(f"{name} ({i.msgtype})" for name, i in sorted(bag.topics.items())) or "none"
            raise ConfigError(FIELD, f"rosbag2 {self.path} has no topic {topic!r}; its topics: {listing}")
        if info.msgtype not in FRAME_TYPES:
            raise ConfigError(FIELD, f"rosbag2 topic {topic} holds {info.msgtype}; a source topic must hold "
                                     f"{' or '.join(FRAME_TYPES)}")
        if not info.msgcount:
            raise ConfigError(FIELD, f"rosbag2 topic {topic} holds no messages")
        return topic, info.msgtype, int(info.msgcount)

    def open(self) -> None:
        """(Re)starts from the first message; a bag that vanished since start-up is a SourceError."""
        self.close()
        try:
            self._bag = _open_bag(self.path)
        except ConfigError as exc:
            raise SourceError(exc.message) from None
        connections = [c for c in self._bag.connections if c.topic == self.topic]
        self._messages = self._bag.messages(connections=connections)
        self._index = 0
        self._next = self._take()

    def rewind(self) -> None:
        self.open()

    def _take(self) -> tuple[Any, int, bytes] | None:
        """The next raw message, None at the end or where the bag turns out corrupt (logged)."""
        if self._messages is None:
            return None
        try:
            item = next(self._messages, None)
        except Exception as exc:  # a damaged chunk: what follows cannot be trusted, end here
            log.error("rosbag2 %s is corrupt after message %d of topic %s: %s; ending the stream there",
                      self.path, self._index, self.topic, exc)
            self._messages = None
            return None
        if item is not None:
            self._index += 1
        return item

    def next_time_ns(self) -> int | None:
        """The recorded (log) time of the frame `read()` returns next."""
        return None if self._next is None else int(self._next[1])

    def read(self) -> np.ndarray | None:
        while self._next is not None:
            connection, _, raw = self._next
            self._next = self._take()
            try:
                msg = self.store.deserialize_cdr(raw, connection.msgtype)
                image = frame_from_message(msg)
            except ImageError as exc:
                self._skip(f"message {self._index}: {exc}")
                continue
            except Exception as exc:  # CDR that does not parse: a corrupt message
                self._skip(f"message {self._index} is not a valid {connection.msgtype}: {exc}")
                continue
            self.stamp = stamp_of(msg.header)
            return image
        return None

    def _skip(self, problem: str) -> None:
        self.unreadable += 1
        if self.unreadable <= 3 or self.unreadable % 100 == 0:  # input-driven: rate-limited
            log.warning("rosbag2 %s topic %s: skipping %s (%d skipped so far)", self.path, self.topic, problem,
                        self.unreadable)

    def close(self) -> None:
        if self._bag is not None:
            self._bag.close()
        self._bag, self._messages, self._next = None, None, None

    def nominal_fps(self) -> float | None:
        return None

    def initial_mask(self) -> np.ndarray | None:
        return None
