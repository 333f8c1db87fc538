"""`edge-vos bench`: a long stream through the tracker, latency per stage and memory against frame index.

A short clip is played forwards and backwards (so motion stays continuous) until `--frames` frames have
gone through `Tracker.step`, once per memory mode:
- `ring`: the configured tracker (fixed-capacity ring memory): time and memory should stay flat;
- `unbounded`: the same tracker and readout, but every `mem_every`-th frame is kept forever (official STCN's
  memory policy): both grow with the stream. The default compares these two, so only the memory differs;
- `official-stcn`: official STCN's inference (STCN readout top-20 and that memory policy).
Per frame it records every stage's milliseconds, the process RSS and the memory tensors' bytes.

    edge-vos bench --data ../shared/data/davis2016 --split val-dev --frames 2000 \
        --out runs/bench --plot docs/img/longstream.png    # the shipped CPU config, ring vs unbounded
    python tools/bench_longstream.py runs/bench/bench.json   # -> docs/benchmarks.md, section longstream
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_vos.evaluation.cli import add_tracker_arguments, check_data_folder, config_path, tracker_config

log = logging.getLogger(__name__)

MODES = ("ring", "unbounded", "official-stcn")
STAGES = ("preprocess", "key_encode", "readout", "decode", "aggregate", "value_encode", "postprocess", "total")
WARMUP = 10  # frames left out of the latency statistics (allocation, first-call overheads)


@dataclass
class StreamRecord:
    """Per-frame measurements of one mode; lists are indexed by frame."""

    mode: str
    timings: dict[str, list[float]] = field(default_factory=dict)  # stage -> ms (0 when not run)
    wall_ms: list[float] = field(default_factory=list)  # whole step() including input conversion
    rss_bytes: list[int] = field(default_factory=list)
    memory_bytes: list[int] = field(default_factory=list)
    memory_slots: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Percentiles per stage after warm-up, frames per second and memory at start and end."""
        n = len(self.wall_ms)
        steady = slice(min(WARMUP, max(n - 1, 0)), n)
        stages = {}
        for stage, values in self.timings.items():
            v = np.asarray(values[steady])
            stages[stage] = {f"p{q}": float(np.percentile(v, q)) for q in (50, 95, 99)} | {"mean": float(v.mean())}
        wall = np.asarray(self.wall_ms[steady])
        tail = max(1, min(100, n // 10))
        return {
            "mode": self.mode,
            "frames": n,
            "fps": float(1000.0 * len(wall) / wall.sum()) if wall.sum() > 0 else None,
            "stages_ms": stages,
            "total_ms_first": float(np.mean(self.wall_ms[WARMUP : WARMUP + tail] or self.wall_ms[:tail])),
            "total_ms_last": float(np.mean(self.wall_ms[-tail:])),
            "rss_peak_mib": max(self.rss_bytes) / 2**20,
            "rss_first_mib": self.rss_bytes[min(WARMUP, n - 1)] / 2**20,
            "rss_last_mib": self.rss_bytes[-1] / 2**20,
            "memory_first_mib": self.memory_bytes[min(WARMUP, n - 1)] / 2**20,
            "memory_last_mib": self.memory_bytes[-1] / 2**20,
            "memory_slots_last": self.memory_slots[-1],
        }


def pingpong(n_clip: int, n_frames: int) -> np.ndarray:
    """Frame indices 0,1,..,n-1,n-2,..,1,0,1,.. of length n_frames."""
    if n_clip < 1:
        raise ValueError("the clip has no frames")
    if n_clip == 1:
        return np.zeros(n_frames, dtype=np.int64)
    cycle = np.concatenate([np.arange(n_clip), np.arange(n_clip - 2, 0, -1)])
    return np.resize(cycle, n_frames)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def run_stream(
    tracker: Any,
    frames: np.ndarray,
    first_mask: np.ndarray,
    n_frames: int,
    mode: str = "ring",
    progress: bool = True,
    on_frame: Callable[[int], None] | None = None,
) -> StreamRecord:
    """Feeds `n_frames` frames of the ping-pong looped clip, prompting frame 0 with `first_mask`."""
    record = StreamRecord(mode, {s: [] for s in STAGES})
    order = pingpong(len(frames), n_frames)
    tracker.reset()
    for i in tqdm(range(n_frames), desc=mode, unit="frame", disable=not progress, mininterval=2.0):
        start = time.perf_counter()
        result = tracker.step(frames[order[i]], first_mask if i == 0 else None)
        record.wall_ms.append((time.perf_counter() - start) * 1000)
        for stage in STAGES:
            record.timings[stage].append(float(result.timings_ms.get(stage, 0.0)))
        memory = getattr(tracker, "memory", None)
        record.memory_bytes.append(int(memory.nbytes()) if memory is not None else 0)
        record.memory_slots.append(int(memory.num_valid) if memory is not None else 0)
        record.rss_bytes.append(_rss())
        if on_frame is not None:
            on_frame(i)
    return record


def write_csv(record: StreamRecord, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        stages = list(record.timings)
        writer.writerow(["frame", "wall_ms", *(f"{s}_ms" for s in stages), "rss_mib", "memory_mib", "slots"])
        for i in range(len(record.wall_ms)):
            writer.writerow(
                [
                    i,
                    f"{record.wall_ms[i]:.2f}",
                    *(f"{record.timings[s][i]:.2f}" for s in stages),
                    f"{record.rss_bytes[i] / 2**20:.1f}",
                    f"{record.memory_bytes[i] / 2**20:.2f}",
                    record.memory_slots[i],
                ]
            )


def read_csv(path: Path, mode: str) -> StreamRecord:
    """A StreamRecord back from `write_csv` output (to re-plot a measured run without re-running it)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    stages = [k[: -len("_ms")] for k in rows[0] if k.endswith("_ms") and k != "wall_ms"]
    return StreamRecord(
        mode,
        {s: [float(r[f"{s}_ms"]) for r in rows] for s in stages},
        [float(r["wall_ms"]) for r in rows],
        [int(float(r["rss_mib"]) * 2**20) for r in rows],
        [int(float(r["memory_mib"]) * 2**20) for r in rows],
        [int(r["slots"]) for r in rows],
    )


def plot(records: list[StreamRecord], path: Path, title: str) -> None:
    """Per-frame time (and its running median) and memory against the frame index, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.ndimage import median_filter

    fig, (ax_t, ax_m) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    colours = {"ring": "tab:blue", "unbounded": "tab:orange", "official-stcn": "tab:red"}
    for rec in records:
        c = colours.get(rec.mode, None)
        x = np.arange(len(rec.wall_ms))
        ax_t.plot(x, rec.wall_ms, color=c, alpha=0.25, linewidth=0.6)
        ax_t.plot(x, median_filter(np.asarray(rec.wall_ms), size=25, mode="nearest"), color=c, label=rec.mode)
        if "readout" in rec.timings:  # the stage whose cost depends on the memory size
            readout = median_filter(np.asarray(rec.timings["readout"]), size=25, mode="nearest")
            ax_t.plot(x, readout, color=c, linestyle="--", label=f"{rec.mode}: readout stage")
        ax_m.plot(x, np.asarray(rec.rss_bytes) / 2**20, color=c, label=f"{rec.mode}: process RSS")
        ax_m.plot(x, np.asarray(rec.memory_bytes) / 2**20, color=c, linestyle="--", label=f"{rec.mode}: memory tensors")
    ax_t.set_ylabel("ms per frame (lines: running median)")
    ax_t.set_yscale("log")
    ax_t.legend(loc="upper left")
    ax_t.grid(alpha=0.3)
    ax_m.set_ylabel("MiB")
    ax_m.set_xlabel("frame index")
    ax_m.legend(loc="upper left", fontsize=8)
    ax_m.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("source clip (looped forwards and backwards)")
    source.add_argument("--data", type=Path, help="DAVIS root; without it a synthetic clip is used")
    source.add_argument("--split", default="val-dev", help="split holding the clip (default val-dev)")
    source.add_argument("--sequence", help="sequence name (default: the split's first)")
    source.add_argument("--res", default="480p", help="DAVIS resolution folder")
    source.add_argument("--clip-frames", type=int, default=50, help="frames of the clip used (default 50)")
    parser.add_argument("--frames", type=int, default=2000, help="frames streamed per mode (default 2000)")
    parser.add_argument("--modes", default="ring,unbounded",
                        help="comma list of: " + ", ".join(MODES) + " (default: one readout, two memory policies)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for CSVs and JSON")
    parser.add_argument("--plot", type=Path, help="PNG of time and memory against frame index")
    parser.add_argument("--no-progress", action="store_true")
    add_tracker_arguments(parser)


def load_clip(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """Frames [N,H,W,3], frame 0's label map and a description of the clip."""
    if args.data is None:
        from edge_vos.data.synthetic import generate_sequence

        frames, labels = generate_sequence(0, args.clip_frames, (480, 854), num_objects=3, num_distractors=2)
        return frames, labels[0], f"synthetic clip (seed 0, {args.clip_frames} frames, 854x480, 3 objects)"
    from edge_vos.data.davis import davis_sequences

    check_data_folder(args.data)
    seqs = davis_sequences(args.data, args.split, args.res)
    seq = next((s for s in seqs if s.name == args.sequence), None) if args.sequence else seqs[0]
    if seq is None:
        raise FileNotFoundError(f"sequence {args.sequence!r} is not in split {args.split}")
    n = min(len(seq), args.clip_frames)
    frames = np.stack([seq.image(i) for i in range(n)])
    mask = seq.mask(0)
    if mask is None:
        raise FileNotFoundError(f"{seq.name}: frame 0 has no annotation")
    h, w = frames.shape[1:3]
    return frames, mask, f"DAVIS {seq.name} ({n} frames, {w}x{h})"


def main(args: argparse.Namespace) -> int:
    from edge_vos.config import ConfigError
    from edge_vos.tracker import build_tracker

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        log.error("unknown mode(s) %s; choose from %s", unknown, list(MODES))
        return 2
    try:
        frames, first_mask, clip = load_clip(args)
        configs = {}
        for mode in modes:
            args.official_stcn = mode == "official-stcn"
            configs[mode] = dataclasses.replace(tracker_config(args), profile=True)  # the per-stage table
            if mode == "unbounded":
                configs[mode].memory = dataclasses.replace(configs[mode].memory, unbounded=True)
    except (FileNotFoundError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    load_before = os.getloadavg()
    records = []
    for mode in modes:
        config = configs[mode]
        try:
            tracker = build_tracker(config)
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        log.info(
            "%s: %d frames of %s, readout %s, resolution %s",
            mode,
            args.frames,
            clip,
            config.readout.kind,
            config.resolution,
        )
        record = run_stream(tracker, frames, first_mask, args.frames, mode, progress=not args.no_progress)
        records.append(record)
        write_csv(record, args.out / f"{mode}.csv")
        del tracker
    summaries = [r.summary() for r in records]
    setup = {
        "clip": clip,
        "frames": args.frames,
        "config_file": str(config_path(args.config) or "none (TrackerConfig defaults: the shipped tracker)"),
        "configs": {m: _config_dict(c) for m, c in configs.items()},
        "random_network": bool(args.random_network),
        "warmup_frames_excluded": WARMUP,
        "machine": _machine(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "plot": None if args.plot is None else str(args.plot),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"setup": setup, "modes": summaries}, indent=2) + "\n")
    for s in summaries:
        log.info(
            "%s: %.2f fps, total p50/p95/p99 %.0f/%.0f/%.0f ms, ms/frame %.0f -> %.0f, memory %.1f -> %.1f MiB, "
            "peak RSS %.0f MiB",
            s["mode"],
            s["fps"] or 0,
            *(s["stages_ms"]["total"][k] for k in ("p50", "p95", "p99")),
            s["total_ms_first"],
            s["total_ms_last"],
            s["memory_first_mib"],
            s["memory_last_mib"],
            s["rss_peak_mib"],
        )
    if args.plot:
        first = next(iter(configs.values()))
        plot(records, args.plot, f"{clip}, working short side {first.resolution}, {setup['machine']}")
        log.info("plot -> %s", args.plot)
    return 0


def _config_dict(config: Any) -> dict[str, Any]:
    from edge_vos.config import to_dict

    return to_dict(config)


def _machine() -> str:
    import platform

    import torch

    device = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return f"{device}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.machine()}"
