"""Semi-supervised evaluation: run a tracker (or a baseline) over a split, write masks, score them.

The tracker gets frame 0's mask as its prompt (DAVIS protocol); with sparse annotations (YouTube-VOS
`valid`) an object is prompted on the first frame where its id appears. Predictions are written as
palette PNGs in the layout the official toolkit reads, and scored from those same label maps.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from edge_vos.data.davis import VideoSequence, write_predictions
from edge_vos.evaluation.metrics import ObjectScore, evaluate_sequence, summarize

log = logging.getLogger(__name__)

BASELINES = ("first-frame-copy",)


class _StepResult(Protocol):
    labels: np.ndarray


class FrameTracker(Protocol):
    """The part of `edge_vos.tracker.Tracker` the evaluation uses."""

    def step(
        self, image: np.ndarray, mask: np.ndarray | None = None, objects: list[int] | None = None
    ) -> _StepResult: ...

    def reset(self) -> None: ...


@dataclass
class SequenceResult:
    name: str
    frames: int
    seconds: float  # time spent inside tracker.step (0 for baselines)
    objects: list[ObjectScore]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class EvalReport:
    sequences: list[SequenceResult] = field(default_factory=list)

    @property
    def scores(self) -> list[ObjectScore]:
        return [o for s in self.sequences for o in s.objects]

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sequences)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.sequences)

    def summary(self) -> dict[str, float | None]:
        """Overall J&F, J, F (percent; None when nothing was scored) and the tracker's frames per second."""
        fps = self.frames / self.seconds if self.seconds > 0 else None
        if not self.scores:
            return {"J&F": None, "J": None, "F": None, "fps": fps}
        table = summarize(self.scores)
        return {"J&F": table["J&F-Mean"], "J": table["J-Mean"], "F": table["F-Mean"], **table, "fps": fps}


def fit_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "") -> np.ndarray:
    """A label map resized (nearest) to the frame size; real annotations are sometimes a pixel off."""
    if mask.shape == shape:
        return mask
    log.warning(
        "%s: mask is %dx%d, frame %dx%d; resizing the mask", name, mask.shape[1], mask.shape[0], *shape[::-1]
    )
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def track_sequence(
    tracker: FrameTracker,
    seq: VideoSequence,
    prompts: str = "first",
    on_frame: Callable[[], None] | None = None,
) -> tuple[np.ndarray, float]:
    """Label maps [T,H,W] predicted by `tracker` and the seconds spent in `step`.

    prompts="first": only frame 0's annotation is given; "new-objects": every annotated frame prompts
    the ids it introduces (YouTube-VOS protocol). Already-tracked ids are never re-prompted.
    """
    if prompts not in ("first", "new-objects"):
        raise ValueError(f"prompts must be 'first' or 'new-objects', got {prompts!r}")
    tracker.reset()
    seen: set[int] = set()
    labels = []
    seconds = 0.0
    for i in range(len(seq)):
        image = seq.image(i)
        mask = seq.mask(i) if (i == 0 or prompts == "new-objects") else None
        objects: list[int] | None = None
        if mask is not None:
            mask = fit_mask(mask, image.shape[:2], f"{seq.name}/{seq.frame_ids[i]}")
            mask = np.where(mask == 255, 0, mask).astype(np.uint8)  # void is not an object
            new = [int(v) for v in np.unique(mask) if v != 0 and int(v) not in seen]
            if new:
                seen.update(new)
                objects = new
            else:
                mask = None
        start = time.perf_counter()
        result = tracker.step(image, mask, objects)
        seconds += time.perf_counter() - start
        labels.append(np.asarray(result.labels, dtype=np.uint8))
        if on_frame is not None:
            on_frame()
    return np.stack(labels), seconds


def first_frame_copy(seq: VideoSequence) -> np.ndarray:
    """Lower bound: frame 0's annotation repeated over the whole sequence."""
    first = seq.mask(0)
    if first is None:
        raise FileNotFoundError(f"{seq.name}: frame 0 has no annotation")
    return np.repeat(first[None], len(seq), axis=0)


def evaluate(
    sequences: Iterable[VideoSequence],
    out_dir: str | Path,
    tracker: FrameTracker | None = None,
    *,
    baseline: str | None = None,
    separate_objects: bool = True,
    prompts: str = "first",
    progress: bool = True,
) -> EvalReport:
    """Predicts every sequence (tracker or baseline), writes DIR/<seq>/<frame>.png, scores them.

    Sequences without an annotation on every frame (YouTube-VOS `valid`) are predicted but not scored.
    """
    if (tracker is None) == (baseline is None):
        raise ValueError("give exactly one of a tracker or a baseline")
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; known: {list(BASELINES)}")
    sequences = list(sequences)
    out_dir = Path(out_dir)
    report = EvalReport()
    bar = tqdm(total=sum(len(s) for s in sequences), unit="frame", disable=not progress, desc="eval")
    try:
        for seq in sequences:
            bar.set_postfix_str(seq.name)
            if tracker is not None:
                pred, seconds = track_sequence(tracker, seq, prompts, on_frame=lambda: bar.update(1))
            else:
                pred, seconds = first_frame_copy(seq), 0.0
                bar.update(len(seq))
            write_predictions(out_dir, seq.name, seq.frame_ids, pred)
            if len(seq.masks) < len(seq):
                log.info("%s: sparse annotations, predictions written but not scored", seq.name)
                report.sequences.append(SequenceResult(seq.name, len(seq), seconds, []))
                continue
            gt = seq.all_masks()
            if gt.shape != pred.shape:  # annotations a pixel off the frames: score at the annotation size
                pred = np.stack([fit_mask(p, gt.shape[1:], seq.name) for p in pred])
            scores = evaluate_sequence(seq.name, gt, pred, separate_objects=separate_objects)
            result = SequenceResult(seq.name, len(seq), seconds, scores)
            report.sequences.append(result)
            jf = float(np.mean([(o.stats["J-Mean"] + o.stats["F-Mean"]) / 2 for o in scores])) * 100
            speed = f", {result.fps:.2f} fps" if seconds > 0 else ""
            log.info("%s: %d frames, J&F %.1f%s", seq.name, len(seq), jf, speed)
            if seconds > 0:
                bar.set_postfix_str(f"{seq.name} {report.frames / report.seconds:.2f} fps")
    finally:
        bar.close()
    return report


def write_report(
    report: EvalReport, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """DIR/per-sequence.csv (one row per object, values in %) and DIR/metrics.json; returns the JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ["J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    with (out_dir / "per-sequence.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Sequence", "J&F-Mean", *keys, "frames", "fps"])
        for seq in report.sequences:
            for obj in seq.objects:
                values = [100 * obj.stats[k] for k in keys]
                jf = (values[0] + values[3]) / 2
                writer.writerow(
                    [obj.name, f"{jf:.2f}", *(f"{v:.2f}" for v in values), seq.frames, _fmt(seq.fps)]
                )
    per_sequence = {}
    for seq in report.sequences:
        if not seq.objects:
            per_sequence[seq.name] = {"frames": seq.frames, "fps": None if seq.seconds == 0 else seq.fps}
            continue
        j = float(np.mean([o.stats["J-Mean"] for o in seq.objects])) * 100
        f = float(np.mean([o.stats["F-Mean"] for o in seq.objects])) * 100
        per_sequence[seq.name] = {
            "J&F": (j + f) / 2,
            "J": j,
            "F": f,
            "frames": seq.frames,
            "fps": None if seq.seconds == 0 else seq.fps,
            "objects": {o.name: {k: 100 * v for k, v in o.stats.items()} for o in seq.objects},
        }
    data: dict[str, Any] = {
        "units": "percent",
        **report.summary(),
        "frames": report.frames,
        "seconds_in_tracker": report.seconds,
        **(extra or {}),
        "sequences": per_sequence,
    }
    (out_dir / "metrics.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


def _fmt(value: float) -> str:
    return "" if value != value else f"{value:.3f}"  # NaN -> empty cell
