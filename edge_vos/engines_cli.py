"""`edge-vos build-engines`: export the ONNX parts and build TensorRT engines ahead of time.

Run it once on the target device (after installing or upgrading TensorRT, changing weights or working
resolution) so the service starts without a multi-minute engine build. It also prints the equivalent
`trtexec` command lines (on stdout, so they can be piped into a script; progress goes to the log), which
build the same engines without Python. On a machine without CUDA/TensorRT it
still exports the ONNX files (copy them to the device, or let the device export its own) and prints the
trtexec lines with placeholder engine names.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from edge_vos.tracker.config import PRECISIONS, TrackerConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge_vos.backends import BACKEND_NAMES

    parser.add_argument(
        "--config", type=Path, help="YAML: a TrackerConfig, or a service config with a `tracker:` section"
    )
    parser.add_argument(
        "--input-size", action="append", metavar="WxH",
        help="camera/video frame size(s) the service will see (repeatable; default 854x480); the working "
        "size follows from the config's resolution",
    )
    parser.add_argument("--backend", choices=BACKEND_NAMES,
                        help="what to build (default: the config's backend; torch and auto build for TensorRT "
                        "when it is usable and otherwise export ONNX only)")
    parser.add_argument("--precision", choices=PRECISIONS, help="overrides the config's precision")
    parser.add_argument("--max-objects", type=int, help="overrides the config's max_objects (engine profile)")
    parser.add_argument("--weights", help="checkpoint file (overrides model.weights)")
    parser.add_argument("--random-network", action="store_true", help="untrained network (pipeline checks only)")
    parser.add_argument("--engines", type=Path, help="cache directory (default $EDGE_VOS_ENGINES or engines/)")


def main(args: argparse.Namespace) -> int:
    import torch

    from edge_vos.backends import BackendUnavailable, create_runner
    from edge_vos.backends.cache import default_cache_dir
    from edge_vos.backends.export import export_all
    from edge_vos.backends.parts import PART_NAMES
    from edge_vos.backends.tensorrt_backend import (
        DEFAULT_WORKSPACE_BYTES,
        has_fp16_flag,
        object_profile,
        tensorrt_unavailable_reason,
        trtexec_command,
    )
    from edge_vos.config import ConfigError
    from edge_vos.model.checkpoint import CheckpointError
    from edge_vos.model.preprocess import frame_geometry

    try:
        config = TrackerConfig.from_yaml(args.config)
        # A service's streams share the engines, built for the largest max_objects of them (tracker/engines.py).
        overrides = {"precision": args.precision, "max_objects": args.max_objects or _streams_max_objects(args.config)}
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
        sizes = [_parse_size(s) for s in (args.input_size or ["854x480"])]
        network = _network(config, args)
    except (ConfigError, FileNotFoundError, CheckpointError) as exc:
        log.error("%s", exc)
        return 2
    precision, max_objects = config.precision, config.max_objects
    cache = args.engines or default_cache_dir()
    padded = sorted({frame_geometry(h, w, config.working_short_side(h, w)).padded_hw for w, h in sizes})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    requested = args.backend or config.backend
    reason = tensorrt_unavailable_reason(device)
    target = requested
    if requested in ("auto", "torch"):
        target = "tensorrt" if reason is None else "onnx"
    trt_precision = "fp32" if precision == "fp32" else "fp16"
    strongly_typed = False
    if target == "tensorrt" and reason is None:
        import tensorrt

        strongly_typed = trt_precision == "fp16" and not has_fp16_flag(tensorrt)
    onnx_precision = "fp16" if strongly_typed else "fp32"

    status = 0
    for i, hw in enumerate(padded, 1):
        log.info("[%d/%d] working size %dx%d: exporting ONNX (%s)", i, len(padded), hw[1], hw[0], ", ".join(PART_NAMES))
        exports = export_all(network, hw, cache_dir=cache, precision=onnx_precision)
        for part, exported in exports.items():
            log.info("  %s -> %s", part, exported.path)
        print(f"# trtexec equivalents for {hw[1]}x{hw[0]} ({trt_precision}, 1..{max_objects} objects):")
        for part, exported in exports.items():
            engine = exported.path.with_name(f"{exported.path.stem}-{trt_precision}.engine")
            shapes = object_profile(network, part, hw, max_objects)
            timing = cache / "timing.cache"
            print(trtexec_command(exported.path, engine, shapes, trt_precision, timing,
                                  strongly_typed=strongly_typed, workspace_bytes=DEFAULT_WORKSPACE_BYTES))
        if target in ("tensorrt", "torch_tensorrt", "onnxruntime"):
            log.info("[%d/%d] building %s for %dx%d (TensorRT builds take minutes the first time)", i, len(padded),
                     target, hw[1], hw[0])
            try:
                runner = create_runner(network, target, device, precision, hw, max_objects=max_objects, cache_dir=cache)
            except BackendUnavailable as exc:
                log.error("%s", exc)
                status = 1
                continue
            for part, path in getattr(runner, "engine_paths", {}).items():
                log.info("  %s engine: %s", part, path)
        else:
            log.info("TensorRT is not usable here (%s): exported ONNX only; build the engines on the device "
                     "with this command or the trtexec lines above", reason)
    return status


def _network(config: TrackerConfig, args: argparse.Namespace) -> Any:
    from edge_vos.model.weights import RANDOM_WEIGHTS, load_configured_network

    weights = RANDOM_WEIGHTS if args.random_network else args.weights or config.model.weights
    return load_configured_network(dataclasses.replace(config.model, weights=weights)).eval()


def _parse_size(text: str) -> tuple[int, int]:
    from edge_vos.config import ConfigError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError("--input-size", f"must look like 854x480, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ConfigError("--input-size", f"must be positive, got {text!r}")
    return w, h


def _streams_max_objects(path: Any) -> int | None:
    """The largest `max_objects` of a service config's `streams:` (None: no streams); the engines serve them all."""
    from edge_vos.config import from_dict, read_yaml
    from edge_vos.service.config import ServiceConfig

    if path is None or not read_yaml(path).get("streams"):
        return None
    data = read_yaml(path)
    data.pop("view", None)
    data.pop("ros2", None)
    return max(s.tracker.max_objects for s in from_dict(ServiceConfig, data).stream_configs)
