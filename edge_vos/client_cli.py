"""`edge-vos subscribe`: watch a running service.

    edge-vos subscribe                                   # one line per frame: seq, latency, objects
    edge-vos subscribe --save out/ --count 100           # palette PNG label maps, one per frame
    edge-vos subscribe --show                            # overlay window (needs a display and GUI OpenCV)
    edge-vos subscribe --rosbag masks_bag                # a rosbag2 (MCAP) of masks + detections (docs/ros2.md)
    edge-vos subscribe --stream front                    # one camera of a service that runs several

Does not import torch. Exit status 0 when --count messages arrived, 1 when the stream went silent for
--timeout seconds, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="the service's publish endpoint")
    parser.add_argument("--stream", help="only this stream's messages (a service with several `streams:`); "
                                         "default: every stream")
    parser.add_argument("--count", type=int, default=0, help="stop after N mask messages (0 = run until stopped)")
    parser.add_argument("--timeout", type=float, default=30.0, help="give up after this many silent seconds")
    parser.add_argument("--save", type=Path, help="write each label map as DIR/<seq>.png (palette)")
    parser.add_argument("--show", action="store_true", help="overlay window (needs the preview topic enabled)")
    parser.add_argument("--rosbag", type=Path, help="record the masks into a new rosbag2 (MCAP) folder DIR: "
                                                   "/edge_vos/masks (Image mono8), /edge_vos/detections")
    parser.add_argument("--latest", action="store_true", help="skip to the newest message when behind")
    parser.add_argument("--json", action="store_true", help="print each header as one JSON line")
    parser.add_argument("--server-key", help="CURVE: the server's public key file")
    parser.add_argument("--client-key", help="CURVE: this client's secret key file")


def main(args: argparse.Namespace) -> int:
    if args.show and not _can_show():
        log.error("--show needs a display ($DISPLAY/$WAYLAND_DISPLAY) and an OpenCV with GUI support "
                  "(pip install opencv-python instead of opencv-python-headless); use --save instead")
        return 2
    topics = ["masks", "status"] + (["preview"] if args.show else [])
    bag = None
    if args.rosbag:
        try:
            from edge_vos.ros2.recorder import MaskBagWriter

            bag = MaskBagWriter(args.rosbag)
            bag.open()
        except ImportError:
            log.error("--rosbag needs the rosbags package: pip install 'edge-vos[ros2]'")
            return 2
        except OSError as exc:
            log.error("--rosbag: %s", exc)
            return 2
    try:
        return _receive(args, topics, bag)
    finally:
        if bag is not None:
            bag.close()


def _receive(args: argparse.Namespace, topics: list[str], bag: Any) -> int:
    import json

    from edge_vos.client import MaskResult, Preview, Status, Subscriber

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    received = 0
    first_stream = ""
    last_image: np.ndarray | None = None
    with Subscriber(args.endpoint, topics, latest_only=args.latest, timeout_s=0.5, stream=args.stream,
                    server_public_key=args.server_key, client_secret_key=args.client_key) as sub:
        silent = 0.0
        while not stop.is_set():
            message = sub.recv()
            if message is None:
                silent += 0.5
                if silent >= args.timeout:
                    log.error("no message from %s for %.0f s", args.endpoint, args.timeout)
                    return 1
                continue
            silent = 0.0
            if isinstance(message, Status):
                log.info("service %s: source %s %s", message.header.get("stream"), message.header.get("state"),
                         message.header.get("detail", ""))
                continue
            if isinstance(message, Preview):
                last_image = message.image
                continue
            if not isinstance(message, MaskResult):  # a message kind this client does not know
                log.debug("ignoring a %s message", type(message).__name__)
                continue
            received += 1
            h = message.header
            if args.json:
                sys.stdout.write(json.dumps(h) + "\n")
            else:
                objects = " ".join(f"{o['id']}:{o['area']}px@{o['score']:.2f}" for o in h["objects"]) or "-"
                sys.stdout.write(f"seq {h['seq']:6d}  frame {h['capture_seq']:6d}  {h['width']}x{h['height']}  "
                                 f"latency {message.latency_ms:7.1f} ms  gaps {sub.gaps}  stream {h['stream']}  "
                                 f"objects {objects}\n")
            sys.stdout.flush()
            if args.save:
                from edge_vos.data.davis import write_mask

                first_stream = first_stream or h["stream"]
                if h["stream"] != first_stream:  # seq is per stream: two streams' files would collide
                    log.error("--save: the service runs several streams (%s, %s); save one with --stream ID",
                              first_stream, h["stream"])
                    return 2
                write_mask(args.save / f"{h['seq']:06d}.png", message.labels)
            if bag is not None:
                bag.write(h, message.labels)
            if args.show and last_image is not None:
                _show(last_image, message.labels)
            if args.count and received >= args.count:
                return 0
    return 0


def _can_show() -> bool:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import cv2

    info = cv2.getBuildInformation()
    return any(f"{gui}:" in info and "YES" in line for gui in ("GTK", "QT", "Cocoa")
               for line in info.splitlines() if gui in line)


def _show(image: np.ndarray, labels: np.ndarray) -> None:
    import cv2

    from edge_vos.data.davis import davis_palette

    if labels.shape != image.shape[:2]:
        labels = cv2.resize(labels, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    colours = davis_palette()[labels]
    overlay = np.where(labels[..., None] > 0, (0.5 * image + 0.5 * colours).astype(np.uint8), image)
    cv2.imshow("edge-vos", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
    cv2.waitKey(1)
