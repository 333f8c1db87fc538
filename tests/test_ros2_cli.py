"""`edge-vos subscribe --rosbag` and `edge-vos ros2-bridge` (a separate process, so its DDS traffic crosses
processes over loopback unicast, the way a ROS 2 node on this host would receive it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge_vos.cli import main as cli
from edge_vos.ros2.dds import DdsNode, take
from edge_vos.ros2.dds_types import to_dds
from edge_vos.ros2.messages import DETECTIONS, IMAGE, STRING, string_message, typestore

from .fakes import ArrayReader
from .ros2_support import LOOPBACK_CYCLONEDDS_URI, private_domain
from .service_support import first_mask, frames, running, service_config

ROOT = Path(__file__).resolve().parents[1]


def test_subscribe_records_the_masks_it_receives_into_a_bag(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    mask = first_mask()
    mask[70:100, 100:150] = 4
    cfg = service_config(publish={"wait_for_subscriber_s": 5})
    out = tmp_path / "bag"
    with running(cfg, ArrayReader(frames(6), mask=mask)) as service:
        assert cli(["subscribe", "--endpoint", service.publisher.last_endpoint, "--count", "6", "--timeout", "10",
                    "--rosbag", str(out)]) == 0
    store = typestore()
    with Reader(out) as reader:
        assert {n: i.msgtype for n, i in reader.topics.items()} == {"/edge_vos/masks": IMAGE,
                                                                   "/edge_vos/detections": DETECTIONS}
        messages = [(c.topic, store.deserialize_cdr(raw, c.msgtype)) for c, _, raw in reader.messages()]
    images = [m for topic, m in messages if topic == "/edge_vos/masks"]
    detections = [m for topic, m in messages if topic == "/edge_vos/detections"]
    assert len(images) == len(detections) == 6
    assert all(np.array_equal(m.data.reshape(m.height, m.width), mask) for m in images)
    assert all([d.id for d in m.detections] == ["1", "4"] for m in detections)
    assert {m.header.frame_id for m in images} == {"camera"}
    assert cli(["subscribe", "--rosbag", str(out), "--count", "1"]) == 2  # never overwrites a bag


def test_bad_bridge_options_exit_2() -> None:
    assert cli(["ros2-bridge", "--domain-id", "999"]) == 2
    assert cli(["ros2-bridge", "--namespace", "edge vos"]) == 2


def test_the_bridge_process_beside_a_service_reaches_a_dds_subscriber(tmp_path: Path, monkeypatch) -> None:
    domain = private_domain()
    monkeypatch.setenv("CYCLONEDDS_URI", LOOPBACK_CYCLONEDDS_URI)  # both processes: loopback unicast
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cfg = service_config(source={"pace": "realtime", "fps": 20.0, "loop": True})
    node = DdsNode(domain)
    masks = node.reader("/robot/edge_vos/masks", IMAGE)
    commands = node.writer("/robot/edge_vos/command", STRING, sensor_data=False)
    replies = node.reader("/robot/edge_vos/command_result", STRING, sensor_data=False)
    try:
        with running(cfg, ArrayReader(frames(20), mask=first_mask())) as service:
            bridge = subprocess.Popen(
                [sys.executable, "-m", "edge_vos.cli", "ros2-bridge", "--masks", service.publisher.last_endpoint,
                 "--control", service.control.last_endpoint, "--domain-id", str(domain), "--namespace",
                 "/robot/edge_vos", "--frame-id", "cam_x"], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
            try:
                sample = take(masks, 60.0)  # the process starts (imports, discovery) and forwards
                assert sample is not None, "no mask reached the DDS subscriber"
                assert sample.header.frame_id == "cam_x" and sample.encoding == "mono8"
                deadline = time.monotonic() + 30
                reply = None
                while reply is None and time.monotonic() < deadline:  # until the bridge's reader has matched
                    commands.write(to_dds(string_message(node.store, json.dumps({"cmd": "ping", "req": 9}))))
                    reply = take(replies, 1.0)
                assert reply is not None and json.loads(reply.data) == {"ok": True, "pong": True, "req": 9}
            finally:
                bridge.send_signal(signal.SIGTERM)
                output, _ = bridge.communicate(timeout=20)
            assert bridge.returncode == 0, output
            assert "ROS 2 bridge stopped after" in output
    finally:
        node.close()
