"""rosbag2 in and out (edge_vos/ros2): bags written by rosbags drive the service like any source, the masks
carry the bags' stamps, and the masks recorded by edge-vos read back with rosbags."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vos.config import ConfigError
from edge_vos.program import RunConfig
from edge_vos.ros2.bag_source import BagReader
from edge_vos.ros2.messages import DETECTIONS, IMAGE, IMAGE_ENCODINGS, MAX_SIDE, typestore
from edge_vos.ros2.recorder import MaskBagWriter
from edge_vos.ros2.uri import open_source as open_reader
from edge_vos.service.config import SourceConfig

from .ros2_support import compressed_msg, encode_pixels, frames_bag, image_msg, write_bag
from .service_support import H, W, first_mask, frames, masks, running, service_config


def _read_all(reader) -> list[np.ndarray]:
    reader.open()
    out = []
    while (frame := reader.read()) is not None:
        out.append(frame)
    reader.close()
    return out


@pytest.mark.parametrize("encoding", list(IMAGE_ENCODINGS))
def test_every_encoding_reads_back_as_the_rgb_frame(tmp_path: Path, encoding: str) -> None:
    clip = frames(3)
    bag, stamps = frames_bag(tmp_path / "bag", clip, encoding)
    reader = open_reader(SourceConfig(uri=f"rosbag2:{bag}?topic=/camera/image_raw"))
    got = _read_all(reader)
    expected = clip if encoding != "mono8" else [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
                                                 for f in clip]
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert reader.stamp is not None and reader.stamp.stamp_ns == stamps[-1] and reader.stamp.frame_id == "cam_optical"


def test_padded_rows_compressed_images_and_a_bare_mcap_file(tmp_path: Path) -> None:
    store = typestore()
    clip = frames(2, seed=3)
    padded = [image_msg(store, encode_pixels(f, "bgr8"), "bgr8", 10 + i, "cam", pad=7) for i, f in enumerate(clip)]
    got = _read_all(BagReader(write_bag(tmp_path / "padded", padded)))
    assert all(np.array_equal(a, b) for a, b in zip(got, clip, strict=True))
    compressed = [compressed_msg(store, f, 10 + i, "cam") for i, f in enumerate(clip)]
    bag = write_bag(tmp_path / "png", compressed, topic="/camera/image_raw/compressed")
    mcap = next(bag.glob("*.mcap"))
    got = _read_all(open_reader(SourceConfig(uri=f"rosbag2:{mcap}")))  # one image topic: no ?topic= needed
    assert all(np.array_equal(a, b) for a, b in zip(got, clip, strict=True))


def test_bad_bags_are_start_up_errors_naming_the_problem(tmp_path: Path) -> None:
    bag, _ = frames_bag(tmp_path / "bag", frames(2))
    cases = {
        f"rosbag2:{tmp_path / 'absent'}": "does not exist",
        f"rosbag2:{bag}?topic=/other": "has no topic '/other'; its topics: /camera/image_raw (sensor_msgs/msg/Image)",
        f"rosbag2:{bag}?topic=/camera/image_raw&fps=3": "unknown parameter(s) ['fps']",
        f"rosbag2:{bag}?topic=/chatter": "holds std_msgs/msg/String",
    }
    store = typestore()
    write_bag(tmp_path / "both", [image_msg(store, frames(1)[0], "rgb8", 1, "c")],
              extra_topics={"/chatter": "std_msgs/msg/String"})
    cases[f"rosbag2:{tmp_path / 'both'}?topic=/chatter"] = cases.pop(f"rosbag2:{bag}?topic=/chatter")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in bag.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes()[: 200] if f.suffix == ".mcap" else f.read_bytes())
    cases[f"rosbag2:{corrupt}"] = "is not a readable rosbag2"
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not an mcap file" * 10)
    cases[f"rosbag2:{garbage}"] = "is not a readable rosbag2"
    for uri, message in cases.items():
        with pytest.raises(ConfigError) as info:
            open_reader(SourceConfig(uri=uri))
        assert info.value.field == "source.uri" and message in info.value.message, (uri, info.value.message)


def test_undecodable_messages_are_skipped_counted_and_named(tmp_path: Path, caplog) -> None:
    store = typestore()
    good = frames(1)[0]
    t = store.types

    def header(i: int):
        return t["std_msgs/msg/Header"](t["builtin_interfaces/msg/Time"](i, 0), "cam")

    messages = [
        t[IMAGE](header(0), H, W, "yuv422", 0, W * 2, np.zeros(H * W * 2, np.uint8)),  # unsupported encoding
        t[IMAGE](header(1), MAX_SIDE * 4, MAX_SIDE * 4, "mono8", 0, MAX_SIDE * 4, np.zeros(16, np.uint8)),  # huge
        t[IMAGE](header(2), H, W, "rgb8", 0, W * 3, np.zeros(100, np.uint8)),  # truncated data
        image_msg(store, good, "rgb8", 3_000_000_000, "cam"),
    ]
    reader = BagReader(write_bag(tmp_path / "bag", messages))
    with caplog.at_level(logging.WARNING):
        got = _read_all(reader)
    assert len(got) == 1 and np.array_equal(got[0], good) and reader.unreadable == 3
    text = caplog.text
    assert "'yuv422' is not supported" in text and f"{MAX_SIDE * 4}x{MAX_SIDE * 4}" in text
    assert "image data is 100 bytes" in text
    assert reader.stamp is not None and reader.stamp.stamp_ns == 3_000_000_000


def test_the_service_tracks_a_bag_carries_its_stamps_and_records_a_bag_rosbags_reads(tmp_path: Path) -> None:
    clip = frames(6)
    bag, stamps = frames_bag(tmp_path / "in", clip, "bgr8")
    mask_file = tmp_path / "first.png"
    cv2.imwrite(str(mask_file), first_mask() * 3)  # object id 3
    out = tmp_path / "masks"
    cfg = service_config(RunConfig, source={"uri": f"rosbag2:{bag}?topic=/camera/image_raw", "pace": "fastest"},
                         publish={"rosbag": str(out), "rosbag_frames": True, "wait_for_subscriber_s": 5},
                         prompt={"mask": str(mask_file)})
    from edge_vos.client import Subscriber

    with running(cfg, reader=None) as service:
        with Subscriber(service.publisher.last_endpoint) as sub:
            received = masks(sub, 6)
        service.wait(10)
    assert [r.header["source_stamp_ns"] for r in received] == stamps  # one mask per frame, in order
    assert {r.header["frame_id"] for r in received} == {"cam_optical"}
    store = typestore()
    from rosbags.rosbag2 import Reader

    with Reader(out) as reader:
        topics = {name: info.msgtype for name, info in reader.topics.items()}
        assert topics == {"/edge_vos/masks": IMAGE, "/edge_vos/detections": DETECTIONS, "/edge_vos/image": IMAGE}
        by_topic: dict[str, list] = {"/edge_vos/masks": [], "/edge_vos/detections": [], "/edge_vos/image": []}
        for connection, log_time, raw in reader.messages():
            msg = store.deserialize_cdr(raw, connection.msgtype)
            assert log_time == msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            by_topic[connection.topic].append(msg)
    images, detections = by_topic["/edge_vos/masks"], by_topic["/edge_vos/detections"]
    assert len(images) == len(detections) == 6
    recorded = [m.data.reshape(m.height, m.width, 3) for m in by_topic["/edge_vos/image"]]
    assert all(np.array_equal(a, b) for a, b in zip(recorded, clip, strict=True))  # rgb8, as tracked
    for sent, image, det in zip(received, images, detections, strict=True):
        stamp = image.header.stamp.sec * 1_000_000_000 + image.header.stamp.nanosec
        assert stamp == sent.header["source_stamp_ns"] and image.header.frame_id == "cam_optical"
        assert (image.encoding, image.height, image.width, image.step) == ("mono8", H, W, W)
        assert np.array_equal(image.data.reshape(H, W), sent.labels)
        visible = [o for o in sent.header["objects"] if o["area"]]
        assert [d.id for d in det.detections] == [str(o["id"]) for o in visible] == ["3"]
        for d, o in zip(det.detections, visible, strict=True):
            x, y, w, h = o["bbox"]
            assert (d.bbox.center.position.x, d.bbox.center.position.y) == (x + w / 2, y + h / 2)
            assert (d.bbox.size_x, d.bbox.size_y) == (w, h)
            assert d.results[0].hypothesis.score == pytest.approx(o["score"])


def test_realtime_paces_a_bag_by_its_recorded_times(tmp_path: Path) -> None:
    period = 200_000_000
    bag, stamps = frames_bag(tmp_path / "in", frames(4), period_ns=period)
    cfg = service_config(RunConfig, source={"uri": f"rosbag2:{bag}", "pace": "realtime", "fps": 1000.0},
                         publish={"wait_for_subscriber_s": 5})
    from edge_vos.client import Subscriber

    with running(cfg, reader=None) as service:
        with Subscriber(service.publisher.last_endpoint) as sub:
            received = masks(sub, 4)
    captured = np.array([r.header["t_capture_ns"] for r in received]) / 1e9
    # Frame i is due i * 0.2 s after frame 0 was due, against that schedule and not after the previous frame:
    # a frame read late is followed by one on time, so two gaps may be short or long but the offsets from frame
    # 0 hold (short only by frame 0's read, its stamp is taken after the read). At `fps` 1000 they would be a
    # millisecond apart.
    offsets = captured - captured[0]
    assert len(received) == 4 and offsets[-1] < 1.0, offsets
    assert all(offsets[1:] > np.arange(1, 4) * 0.2 - 0.1), offsets


def test_a_recording_never_overwrites_and_an_unwritable_one_stops_alone(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        MaskBagWriter(tmp_path / "exists")
    with pytest.raises(ConfigError, match="publish.rosbag"):
        from edge_vos.program import Program

        Program(service_config(RunConfig, publish={"rosbag": str(tmp_path / "exists")}))
    with MaskBagWriter(tmp_path / "ok") as writer:
        header = {"t_capture_unix_ns": time.time_ns(), "objects": []}
        writer.write(header, np.zeros((4, 4), np.uint8))
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "ok") as reader:
        assert reader.message_count == 2
