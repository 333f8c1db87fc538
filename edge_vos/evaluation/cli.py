"""`edge-vos eval`: DAVIS-protocol J&F of the tracker (or a baseline) on one split of a dataset folder.

    edge-vos eval --data ../shared/data/davis2016 --split val-dev --out runs/eval-tmrn --resolution 240
    edge-vos eval --data ... --split val-dev --out runs/ffc --baseline first-frame-copy

Writes DIR/<sequence>/<frame>.png (palette), DIR/per-sequence.csv and DIR/metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from edge_vos.config import ConfigError, from_dict, load_yaml, to_dict, with_overrides
from edge_vos.tracker.config import DEVICES, PRECISIONS, READOUT_KINDS

log = logging.getLogger(__name__)

# The configuration `edge-vos run` ships for a CPU (tools/demo.sh runs it): eval and bench measure what a
# user runs unless told otherwise.
SHIPPED_CPU_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cpu.yaml"


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose and configure the tracker (shared with `edge-vos bench`)."""
    group = parser.add_argument_group("tracker")
    group.add_argument(
        "--config",
        default=str(SHIPPED_CPU_CONFIG),
        help="TrackerConfig YAML, or a service YAML whose `tracker:` section is used; default: the shipped "
        "CPU config (configs/cpu.yaml: bundled weights, 360-pixel working size); 'none' = TrackerConfig's "
        "own defaults",
    )
    group.add_argument("--weights", help="checkpoint file (overrides model.weights)")
    group.add_argument(
        "--random-network",
        action="store_true",
        help="use an untrained network (seeded) instead of weights: pipeline and speed checks only",
    )
    group.add_argument("--readout", choices=READOUT_KINDS, help="overrides readout.kind")
    group.add_argument(
        "--official-stcn",
        action="store_true",
        help="official STCN inference: STCN readout top-k 20, every 5th frame, memory never evicted",
    )
    group.add_argument("--resolution", type=int, help="working short side (overrides resolution; 0 = input)")
    group.add_argument("--device", choices=DEVICES, help="overrides device")
    group.add_argument("--precision", choices=PRECISIONS, help="overrides precision")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="dataset root (DAVIS or YouTube-VOS layout)")
    parser.add_argument("--split", required=True, help="split name: ROOT/ImageSets/<year>/NAME.txt (DAVIS)")
    parser.add_argument("--res", default="480p", help="DAVIS resolution folder (default 480p)")
    parser.add_argument(
        "--year", help="ImageSets year folder, when several hold the split; 2016 = one object"
    )
    parser.add_argument("--layout", choices=("davis", "youtube-vos"), default="davis")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--baseline", choices=("first-frame-copy",), help="score a baseline, not the tracker")
    parser.add_argument("--sequences", help="only these sequences of the split, comma-separated (a,b,c)")
    parser.add_argument("--max-sequences", type=int, help="only the first N sequences of the split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_tracker_arguments(parser)


def tracker_config(args: argparse.Namespace) -> Any:
    """TrackerConfig from --config, then the command-line overrides, then --official-stcn."""
    from edge_vos.tracker.config import TrackerConfig

    overrides: dict[str, Any] = {}
    if getattr(args, "weights", None):
        overrides["model.weights"] = str(args.weights)
    if getattr(args, "random_network", False):
        from edge_vos.model.weights import RANDOM_WEIGHTS

        overrides["model.weights"] = RANDOM_WEIGHTS
    for option, key in (("readout", "readout.kind"), ("resolution", "resolution"), ("device", "device")):
        if getattr(args, option, None) is not None:
            overrides[key] = getattr(args, option)
    if getattr(args, "precision", None):
        overrides["precision"] = args.precision
    config = _load_tracker_yaml(getattr(args, "config", None), overrides)
    if getattr(args, "official_stcn", False):
        if getattr(args, "readout", None) not in (None, "stcn"):
            raise ConfigError("readout.kind", "--official-stcn uses the STCN readout; drop --readout")
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        config = TrackerConfig.official_stcn(**fields)
    return config


def config_path(value: str | Path | None) -> Path | None:
    """The --config file; None for 'none' (TrackerConfig's defaults)."""
    if value is None or str(value).lower() == "none":
        return None
    path = Path(value)
    if path == SHIPPED_CPU_CONFIG and not path.is_file():
        raise ConfigError("--config", f"the shipped CPU config {path} is missing (installed without the "
                                      "repository?): give --config FILE, or --config none for the defaults")
    return path


def _load_tracker_yaml(value: str | Path | None, overrides: dict[str, Any]) -> Any:
    """TrackerConfig from a tracker YAML or from a service YAML's `tracker:` section, with overrides."""
    import yaml

    from edge_vos.tracker.config import TrackerConfig

    path = config_path(value)
    if path is not None and path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError("", f"{path}: not valid YAML: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("tracker"), dict):  # a run config: its tracker section
            return from_dict(TrackerConfig, with_overrides(data["tracker"], overrides), "tracker")
    return load_yaml(TrackerConfig, path, overrides)


def build_tracker(config: Any) -> Any:
    """A Tracker with the configured weights (`--random-network` set them to the seeded untrained network)."""
    from edge_vos.tracker import Tracker

    return Tracker(config)


def check_data_folder(root: Path, layout: str = "davis") -> None:
    """FileNotFoundError saying what is missing: the folder itself, or the layout's split lists."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist" + (
            f" (resolved: {root.resolve()})" if not root.is_absolute() else ""))
    if layout == "davis" and not (root / "ImageSets").is_dir():
        raise FileNotFoundError(f"{root} is not a DAVIS dataset: it has no ImageSets folder "
                                "(expected ROOT/ImageSets/<year>/<split>.txt, ROOT/JPEGImages/<res>/...)")


def _chosen(sequences: list[Any], names: str, split: str) -> list[Any]:
    """The named sequences of the split, in the order given; ConfigError naming any the split lacks."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    by_name = {seq.name: seq for seq in sequences}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise ConfigError("--sequences", f"{missing} not in split {split} (it has {sorted(by_name)})")
    return [by_name[n] for n in dict.fromkeys(wanted)]


def _sequences(args: argparse.Namespace) -> tuple[list[Any], bool]:
    from edge_vos.data.davis import davis_sequences, find_split_file, youtube_vos_sequences

    check_data_folder(args.data, args.layout)
    if args.layout == "youtube-vos":
        return youtube_vos_sequences(args.data, args.split), True
    split_file = find_split_file(args.data, args.split, args.year)
    separate_objects = split_file.parent.name != "2016"  # DAVIS-2016: any non-zero id is the object
    return davis_sequences(args.data, args.split, args.res, split_file.parent.name), separate_objects


def main(args: argparse.Namespace) -> int:
    from edge_vos.evaluation.runner import evaluate, write_report

    try:
        sequences, separate_objects = _sequences(args)
        if args.sequences:
            sequences = _chosen(sequences, args.sequences, args.split)
    except (FileNotFoundError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    if args.max_sequences is not None:
        sequences = sequences[: args.max_sequences]
    if not sequences:
        log.error("split %s has no sequences", args.split)
        return 2
    extra: dict[str, Any] = {
        "data": str(args.data),
        "split": args.split,
        "res": args.res,
        "sequences_evaluated": len(sequences),
        "protocol": "semi-supervised, first and last frame excluded (davis2017-evaluation)",
    }
    tracker = None
    if args.baseline:
        extra["method"] = args.baseline
    else:
        try:
            config = tracker_config(args)
            tracker = build_tracker(config)
        except (ConfigError, FileNotFoundError) as exc:
            log.error("%s", exc)
            if isinstance(exc, FileNotFoundError):
                log.error("give --weights FILE, or --random-network for an untrained network")
            return 2
        extra["method"] = "official-stcn" if args.official_stcn else f"tracker ({config.readout.kind})"
        extra["random_network"] = bool(args.random_network)
        extra["config_file"] = str(config_path(args.config) or "none (TrackerConfig defaults)")
        extra["config"] = to_dict(config)
        log.info("tracker config: %s (working short side %s)", extra["config_file"], config.resolution or "input")
    log.info("evaluating %s on %d sequences of %s/%s", extra["method"], len(sequences), args.data, args.split)
    report = evaluate(
        sequences,
        args.out,
        tracker,
        baseline=args.baseline,
        separate_objects=separate_objects,
        prompts="new-objects" if args.layout == "youtube-vos" else "first",
        progress=not args.no_progress,
    )
    data = write_report(report, args.out, extra)
    fps = f", {data['fps']:.2f} fps in the tracker" if data["fps"] else ""
    if data["J&F"] is None:
        log.info(
            "no sequence has full annotations: predictions written to %s, nothing scored%s", args.out, fps
        )
    else:
        log.info(
            "J&F %.1f  J %.1f  F %.1f over %d objects%s -> %s",
            data["J&F"],
            data["J"],
            data["F"],
            len(report.scores),
            fps,
            args.out / "metrics.json",
        )
    return 0
