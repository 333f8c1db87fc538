"""`edge-vos` command line: one subcommand per job, each living next to the code it drives.

Subcommand modules are imported only when chosen, so `edge-vos subscribe` does not pay for torch.
Each module exposes `add_arguments(parser)` and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import re
import sys

from edge_vos import __version__
from edge_vos.allocator import keep_freed_memory

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("edge_vos.run_cli", "run the streaming service (capture -> tracker -> ZeroMQ)"),
    "subscribe": ("edge_vos.client_cli", "watch a running service: print, save masks or show an overlay"),
    "ctl": ("edge_vos.ctl_cli", "send a command to a running service: add, remove, reset, stats, ..."),
    "view": ("edge_vos.view.cli", "serve the live web view (point-and-track) of a service running elsewhere"),
    "ros2-bridge": ("edge_vos.ros2.cli", "bridge a running service to ROS 2 over DDS: masks, detections, commands"),
    "eval": ("edge_vos.evaluation.cli", "DAVIS-style J&F evaluation of the tracker on a dataset split"),
    "bench": ("edge_vos.evaluation.bench", "long-stream latency and memory benchmark"),
    "train": ("edge_vos.train.cli", "train the network"),
    "build-engines": ("edge_vos.engines_cli", "export ONNX and build TensorRT engines"),
}
# Subcommands that need an optional extra of pyproject.toml on top of the runtime dependencies.
SUBCOMMAND_EXTRAS: dict[str, str] = {"eval": "eval", "bench": "eval", "train": "train"}


def missing_extra(extra: str, distribution: str = "edge-vos") -> list[str]:
    """The requirements of `extra` that are not installed, read from the installed package's metadata.

    Empty when the metadata is absent (a source tree on PYTHONPATH): the imports then speak for themselves.
    """
    try:
        requirements = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if not re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            continue
        name = re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0]
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="edge-vos", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--version", action="version", version=f"edge-vos {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    if chosen == "run":  # a service: a stop signal must be handled from the very start (exit 0 at once)
        importlib.import_module(SUBCOMMANDS["run"][0]).install_startup_signal_handlers()
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        if name == chosen:
            extra = SUBCOMMAND_EXTRAS.get(name)
            missing = missing_extra(extra) if extra else []
            if missing:
                parser.exit(2, f"edge-vos {name} needs the optional '{extra}' dependencies (not installed: "
                               f"{', '.join(missing)}): pip install 'edge-vos[{extra}]'\n")
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_module=module)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keep_freed_memory()  # process-wide, before any frame: the per-frame tensors are recycled, not re-mapped
    return int(args._module.main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
