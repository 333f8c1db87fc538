"""Where training frames come from: real video sequences, seeded synthetic ones, and still photographs.

A source is ("real" | "synthetic" | "photo", index). Real sequences are DAVIS (minus the evaluation splits,
which are refused, and minus `exclude_sequences`, left out for a control run) or YouTube-VOS; synthetic
ones are generated once from the seed and cached; photographs (COCO, `static_root`) are one-frame sources
with several objects each. Frames are read on demand, so what a step sees depends on its generator only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_vos.config import ConfigError
from edge_vos.data.static_images import StaticImage, static_images
from edge_vos.train.config import DataSection

log = logging.getLogger(__name__)

Source = tuple[str, int]  # ("real" | "synthetic" | "photo", index)
Raw = tuple[tuple[np.ndarray, np.ndarray], ...]  # (RGB uint8 [H,W,3], labels uint8 [H,W]) per clip frame


@dataclass(frozen=True)
class RealSequence:
    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]  # one per frame in `frames` (only annotated frames are kept)


def held_out_names(root: str | Path) -> set[str]:
    """Sequence names of every evaluation split list (ROOT/ImageSets/*/val*.txt): never training data."""
    from edge_vos.data.davis import read_split

    return {n for p in (Path(root) / "ImageSets").glob("*/val*.txt") for n in read_split(p)}


def load_real(cfg: DataSection) -> list[RealSequence]:
    """The configured real training sequences, without evaluation ones and without `exclude_sequences`."""
    from edge_vos.data.davis import davis_sequences, youtube_vos_sequences

    found = []
    if cfg.davis_root:
        found += davis_sequences(cfg.davis_root, cfg.davis_split, cfg.davis_res, cfg.davis_year or None)
        leaked = sorted({s.name for s in found} & held_out_names(cfg.davis_root))
        if leaked:
            raise ConfigError("data.davis_split", f"{cfg.davis_split!r} lists evaluation sequences: {leaked}")
    if cfg.youtube_root:
        found += youtube_vos_sequences(cfg.youtube_root, "train")
    unknown = sorted(set(cfg.exclude_sequences) - {s.name for s in found})
    if unknown:
        raise ConfigError("data.exclude_sequences", f"not training sequences: {unknown}")
    out = []
    for seq in found:
        if seq.name in cfg.exclude_sequences:
            continue
        keep = [(f, seq.masks[f.stem]) for f in seq.frames if f.stem in seq.masks]
        if len(keep) >= cfg.clip_frames:
            out.append(RealSequence(seq.name, tuple(f for f, _ in keep), tuple(m for _, m in keep)))
    return out


class Sources:
    """Reads frames of every configured source and draws sources and frame indices from a generator."""

    def __init__(self, cfg: DataSection, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.real = load_real(cfg)
        self.photos: list[StaticImage] = static_images(cfg.static_root) if cfg.static_root else []
        self._synthetic: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if not self.real and cfg.synthetic_sequences == 0:
            raise FileNotFoundError("no training data: no real sequences found and no synthetic ones asked")
        log.info(
            "training data: %d real sequences (%d annotated frames), %d synthetic sequences, %d photographs",
            len(self.real),
            sum(len(s.frames) for s in self.real),
            cfg.synthetic_sequences,
            len(self.photos),
        )

    def _synthetic_sequence(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._synthetic.get(index)
        if cached is None:
            from edge_vos.data.synthetic import generate_sequence

            rng = np.random.default_rng([self.seed, 7919, index])
            cached = generate_sequence(
                seed=int(rng.integers(2**31)),
                num_frames=self.cfg.synthetic_frames,
                size=(240, 432),
                num_objects=int(rng.integers(1, 4)),
                num_distractors=int(rng.integers(0, 3)),
            )
            self._synthetic[index] = cached
        return cached

    def num_frames(self, source: Source) -> int:
        kind, index = source
        if kind == "photo":
            return 1
        return self.cfg.synthetic_frames if kind == "synthetic" else len(self.real[index].frames)

    def frame(self, source: Source, t: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 [H,W,3] and label map uint8 [H,W] of frame t of a source."""
        kind, index = source
        if kind == "synthetic":
            frames, labels = self._synthetic_sequence(index)
            return frames[t], labels[t]
        if kind == "photo":
            return self.photos[index].read()
        from edge_vos.data.davis import read_image, read_mask

        seq = self.real[index]
        labels = read_mask(seq.masks[t])
        if self.cfg.davis_year == "2016" and not self.cfg.youtube_root:
            labels = (labels > 0).astype(np.uint8)  # DAVIS-2016: any non-zero value is the object
        labels[labels == 255] = 0
        return read_image(seq.frames[t]), labels

    def pick(self, rng: np.random.Generator, photo_prob: float = 0.0) -> Source:
        """A photograph with `photo_prob` (when any), else synthetic with its share, else a real sequence."""
        if self.photos and rng.random() < photo_prob:
            return "photo", int(rng.integers(len(self.photos)))
        use_synthetic = self.cfg.synthetic_sequences > 0 and (
            not self.real or rng.random() < self.cfg.synthetic_fraction
        )
        if use_synthetic:
            return "synthetic", int(rng.integers(self.cfg.synthetic_sequences))
        return "real", int(rng.integers(len(self.real)))

    def raw(self, rng: np.random.Generator, source: Source, static: bool, max_gap: int) -> Raw:
        """The clip's source frames: one frame repeated (static, photographs) or T frames in order (video)."""
        if static or source[0] == "photo":
            return (self.frame(source, int(rng.integers(self.num_frames(source)))),) * self.cfg.clip_frames
        return tuple(self.frame(source, t) for t in self._frame_indices(rng, self.num_frames(source), max_gap))

    def _frame_indices(self, rng: np.random.Generator, n: int, max_gap: int) -> list[int]:
        steps = self.cfg.clip_frames - 1
        gap = max(1, min(max_gap, (n - 1) // steps))
        gaps = rng.integers(1, gap + 1, size=steps)
        start = int(rng.integers(0, n - int(gaps.sum())))
        idx = [start, *(start + np.cumsum(gaps)).tolist()]
        return idx[::-1] if rng.random() < 0.5 else idx
