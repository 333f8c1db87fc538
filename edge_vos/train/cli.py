"""`edge-vos train --config FILE`: trains (or resumes) the network as a YAML TrainConfig describes.

    edge-vos train --config configs/train-cpu.yaml --out runs/effl0-stcn
    edge-vos train --config configs/train-cpu.yaml --set readout.kind=tmrn --set readout.stcn=null --set video.steps=200

A run directory holds checkpoint.safetensors (weights + optimizer + step: rerunning the same command
resumes), log.csv (one row per `log_every` steps), config.json and, at the end, final.safetensors.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from edge_vos.config import ConfigError, load_yaml

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML of TrainConfig (edge_vos.train.config)")
    parser.add_argument("--out", help="run directory (overrides `out`)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="dotted override, value parsed as YAML (e.g. --set video.steps=100); repeatable",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run directory")
    parser.add_argument("--max-steps", type=int, help="stop after this global step (the run stays resumable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--export-checkpoint", action="store_true",
        help="only write the run's current checkpoint as OUT/step<N>.safetensors (to evaluate a run in progress)",
    )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["a.b=1", "c=x"] -> {"a.b": 1, "c": "x"} with YAML-typed values."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(args: argparse.Namespace) -> int:
    from edge_vos.train.config import TrainConfig
    from edge_vos.train.trainer import export_checkpoint, train

    try:
        overrides = parse_overrides(args.set)
        if args.out:
            overrides["out"] = args.out
        if args.no_progress:
            overrides["progress"] = False
        cfg = load_yaml(TrainConfig, args.config, overrides)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        if args.export_checkpoint:
            log.info("wrote %s", export_checkpoint(cfg))
            return 0
        result = train(cfg, resume=not args.fresh, max_steps=args.max_steps)
    except (FileNotFoundError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    log.info("done: %d steps, loss %.4f, %.0f s this session -> %s", result.steps, result.final_loss,
             result.seconds, result.export if result.steps == cfg.total_steps else "(not finished)")
    return 0
