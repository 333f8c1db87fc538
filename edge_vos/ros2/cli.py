"""`edge-vos ros2-bridge`: the live ROS 2 bridge beside a running service (docs/ros2.md).

    edge-vos ros2-bridge                                   # service on this host, ROS 2 domain $ROS_DOMAIN_ID
    edge-vos ros2-bridge --masks tcp://jetson:5555 --control tcp://jetson:5556 --domain-id 7

A client of the service's two ZeroMQ sockets (like `edge-vos view`): masks and detections out as ROS 2
topics over DDS, commands in from a topic. Does not import torch. Exit status 0 after SIGINT/SIGTERM, 1
when a bridge thread failed, 2 for bad options or a missing `ros2` extra (rosbags, cyclonedds).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--masks", default="tcp://127.0.0.1:5555", help="the service's publish endpoint")
    parser.add_argument("--topic", default="masks", help="the service's mask topic (publish.topic)")
    parser.add_argument("--control", default="tcp://127.0.0.1:5556",
                        help="the service's control endpoint ('none': no command topic)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS 2 domain (default: $ROS_DOMAIN_ID, else 0)")
    parser.add_argument("--namespace", default="/edge_vos", help="prefix of the bridge's topics")
    parser.add_argument("--frame-id", default="camera", help="frame_id of masks whose source gives none")
    parser.add_argument("--server-key", default="", help="CURVE: the service's public key file")
    parser.add_argument("--client-key", default="", help="CURVE: this client's secret key file")


def main(args: argparse.Namespace) -> int:
    from edge_vos.config import ConfigError, from_dict
    from edge_vos.ros2.config import Ros2Config, require

    try:
        require(("cyclonedds", "rosbags"), "ros2-bridge")
        domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID") or 0)
        config = from_dict(Ros2Config, {"enabled": True, "domain_id": domain, "namespace": args.namespace,
                                        "frame_id": args.frame_id}, "ros2")
        if bool(args.server_key) != bool(args.client_key):
            raise ConfigError("--server-key", "CURVE needs both --server-key and --client-key")
    except (ConfigError, ValueError) as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    from edge_vos.ros2.bridge import Ros2Bridge

    control = "" if args.control.lower() in ("", "none", "off") else args.control
    bridge = Ros2Bridge(config, args.masks, control, args.server_key, args.client_key, masks_topic=args.topic)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    bridge.start()
    failed = False
    try:
        while not stop.wait(0.5):
            if not bridge.alive():
                failed = True
                break
    finally:
        bridge.stop()
    log.info("ROS 2 bridge stopped after %d mask messages and %d commands", bridge.published, bridge.commands)
    return 1 if failed else 0
