"""`edge-vos ctl`: send one command to a running service and print its JSON reply.

    edge-vos ctl stats                                   # every stream's numbers, with the totals
    edge-vos ctl streams                                 # the streams the service runs
    edge-vos ctl --stream front add-box 3 40 30 120 110  # a command for one camera of several
    edge-vos ctl add-box 3 40 30 120 110                 # the service makes the mask (next frame)
    edge-vos ctl add-points 4 60,50 90,70,0              # clicks: X,Y (object) or X,Y,0 (background)
    edge-vos ctl add-polygon 5 10,10 60,10 60,50
    edge-vos ctl add-mask 6 mask.png --frame 1234 --resize
    edge-vos ctl correct 4 90,70,0 --frame 1234          # object 4 on frame 1234: not at 90,70 (0) / here (1)
    edge-vos ctl remove 3
    edge-vos ctl reset
    edge-vos ctl send '{"cmd": "add", "id": 7, "box": [0, 0, 50, 50], "method": "grabcut"}'

A thin layer over edge_vos.client.CommandClient (timeouts and retries included); does not import torch.
Exit status 0 when the service answered ok, 1 when it refused the command or did not answer, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="the service's control endpoint")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply (one retry)")
    parser.add_argument("--stream", help="the stream the command is for (required by add, remove, reset when the "
                                         "service runs several; stats: that stream's numbers)")
    parser.add_argument("--server-key", help="CURVE: the server's public key file")
    parser.add_argument("--client-key", help="CURVE: this client's secret key file")
    sub = parser.add_subparsers(dest="ctl", required=True, metavar="CMD")
    for name, text in (("stats", "frames, fps, objects, source state, queues, subscribers"),
                       ("config", "the running configuration"), ("ping", "is the service answering"),
                       ("streams", "the streams the service runs: id, state, size, objects, fps"),
                       ("reset", "forget every object and the memory")):
        sub.add_parser(name, help=text)
    remove = sub.add_parser("remove", help="stop tracking an object")
    remove.add_argument("id", type=int)
    box = sub.add_parser("add-box", help="add (or correct) an object from a box")
    box.add_argument("id", type=int)
    box.add_argument("coords", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    points = sub.add_parser("add-points", help="add an object from clicks: X,Y (object) or X,Y,0 (background)")
    points.add_argument("id", type=int)
    points.add_argument("clicks", nargs="+", metavar="X,Y[,LABEL]")
    points.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="and a box")
    polygon = sub.add_parser("add-polygon", help="add an object from a polygon, taken as is")
    polygon.add_argument("id", type=int)
    polygon.add_argument("vertices", nargs="+", metavar="X,Y")
    mask = sub.add_parser("add-mask", help="add an object from a PNG (non-zero pixels = the object)")
    mask.add_argument("id", type=int)
    mask.add_argument("png", type=Path)
    mask.add_argument("--resize", action="store_true", help="accept a mask within the resize tolerance (2%%)")
    mask.add_argument("--encoding", choices=("png", "rle"), default="png", help="how the mask travels")
    correct = sub.add_parser("correct", help="correct a tracked object's mask on a recent frame with clicks on its "
                                             "error: X,Y (a missed part) or X,Y,0 (a wrongly painted part)")
    correct.add_argument("id", type=int)
    correct.add_argument("clicks", nargs="+", metavar="X,Y[,LABEL]")
    correct.add_argument("--frame", type=int, help="capture_seq of a recent frame (default: the latest tracked)")
    correct.add_argument("--save", type=Path, metavar="PNG", help="write the corrected mask (255 = the object)")
    for p in (box, points, correct):
        p.add_argument("--method", help="how the service makes the mask (its default when not given)")
    for p in (box, points, polygon, mask):
        p.add_argument("--frame", type=int, help="capture_seq of a recent frame (default: the next frame)")
    send = sub.add_parser("send", help="send a JSON object as it is (scripts, protocol experiments)")
    send.add_argument("json", help="one JSON object, e.g. '{\"cmd\": \"ping\"}'")


def _pairs(values: list[str], what: str, sizes: tuple[int, ...]) -> list[list[float]]:
    out = []
    for value in values:
        try:
            numbers = [float(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(f"{what} {value!r}: expected numbers separated by commas") from None
        if len(numbers) not in sizes:
            raise ValueError(f"{what} {value!r}: expected {' or '.join(str(s) for s in sizes)} numbers")
        out.append(numbers)
    return out


def _request(args: argparse.Namespace) -> dict[str, Any]:
    """The command the arguments describe (ValueError for unusable arguments)."""
    frame = {"frame": args.frame} if getattr(args, "frame", None) is not None else {}
    method = {"method": args.method} if getattr(args, "method", None) else {}
    if args.ctl in ("stats", "streams", "config", "ping", "reset"):
        return {"cmd": args.ctl}
    if args.ctl == "remove":
        return {"cmd": "remove", "id": args.id}
    if args.ctl == "add-box":
        return {"cmd": "add", "id": args.id, "box": args.coords, **method, **frame}
    if args.ctl == "add-points":
        clicks = _pairs(args.clicks, "click", (2, 3))
        command = {"cmd": "add", "id": args.id, "points": [c[:2] for c in clicks],
                   "labels": [int(c[2]) if len(c) == 3 else 1 for c in clicks], **method, **frame}
        if args.box:
            command["box"] = args.box
        return command
    if args.ctl == "correct":
        clicks = _pairs(args.clicks, "click", (2, 3))
        return {"cmd": "add", "id": args.id, "correct": True, "points": [c[:2] for c in clicks],
                "labels": [int(c[2]) if len(c) == 3 else 1 for c in clicks], **method, **frame}
    if args.ctl == "add-polygon":
        return {"cmd": "add", "id": args.id, "polygon": _pairs(args.vertices, "vertex", (2,)), **frame}
    if args.ctl == "send":
        try:
            command = json.loads(args.json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(command, dict):
            raise ValueError("send takes one JSON object")
        return command
    raise ValueError(f"unknown command {args.ctl!r}")  # add-mask is built by main (it reads a file)


def main(args: argparse.Namespace) -> int:
    from edge_vos.client import CommandClient, CommandFailed, ServiceUnavailable

    try:
        command = None if args.ctl == "add-mask" else _request(args)
        mask = None
        if args.ctl == "add-mask":
            from edge_vos.data.davis import read_mask

            if not args.png.is_file():
                raise ValueError(f"mask file not found: {args.png}")
            mask = read_mask(args.png)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    with CommandClient(args.endpoint, timeout_s=args.timeout, retries=1, server_public_key=args.server_key,
                       client_secret_key=args.client_key, stream=args.stream) as ctl:
        try:
            if mask is not None:
                reply = ctl.add_mask(args.id, mask, frame=args.frame, resize=args.resize, encoding=args.encoding)
            else:
                reply = ctl.request(command or {})
        except CommandFailed as exc:
            sys.stdout.write(json.dumps(exc.reply) + "\n")
            return 1
        except ServiceUnavailable as exc:
            sys.stdout.write(json.dumps({"ok": False, "error": str(exc)}) + "\n")
            return 1
    if "rle" in reply:  # a correction's mask: a file on request, not thousands of run lengths on the terminal
        if getattr(args, "save", None):
            from PIL import Image

            from edge_vos.client import correction_mask

            Image.fromarray(correction_mask(reply).astype(np.uint8) * 255).save(args.save)
        reply = {**reply, "rle": {"size": reply["rle"]["size"], "counts": f"<{len(reply['rle']['counts'])} runs>"}}
    sys.stdout.write(json.dumps(reply, indent=2) + "\n")
    return 0
