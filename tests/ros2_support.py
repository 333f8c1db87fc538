"""Helpers of the ROS 2 tests: bags written with rosbags itself (an independent writer), and DDS confined to
this host: Cyclone is told to use loopback unicast only (no multicast, which sandboxes and CI runners often
lack) and every test takes its own domain id, so parallel test runs never see each other."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_vos.ros2.messages import COMPRESSED_IMAGE, IMAGE, typestore

# Loopback only, unicast discovery to the participant indices on 127.0.0.1 (docs/ros2.md "Testing").
LOOPBACK_CYCLONEDDS_URI = (
    "<CycloneDDS><Domain><General><Interfaces><NetworkInterface address=\"127.0.0.1\"/></Interfaces>"
    "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    "<Peers><Peer address=\"127.0.0.1\"/></Peers></Discovery></Domain></CycloneDDS>"
)


def use_loopback_dds() -> None:
    """Before the first participant of the process: Cyclone reads CYCLONEDDS_URI when a domain starts."""
    os.environ["CYCLONEDDS_URI"] = LOOPBACK_CYCLONEDDS_URI


def private_domain() -> int:
    """A domain id few others use (ROS 2 installations default to 0)."""
    return random.SystemRandom().randint(100, 230)


def encode_pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """An RGB frame in a sensor_msgs/Image encoding."""
    conversions = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "mono8": cv2.COLOR_RGB2GRAY,
                   "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA}
    code = conversions[encoding]
    return rgb.copy() if code is None else cv2.cvtColor(rgb, code)


def image_msg(store, pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str, pad: int = 0):
    """sensor_msgs/Image built field by field with rosbags (rows padded by `pad` bytes, as drivers may)."""
    t = store.types
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    header = t["std_msgs/msg/Header"](t["builtin_interfaces/msg/Time"](sec, nanosec), frame_id)
    return t[IMAGE](header, h, w, encoding, 0, rows.shape[1], np.ascontiguousarray(rows).reshape(-1))


def compressed_msg(store, rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str = "png"):
    t = store.types
    ok, data = cv2.imencode("." + fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    header = t["std_msgs/msg/Header"](t["builtin_interfaces/msg/Time"](sec, nanosec), frame_id)
    return t[COMPRESSED_IMAGE](header, fmt, data.reshape(-1))


def write_bag(path: Path, messages: Sequence[object], topic: str = "/camera/image_raw",
              log_times_ns: Sequence[int] | None = None, extra_topics: dict[str, str] | None = None) -> Path:
    """A rosbag2 (MCAP) with `messages` (all of one type) on `topic`, written by rosbags."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    msgtype = messages[0].__msgtype__
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(topic, msgtype, typestore=store)
        for name, other_type in (extra_topics or {}).items():
            writer.add_connection(name, other_type, typestore=store)
        for i, msg in enumerate(messages):
            t = log_times_ns[i] if log_times_ns is not None else 1_000_000_000 + i * 50_000_000
            writer.write(connection, t, store.serialize_cdr(msg, msgtype))
    return path


def frames_bag(path: Path, frames: np.ndarray, encoding: str = "rgb8", frame_id: str = "cam_optical",
               first_stamp_ns: int = 1_700_000_000_000_000_000, period_ns: int = 50_000_000,
               topic: str = "/camera/image_raw") -> tuple[Path, list[int]]:
    """A bag of `frames` as sensor_msgs/Image in `encoding`; returns it and the header stamps."""
    store = typestore()
    stamps = [first_stamp_ns + i * period_ns for i in range(len(frames))]
    messages = [image_msg(store, encode_pixels(f, encoding), encoding, s, frame_id)
                for f, s in zip(frames, stamps, strict=True)]
    return write_bag(path, messages, topic, log_times_ns=stamps), stamps
