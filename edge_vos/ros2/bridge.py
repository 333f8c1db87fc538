"""The live ROS 2 bridge: a client of the service's two ZeroMQ sockets, like the web view, speaking ROS 2 over
Cyclone DDS (docs/ros2.md). Two threads, each owning its sockets and DDS entities:

- masks: SUB on the mask stream (newest message first: ROS 2 consumers want the present) -> NAMESPACE/masks
  (sensor_msgs/Image mono8, value = object id) and NAMESPACE/detections (vision_msgs/Detection2DArray), with
  the sensor-data QoS and the frame's source stamp and frame_id;
- commands: NAMESPACE/command (std_msgs/String holding one JSON request of the control protocol, e.g.
  `{"cmd": "add", "id": 3, "box": [40, 30, 120, 110]}`) -> REQ on the control socket -> the service's JSON
  reply on NAMESPACE/command_result (std_msgs/String), with `req` echoed so replies can be matched.

Commands are topics rather than ROS 2 services: a ROS 2 service over raw DDS depends on the RMW's request
header (rmw_cyclonedds prepends its own to every request; Fast DDS carries it in the RTPS sample identity),
so a service answered here would reach only some ROS 2 installations, while a topic is the same for all.
Anything a message brings (bad JSON, a refused command, a service that does not answer) is answered on
command_result or logged, rate-limited; nothing ends a thread but `stop()`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from edge_vos.client import CommandClient, MaskResult, ServiceUnavailable, Subscriber
from edge_vos.ros2.config import COMMAND, COMMAND_RESULT, DETECTIONS, MASKS, Ros2Config
from edge_vos.ros2.dds import DdsNode, take
from edge_vos.ros2.dds_types import to_dds
from edge_vos.ros2.messages import DETECTIONS as DETECTIONS_TYPE
from edge_vos.ros2.messages import IMAGE, STRING, detections_message, mask_message, mask_stamp, string_message

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 8 * 1024 * 1024  # the control socket's own limit (control.max_message_bytes default)
COMMAND_TIMEOUT_S = 6.0


class _Limited:
    """Logs the first few problems and then every 100th: input decides how often they happen."""

    def __init__(self, what: str) -> None:
        self.what, self.count = what, 0

    def __call__(self, problem: object) -> None:
        self.count += 1
        if self.count <= 3 or self.count % 100 == 0:
            log.warning("ros2 bridge %s: %s (%d so far)", self.what, problem, self.count)


class Ros2Bridge:
    """`start()` joins the DDS domain and starts both threads; `stop()` ends them within a second or two."""

    def __init__(self, config: Ros2Config, masks_endpoint: str, control_endpoint: str = "",
                 server_public_key: str | None = None, client_secret_key: str | None = None,
                 masks_topic: str = "masks") -> None:
        self.config, self.masks_topic = config, masks_topic
        self.masks_endpoint, self.control_endpoint = masks_endpoint, control_endpoint
        self._keys = (server_public_key or None, client_secret_key or None)
        self.stop_event = threading.Event()
        self.node: DdsNode | None = None
        self.threads: list[threading.Thread] = []
        self.published = 0
        self.commands = 0

    def start(self) -> None:
        self.node = node = DdsNode(self.config.domain_id)
        jobs = [("ros2-masks", self._forward_masks)]
        if self.control_endpoint:
            jobs.append(("ros2-commands", self._forward_commands))
        self.threads = [threading.Thread(target=self._run, args=(job, node), name=name, daemon=True)
                        for name, job in jobs]
        for thread in self.threads:
            thread.start()
        log.info("ROS 2 bridge on domain %d: %s, %s%s", self.config.domain_id, self.config.topic(MASKS),
                 self.config.topic(DETECTIONS),
                 f"; commands on {self.config.topic(COMMAND)}" if self.control_endpoint else "")

    def stop(self, timeout: float = 3.0) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("%s thread did not stop within %.1f s", thread.name, timeout)
        if self.node is not None:
            self.node.close()
            self.node = None

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self.threads)

    def _run(self, job: Any, node: DdsNode) -> None:
        try:
            job(node)
        except Exception:  # a socket that cannot be made: never silent (`alive()` turns false)
            log.critical("%s thread failed", threading.current_thread().name, exc_info=True)

    # ---- masks -----------------------------------------------------------------------------------

    def _forward_masks(self, node: DdsNode) -> None:
        store, cfg = node.store, self.config
        masks = node.writer(cfg.topic(MASKS), IMAGE)
        detections = node.writer(cfg.topic(DETECTIONS), DETECTIONS_TYPE)
        problem = _Limited("cannot forward a mask message")
        with Subscriber(self.masks_endpoint, [self.masks_topic], latest_only=True, timeout_s=0.2,
                        server_public_key=self._keys[0], client_secret_key=self._keys[1]) as sub:
            while not self.stop_event.is_set():
                try:
                    message = sub.recv()
                    if not isinstance(message, MaskResult):
                        continue
                    stamp = mask_stamp(message.header, cfg.frame_id)
                    masks.write(to_dds(mask_message(store, message.labels, stamp)))
                    detections.write(to_dds(detections_message(store, message.header["objects"], stamp)))
                    self.published += 1
                except Exception as exc:  # a malformed message or a DDS error: skip it, keep forwarding
                    problem(repr(exc))

    # ---- commands --------------------------------------------------------------------------------

    def _forward_commands(self, node: DdsNode) -> None:
        store, cfg = node.store, self.config
        requests = node.reader(cfg.topic(COMMAND), STRING, sensor_data=False)
        replies = node.writer(cfg.topic(COMMAND_RESULT), STRING, sensor_data=False)
        problem = _Limited("cannot answer a command")
        # One try, longer than control.reply_timeout_s: an `add` is not idempotent, so it is never re-sent.
        with CommandClient(self.control_endpoint, timeout_s=COMMAND_TIMEOUT_S, retries=0,
                           server_public_key=self._keys[0],
                           client_secret_key=self._keys[1]) as client:
            while not self.stop_event.is_set():
                sample = take(requests, 0.2)
                if sample is None:
                    continue
                try:
                    reply = self._answer(client, str(sample.data))
                    replies.write(to_dds(string_message(store, json.dumps(reply))))
                    self.commands += 1
                except Exception as exc:  # only a DDS write can fail here; the next command is tried
                    problem(repr(exc))

    def _answer(self, client: CommandClient, text: str) -> dict[str, Any]:
        """The service's reply to one request, or an error reply in the control protocol's form."""
        if len(text.encode()) > MAX_COMMAND_BYTES:
            return {"ok": False, "error": f"command is larger than {MAX_COMMAND_BYTES} bytes"}
        try:
            command = json.loads(text)
        except json.JSONDecodeError as exc:
            return {"ok": False, "error": f"command is not JSON: {exc}"}
        if not isinstance(command, dict):
            return {"ok": False, "error": "command must be a JSON object like {\"cmd\": \"reset\"}"}
        try:
            return client.request(command, check=False)
        except ServiceUnavailable as exc:
            return {"ok": False, "error": str(exc), **({"req": command["req"]} if "req" in command else {})}
