"""Records the teacher tracker's decoder calls: what the narrow decoder is distilled on (distill_decoder.py).

Why from recorded tracking and not from single frames: the decoder reads the readout of the tracker's memory
(TMRN, the ring, soft masks written back), a distribution that a one-frame sample does not reproduce. So
`capture` runs the teacher's shipped tracker (configs/cpu.yaml, every object decoded over the whole frame,
which gives the same masks) over training sequences and stores, for every second frame, the decoder's inputs
and the teacher's logits in float16: DAVIS-2016 training sequences at 240p (the tracker's 240 working size) and
scaled 2x (its 360), optionally mirrored, minus the evaluation splits and the six left-out control sequences,
and seeded synthetic scenes of 3-8 objects at 480x854. Every `monitor_every`-th DAVIS sequence goes to the
monitor folder instead, to watch a run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from edge_vos.backends.base import NetworkRunner
from edge_vos.model.checkpoint import load_network
from edge_vos.model.network import STCN
from edge_vos.tracker import Tracker
from edge_vos.tracker.config import TrackerConfig
from edge_vos.tracker.engines import TrackerEngines

log = logging.getLogger(__name__)

CAPTURE = "capture"  # the run folder's recordings to train on
MONITOR = "monitor"  # and those to watch the run with
_DONE = ".done"


@dataclass(frozen=True)
class CaptureConfig:
    teacher: str = "edge_vos/weights/default.safetensors"
    tracker_config: str = "configs/cpu.yaml"
    davis_root: str = "../shared/data/davis2016"
    exclude_sequences: tuple[str, ...] = ("boat", "dance-jump", "hike", "hockey", "kite-walk", "rhino")
    monitor_every: int = 12  # every n-th remaining DAVIS sequence (sorted by name) watches the run instead
    synthetic_sequences: int = 8
    synthetic_frames: int = 40
    keep_every: int = 2  # frames stored: every n-th decoded frame
    mirrored: bool = False  # also each DAVIS sequence mirrored left to right (other features, same motion)

class RecordingRunner:
    """A runner whose whole-frame `decode` calls are handed to `record` (inputs and the teacher's logits)."""

    def __init__(self, runner: NetworkRunner, record: list[dict[str, torch.Tensor]]) -> None:
        self._runner = runner
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def decode(self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor,
               f4: torch.Tensor) -> torch.Tensor:
        logits = self._runner.decode(readout, query_value, f8, f4)
        # copies: the tracker turns the logits into probabilities in place
        self._record.append({name: tensor.detach().to(torch.float16, copy=True) for name, tensor in
                             (("readout", readout), ("query_value", query_value), ("f8", f8), ("f4", f4),
                              ("logits", logits))})
        return logits


class RecordingEngines(TrackerEngines):
    """The tracker's engines, each runner recording its whole-frame decoder calls into `recorded`."""

    def __init__(self, config: TrackerConfig, network: STCN) -> None:
        super().__init__(config, network)
        self.recorded: list[dict[str, torch.Tensor]] = []

    def runner(self, padded_hw: tuple[int, int]) -> NetworkRunner:
        return RecordingRunner(super().runner(padded_hw), self.recorded)  # type: ignore[return-value]


def capture_tracker_config(path: str) -> TrackerConfig:
    """The shipped tracker, in eager PyTorch, every object decoded over the whole frame (the same masks)."""
    return TrackerConfig.from_yaml(path, {"backend": "torch", "precision": "fp32", "prior.decode_inside": False})


def track_and_store(engines: RecordingEngines, tracker: Tracker, frames: list[np.ndarray], first_mask: np.ndarray,
                     folder: Path, name: str, keep_every: int) -> int:
    tracker.reset()
    stored = 0
    for index, image in enumerate(frames):
        engines.recorded.clear()
        tracker.step(image, first_mask if index == 0 else None)
        if index % keep_every or not engines.recorded:
            continue
        torch.save(engines.recorded[-1], str(folder / f"{name}-{index:04d}.pt"))
        stored += 1
    return stored


def capture(cfg: CaptureConfig, out: Path) -> None:
    """Stores the teacher tracker's decoder inputs and logits (see the module's docstring); sequences already
    stored are skipped, so an interrupted capture resumes."""
    from edge_vos.data.davis import davis_sequences
    from edge_vos.data.synthetic import generate_sequence
    from edge_vos.train.sources import held_out_names

    teacher = load_network(cfg.teacher).eval()
    config = capture_tracker_config(cfg.tracker_config)
    engines = RecordingEngines(config, teacher)
    tracker = Tracker(config, engines=engines)
    held = held_out_names(cfg.davis_root)
    found = sorted(davis_sequences(cfg.davis_root, "train", "240p", "2016"), key=lambda s: s.name)
    keep = [s for s in found if s.name not in held and s.name not in cfg.exclude_sequences]
    if not keep:
        raise FileNotFoundError(f"no DAVIS-2016 training sequences under {cfg.davis_root}")
    monitor = {s.name for s in keep[:: cfg.monitor_every]}
    jobs: list[tuple[str, str, Any]] = []
    for seq in keep:
        for scale in (1, 2):
            for mirror in (False, True) if cfg.mirrored else (False,):
                name = f"{seq.name}-x{scale}" + ("-mirrored" if mirror else "")
                jobs.append((MONITOR if seq.name in monitor else CAPTURE, name, (seq, scale, mirror)))
    for index in range(cfg.synthetic_sequences):
        jobs.append((CAPTURE, f"synthetic-{index:02d}", index))
    for folder_name, name, job in jobs:
        folder = out / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        done = folder / f"{name}{_DONE}"
        if done.exists():
            continue
        started = time.monotonic()
        if isinstance(job, int):
            rng = np.random.default_rng([cfg.synthetic_frames, 7, job])
            frames_arr, labels = generate_sequence(
                seed=int(rng.integers(2**31)), num_frames=cfg.synthetic_frames, size=(480, 854),
                num_objects=int(rng.integers(3, 9)), num_distractors=int(rng.integers(0, 3)))
            frames, first = list(frames_arr), labels[0].astype(np.uint8)
        else:
            seq, scale, mirror = job
            frames = [seq.image(i) for i in range(len(seq))]
            first_mask = seq.mask(0)
            if first_mask is None:
                continue
            first = (first_mask > 0).astype(np.uint8)
            if mirror:
                frames, first = [np.ascontiguousarray(f[:, ::-1]) for f in frames], np.ascontiguousarray(first[:, ::-1])
            if scale != 1:
                h, w = first.shape
                frames = [cv2.resize(f, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR) for f in frames]
                first = cv2.resize(first, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
        stored = track_and_store(engines, tracker, frames, first, folder, name, cfg.keep_every)
        done.write_text(str(stored))
        log.info("%s/%s: %d frames stored in %.0f s", folder_name, name, stored, time.monotonic() - started)
