"""Loss curves of `edge-vos train` runs (their OUT/log.csv) as one PNG for the docs.

    python tools/plot_training.py runs/hard-a --out docs/img/training-hard-a.png
    python tools/plot_training.py runs/a runs/b --label a --label b --smooth 10 --out docs/img/x.png

Plots the bootstrapped loss against the step (raw rows faint, a centred moving average solid) and, on a
second axis, the wall time, so a reader sees both how far a run went and what it cost.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("plot_training")


def read_log(run: Path) -> dict[str, np.ndarray]:
    """step, loss, elapsed_s (cumulated over resumed sessions) of a run's log.csv."""
    path = run / "log.csv" if run.is_dir() else run
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    step = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    # elapsed_s restarts at 0 in every resumed session: add up the sessions.
    elapsed = np.array([float(r["elapsed_s"]) for r in rows])
    offset = np.concatenate([[0.0], np.cumsum(np.where(np.diff(elapsed) < 0, elapsed[:-1], 0.0))])
    return {"step": step, "loss": loss, "elapsed_s": elapsed + offset}


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(x) < window:
        return x
    pad = window // 2
    padded = np.pad(x, (pad, window - 1 - pad), mode="edge")
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (or log.csv files)")
    parser.add_argument("--label", action="append", default=[], help="legend label per run (default: folder)")
    parser.add_argument("--smooth", type=int, default=10, help="moving-average window in log rows")
    parser.add_argument("--title", default="edge-vos train: bootstrapped cross-entropy")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    time_ax = ax.twinx()
    for i, run in enumerate(args.runs):
        data = read_log(run)
        label = args.label[i] if i < len(args.label) else run.name
        (line,) = ax.plot(data["step"], moving_average(data["loss"], args.smooth), label=label)
        ax.plot(data["step"], data["loss"], color=line.get_color(), alpha=0.2, linewidth=0.8)
        time_ax.plot(data["step"], data["elapsed_s"] / 60, color=line.get_color(), linestyle=":", linewidth=1)
        log.info(
            "%s: %d steps, last smoothed loss %.3f, %.0f s wall",
            label,
            data["step"][-1],
            moving_average(data["loss"], args.smooth)[-1],
            data["elapsed_s"][-1],
        )
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (solid: moving average of {args.smooth} rows)")
    time_ax.set_ylabel("wall time, min (dotted)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
