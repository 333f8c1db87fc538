"""The live ROS 2 side over Cyclone DDS: the bridge's messages as a ROS 2 subscriber receives them (ROS 2's DDS
types, byte for byte rosbags' CDR), commands over a topic, and a camera topic feeding the tracker.

DDS stays on this host: loopback unicast only (tests/ros2_support.py) and a private domain id per test;
every test stops by itself."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_vos.client import MaskResult, Subscriber
from edge_vos.program import RunConfig
from edge_vos.ros2.config import check_topic, dds_topic
from edge_vos.ros2.dds import DdsNode, take
from edge_vos.ros2.dds_types import Detection2DArray, Image
from edge_vos.ros2.dds_types import to_dds as dds_message
from edge_vos.ros2.messages import DETECTIONS, IMAGE, STRING, detections_message, mask_message, string_message
from edge_vos.service.source_base import SourceStamp

from .fakes import ArrayReader
from .ros2_support import encode_pixels, image_msg, private_domain, use_loopback_dds
from .service_support import first_mask, frames, running, service_config


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLONEDDS_URI", "")
    use_loopback_dds()


def _matched(entity: Any, timeout_s: float = 10) -> None:
    status = (entity.get_publication_matched_status if hasattr(entity, "get_publication_matched_status")
              else entity.get_subscription_matched_status)
    deadline = time.monotonic() + timeout_s
    while status().current_count == 0:
        assert time.monotonic() < deadline, "DDS discovery did not match the peer"
        time.sleep(0.02)


def test_topic_names_follow_ros2() -> None:
    assert dds_topic("/camera/image_raw") == "rt/camera/image_raw"
    assert dds_topic("edge_vos/masks") == "rt/edge_vos/masks"
    for bad in ("", "/", "/a//b", "/1cam", "/cam/", "/c am"):
        with pytest.raises(ValueError, match="not a ROS 2 topic name"):
            check_topic(bad)


def test_ros2_sources_and_the_ros2_section_name_what_is_wrong() -> None:
    from edge_vos.config import ConfigError, from_dict
    from edge_vos.ros2.uri import open_source as open_reader
    from edge_vos.service.config import ServiceConfig, SourceConfig

    reader = open_reader(SourceConfig(uri="ros2:/camera/image_raw/compressed?domain=7"))
    assert (reader.msgtype, reader.domain_id, reader.live) == ("sensor_msgs/msg/CompressedImage", 7, True)
    cases = {"ros2:/cam?domain=300": "domain id must be in 0..232", "ros2:/cam?domain=x": "domain must be an integer",
             "ros2:/cam?type=h264": "type must be one of", "ros2:/9cam": "not a ROS 2 topic name",
             "ros2:/cam?qos=reliable": "unknown parameter(s) ['qos']", "ros2:": "names no bag or topic"}
    for uri, message in cases.items():
        with pytest.raises(ConfigError, match="source.uri") as info:
            open_reader(SourceConfig(uri=uri))
        assert message in str(info.value), uri
    for values, field in (({"domain_id": 233}, "ros2.domain_id"), ({"namespace": "edge_vos"}, "ros2.namespace")):
        with pytest.raises(ConfigError, match=field):
            from_dict(RunConfig, {"ros2": values})
    with pytest.raises(ConfigError, match="publish.rosbag_frames"):
        from_dict(ServiceConfig, {"publish": {"rosbag_frames": True}})


def _stamp_ns(sample: Any) -> int:
    return sample.header.stamp.sec * 1_000_000_000 + sample.header.stamp.nanosec


def _since(samples: list[Any], sent: dict[int, MaskResult]) -> list[Any]:
    """The DDS samples of frames from the first one the ZeroMQ subscriber received on."""
    return [s for s in samples if sent and _stamp_ns(s) >= min(sent)]


def test_the_bridge_publishes_ros2_masks_and_detections_byte_for_byte(tmp_path: Path) -> None:
    domain = private_domain()
    mask = first_mask()
    mask[70:100, 100:150] = 5
    cfg = service_config(RunConfig, source={"pace": "realtime", "fps": 20.0},
                         ros2={"enabled": True, "domain_id": domain, "frame_id": "cam_link"})
    node = DdsNode(domain)
    masks_in = node.reader("/edge_vos/masks", IMAGE)
    detections_in = node.reader("/edge_vos/detections", DETECTIONS)
    got: dict[str, list[Any]] = {"masks": [], "detections": []}
    sent: dict[int, MaskResult] = {}
    try:
        with running(cfg, ArrayReader(frames(60), mask=mask)) as service, \
                Subscriber(service.publisher.last_endpoint, timeout_s=0.05) as sub:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and min(len(_since(v, sent)) for v in got.values()) < 5:
                message = sub.recv()
                if isinstance(message, MaskResult):
                    sent[message.header["t_capture_unix_ns"]] = message
                for key, reader in (("masks", masks_in), ("detections", detections_in)):
                    while (sample := take(reader, 0.0)) is not None:
                        got[key].append(sample)
            while (message := sub.recv()) is not None:  # the ZeroMQ messages of the last DDS samples
                if isinstance(message, MaskResult):
                    sent[message.header["t_capture_unix_ns"]] = message
    finally:
        node.close()
    # The DDS readers exist before the service and the ZeroMQ subscription joins after it has started (a
    # PUB socket drops what it sends before a subscriber has joined): compared from the first ZeroMQ mask on.
    got = {key: _since(samples, sent) for key, samples in got.items()}
    assert len(got["masks"]) >= 5 and len(got["detections"]) >= 5
    store = node.store
    for sample in got["masks"]:
        assert isinstance(sample, Image) and type(sample).__idl_typename__ == "sensor_msgs::msg::dds_::Image_"
        stamp_ns = _stamp_ns(sample)
        zmq = sent[stamp_ns]  # the bridge forwards the service's own stamp
        expected = mask_message(store, zmq.labels, SourceStamp(stamp_ns, "cam_link"))
        assert sample.serialize() == bytes(store.serialize_cdr(expected, IMAGE))
        assert sample.encoding == "mono8" and set(np.unique(np.frombuffer(bytes(sample.data), np.uint8))) == {0, 1, 5}
    for sample in got["detections"]:
        assert isinstance(sample, Detection2DArray)
        stamp_ns = _stamp_ns(sample)
        zmq = sent[stamp_ns]
        expected = detections_message(store, zmq.header["objects"], SourceStamp(stamp_ns, "cam_link"))
        assert sample.serialize() == bytes(store.serialize_cdr(expected, DETECTIONS))
        assert [d.id for d in sample.detections] == ["1", "5"]


def test_commands_over_a_topic_are_answered_on_command_result() -> None:
    domain = private_domain()
    cfg = service_config(RunConfig, source={"pace": "realtime", "fps": 20.0, "loop": True},
                         ros2={"enabled": True, "domain_id": domain})
    node = DdsNode(domain)
    commands = node.writer("/edge_vos/command", STRING, sensor_data=False)
    results = node.reader("/edge_vos/command_result", STRING, sensor_data=False)

    def ask(text: str) -> dict[str, Any]:
        commands.write(dds_message(string_message(node.store, text)))
        sample = take(results, 10.0)
        assert sample is not None, f"no reply to {text!r}"
        return json.loads(sample.data)

    try:
        with running(cfg, ArrayReader(frames(20))) as service, \
                Subscriber(service.publisher.last_endpoint, timeout_s=0.5) as sub:
            _matched(commands)
            _matched(results)
            # A command before the first frame is answered "no frame has arrived yet": wait for one.
            assert any(isinstance(sub.recv(), MaskResult) for _ in range(40)), "no mask within 20 s"
            reply = ask(json.dumps({"cmd": "add", "id": 7, "box": [20, 20, 80, 70], "method": "grabcut", "req": "a"}))
            assert reply["ok"] and reply["id"] == 7 and reply["req"] == "a" and reply["area"] > 0, reply
            later = [m for _ in range(20) if isinstance(m := sub.recv(), MaskResult)]
            assert any(7 in m.object_ids for m in later)
            bad = ask("{oops")
            assert bad["ok"] is False and "not JSON" in bad["error"]
            assert "JSON object" in ask("[1, 2]")["error"]
            refused = ask(json.dumps({"cmd": "remove", "id": 99}))
            assert not refused["ok"] and "unknown object id 99" in refused["error"]
            assert ask(json.dumps({"cmd": "reset"}))["ok"]
            assert service.hooks[0].bridge.alive()  # nothing a message brought ended a thread
    finally:
        node.close()


def test_a_ros2_camera_topic_feeds_the_tracker(tmp_path: Path) -> None:
    from edge_vos.data.synthetic import generate_sequence
    from edge_vos.tracker import Tracker, TrackerConfig

    domain = private_domain()
    clip, labels = generate_sequence(seed=2, num_frames=5, size=(96, 128), num_objects=1, num_distractors=0)
    mask_file = tmp_path / "first.png"
    cv2.imwrite(str(mask_file), labels[0])
    cfg = service_config(RunConfig, source={"uri": f"ros2:/camera/image_raw?domain={domain}", "pace": "fastest",
                                 "read_timeout_s": 10.0},
                         prompt={"mask": str(mask_file)}, publish={"wait_for_subscriber_s": 5})
    tracker_config = TrackerConfig(device="cpu", resolution=0, backend="torch", precision="fp32")  # eager: no export
    node = DdsNode(domain)
    camera = node.writer("/camera/image_raw", IMAGE)
    stamps = [1_700_000_000_000_000_000 + i * 33_000_000 for i in range(len(clip))]
    received: list[MaskResult] = []
    try:
        with running(cfg, reader=None, tracker=Tracker(tracker_config)) as service, \
                Subscriber(service.publisher.last_endpoint, timeout_s=0.2) as sub:
            _matched(camera)
            bad = image_msg(node.store, clip[0], "rgb8", 5, "cam")
            bad.encoding = "yuv422"  # skipped, counted, named in the log; the stream goes on
            camera.write(dds_message(bad))
            # Lock-step: the next frame once this one's mask is out, so the service tracks every frame.
            for frame, stamp in zip(clip, stamps, strict=True):
                camera.write(dds_message(image_msg(node.store, encode_pixels(frame, "bgr8"), "bgr8", stamp, "cam")))
                deadline = time.monotonic() + 30
                while not received or received[-1].header.get("source_stamp_ns") != stamp:
                    assert time.monotonic() < deadline, f"no mask for the frame stamped {stamp}"
                    if isinstance(message := sub.recv(), MaskResult):
                        received.append(message)
            assert service.stats()["source"]["unreadable"] == 1
    finally:
        node.close()
    assert [m.header["source_stamp_ns"] for m in received] == stamps
    assert {m.header["frame_id"] for m in received} == {"cam"}
    direct = Tracker(tracker_config)
    expected = [direct.step(f, labels[0] if i == 0 else None).labels for i, f in enumerate(clip)]
    assert all(np.array_equal(m.labels, e) for m, e in zip(received, expected, strict=True))
    assert received[-1].object_ids == [1]
