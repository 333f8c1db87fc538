"""Send one command to a running service (the demo's control channel), print the JSON reply.

    .venv/bin/python tools/demo_control.py stats
    .venv/bin/python tools/demo_control.py add-box 3 40 30 120 110        # a mask from the box, next frame
    .venv/bin/python tools/demo_control.py add-clicks 6 300,200 --negative 350,260  # object / background clicks
    .venv/bin/python tools/demo_control.py add-box 3 40 30 120 110 --method grabcut
    .venv/bin/python tools/demo_control.py add-polygon 4 10,10 60,10 60,50
    .venv/bin/python tools/demo_control.py add-mask 5 mask.png [--frame SEQ] [--resize]
    .venv/bin/python tools/demo_control.py remove 3
    .venv/bin/python tools/demo_control.py reset

A thin wrapper over edge_vos.client.CommandClient (timeouts and retries included); exit status 1 when the
service refused the command or did not answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_vos.client import CommandClient, CommandFailed, ServiceUnavailable  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    parser.add_argument("--timeout", type=float, default=5.0)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("stats", "config", "ping", "reset"):
        sub.add_parser(name)
    remove = sub.add_parser("remove")
    remove.add_argument("id", type=int)
    box = sub.add_parser("add-box")
    box.add_argument("id", type=int)
    box.add_argument("coords", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    clicks = sub.add_parser("add-clicks")
    clicks.add_argument("id", type=int)
    clicks.add_argument("points", nargs="*", metavar="X,Y", help="clicks on the object")
    clicks.add_argument("--negative", action="append", default=[], metavar="X,Y", help="a click on background")
    clicks.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    polygon = sub.add_parser("add-polygon")
    polygon.add_argument("id", type=int)
    polygon.add_argument("points", nargs="+", metavar="X,Y")
    mask = sub.add_parser("add-mask")
    mask.add_argument("id", type=int)
    mask.add_argument("png", type=Path, help="non-zero pixels = the object")
    for p in (box, clicks, polygon, mask):
        p.add_argument("--frame", type=int, help="capture_seq of a recent frame (default: the next frame)")
    for p in (box, clicks):
        p.add_argument("--method", choices=["learned", "grabcut"], help="default: the service's (learned)")
    mask.add_argument("--resize", action="store_true", help="accept a mask within 2%% of the frame size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with CommandClient(args.endpoint, timeout_s=args.timeout, retries=1) as ctl:
        try:
            if args.cmd == "add-box":
                reply = ctl.add_box(args.id, args.coords, method=args.method, frame=args.frame)
            elif args.cmd == "add-clicks":
                points = [tuple(float(v) for v in p.split(",")) for p in args.points + args.negative]
                labels = [1] * len(args.points) + [0] * len(args.negative)
                reply = ctl.add_prompt(args.id, box=args.box, points=points, labels=labels, method=args.method,
                                       frame=args.frame)
            elif args.cmd == "add-polygon":
                points = [tuple(float(v) for v in p.split(",")) for p in args.points]
                reply = ctl.add_polygon(args.id, points, frame=args.frame)
            elif args.cmd == "add-mask":
                from edge_vos.data.davis import read_mask

                reply = ctl.add_mask(args.id, read_mask(args.png), frame=args.frame, resize=args.resize)
            elif args.cmd == "remove":
                reply = ctl.remove(args.id)
            else:
                reply = ctl.request({"cmd": args.cmd})
        except CommandFailed as exc:
            print(json.dumps(exc.reply))  # noqa: T201 - this tool's output
            return 1
        except ServiceUnavailable as exc:
            print(json.dumps({"ok": False, "error": str(exc)}))  # noqa: T201
            return 1
    print(json.dumps(reply, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
