"""`edge-vos run`: the streaming service (capture -> tracker -> ZeroMQ) as a long-lived process.

    edge-vos run --config configs/cpu.yaml
    edge-vos run --config configs/cpu.yaml --source video.mp4 --prompt-mask first.png --max-frames 100
    edge-vos run --source synthetic: --set tracker.resolution=240 --set publish.encoding=rle

Exit status: 0 after a clean stop (end of source, --max-frames, SIGTERM/SIGINT), 1 on a runtime failure
(tracker failing repeatedly, source given up), 2 on a configuration or start-up error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_vos.service.config import PACES
    from edge_vos.wire.protocol import ENCODINGS

    parser.add_argument("--config", type=Path, help="ServiceConfig YAML (see configs/)")
    parser.add_argument("--source", help="overrides source.uri: synthetic:, camera index, /dev/videoN, file, "
                                         "folder, rtsp://..., GStreamer pipeline, rosbag2:BAG?topic=/camera/image_raw, "
                                         "ros2:/camera/image_raw (docs/ros2.md)")
    parser.add_argument("--prompt-mask", help="overrides prompt.mask: palette/label PNG of the first frame")
    parser.add_argument("--publish", help="overrides publish.endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--control", help="overrides control.endpoint ('' or 'none' disables commands)")
    parser.add_argument("--max-frames", type=int, help="overrides pipeline.max_frames (0 = unlimited)")
    parser.add_argument("--pace", choices=PACES, help="overrides source.pace (a file or folder given as --source "
                                                       "gets fastest: every frame, none dropped)")
    parser.add_argument("--encoding", choices=ENCODINGS, help="overrides publish.encoding")
    parser.add_argument("--weights", help="overrides tracker.model.weights")
    parser.add_argument("--resolution", type=int, help="overrides tracker.resolution (working short side)")
    parser.add_argument("--loop", action=argparse.BooleanOptionalAction, default=None,
                        help="sets source.loop: replay files, folders and scenes at their end (a file or folder "
                             "given as --source does not loop unless --loop)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any dotted config override, value parsed as YAML (repeatable)")
    parser.add_argument("--view", nargs="?", const="127.0.0.1:8080", metavar="HOST:PORT",
                        help="serve the live web page (docs/view.md) on HOST:PORT (default 127.0.0.1:8080; "
                             "PORT alone = loopback); sets view.listen and publish.preview")
    parser.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    parser.add_argument("--log-json", action="store_true",
                        help="one JSON object per log line (for journald/log shippers), with structured fields")


class JsonFormatter(logging.Formatter):
    """Log records as single-line JSON: time, level, logger, message, and `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from edge_vos.config import ConfigError
    from edge_vos.service.sources import is_recording, source_kind

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value) if value else ""
    simple = {
        "source": "source.uri", "prompt_mask": "prompt.mask", "publish": "publish.endpoint",
        "max_frames": "pipeline.max_frames", "pace": "source.pace", "encoding": "publish.encoding",
        "weights": "tracker.model.weights", "resolution": "tracker.resolution",
    }
    for option, key in simple.items():
        value = getattr(args, option, None)
        if value is not None:
            overrides[key] = value
    if args.control is not None:
        overrides["control.endpoint"] = "" if args.control.lower() in ("", "none", "off") else args.control
    if args.loop is not None:
        overrides["source.loop"] = args.loop
    if args.source is not None and is_recording(args.source):
        # A recording named on the command line is processed as such: every frame once, not like the
        # config's camera (realtime pace skips frames; loop replays the clip).
        if args.pace is None:
            overrides["source.pace"] = "fastest"
        if args.loop is None:
            overrides["source.loop"] = False
        log.info("--source is a %s: pace %s, %s (--pace, --loop to change)", source_kind(args.source),
                 overrides["source.pace"], "loop" if overrides["source.loop"] else "no loop")
    if getattr(args, "view", None):
        overrides["view.listen"] = args.view
        overrides["publish.preview"] = True
    return overrides


def install_startup_signal_handlers() -> None:
    """Until the service's sockets are bound, SIGTERM or SIGINT end the process at once with status 0:
    nothing is open that needs closing. `edge-vos run` calls this before anything slow (torch, weights)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _exit_during_startup)


def main(args: argparse.Namespace) -> int:
    install_startup_signal_handlers()  # again: main() may be called without edge_vos.cli
    on_main_thread = threading.current_thread() is threading.main_thread()
    import yaml

    from edge_vos.config import ConfigError, load_yaml, redacted_dict
    from edge_vos.program import Program, RunConfig

    if args.log_json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    try:
        config = load_yaml(RunConfig, args.config, overrides_from_args(args))
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    if len(config.stream_configs) > 1 and (args.source is not None or args.prompt_mask is not None):
        log.error("invalid configuration: --source and --prompt-mask set the source of a one-camera service; this "
                  "config runs %d streams: set streams[i].source / streams[i].prompt in it", len(config.stream_configs))
        return 2
    if args.print_config:
        print(yaml.safe_dump(redacted_dict(config), sort_keys=False), end="")  # noqa: T201 - the requested output
        return 0
    try:
        program = Program(config)  # reader, prompt, keys, tracker and weights: the slow part
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    # From here on a signal asks the service to stop; it flushes and exits 0 within a few seconds.
    if on_main_thread:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: _on_signal(program, signum))
    try:
        program.start()
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        program.wait()
    finally:
        program.stop()
    service = program.service
    if service.exit_error:
        log.error("service stopped: %s", service.exit_error)
        return 2 if service.startup_failed else 1
    log.info("service stopped cleanly")
    return 0


def _exit_during_startup(signum: int, _frame: Any) -> None:
    message = f"signal {signal.Signals(signum).name} during start-up: exiting"
    if logging.getLogger().handlers:
        log.info("%s", message)
        logging.shutdown()
    else:  # so early that logging is not set up yet
        os.write(2, f"{message}\n".encode())
    os._exit(0)


def _on_signal(program: Any, signum: int) -> None:
    log.info("signal %s: stopping", signal.Signals(signum).name)
    program.request_stop()
